//! Peers: the registries this one federates with, managed by admins.
//!
//! A peer record says where the peer serves (`peer_url`, `http://` or
//! `https://` with the peer's CA certificate), which token to present to it
//! (the outbound token, stored but never returned), which identity the
//! peer's callers must prove with a TLS client certificate (the client
//! identity, checked by the auth layer) and how it is refreshed.
//! Deleting a peer removes everything cached from it, and its tokens, in one
//! transaction.
//!
//! What the follow tasks know of a peer (its [`pb::FollowStatus`]) and the
//! poke they need when peer records change come through [`Following`],
//! which the follow supervisor implements: every change of a peer record
//! tells it.

use prost::Message;

use super::validate::{
    cacert, client_identity, hrn_root, max_delete_fraction, outbound_token, peer_url, peername,
    plaintext_warning, refresh_interval, shortname,
};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry;
use crate::store::peers::{self, NewPeer, PeerChanges, PeerRow};
use crate::store::{DbConn, Store, cache, now};

/// Largest page of a peer listing.
const MAX_PAGE_SIZE: i32 = 1000;

/// What the operations on peer records need of the follow tasks.
pub trait Following: Send + Sync {
    /// Where following the peer stands, when a task follows it.
    fn status(&self, peer_id: i64) -> Option<pb::FollowStatus>;
    /// Peer records changed (created, updated, deleted): start or stop
    /// following at once.
    fn peers_changed(&self);
}

/// A peer of this registry, named by its id or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKey {
    /// Id in this registry.
    Id(i64),
    /// Name.
    Name(String),
}

impl PeerKey {
    /// An id when `text` is a number, else a name.
    pub fn parse(text: &str) -> PeerKey {
        text.trim()
            .parse()
            .map_or_else(|_| PeerKey::Name(text.trim().to_owned()), PeerKey::Id)
    }

    /// The key a request's oneof `field` holds, or INVALID_ARGUMENT when
    /// it holds none.
    pub fn required(field: &'static str, key: Option<impl Into<PeerKey>>) -> Result<PeerKey> {
        key.map(Into::into)
            .ok_or_else(|| Error::invalid(field, "", "set peer_id or peername"))
    }
}

impl From<PeerKey> for pb::get_peer_request::Key {
    fn from(key: PeerKey) -> Self {
        match key {
            PeerKey::Id(id) => Self::PeerId(id),
            PeerKey::Name(name) => Self::Peername(name),
        }
    }
}

impl From<PeerKey> for pb::refresh_peer_request::Peer {
    fn from(key: PeerKey) -> Self {
        match key {
            PeerKey::Id(id) => Self::PeerId(id),
            PeerKey::Name(name) => Self::Peername(name),
        }
    }
}

impl From<pb::get_peer_request::Key> for PeerKey {
    fn from(key: pb::get_peer_request::Key) -> Self {
        match key {
            pb::get_peer_request::Key::PeerId(id) => PeerKey::Id(id),
            pb::get_peer_request::Key::Peername(name) => PeerKey::Name(name),
        }
    }
}

impl From<pb::refresh_peer_request::Peer> for PeerKey {
    fn from(key: pb::refresh_peer_request::Peer) -> Self {
        match key {
            pb::refresh_peer_request::Peer::PeerId(id) => PeerKey::Id(id),
            pb::refresh_peer_request::Peer::Peername(name) => PeerKey::Name(name),
        }
    }
}

/// The message of a stored peer, with the counts of what is cached from it
/// and, for a followed peer, where following it stands.
pub async fn load(conn: &mut DbConn, followers: &dyn Following, row: PeerRow) -> Result<pb::Peer> {
    let counts = cache::counts(conn, row.peer_id).await?;
    let last_refresh_report = row
        .last_refresh_report
        .as_deref()
        .and_then(|bytes| pb::RefreshReport::decode(bytes).ok());
    let mode = match (row.follow, row.refresh_interval_seconds) {
        (true, _) => pb::SyncMode::Follow,
        (false, 0) => pb::SyncMode::Manual,
        (false, _) => pb::SyncMode::Scheduled,
    };
    let follow_status = match row.follow {
        true => Some(
            followers
                .status(row.peer_id)
                .unwrap_or_else(|| pb::FollowStatus {
                    applied_revision: row.checkpoint_revision.unwrap_or(0),
                    ..Default::default()
                }),
        ),
        false => None,
    };
    Ok(pb::Peer {
        follow: row.follow,
        client_identity: row.client_identity.unwrap_or_default(),
        mode: mode as i32,
        follow_status,
        peer_id: row.peer_id,
        peername: row.peername,
        peer_url: row.peer_url,
        cacert: row.cacert.unwrap_or_default(),
        has_outbound_token: row.outbound_token.is_some(),
        shortname: row.shortname,
        hrn_root: row.hrn_root,
        refresh_interval_seconds: row.refresh_interval_seconds,
        max_delete_fraction: row.max_delete_fraction,
        date_created: registry::timestamp(row.date_created),
        last_refresh_time: row.last_refresh_time.and_then(registry::timestamp),
        last_refresh_outcome: row.last_refresh_outcome,
        last_refresh_report,
        checkpoint_revision: row.checkpoint_revision,
        cached: Some(counts.into()),
    })
}

/// The peer with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, peer_id: i64) -> Result<PeerRow> {
    peers::require(conn, peer_id).await
}

/// The peer with this name, if there is one.
pub async fn named(conn: &mut DbConn, peername: &str) -> Result<Option<PeerRow>> {
    peers::by_name(conn, peername).await
}

/// The peer with this name, or NOT_FOUND.
pub async fn require_named(conn: &mut DbConn, peername: &str) -> Result<PeerRow> {
    named(conn, peername)
        .await?
        .ok_or_else(|| Error::not_found("peer", "peername", peername))
}

/// The peer `key` names, or NOT_FOUND.
pub async fn resolve(conn: &mut DbConn, key: &PeerKey) -> Result<PeerRow> {
    match key {
        PeerKey::Id(id) => require(conn, *id).await,
        PeerKey::Name(name) => require_named(conn, name).await,
    }
}

/// Logs [`plaintext_warning`] for `url`, if any.
fn warn_plaintext(url: &str) {
    if let Some(warning) = plaintext_warning(url) {
        tracing::warn!("{warning}");
    }
}

/// ALREADY_EXISTS when a peer is named `name`.
pub async fn ensure_name_free(conn: &mut DbConn, name: &str) -> Result<()> {
    match peers::by_name(conn, name).await? {
        Some(_) => Err(Error::exists("peername", name)),
        None => Ok(()),
    }
}

/// Creates a peer.
pub async fn create(
    store: &Store,
    followers: &dyn Following,
    req: pb::CreatePeerRequest,
) -> Result<pb::Peer> {
    let peer = NewPeer {
        peername: peername(&req.peername)?,
        peer_url: peer_url(&req.peer_url)?,
        cacert: cacert(&req.cacert)?,
        outbound_token: outbound_token(&req.outbound_token)?,
        shortname: shortname(&req.shortname)?,
        hrn_root: hrn_root(&req.hrn_root)?,
        refresh_interval_seconds: refresh_interval(req.refresh_interval_seconds)?,
        max_delete_fraction: req
            .max_delete_fraction
            .map(max_delete_fraction)
            .transpose()?,
        date_created: now(),
        last_refresh_outcome: pb::RefreshOutcome::Unspecified as i32,
        follow: req.follow,
        client_identity: client_identity(&req.client_identity)?,
    };
    warn_plaintext(&peer.peer_url);
    let mut conn = store.write().await?;
    let created = conn
        .transaction(|c| {
            Box::pin(async move {
                ensure_name_free(c, &peer.peername).await?;
                let row = peers::insert(c, &peer).await?;
                load(c, followers, row).await
            })
        })
        .await?;
    followers.peers_changed();
    Ok(created)
}

/// Gets a peer by id or name.
pub async fn get(
    store: &Store,
    followers: &dyn Following,
    req: pb::GetPeerRequest,
) -> Result<pb::Peer> {
    let key = PeerKey::required("key", req.key)?;
    let mut conn = store.read().await?;
    let row = resolve(&mut conn, &key).await?;
    load(&mut conn, followers, row).await
}

/// Lists peers.
pub async fn list(
    store: &Store,
    followers: &dyn Following,
    req: pb::ListPeersRequest,
) -> Result<pb::ListPeersResponse> {
    let page = registry::page(&pb::ListRequest {
        page_size: req.page_size.min(MAX_PAGE_SIZE),
        page_token: req.page_token,
        ..Default::default()
    })?;
    let mut conn = store.read().await?;
    let rows = peers::list(&mut conn, page.after_id, page.limit).await?;
    let last = rows.last().map(|r| r.peer_id);
    let next_page_token = registry::next_page_token(&page, rows.len(), last);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(load(&mut conn, followers, row).await?);
    }
    Ok(pb::ListPeersResponse {
        peers: out,
        next_page_token,
    })
}

/// Changes a peer.
pub async fn update(
    store: &Store,
    followers: &dyn Following,
    req: pb::UpdatePeerRequest,
) -> Result<pb::Peer> {
    let changes = PeerChanges {
        peername: req.peername.as_deref().map(peername).transpose()?,
        peer_url: req.peer_url.as_deref().map(peer_url).transpose()?,
        cacert: req.cacert.as_deref().map(cacert).transpose()?,
        outbound_token: req
            .outbound_token
            .as_deref()
            .map(outbound_token)
            .transpose()?,
        shortname: req.shortname.as_deref().map(shortname).transpose()?,
        hrn_root: req.hrn_root.as_deref().map(hrn_root).transpose()?,
        refresh_interval_seconds: req
            .refresh_interval_seconds
            .map(refresh_interval)
            .transpose()?,
        max_delete_fraction: req
            .max_delete_fraction
            .map(max_delete_fraction)
            .transpose()?
            .map(Some),
        follow: req.follow,
        client_identity: req
            .client_identity
            .as_deref()
            .map(client_identity)
            .transpose()?,
    };
    if let Some(url) = &changes.peer_url {
        warn_plaintext(url);
    }
    let mut conn = store.write().await?;
    let updated = conn
        .transaction(|c| {
            Box::pin(async move {
                let current = require(c, req.peer_id).await?;
                if let Some(name) = &changes.peername
                    && *name != current.peername
                {
                    ensure_name_free(c, name).await?;
                }
                let row = peers::update(c, req.peer_id, &changes).await?;
                load(c, followers, row).await
            })
        })
        .await?;
    followers.peers_changed();
    Ok(updated)
}

/// Deletes a peer and everything cached from it; returns what was removed.
pub async fn delete(
    store: &Store,
    followers: &dyn Following,
    req: pb::DeletePeerRequest,
) -> Result<pb::DeletePeerResponse> {
    let mut conn = store.write().await?;
    let removed = conn
        .transaction(|c| {
            Box::pin(async move {
                require(c, req.peer_id).await?;
                let counts = cache::counts(c, req.peer_id).await?;
                peers::delete(c, req.peer_id).await?;
                Ok::<_, Error>(pb::DeletePeerResponse {
                    removed: Some(counts.into()),
                })
            })
        })
        .await?;
    followers.peers_changed();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls() {
        assert_eq!(
            peer_url("http://127.0.0.1:50051/").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert!(peer_url("https://plc.example.org:443").is_ok());
        for bad in ["", "127.0.0.1:50051", "ftp://x", "http://"] {
            let err = peer_url(bad).unwrap_err().to_string();
            assert!(err.contains("peer_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn peer_keys() {
        assert_eq!(PeerKey::parse("12"), PeerKey::Id(12));
        assert_eq!(PeerKey::parse(" plc2 "), PeerKey::Name("plc2".into()));
        assert_eq!(PeerKey::parse("12a"), PeerKey::Name("12a".into()));
        let none: Option<pb::get_peer_request::Key> = None;
        assert!(PeerKey::required("key", none).is_err());
    }

    #[test]
    fn peer_names_and_limits() {
        assert_eq!(peername(" plc2 ").unwrap(), "plc2");
        assert!(peername("a b").is_err());
        assert!(refresh_interval(5).is_err());
        assert!(refresh_interval(0).is_ok());
        assert!(max_delete_fraction(1.5).is_err());
        assert!(cacert("garbage").is_err());
        assert_eq!(client_identity(" ").unwrap(), None);
        assert!(client_identity("plc\n2").is_err());
    }

    #[test]
    fn plaintext_warnings() {
        for quiet in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051",
            "https://plc.example.org:443",
        ] {
            assert_eq!(plaintext_warning(quiet), None, "{quiet}");
        }
        for loud in ["http://plc.example.org:50051", "http://10.0.0.2:50051"] {
            let warning = plaintext_warning(loud).expect(loud);
            assert!(
                warning.contains(loud) && warning.contains("https://"),
                "{warning}"
            );
        }
        assert_eq!(cacert("").unwrap(), None);
    }
}
