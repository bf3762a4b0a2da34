//! Applying a peer's spooled dump or delta to the cache, inside the
//! refresh's transaction.
//!
//! A delta goes the same way as a full dump: it holds the changed objects
//! whole, memberships included, and the deleted ids; what differs is which
//! cached objects go ([`ClassSpool::doomed`]). Objects it does not hold
//! are unchanged at the peer and stay as they are.
//!
//! Classes go in the order sites, keys, persons, nodes, slices. Each class
//! is read back from the [`Spool`] in chunks, so memory is bounded by the
//! chunk and by compact id maps, never by the dump. For each class, cached
//! objects the peer no longer has are deleted first (which frees their
//! natural keys); then each chunk is translated (the peer's relation ids to
//! local ids), validated object by object (a bad object is skipped with a
//! warning, the rest goes on), checked for natural-key conflicts, diffed
//! against its cached rows and written with multi-row statements; on a full
//! dump, an object whose digest as received equals its cached row's (and
//! whose site and creator are unchanged) is kept without being read or
//! checked again (a key's owner is still decided). Then the memberships
//! (person-keys, slice-nodes, slice-persons, site-persons, person-roles),
//! again in rounds over the spooled persons and slices, each as
//! remove-stale / add-missing for the round's owners. Everything is written in this one pass, so memberships
//! of objects created by this refresh are complete at once.
//!
//! The modules, in the order a refresh goes through them:
//! - `cached`: what is cached from the peer when the refresh begins
//!   ([`CachedIds`]: the whole cache for a full dump, the ids a delta
//!   touches otherwise) and who holds the keys it brings;
//! - this module: [`apply`], which runs the classes in order;
//! - `engine`: one class, chunk by chunk (delete, validate, check
//!   natural keys, diff, write);
//! - `prepare`: a peer's object → its cached fields, validated;
//! - `cascade`: what a class's deletions take with them for the
//!   classes after it;
//! - `relations`: the memberships, reconciled round by round.

mod cached;
mod cascade;
mod engine;
mod prepare;
mod relations;

use foldhash::{HashMap, HashMapExt, HashSet};
use std::time::{Duration, Instant};

use super::report::ReportBuilder;
use super::spool::{ClassSpool, PeerObject, Spool, SpooledClass};
use crate::class::{Class, PerClass};
use crate::error::Result;
use crate::proto::v1 as pb;
use crate::registry::nodes::NodeEnumerations;
use crate::store::DbConn;
use crate::store::cache::{
    self, CachedKeys, CachedNodes, CachedPersons, CachedSites, CachedSlices, Enumeration,
};

pub use cached::{CachedIds, WholeCache};
use cascade::{Cascade, Cascaded, delete_keys_of_gone_persons};
use engine::{Rounds, Settled, Unchanged, sync_class};
use prepare::{KeyChecks, prepare_node, prepare_person, prepare_site, prepare_slice};
use relations::sync_relations;

/// The peer's ids → local ids, per class, as the refresh goes.
#[derive(Debug, Default)]
struct IdMaps {
    /// Per class.
    classes: PerClass<HashMap<i64, i64>>,
    /// The peer's ids of our own local nodes → their ids here.
    local_nodes: HashMap<i64, i64>,
}

/// Applies the spooled dump of peer `peer_id`, whose cache held `cached`
/// when the transaction began, `chunk` objects per round; the caller holds
/// the transaction.
pub async fn apply(
    conn: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    cached: CachedIds,
    chunk: usize,
    report: &mut ReportBuilder,
) -> Result<()> {
    let mut ids = IdMaps::default();
    let touched = cached.touched.as_ref();
    // A delta's scope per class: the ids it touches; `None` for everything.
    let scope = |class: Class| touched.map(|t| t[class].as_slice());
    let mut cached_ids = cached.ids;
    let mut rounds = Rounds {
        chunk,
        delta: spool.is_delta(),
        validating: Duration::ZERO,
        digests: cached.digests,
        unchanged: Unchanged::default(),
        settled: Settled::default(),
        own_nodes: HashSet::default(),
    };
    let mut cascade = Cascade::default();

    ids.classes[Class::Sites] = sync_class::<CachedSites, _>(
        conn,
        peer_id,
        &mut spool.sites,
        (
            std::mem::take(&mut cached_ids[Class::Sites]),
            scope(Class::Sites),
        ),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        prepare_site,
    )
    .await?;

    let key_types = known_values_for(conn, Enumeration::KeyTypes, &spool.keys).await?;
    let owners = &cached.key_owners;
    ids.classes[Class::Keys] = sync_class::<CachedKeys, _>(
        conn,
        peer_id,
        &mut spool.keys,
        (
            std::mem::take(&mut cached_ids[Class::Keys]),
            scope(Class::Keys),
        ),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        KeyChecks {
            key_types: &key_types,
            owners,
        },
    )
    .await?;

    if !spool.persons.is_empty() {
        rounds.settled.roles = cache::known_roles(conn).await?.into_iter().collect();
    }
    ids.classes[Class::Persons] = sync_class::<CachedPersons, _>(
        conn,
        peer_id,
        &mut spool.persons,
        (
            std::mem::take(&mut cached_ids[Class::Persons]),
            scope(Class::Persons),
        ),
        (Cascaded::default(), &mut cascade),
        &mut rounds,
        report,
        prepare_person,
    )
    .await?;
    delete_keys_of_gone_persons(
        conn,
        peer_id,
        &mut cascade,
        owners,
        &mut ids.classes[Class::Keys],
        report,
    )
    .await?;

    let known = match spool.nodes.is_empty() {
        true => NodeEnumerations::default(),
        false => NodeEnumerations::load(conn).await?,
    };
    let site_nodes = Cascaded {
        deleted: std::mem::take(&mut cascade.nodes),
        changed: Vec::new(),
    };
    ids.classes[Class::Nodes] = sync_class::<CachedNodes, _>(
        conn,
        peer_id,
        &mut spool.nodes,
        (
            std::mem::take(&mut cached_ids[Class::Nodes]),
            scope(Class::Nodes),
        ),
        (site_nodes, &mut cascade),
        &mut rounds,
        report,
        |node, digest, report: &mut ReportBuilder| {
            prepare_node(node, digest, &ids.classes[Class::Sites], &known, report)
        },
    )
    .await?;

    let started = Instant::now();
    (ids.local_nodes, rounds.own_nodes) =
        map_local_nodes(conn, &mut spool.peer_nodes, report).await?;
    report.timer("local_nodes", started.elapsed());

    let instantiations = known_values_for(conn, Enumeration::Instantiations, &spool.slices).await?;
    // A slice's name starts with its site's login_base, as cached now.
    let login_bases = match spool.slices.is_empty() {
        true => HashMap::new(),
        false => cache::login_bases(conn, peer_id, scope(Class::Sites)).await?,
    };
    let site_slices = Cascaded {
        deleted: std::mem::take(&mut cascade.slices),
        changed: std::mem::take(&mut cascade.slices_losing_creator),
    };
    ids.classes[Class::Slices] = sync_class::<CachedSlices, _>(
        conn,
        peer_id,
        &mut spool.slices,
        (
            std::mem::take(&mut cached_ids[Class::Slices]),
            scope(Class::Slices),
        ),
        (site_slices, &mut cascade),
        &mut rounds,
        report,
        |slice, digest, report: &mut ReportBuilder| {
            prepare_slice(slice, digest, &ids, &login_bases, &instantiations, report)
        },
    )
    .await?;
    report.timer("validate", rounds.validating);

    sync_relations(conn, peer_id, spool, &rounds, &ids, report).await
}

/// The values of `enumeration` that objects of `class` are checked
/// against; none read when the class brought no object (a small delta).
async fn known_values_for<T: PeerObject>(
    conn: &mut DbConn,
    enumeration: Enumeration,
    class: &ClassSpool<T>,
) -> Result<std::collections::HashSet<String>> {
    match class.is_empty() {
        true => Ok(std::collections::HashSet::new()),
        false => cache::known_values(conn, enumeration).await,
    }
}

/// `PeerNodes`: the peer's ids of our own nodes → our ids, keeping only
/// the nodes this registry exports (local, without a slice whitelist): a
/// peer may place its slices only on nodes it was given. Also the peer's
/// ids of all the nodes claimed.
async fn map_local_nodes(
    conn: &mut DbConn,
    spool: &mut ClassSpool<pb::PeerNode>,
    report: &mut ReportBuilder,
) -> Result<(HashMap<i64, i64>, HashSet<i64>)> {
    let mut claims = Vec::with_capacity(spool.len());
    spool.for_each(|n| claims.push((n.node_id, n.peer_node_id)))?;
    let claimed_ids = claims.iter().map(|&(node_id, _)| node_id).collect();
    let claimed: Vec<i64> = claims.iter().map(|&(_, local)| local).collect();
    let exported = cache::exported_node_ids(conn, &claimed).await?;
    let mut out = HashMap::with_capacity(claims.len());
    for (node_id, peer_node_id) in claims {
        if exported.contains(&peer_node_id) {
            out.insert(node_id, peer_node_id);
        } else {
            report.warn(
                "peer_nodes",
                node_id,
                "",
                format!("node {peer_node_id} is not a node this registry exports"),
            );
        }
    }
    Ok((out, claimed_ids))
}
