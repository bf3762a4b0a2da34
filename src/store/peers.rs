//! Peer registries: where they are, how to authenticate to them, and the
//! outcome of their last refresh.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::schema::peers;
use crate::error::{Error, Result};
use crate::with_db;

/// A stored peer.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = peers)]
pub struct PeerRow {
    /// Id.
    pub peer_id: i64,
    /// Unique name.
    pub peername: String,
    /// gRPC endpoint.
    pub peer_url: String,
    /// PEM CA certificate for https.
    pub cacert: Option<String>,
    /// Token presented to the peer.
    pub outbound_token: Option<String>,
    /// Short name.
    pub shortname: String,
    /// Name root.
    pub hrn_root: String,
    /// Seconds between scheduled refreshes; 0 for none.
    pub refresh_interval_seconds: i64,
    /// Mass-delete threshold; `None` for the server default.
    pub max_delete_fraction: Option<f64>,
    /// Unix seconds.
    pub date_created: i64,
    /// Unix seconds.
    pub last_refresh_time: Option<i64>,
    /// `RefreshOutcome` value.
    pub last_refresh_outcome: i32,
    /// Encoded `RefreshReport`.
    pub last_refresh_report: Option<Vec<u8>>,
    /// The peer's epoch of the checkpoint.
    pub checkpoint_epoch: Option<String>,
    /// The peer's revision the cache reflects.
    pub checkpoint_revision: Option<i64>,
    /// Whether a follow stream applies the peer's changes as they are
    /// committed (instead of the refresh schedule).
    pub follow: bool,
    /// Identity a verified TLS client certificate must name for calls with
    /// this peer's tokens; `None` when none is required.
    pub client_identity: Option<String>,
    /// Unix seconds of the last refresh that applied; `None` until one does.
    pub last_success_time: Option<i64>,
}

impl PeerRow {
    /// The checkpoint a delta refresh starts from; `None` when the next
    /// refresh is a full one.
    pub fn checkpoint(&self) -> Option<(String, i64)> {
        Some((self.checkpoint_epoch.clone()?, self.checkpoint_revision?))
    }
}

/// The peer with id `peer_id`, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, peer_id: i64) -> Result<PeerRow> {
    with_db!(conn, |c| {
        peers::table
            .find(peer_id)
            .select(PeerRow::as_select())
            .first(c)
            .await
            .optional()
    })?
    .ok_or_else(|| Error::not_found("peer", "peer_id", peer_id))
}

/// The name of peer `peer_id` and the client certificate identity its
/// callers must present; `None` when the peer does not exist.
pub async fn client_requirement(
    conn: &mut DbConn,
    peer_id: i64,
) -> Result<Option<(String, Option<String>)>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .find(peer_id)
            .select((peers::peername, peers::client_identity))
            .first(c)
            .await
            .optional()
    })?)
}

/// A new peer row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = peers, treat_none_as_default_value = false)]
pub struct NewPeer {
    /// Unique name.
    pub peername: String,
    /// gRPC endpoint.
    pub peer_url: String,
    /// PEM CA certificate for https.
    pub cacert: Option<String>,
    /// Token presented to the peer.
    pub outbound_token: Option<String>,
    /// Short name.
    pub shortname: String,
    /// Name root.
    pub hrn_root: String,
    /// Seconds between scheduled refreshes; 0 for none.
    pub refresh_interval_seconds: i64,
    /// Mass-delete threshold; `None` for the server default.
    pub max_delete_fraction: Option<f64>,
    /// Unix seconds.
    pub date_created: i64,
    /// `RefreshOutcome` value (unspecified until the first refresh).
    pub last_refresh_outcome: i32,
    /// Whether the peer is followed.
    pub follow: bool,
    /// Required client certificate identity.
    pub client_identity: Option<String>,
}

/// Changes to a peer; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = peers)]
pub struct PeerChanges {
    /// Unique name.
    pub peername: Option<String>,
    /// gRPC endpoint.
    pub peer_url: Option<String>,
    /// PEM CA certificate; `Some(None)` removes it.
    pub cacert: Option<Option<String>>,
    /// Outbound token; `Some(None)` removes it.
    pub outbound_token: Option<Option<String>>,
    /// Short name.
    pub shortname: Option<String>,
    /// Name root.
    pub hrn_root: Option<String>,
    /// Seconds between scheduled refreshes.
    pub refresh_interval_seconds: Option<i64>,
    /// Mass-delete threshold; `Some(None)` for the server default.
    pub max_delete_fraction: Option<Option<f64>>,
    /// Whether the peer is followed.
    pub follow: Option<bool>,
    /// Required client certificate identity; `Some(None)` removes it.
    pub client_identity: Option<Option<String>>,
}

/// The outcome of a refresh, as recorded on the peer.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = peers, treat_none_as_null = true)]
pub struct RefreshRecord {
    /// Unix seconds.
    pub last_refresh_time: Option<i64>,
    /// `RefreshOutcome` value.
    pub last_refresh_outcome: i32,
    /// Encoded `RefreshReport`.
    pub last_refresh_report: Option<Vec<u8>>,
}

/// Inserts a peer; returns the stored row.
pub async fn insert(conn: &mut DbConn, peer: &NewPeer) -> Result<PeerRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(peers::table)
            .values(peer)
            .returning(PeerRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// The peer named `peername`.
pub async fn by_name(conn: &mut DbConn, peername: &str) -> Result<Option<PeerRow>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .filter(peers::peername.eq(peername))
            .select(PeerRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Up to `limit` peers with ids above `after_id`, by id.
pub async fn list(conn: &mut DbConn, after_id: i64, limit: i64) -> Result<Vec<PeerRow>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .filter(peers::peer_id.gt(after_id))
            .order(peers::peer_id)
            .limit(limit)
            .select(PeerRow::as_select())
            .load(c)
            .await
    })?)
}

/// Every peer refreshed on a schedule (followed peers are not).
pub async fn scheduled(conn: &mut DbConn) -> Result<Vec<PeerRow>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .filter(peers::refresh_interval_seconds.gt(0))
            .filter(peers::follow.eq(false))
            .select(PeerRow::as_select())
            .load(c)
            .await
    })?)
}

/// Every followed peer.
pub async fn followed(conn: &mut DbConn) -> Result<Vec<PeerRow>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .filter(peers::follow.eq(true))
            .select(PeerRow::as_select())
            .load(c)
            .await
    })?)
}

/// How fresh one peer's cache is, for the metrics.
#[derive(Debug, Clone, Queryable)]
pub struct Freshness {
    /// Id.
    pub peer_id: i64,
    /// Unique name.
    pub peername: String,
    /// Unix seconds of the last refresh that applied; `None` until one does.
    pub last_success_time: Option<i64>,
}

/// The freshness of every peer, by id.
pub async fn freshness(conn: &mut DbConn) -> Result<Vec<Freshness>> {
    Ok(with_db!(conn, |c| {
        peers::table
            .order(peers::peer_id)
            .select((peers::peer_id, peers::peername, peers::last_success_time))
            .load(c)
            .await
    })?)
}

/// Applies `changes` to a peer; returns the new row.
pub async fn update(conn: &mut DbConn, peer_id: i64, changes: &PeerChanges) -> Result<PeerRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(peers::table.find(peer_id))
            .set(changes)
            .returning(PeerRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Records the outcome of a refresh.
pub async fn record_refresh(conn: &mut DbConn, peer_id: i64, record: &RefreshRecord) -> Result<()> {
    with_db!(conn, |c| {
        diesel::update(peers::table.find(peer_id))
            .set(record)
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Records an applied refresh (its time is the peer's last success) and
/// the checkpoint (the peer's epoch and revision) the cache now reflects,
/// in one statement; `None` makes the next refresh a full one.
pub async fn record_applied(
    conn: &mut DbConn,
    peer_id: i64,
    record: &RefreshRecord,
    checkpoint: Option<(&str, i64)>,
) -> Result<()> {
    let (epoch, revision) = checkpoint.unzip();
    with_db!(conn, |c| {
        diesel::update(peers::table.find(peer_id))
            .set((
                record,
                peers::last_success_time.eq(record.last_refresh_time),
                peers::checkpoint_epoch.eq(epoch),
                peers::checkpoint_revision.eq(revision),
            ))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Deletes a peer; everything cached from it and its tokens go with it
/// (cascades).
pub async fn delete(conn: &mut DbConn, peer_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(peers::table.find(peer_id)).execute(c).await
    })?)
}
