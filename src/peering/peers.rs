//! Peers: the registries this one federates with, managed by admins.
//!
//! A peer record says where the peer serves (`peer_url`, `http://` or
//! `https://` with the peer's CA certificate), which token to present to it
//! (the outbound token, stored but never returned), which identity the
//! peer's callers must prove with a TLS client certificate (the client
//! identity, checked by the auth layer) and how it is refreshed.
//! Deleting a peer removes everything cached from it, and its tokens, in one
//! transaction.

use prost::Message;

use super::follow::Followers;
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, validate};
use crate::store::peers::{self, NewPeer, PeerChanges, PeerRow};
use crate::store::{DbConn, Store, cache, now};

/// Largest page of a peer listing.
const MAX_PAGE_SIZE: i32 = 1000;

/// The message of a stored peer, with the counts of what is cached from it
/// and, for a followed peer, where following it stands.
pub async fn load(conn: &mut DbConn, followers: &Followers, row: PeerRow) -> Result<pb::Peer> {
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

/// The peer with this name, or NOT_FOUND.
pub async fn require_named(conn: &mut DbConn, peername: &str) -> Result<PeerRow> {
    peers::by_name(conn, peername)
        .await?
        .ok_or_else(|| Error::not_found("peer", "peername", peername))
}

/// A peer name: letters, digits, `-`, `_` and `.`, 1 to 64 long.
fn peername(value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() || v.len() > 64 {
        return Err(Error::invalid(
            "peername",
            value,
            "must be 1 to 64 characters",
        ));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(
            "peername",
            value,
            "only letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(v.to_owned())
}

/// A peer URL: `http://host:port` or `https://host:port`.
fn peer_url(value: &str) -> Result<String> {
    let v = value.trim();
    let uri: http::Uri = v
        .parse()
        .map_err(|e| Error::invalid("peer_url", value, format!("not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(v.trim_end_matches('/').to_owned()),
        _ => Err(Error::invalid(
            "peer_url",
            value,
            "must be http://host:port or https://host:port",
        )),
    }
}

/// An optional PEM CA certificate.
fn cacert(value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_CACERT {
        return Err(Error::invalid(
            "cacert",
            v,
            format!("must be at most {MAX_CACERT} bytes"),
        ));
    }
    if !v.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::invalid(
            "cacert",
            v.chars().take(40).collect::<String>(),
            "must be a PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// Why a peer URL deserves a warning: plain `http://` to a host that is not
/// this machine sends the outbound token and the peer's data in clear text.
pub fn plaintext_warning(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "peer_url {url} is plain http:// to another host: the outbound token and the \
             peer's data cross the network unencrypted; use https://"
        )
    })
}

/// An optional client certificate identity (a subject CN or a DNS, IP or
/// URI name): empty means none.
fn client_identity(value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > 255 || v.chars().any(char::is_control) {
        return Err(Error::invalid(
            "client_identity",
            v.chars().take(40).collect::<String>(),
            "must be at most 255 characters, without control characters",
        ));
    }
    Ok(Some(v.to_owned()))
}

/// Longest outbound token and CA certificate accepted.
const MAX_OUTBOUND_TOKEN: usize = 1024;
const MAX_CACERT: usize = 64 * 1024;

/// An optional outbound token: empty means none; at most
/// [`MAX_OUTBOUND_TOKEN`] printable characters (it goes in a header).
fn outbound_token(value: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.len() > MAX_OUTBOUND_TOKEN || v.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(
            "outbound_token",
            "<secret>",
            format!("must be at most {MAX_OUTBOUND_TOKEN} printable characters without spaces"),
        ));
    }
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// Seconds between scheduled refreshes: 0 (none) or at least 10.
fn refresh_interval(value: i64) -> Result<i64> {
    if value == 0 || (10..=7 * 24 * 3600).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "refresh_interval_seconds",
            value,
            "must be 0 (no schedule) or between 10 and 604800",
        ))
    }
}

/// A mass-delete threshold: a fraction between 0 and 1.
fn max_delete_fraction(value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "max_delete_fraction",
            value,
            "must be between 0 and 1",
        ))
    }
}

/// Logs [`plaintext_warning`] for `url`, if any.
fn warn_plaintext(url: &str) {
    if let Some(warning) = plaintext_warning(url) {
        tracing::warn!("{warning}");
    }
}

async fn ensure_name_free(conn: &mut DbConn, name: &str) -> Result<()> {
    match peers::by_name(conn, name).await? {
        Some(_) => Err(Error::exists("peername", name)),
        None => Ok(()),
    }
}

/// Creates a peer.
pub async fn create(
    store: &Store,
    followers: &Followers,
    req: pb::CreatePeerRequest,
) -> Result<pb::Peer> {
    let peer = NewPeer {
        peername: peername(&req.peername)?,
        peer_url: peer_url(&req.peer_url)?,
        cacert: cacert(&req.cacert)?,
        outbound_token: outbound_token(&req.outbound_token)?,
        shortname: validate::optional_text("shortname", &req.shortname, 32)?,
        hrn_root: validate::optional_text("hrn_root", &req.hrn_root, 64)?,
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
    conn.transaction(|c| {
        Box::pin(async move {
            ensure_name_free(c, &peer.peername).await?;
            let row = peers::insert(c, &peer).await?;
            load(c, followers, row).await
        })
    })
    .await
}

/// Gets a peer by id or name.
pub async fn get(
    store: &Store,
    followers: &Followers,
    req: pb::GetPeerRequest,
) -> Result<pb::Peer> {
    let mut conn = store.read().await?;
    let row = match req.key {
        Some(pb::get_peer_request::Key::PeerId(id)) => require(&mut conn, id).await?,
        Some(pb::get_peer_request::Key::Peername(name)) => require_named(&mut conn, &name).await?,
        None => return Err(Error::invalid("key", "", "set peer_id or peername")),
    };
    load(&mut conn, followers, row).await
}

/// Lists peers.
pub async fn list(
    store: &Store,
    followers: &Followers,
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
    followers: &Followers,
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
        shortname: req
            .shortname
            .as_deref()
            .map(|v| validate::optional_text("shortname", v, 32))
            .transpose()?,
        hrn_root: req
            .hrn_root
            .as_deref()
            .map(|v| validate::optional_text("hrn_root", v, 64))
            .transpose()?,
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
    conn.transaction(|c| {
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
    .await
}

/// Deletes a peer and everything cached from it; returns what was removed.
pub async fn delete(store: &Store, req: pb::DeletePeerRequest) -> Result<pb::DeletePeerResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require(c, req.peer_id).await?;
            let counts = cache::counts(c, req.peer_id).await?;
            peers::delete(c, req.peer_id).await?;
            Ok(pb::DeletePeerResponse {
                removed: Some(counts.into()),
            })
        })
    })
    .await
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
