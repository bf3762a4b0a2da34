//! Lookups among a peer's cached rows during a refresh: what goes with
//! deleted sites and persons, ids at the peer of local rows, login_bases,
//! natural keys moved aside ([`park`]) and the planner's statistics.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::batch::CHUNK;
use super::classes::CachedClass;
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::store::schema::{nodes, persons, sites, slices};
use crate::store::{Db, DbConn};
use crate::with_db;

/// Moves the natural keys of a peer's cached rows out of the way, within
/// the refresh's transaction: each becomes a placeholder that no valid
/// key can equal (`#parked.<peer>.<peer's id>`), freeing its key for
/// another of the peer's objects that took it (a rename, a swap, a
/// chain). The row keeps its local id and memberships; the refresh
/// writes its own new key later, or deletes it.
///
/// Only integers reach the SQL text.
pub async fn park<K: CachedClass>(
    conn: &mut DbConn,
    peer_id: i64,
    peer_object_ids: &[i64],
) -> Result<()> {
    let (table, key, peer_col) = (K::TABLE, K::NATURAL_KEY, K::PEER_COLUMN);
    for chunk in peer_object_ids.chunks(CHUNK) {
        let ids: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "UPDATE {table} SET {key} = '#parked.' || CAST(peer_id AS TEXT) || '.' || CAST({peer_col} AS TEXT) \
             WHERE peer_id = {peer_id} AND {peer_col} IN ({})",
            ids.join(",")
        );
        with_db!(conn, |c| c.batch_execute(&sql).await)?;
    }
    Ok(())
}

/// A peer's cached nodes and slices at the given (local) sites, which go
/// with them when they are deleted: the peer's ids of the nodes, then of
/// the slices.
pub async fn cached_at_sites(
    conn: &mut DbConn,
    peer_id: i64,
    site_ids: &[i64],
) -> Result<(Vec<i64>, Vec<i64>)> {
    let (mut node_ids, mut slice_ids) = (Vec::new(), Vec::new());
    for chunk in site_ids.chunks(CHUNK) {
        let found: Vec<i64> = with_db!(conn, |c| {
            nodes::table
                .filter(nodes::peer_id.eq(peer_id))
                .filter(in_list(nodes::site_id, chunk))
                .select(nodes::peer_node_id.assume_not_null())
                .load(c)
                .await
        })?;
        node_ids.extend(found);
        let found: Vec<i64> = with_db!(conn, |c| {
            slices::table
                .filter(slices::peer_id.eq(peer_id))
                .filter(in_list(slices::site_id, chunk))
                .select(slices::peer_slice_id.assume_not_null())
                .load(c)
                .await
        })?;
        slice_ids.extend(found);
    }
    Ok((node_ids, slice_ids))
}

/// The peer's ids of a peer's cached slices created by one of the given
/// (local) persons, whose creator the database sets to null when those go.
pub async fn cached_slices_created_by(
    conn: &mut DbConn,
    peer_id: i64,
    person_ids: &[i64],
) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for chunk in person_ids.chunks(CHUNK) {
        let found: Vec<i64> = with_db!(conn, |c| {
            slices::table
                .filter(slices::peer_id.eq(peer_id))
                .filter(in_list(slices::creator_person_id, chunk))
                .select(slices::peer_slice_id.assume_not_null())
                .load(c)
                .await
        })?;
        out.extend(found);
    }
    Ok(out)
}

/// A row's local id and its id at its peer.
#[derive(QueryableByName)]
pub(super) struct IdPair {
    #[diesel(sql_type = BigInt)]
    local: i64,
    #[diesel(sql_type = BigInt)]
    peer: i64,
}

/// The peer's ids of rows cached from peer `peer_id` among the local
/// `ids`: local id → the peer's id. Only integers reach the SQL text.
pub async fn peer_ids_of<K: CachedClass>(
    conn: &mut DbConn,
    peer_id: i64,
    ids: &[i64],
) -> Result<HashMap<i64, i64>> {
    let (table, id, peer_col) = (K::TABLE, K::ID_COLUMN, K::PEER_COLUMN);
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT {id} AS local, {peer_col} AS peer FROM {table} \
             WHERE peer_id = {peer_id} AND {id} IN ({})",
            list.join(",")
        );
        let rows: Vec<IdPair> = with_db!(conn, |c| diesel::sql_query(&sql).load(c).await)?;
        found.extend(rows.into_iter().map(|r| (r.local, r.peer)));
    }
    Ok(found)
}

/// Refreshes the planner's statistics of a cached class's table after it
/// grew within the open transaction (PostgreSQL; SQLite plans without
/// them).
///
/// Statistics gathered while a table was small make PostgreSQL plan the
/// lookups of the next rounds as if it still were (a scan of the peer's
/// rows with a filter instead of the natural key's index), so a large
/// first refresh would slow down round after round. ANALYZE inside the
/// transaction samples its own uncommitted rows too.
pub async fn refresh_statistics<K: CachedClass>(conn: &mut DbConn) -> Result<()> {
    if let Db::Pg(c) = conn.db() {
        c.batch_execute(&format!("ANALYZE {}", K::TABLE)).await?;
    }
    Ok(())
}

/// The login_bases of a peer's cached sites, all of them or those among
/// `peer_site_ids`: peer's site id → login_base.
pub async fn login_bases(
    conn: &mut DbConn,
    peer_id: i64,
    peer_site_ids: Option<&[i64]>,
) -> Result<HashMap<i64, String>> {
    let mut out = HashMap::new();
    let chunks: Vec<Option<&[i64]>> = match peer_site_ids {
        None => vec![None],
        Some(ids) => ids.chunks(CHUNK).map(Some).collect(),
    };
    for chunk in chunks {
        let rows: Vec<(i64, String)> = with_db!(conn, |c| {
            let mut query = sites::table
                .filter(sites::peer_id.eq(peer_id))
                .select((sites::peer_site_id.assume_not_null(), sites::login_base))
                .into_boxed();
            if let Some(ids) = chunk {
                query = query.filter(in_list(sites::peer_site_id, ids));
            }
            query.load(c).await
        })?;
        out.extend(rows);
    }
    Ok(out)
}

/// Which of `person_ids` are persons cached from peer `peer_id`.
pub async fn persons_of_peer(
    conn: &mut DbConn,
    peer_id: i64,
    person_ids: &[i64],
) -> Result<HashSet<i64>> {
    let mut found = HashSet::new();
    for chunk in person_ids.chunks(CHUNK) {
        let ids: Vec<i64> = with_db!(conn, |c| {
            persons::table
                .filter(persons::peer_id.eq(peer_id))
                .filter(in_list(persons::person_id, chunk))
                .select(persons::person_id)
                .load(c)
                .await
        })?;
        found.extend(ids);
    }
    Ok(found)
}

/// A peer's nodes as cached here: (local id, the peer's id), by local id.
pub async fn nodes_of_peer(
    conn: &mut DbConn,
    peer_id: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, i64)>> {
    Ok(with_db!(conn, |c| {
        nodes::table
            .filter(nodes::peer_id.eq(peer_id))
            .filter(nodes::node_id.gt(after_id))
            .order(nodes::node_id)
            .limit(limit)
            .select((nodes::node_id, nodes::peer_node_id.assume_not_null()))
            .load(c)
            .await
    })?)
}
