//! Fetching a peer's dump: the client side of `GetPeerData`.
//!
//! Connects to the peer's URL (`http://`, or `https://` verified against
//! the CA certificate stored on the peer record, presenting this
//! registry's client certificate when one is configured), presents the
//! outbound token, and writes the stream to a [`Spool`] as it arrives, so memory
//! stays bounded whatever the dump's size. The dump counts only when it is
//! whole: a stream that ends without its trailer, or whose trailer
//! disagrees with what arrived, or that stalls longer than the idle
//! timeout, is an error, and nothing has been written to the database at
//! that point.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Identity};

use super::spool::{DumpLimits, Spool};
use crate::channel::{self, Authed, Bearer};
use crate::error::{self, Error, Result};
use crate::proto::v1 as pb;
use crate::proto::v1::peering_service_client::PeeringServiceClient;
use crate::store::peers::PeerRow;

/// Largest message accepted from a peer (batches are far smaller).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Bounds on fetching a peer's data: a slow, stuck or endless peer fails
/// its refresh clearly instead of holding it (and its lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest wait for the next message of the stream.
    pub idle_timeout: Duration,
    /// Longest a whole fetch may take, however steadily messages arrive.
    pub deadline: Duration,
    /// The most the dump may hold.
    pub dump: DumpLimits,
}

/// Fetches the dump of `peer` through `client` into a spool in
/// `spool_dir`, or only the changes after `since` when the peer can serve
/// them, within `limits`.
pub async fn fetch(
    client: &mut PeerClient,
    peer: &PeerRow,
    since: Option<pb::Checkpoint>,
    limits: FetchLimits,
    spool_dir: &Path,
) -> Result<(Spool, Duration)> {
    let request = pb::GetPeerDataRequest { since, only: None };
    fetch_request(client, peer, request, limits, spool_dir).await
}

/// Fetches the objects `only` of `peer` (those it no longer exports as
/// deletions) into a spool, as [`fetch`] does: a delta that leaves the
/// other objects as they are.
pub async fn fetch_listed(
    client: &mut PeerClient,
    peer: &PeerRow,
    only: pb::DeletedObjects,
    limits: FetchLimits,
    spool_dir: &Path,
) -> Result<(Spool, Duration)> {
    let request = pb::GetPeerDataRequest {
        since: None,
        only: Some(only),
    };
    fetch_request(client, peer, request, limits, spool_dir).await
}

/// [`fetch`] of any request.
async fn fetch_request(
    client: &mut PeerClient,
    peer: &PeerRow,
    request: pb::GetPeerDataRequest,
    limits: FetchLimits,
    spool_dir: &Path,
) -> Result<(Spool, Duration)> {
    let started = Instant::now();
    let fetching = fetch_within(client, peer, request, limits, spool_dir);
    let spool = tokio::time::timeout(limits.deadline, fetching)
        .await
        .map_err(|_| {
            Error::Unavailable(format!(
                "peer {} ({}): the transfer took longer than {} s (--refresh-timeout); nothing was applied",
                peer.peername,
                peer.peer_url,
                limits.deadline.as_secs_f64()
            ))
        })??;
    Ok((spool, started.elapsed()))
}

/// [`fetch`] without its overall deadline.
async fn fetch_within(
    client: &mut PeerClient,
    peer: &PeerRow,
    request: pb::GetPeerDataRequest,
    limits: FetchLimits,
    spool_dir: &Path,
) -> Result<Spool> {
    let listed = request.only.is_some();
    let since = request.since.clone();
    let idle_timeout = limits.idle_timeout;
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        Error::Unavailable(format!(
            "peer {} ({}): {what}: {e}",
            peer.peername, peer.peer_url
        ))
    };
    let mut stream = tokio::time::timeout(idle_timeout, client.get_peer_data(request))
        .await
        .map_err(|e| unavailable("GetPeerData", &e))?
        .map_err(|s| unavailable("GetPeerData", &s.message()))?
        .into_inner();

    let mut receiving = Receiving::new(spool_dir, since, limits.dump, peer, "")?;
    receiving.listed = listed;
    loop {
        let message = tokio::time::timeout(idle_timeout, stream.message())
            .await
            .map_err(|_| {
                unavailable(
                    "stream stalled",
                    &format!("nothing received for {} s", idle_timeout.as_secs_f64()),
                )
            })?
            .map_err(|s| unavailable("stream broken", &s.message()))?;
        let Some(chunk) = message else {
            return Err(unavailable(
                "stream truncated",
                &"it ended without its trailer; nothing was applied",
            ));
        };
        if receiving.take(chunk)? {
            return Ok(receiving.spool);
        }
    }
}

/// Spools the changes a `Follow` event of `peer` carried (the messages of
/// a delta `GetPeerData` stream), checked as a fetched stream is.
pub fn spool_carried(
    peer: &PeerRow,
    changes: pb::FollowChanges,
    limits: DumpLimits,
    spool_dir: &Path,
) -> Result<Spool> {
    let mut receiving = Receiving::new(
        spool_dir,
        changes.since,
        limits,
        peer,
        "the changes of a Follow event: ",
    )?;
    for chunk in changes.chunks {
        if receiving.take(chunk)? {
            return Ok(receiving.spool);
        }
    }
    Err(receiving.fault(
        "stream truncated",
        "they end without a trailer; nothing was applied",
    ))
}

/// A spool being filled from the messages of a `GetPeerData` stream,
/// which must come as a header, batches, then a trailer.
struct Receiving {
    spool: Spool,
    header: bool,
    /// The checkpoint the changes were asked from; `None` when everything
    /// was asked for.
    since: Option<pb::Checkpoint>,
    /// Whether listed objects were asked for (a delta of them).
    listed: bool,
    /// Names the peer and the source in errors.
    source: String,
}

impl Receiving {
    fn new(
        spool_dir: &Path,
        since: Option<pb::Checkpoint>,
        limits: DumpLimits,
        peer: &PeerRow,
        what: &str,
    ) -> Result<Receiving> {
        Ok(Receiving {
            spool: Spool::create(spool_dir, limits)?,
            header: false,
            since,
            listed: false,
            source: format!("peer {} ({}): {what}", peer.peername, peer.peer_url),
        })
    }

    /// What is wrong with the stream, as an error.
    fn fault(&self, what: &str, detail: &str) -> Error {
        Error::Unavailable(format!("{}{what}: {detail}", self.source))
    }

    /// Checks a header against what was asked: a known kind of snapshot,
    /// and a delta only from the checkpoint asked, in its epoch, to a
    /// revision no older.
    fn check_header(&self, h: &pb::PeerDataHeader) -> std::result::Result<(), String> {
        let kind = pb::SnapshotKind::try_from(h.kind)
            .map_err(|_| format!("unknown snapshot kind {}", h.kind))?;
        if self.listed {
            return match kind {
                pb::SnapshotKind::Delta => Ok(()),
                _ => Err(format!("listed objects came as a {kind:?} snapshot")),
            };
        }
        if kind != pb::SnapshotKind::Delta {
            return Ok(());
        }
        let Some(since) = &self.since else {
            return Err("a delta arrived although everything was asked for".into());
        };
        let Some(reached) = &h.checkpoint else {
            return Err("a delta arrived without a checkpoint".into());
        };
        if reached.epoch != since.epoch {
            return Err(format!(
                "a delta of epoch {:?} arrived for changes since epoch {:?}",
                crate::error::quoted(&reached.epoch),
                crate::error::quoted(&since.epoch)
            ));
        }
        if reached.revision < since.revision {
            return Err(format!(
                "a delta up to revision {} arrived, behind the checkpoint's revision {}",
                reached.revision, since.revision
            ));
        }
        Ok(())
    }

    /// Takes the next message; true once the trailer sealed the spool.
    fn take(&mut self, chunk: pb::PeerDataChunk) -> Result<bool> {
        match chunk.part {
            Some(pb::peer_data_chunk::Part::Header(h)) if !self.header => {
                if let Err(e) = self.check_header(&h) {
                    return Err(self.fault("stream malformed", &e));
                }
                self.header = true;
                let spool = &mut self.spool;
                spool.kind = h.kind();
                spool.registry_name = h.registry_name;
                spool.schema_version = h.schema_version;
                spool.full_reason = h.full_reason;
                spool.checkpoint = h.checkpoint;
                Ok(false)
            }
            Some(pb::peer_data_chunk::Part::Batch(batch)) if self.header => {
                self.spool.push(batch)?;
                Ok(false)
            }
            Some(pb::peer_data_chunk::Part::Trailer(t)) if self.header => {
                if let Err(e) = self.spool.check_trailer(&t) {
                    return Err(self.fault("stream inconsistent", &e));
                }
                self.spool.seal(&t)?;
                Ok(true)
            }
            _ => Err(self.fault(
                "stream malformed",
                "expected a header, batches, then a trailer",
            )),
        }
    }
}

/// What a client of a peer is made from: its URL, outbound token and CA
/// certificate. A client is reused while they stay the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection(String, Option<String>, Option<String>);

impl Connection {
    /// The connection settings of `peer`.
    pub fn of(peer: &PeerRow) -> Connection {
        Connection(
            peer.peer_url.clone(),
            peer.outbound_token.clone(),
            peer.cacert.clone(),
        )
    }
}

/// Clients of peers, kept from call to call (a channel reconnects by
/// itself when its connection breaks): opening a connection costs more
/// than a small delta refresh. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clients {
    kept: Arc<Mutex<HashMap<i64, (Connection, PeerClient)>>>,
    identity: Option<Identity>,
}

impl Clients {
    /// No clients yet; `identity` is the client certificate and key
    /// presented to `https://` peers (none when `None`).
    pub fn new(identity: Option<Identity>) -> Clients {
        Clients {
            kept: Arc::default(),
            identity,
        }
    }

    /// A client of `peer`: the kept one when the peer's connection settings
    /// did not change, a new one otherwise (connecting within `timeout`).
    pub async fn get(&self, peer: &PeerRow, timeout: Duration) -> Result<PeerClient> {
        let connection = Connection::of(peer);
        if let Ok(kept) = self.kept.lock()
            && let Some((made_for, client)) = kept.get(&peer.peer_id)
            && *made_for == connection
        {
            return Ok(client.clone());
        }
        let client = client(peer, self.identity.as_ref(), timeout).await?;
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(peer.peer_id, (connection, client.clone()));
        }
        Ok(client)
    }

    /// The client certificate and key presented to `https://` peers.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Drops the client of a peer, so that the next call connects anew.
    pub fn forget(&self, peer_id: i64) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(&peer_id);
        }
    }
}

/// A `PeeringService` client of a peer, presenting its outbound token.
pub type PeerClient = PeeringServiceClient<Authed>;

/// Connects to `peer` (waiting at most `timeout`) as a client presenting
/// its outbound token, and `identity` as client certificate over TLS.
pub async fn client(
    peer: &PeerRow,
    identity: Option<&Identity>,
    timeout: Duration,
) -> Result<PeerClient> {
    let token = peer.outbound_token.as_deref().ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "peer {} has no outbound token: set one with UpdatePeer (a peer token created on {})",
            peer.peername, peer.peer_url
        ))
    })?;
    let bearer = Bearer::new(Some(token)).map_err(|_| {
        Error::FailedPrecondition(format!(
            "the outbound token of peer {} is not a valid header value",
            peer.peername
        ))
    })?;
    let channel = connect(peer, identity, timeout).await?;
    Ok(PeeringServiceClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Opens a channel to the peer, with TLS for `https://` (presenting
/// `identity` when given).
async fn connect(
    peer: &PeerRow,
    identity: Option<&Identity>,
    timeout: Duration,
) -> Result<Channel> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::FailedPrecondition(format!(
            "peer {} has an unusable peer_url {}: {e}",
            peer.peername, peer.peer_url
        ))
    };
    let ca_pem = if peer.peer_url.starts_with("https://") {
        let pem = peer.cacert.as_ref().ok_or_else(|| {
            bad(&"an https:// peer needs its CA certificate (cacert) on the peer record")
        })?;
        Some(pem.as_bytes())
    } else {
        None
    };
    channel::endpoint(&peer.peer_url, ca_pem, identity, timeout)
        .map_err(|e| bad(&e))?
        .connect()
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "peer {} ({}) is unreachable: {}",
                peer.peername,
                peer.peer_url,
                error::chain(&e)
            ))
        })
}
