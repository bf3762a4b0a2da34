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
