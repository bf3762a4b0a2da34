//! Follow mode, the following side: keeps a `Follow` stream open to each
//! followed peer and runs a delta refresh for every change it announces.
//!
//! [`run`] supervises: it starts one task per peer whose record says
//! `follow`, stops it when the record stops saying so, and restarts it
//! when the peer's address or credentials change (the peers API pokes it
//! through [`Followers::peers_changed`]; a periodic rescan is the safety
//! net). Each task:
//!
//! 1. opens `Follow` at the checkpoint stored on the peer record;
//! 2. for each event whose checkpoint is past the cache's, runs a delta
//!    refresh ([`Refresher::refresh_carried`], the same path as
//!    `RefreshPeer`: locks, validation, one transaction, checkpoint stored
//!    with the changes), on the changes the event carried when they start
//!    at the cache's checkpoint, on a delta `GetPeerData` otherwise.
//!    Events that arrived meanwhile are folded into one refresh;
//! 3. on any failure (peer restarting, connection cut, no heartbeat for
//!    three periods, a refresh that failed) closes the stream and opens a
//!    new one after a back-off that doubles up to [`MAX_BACKOFF`], resuming
//!    from the stored checkpoint: nothing is skipped or applied twice,
//!    since every refresh starts from what the last commit recorded.
//!
//! Of several processes sharing a database, one follows each peer: the
//! task first takes the peer's [`FollowLease`]; while another process
//! holds it, the task stands by and tries again every `STANDBY_RETRY`,
//! so it takes over soon after that process stops.
//!
//! [`Followers`] holds what the tasks know for the peers API: connected or
//! not (or standing by), the peer's last revision, the cache's, the lag,
//! the last error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::fetch;
use super::lock::FollowLease;
use super::refresh::{RefreshOptions, Refresher};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::peers::{Following, PeerKey};
use crate::store::now;
use crate::store::peers::{self, PeerRow};

/// Heartbeat period asked of followed peers.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Heartbeats missed in a row before the stream counts as dead.
const MISSED_HEARTBEATS: u32 = 3;
/// First wait before reopening a stream that failed.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reopening a stream.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Wait before retrying a refresh that another call is running.
const BUSY_RETRY: Duration = Duration::from_millis(20);
/// How often the supervisor looks at the peer records unpoked.
const RESCAN: Duration = Duration::from_secs(5);
/// How often a process standing by tries to take over following a peer.
const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// What the follow tasks of one server know; cheap to clone.
#[derive(Clone, Default)]
pub struct Followers {
    inner: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    trackers: Mutex<HashMap<i64, Tracker>>,
    peers_changed: Notify,
}

/// Where following one peer stands.
#[derive(Debug, Default, Clone)]
struct Tracker {
    connected: bool,
    peer_revision: i64,
    applied_revision: i64,
    behind_since: Option<Instant>,
    last_error: Option<(String, i64)>,
    refreshes: i64,
    connects: i64,
    standby: bool,
}

impl Followers {
    /// The follow status of a peer, when a task follows it.
    pub fn status(&self, peer_id: i64) -> Option<pb::FollowStatus> {
        let trackers = self.inner.trackers.lock().ok()?;
        let t = trackers.get(&peer_id)?;
        let (last_error, last_error_time) = match &t.last_error {
            Some((message, at)) => (message.clone(), crate::registry::timestamp(*at)),
            None => (String::new(), None),
        };
        Some(pb::FollowStatus {
            connected: t.connected,
            peer_revision: t.peer_revision,
            applied_revision: t.applied_revision,
            lag_revisions: (t.peer_revision - t.applied_revision).max(0),
            lag_seconds: t.behind_since.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            last_error,
            last_error_time,
            refreshes: t.refreshes,
            connects: t.connects,
            standby: t.standby,
        })
    }

    /// Tells the supervisor that peer records changed (created, updated,
    /// deleted), so that it starts or stops following at once.
    pub fn peers_changed(&self) {
        self.inner.peers_changed.notify_one();
    }

    fn update(&self, peer_id: i64, change: impl FnOnce(&mut Tracker)) {
        if let Ok(mut trackers) = self.inner.trackers.lock() {
            change(trackers.entry(peer_id).or_default());
        }
    }

    fn forget(&self, peer_id: i64) {
        if let Ok(mut trackers) = self.inner.trackers.lock() {
            trackers.remove(&peer_id);
        }
    }

    fn failed(&self, peer_id: i64, error: String) {
        self.update(peer_id, |t| {
            t.connected = false;
            t.last_error = Some((error, now()));
        });
    }
}

impl Following for Followers {
    fn status(&self, peer_id: i64) -> Option<pb::FollowStatus> {
        Followers::status(self, peer_id)
    }

    fn peers_changed(&self) {
        Followers::peers_changed(self);
    }
}

/// A running follow task (aborted when dropped) and what it was started
/// with.
struct Task {
    _handle: AbortOnDropHandle<()>,
    started_with: fetch::Connection,
}

/// Follows every followed peer until `stop` is cancelled.
pub async fn run(refresher: Refresher, followers: Followers, stop: CancellationToken) {
    let mut tasks: HashMap<i64, Task> = HashMap::new();
    loop {
        match followed(&refresher).await {
            Ok(peers) => {
                tasks.retain(|id, task| {
                    let keep = peers
                        .iter()
                        .any(|p| p.peer_id == *id && fetch::Connection::of(p) == task.started_with);
                    if !keep {
                        followers.forget(*id);
                    }
                    keep
                });
                for peer in peers {
                    tasks.entry(peer.peer_id).or_insert_with(|| Task {
                        started_with: fetch::Connection::of(&peer),
                        _handle: AbortOnDropHandle::new(tokio::spawn(follow_peer(
                            refresher.clone(),
                            followers.clone(),
                            peer.peer_id,
                        ))),
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "follow: reading the followed peers"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            _ = followers.inner.peers_changed.notified() => {}
            _ = tokio::time::sleep(RESCAN) => {}
        }
    }
}

async fn followed(refresher: &Refresher) -> Result<Vec<PeerRow>> {
    let mut conn = refresher.store.read().await?;
    peers::followed(&mut conn).await
}

/// Follows one peer for as long as the task lives, reopening the stream
/// after failures; stands by while another process holds the peer's
/// [`FollowLease`].
async fn follow_peer(refresher: Refresher, followers: Followers, peer_id: i64) {
    let mut reconnect = Reconnect::default();
    loop {
        let error = match FollowLease::take(&refresher.store, peer_id).await {
            Ok(Some(lease)) => {
                followers.update(peer_id, |t| t.standby = false);
                match follow_once(&refresher, &followers, peer_id, &mut reconnect, lease).await {
                    Ok(never) => match never {},
                    Err(e) => e,
                }
            }
            Ok(None) => {
                followers.update(peer_id, |t| {
                    t.standby = true;
                    t.connected = false;
                });
                tokio::time::sleep(STANDBY_RETRY).await;
                continue;
            }
            Err(e) => e,
        };
        // The next stream starts on a fresh connection: the old one may be
        // half-open.
        refresher.clients.forget(peer_id);
        let delay = reconnect.failed();
        tracing::warn!(
            peer_id,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "follow: the stream to the peer failed; reopening it from the checkpoint"
        );
        followers.failed(peer_id, error.to_string());
        tokio::time::sleep(delay).await;
    }
}

/// Streams to one peer that failed in a row, and the wait before the next.
#[derive(Debug, Default)]
struct Reconnect {
    /// Streams that failed since the last one that delivered an event.
    failures: u32,
}

impl Reconnect {
    /// A stream failed: the wait before opening the next ([`backoff`]).
    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        backoff(self.failures)
    }

    /// A stream delivered an event: the next failure waits the first delay
    /// again.
    fn delivered(&mut self) {
        self.failures = 0;
    }
}

/// The wait before reopening a stream after `failures` failures in a row:
/// doubling from `FIRST_BACKOFF` up to `MAX_BACKOFF`, ±20%.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::nth(FIRST_BACKOFF, MAX_BACKOFF, 0.2, failures.saturating_sub(1))
}

/// Opens one stream and applies what it announces until it fails; a stream
/// that delivered an event resets `reconnect`.
async fn follow_once(
    refresher: &Refresher,
    followers: &Followers,
    peer_id: i64,
    reconnect: &mut Reconnect,
    mut lease: FollowLease,
) -> Result<std::convert::Infallible> {
    let peer = {
        let mut conn = refresher.store.read().await?;
        peers::require(&mut conn, peer_id).await?
    };
    let unavailable = |what: &str| {
        Error::Unavailable(format!(
            "peer {} ({}): Follow: {what}",
            peer.peername, peer.peer_url
        ))
    };
    let mut applied = peer.checkpoint();
    let mut client = refresher
        .clients
        .get(&peer, refresher.limits.idle_timeout)
        .await?;
    let request = pb::FollowRequest {
        since: applied
            .clone()
            .map(|(epoch, revision)| pb::Checkpoint { epoch, revision }),
        heartbeat_seconds: HEARTBEAT.as_secs() as u32,
        include_changes: true,
    };
    let mut events = client
        .follow(request)
        .await
        .map_err(|s| unavailable(s.message()))?
        .into_inner();
    followers.update(peer_id, |t| {
        t.connected = true;
        t.connects += 1;
        t.applied_revision = applied.as_ref().map_or(0, |(_, r)| *r);
    });
    let silence = HEARTBEAT * MISSED_HEARTBEATS;
    // The last checkpoint a refresh was run for: a refresh that did not
    // reach it (refused, or skipped objects) is retried at the next change,
    // not at every heartbeat.
    let mut attempted: Option<pb::Checkpoint> = None;
    loop {
        let event = tokio::time::timeout(silence, events.message())
            .await
            .map_err(|_| unavailable(&format!("no heartbeat for {} s", silence.as_secs())))?
            .map_err(|s| unavailable(s.message()))?
            .ok_or_else(|| unavailable("the peer closed the stream"))?;
        if !lease.holds() {
            return Err(Error::Unavailable(format!(
                "peer {}: the follow lease was lost with its database connection; taking it again",
                peer.peername
            )));
        }
        reconnect.delivered();
        let mut target = event.checkpoint.unwrap_or_default();
        let mut carried = event.changes;
        // Events that arrived meanwhile are covered by the same refresh,
        // which then fetches their changes in one delta.
        while let Some(Ok(Some(later))) = events.message().now_or_never() {
            let later = later.checkpoint.unwrap_or_default();
            if later != target {
                carried = None;
            }
            target = later;
        }
        let ahead = match &applied {
            Some((epoch, revision)) => *epoch != target.epoch || target.revision > *revision,
            None => true,
        };
        let fresh = attempted.as_ref() != Some(&target);
        followers.update(peer_id, |t| {
            t.peer_revision = target.revision;
            if ahead {
                t.behind_since.get_or_insert_with(Instant::now);
            }
        });
        if ahead && fresh {
            applied = catch_up(refresher, followers, &peer, &target, carried.as_ref()).await?;
            attempted = Some(target);
        }
    }
}

/// Refreshes the peer until its cache reflects `target` or a refresh did
/// not apply, with the `carried` changes of the event when it brought
/// them; returns the checkpoint stored on the peer record.
async fn catch_up(
    refresher: &Refresher,
    followers: &Followers,
    peer: &PeerRow,
    target: &pb::Checkpoint,
    carried: Option<&pb::FollowChanges>,
) -> Result<Option<(String, i64)>> {
    let report = loop {
        match refresher
            .refresh_carried(
                PeerKey::Id(peer.peer_id),
                RefreshOptions::by(pb::SyncMode::Follow),
                carried,
            )
            .await
        {
            // Another call is refreshing this peer: ours runs after it.
            Err(Error::Aborted(_)) => tokio::time::sleep(BUSY_RETRY).await,
            done => break done?,
        }
    };
    let stored = {
        let mut conn = refresher.store.read().await?;
        peers::require(&mut conn, peer.peer_id).await?.checkpoint()
    };
    let caught_up = stored
        .as_ref()
        .is_some_and(|(epoch, revision)| *epoch == target.epoch && *revision >= target.revision);
    followers.update(peer.peer_id, |t| {
        t.refreshes += 1;
        t.applied_revision = report.revision;
        t.peer_revision = t.peer_revision.max(report.revision);
        if caught_up {
            t.behind_since = None;
        }
        t.last_error = match report.outcome() {
            pb::RefreshOutcome::Applied if report.warnings.is_empty() => None,
            pb::RefreshOutcome::Applied => Some((
                format!(
                    "the refresh skipped {} objects (see the report); the next one is full",
                    report.warnings.len()
                ),
                now(),
            )),
            _ => Some((report.reason.clone(), now())),
        };
    });
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sleeps as `follow_peer` does after a failed stream; returns how long
    /// the paused clock moved.
    async fn wait_after_failure(reconnect: &mut Reconnect) -> Duration {
        let start = tokio::time::Instant::now();
        tokio::time::sleep(reconnect.failed()).await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_wait_longer_up_to_the_cap_until_an_event_arrives() {
        let mut reconnect = Reconnect::default();
        // 0.1 s doubling to 25.6 s, then the cap of 30 s, each ±20%.
        for n in 0..9 {
            let base = FIRST_BACKOFF * 2u32.pow(n);
            let waited = wait_after_failure(&mut reconnect).await;
            assert!(
                base.mul_f64(0.8) <= waited && waited <= base.mul_f64(1.2),
                "failure {}: {waited:?}",
                n + 1
            );
        }
        for _ in 0..3 {
            let waited = wait_after_failure(&mut reconnect).await;
            assert!(MAX_BACKOFF.mul_f64(0.8) <= waited && waited <= MAX_BACKOFF.mul_f64(1.2));
        }
        reconnect.delivered();
        let waited = wait_after_failure(&mut reconnect).await;
        assert!(FIRST_BACKOFF.mul_f64(0.8) <= waited && waited <= FIRST_BACKOFF.mul_f64(1.2));
    }
}
