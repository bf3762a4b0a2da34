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

use std::collections::HashSet;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::batch::{CHUNK, IdReads, in_batch};
use crate::error::Result;
use crate::store::DbConn;
use crate::store::schema::{node_slice_whitelist, nodes, persons, slice_node, slice_person};
use crate::{load_rows, with_db};

/// The nodes of the given slices that this registry exports to `caller`,
/// as pairs (slice, node) by slice: its own nodes, and the caller's nodes
/// cached here (which the caller maps back through `PeerNodes`); a third
/// registry's nodes stay out, as every object of a third registry does.
pub async fn exported_slice_nodes(
    conn: &mut DbConn,
    slice_ids: &[i64],
    caller: Option<i64>,
) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    let reads = IdReads::of(slice_ids);
    for &batch in &reads.batches {
        let pairs: Vec<(i64, i64)> = load_rows!(conn, {
            let query = slice_node::table
                .filter(
                    nodes::table
                        .filter(nodes::node_id.eq(slice_node::node_id))
                        .select(nodes::peer_id.is_null().or(nodes::peer_id.eq(caller)))
                        .single_value(),
                )
                .order((slice_node::slice_id, slice_node::node_id))
                .select((slice_node::slice_id, slice_node::node_id))
                .into_boxed();
            in_batch(query, slice_node::slice_id, batch)
        })?;
        out.extend(pairs.into_iter().filter(|&(slice, _)| reads.keeps(slice)));
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
                .filter(nodes::node_id.eq_any(chunk))
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
