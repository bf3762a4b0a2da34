//! Local rows the export serves to peers beyond the classes' own pages:
//! the memberships of exported slices and the nodes a peer may claim.
//!
//! The membership reads filter the members with a scalar subquery on the
//! member's primary key, not a join nor `EXISTS`: the plan then always
//! walks the link table's index from the slice ids and looks each member
//! up by primary key. With a join, SQLite may drive from the members
//! instead and probe the link table once per member and slice id of a
//! list, which turns a page into millions of index seeks; with `EXISTS`,
//! PostgreSQL turns the lookups into a hash join over all the members,
//! which at 300,000 nodes took 30 ms a page instead of 8.

use foldhash::{HashSet, HashSetExt};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::batch::{CHUNK, IdReads, in_batch};
use crate::error::Result;
use crate::store::DbConn;
use crate::store::prepared::in_list;
use crate::store::schema::{node_slice_whitelist, nodes, persons, slice_node, slice_person};
use crate::{load_rows, with_db};

/// Whom an export is for, which decides the nodes cached here that it
/// shows among its slices' nodes (with their `PeerNodes`): a registry
/// learns of its own nodes as another registry's slices hold them, while a
/// third registry's nodes stay out, as every object of a third registry
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// An admin calling by hand: no cached node.
    Admin,
    /// A peer: its own nodes cached here.
    Peer(i64),
    /// Every peer at once: every cached node, each with its peer, to be cut
    /// to each caller's after the read (the changes a `Follow` event
    /// carries, read once for all its streams).
    EveryPeer,
}

impl Audience {
    /// The audience of a caller that is peer `peer_id`, or an admin.
    pub fn of(peer_id: Option<i64>) -> Audience {
        peer_id.map_or(Audience::Admin, Audience::Peer)
    }

    /// Whether this audience is shown the nodes of `peer_id` cached here.
    pub fn shown(self, peer_id: i64) -> bool {
        match self {
            Audience::Admin => false,
            Audience::Peer(caller) => caller == peer_id,
            Audience::EveryPeer => true,
        }
    }
}

/// The nodes of the given slices that this registry exports to
/// `audience`, as pairs (slice, node) by slice: its own nodes, and the
/// nodes cached here that the audience is shown.
pub async fn exported_slice_nodes(
    conn: &mut DbConn,
    slice_ids: &[i64],
    audience: Audience,
) -> Result<Vec<(i64, i64)>> {
    let caller = match audience {
        Audience::Admin => None,
        Audience::Peer(caller) => Some(caller),
        Audience::EveryPeer => None,
    };
    let mut out = Vec::new();
    let reads = IdReads::of(slice_ids);
    for &batch in &reads.batches {
        let pairs: Vec<(i64, i64)> = load_rows!(conn, {
            let query = slice_node::table
                .order((slice_node::slice_id, slice_node::node_id))
                .select((slice_node::slice_id, slice_node::node_id))
                .into_boxed();
            // Every node is either this registry's or cached from a peer.
            let query = match audience {
                Audience::EveryPeer => query,
                Audience::Admin | Audience::Peer(_) => query.filter(
                    nodes::table
                        .filter(nodes::node_id.eq(slice_node::node_id))
                        .select(nodes::peer_id.is_null().or(nodes::peer_id.eq(caller)))
                        .single_value(),
                ),
            };
            in_batch(query, slice_node::slice_id, batch)
        })?;
        out.extend(pairs.into_iter().filter(|&(slice, _)| reads.keeps(slice)));
    }
    Ok(out)
}

/// The nodes cached here among `node_ids` that `audience` is shown:
/// (local id, the peer's id, the peer).
pub async fn shown_peer_nodes_among(
    conn: &mut DbConn,
    audience: Audience,
    node_ids: &[i64],
) -> Result<Vec<(i64, i64, i64)>> {
    let mut out = Vec::new();
    if audience == Audience::Admin {
        return Ok(out);
    }
    for chunk in node_ids.chunks(CHUNK) {
        let rows: Vec<(i64, i64, i64)> = with_db!(conn, |c| {
            let query = nodes::table
                .filter(in_list(nodes::node_id, chunk))
                .select((
                    nodes::node_id,
                    nodes::peer_node_id.assume_not_null(),
                    nodes::peer_id.assume_not_null(),
                ))
                .into_boxed();
            let query = match audience {
                Audience::Peer(peer_id) => query.filter(nodes::peer_id.eq(peer_id)),
                Audience::Admin | Audience::EveryPeer => query.filter(nodes::peer_id.is_not_null()),
            };
            query.load(c).await
        })?;
        out.extend(rows);
    }
    Ok(out)
}

/// The persons of the given slices that this registry exports, as pairs
/// (slice, person) by slice: its own enabled persons (a disabled person is
/// not federated; a peer's persons are its own to serve).
pub async fn exported_slice_persons(
    conn: &mut DbConn,
    slice_ids: &[i64],
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let reads = IdReads::of(slice_ids);
    for &batch in &reads.batches {
        let pairs: Vec<(i64, i64)> = load_rows!(conn, {
            let query = slice_person::table
                .filter(
                    persons::table
                        .filter(persons::person_id.eq(slice_person::person_id))
                        .select(persons::peer_id.is_null().and(persons::enabled))
                        .single_value(),
                )
                .order((slice_person::slice_id, slice_person::person_id))
                .select((slice_person::slice_id, slice_person::person_id))
                .into_boxed();
            in_batch(query, slice_person::slice_id, batch)
        })?;
        out.extend(pairs.into_iter().filter(|&(slice, _)| reads.keeps(slice)));
    }
    Ok(out)
}

/// The local nodes among `node_ids` that this registry exports (those
/// without a slice whitelist), for checking the ids a peer claims in
/// `PeerNodes`: a peer may place its slices only on nodes it was given.
pub async fn exported_node_ids(conn: &mut DbConn, node_ids: &[i64]) -> Result<HashSet<i64>> {
    let mut found = HashSet::new();
    for chunk in node_ids.chunks(CHUNK) {
        let ids: Vec<i64> = with_db!(conn, |c| {
            nodes::table
                .filter(in_list(nodes::node_id, chunk))
                .filter(nodes::peer_id.is_null())
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    node_slice_whitelist::table
                        .filter(node_slice_whitelist::node_id.eq(nodes::node_id)),
                )))
                .select(nodes::node_id)
                .load(c)
                .await
        })?;
        found.extend(ids);
    }
    Ok(found)
}
