//! What a class's deletions take with them for the classes after it: a
//! site's nodes and slices (the database's cascade), a person's keys (a
//! key belongs to its person) and the creator of its slices.

use foldhash::HashMap;

use super::cached::KeyOwners;
use crate::class::Class;
use crate::error::Result;
use crate::peering::report::ReportBuilder;
use crate::store::DbConn;
use crate::store::cache::{self, CachedClass, CachedKeys, PersonKeys, RelationTable};

/// What goes with the objects a class deletes, for the classes after it:
/// a site's nodes and slices (the database's cascade; the peer's ids), a
/// person's keys (a key belongs to its person; local ids).
#[derive(Debug, Default)]
pub(super) struct Cascade {
    pub(super) nodes: Vec<i64>,
    pub(super) slices: Vec<i64>,
    pub(super) keys_of_persons: Vec<i64>,
    /// Slices whose creator went (the database sets it to null): the
    /// peer's ids.
    pub(super) slices_losing_creator: Vec<i64>,
}

/// What an earlier class's deletions did to the cached objects of a class:
/// objects deleted with them, objects changed by them (the peer's ids).
#[derive(Debug, Default)]
pub(super) struct Cascaded {
    pub(super) deleted: Vec<i64>,
    pub(super) changed: Vec<i64>,
}

impl Cascade {
    /// Notes what goes with the cached objects of class `K` whose local ids
    /// are `local_ids`, before they are deleted.
    pub(super) async fn note<K: CachedClass>(
        &mut self,
        conn: &mut DbConn,
        peer_id: i64,
        local_ids: &[i64],
    ) -> Result<()> {
        if local_ids.is_empty() {
            return Ok(());
        }
        if K::CLASS == Class::Sites {
            let (nodes, slices) = cache::cached_at_sites(conn, peer_id, local_ids).await?;
            self.nodes.extend(nodes);
            self.slices.extend(slices);
        } else if K::CLASS == Class::Persons {
            let pairs = PersonKeys::for_owners(conn, local_ids).await?;
            self.keys_of_persons
                .extend(pairs.into_iter().map(|(_, key)| key));
            self.slices_losing_creator
                .extend(cache::cached_slices_created_by(conn, peer_id, local_ids).await?);
        }
        Ok(())
    }
}

/// Deletes the cached keys whose persons this refresh deleted, unless a
/// person of the peer still lists them (a key that moved); counts them in
/// the keys' report.
pub(super) async fn delete_keys_of_gone_persons(
    conn: &mut DbConn,
    peer_id: i64,
    cascade: &mut Cascade,
    owners: &KeyOwners,
    keys: &mut HashMap<i64, i64>,
    report: &mut ReportBuilder,
) -> Result<()> {
    let local = std::mem::take(&mut cascade.keys_of_persons);
    if local.is_empty() {
        return Ok(());
    }
    let gone: Vec<i64> = cache::peer_ids_of::<CachedKeys>(conn, peer_id, &local)
        .await?
        .into_values()
        .filter(|key| !owners.listed.contains(key))
        .collect();
    let deleted = CachedKeys::delete(conn, peer_id, &gone).await?;
    for key in &gone {
        keys.remove(key);
    }
    report.add_cascaded(Class::Keys.name(), deleted);
    Ok(())
}

/// Deletes cached objects of class `K` by the peer's ids, noting first in
/// `cascade` what goes with them; returns how many went.
pub(super) async fn delete_noting<K: CachedClass>(
    conn: &mut DbConn,
    peer_id: i64,
    peer_object_ids: &[i64],
    local_ids: &HashMap<i64, i64>,
    cascade: &mut Cascade,
) -> Result<usize> {
    if peer_object_ids.is_empty() {
        return Ok(0);
    }
    let local: Vec<i64> = peer_object_ids
        .iter()
        .filter_map(|id| local_ids.get(id))
        .copied()
        .collect();
    cascade.note::<K>(conn, peer_id, &local).await?;
    K::delete(conn, peer_id, peer_object_ids).await
}
