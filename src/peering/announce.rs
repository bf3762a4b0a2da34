//! `Follow`, the serving side: announces this registry's checkpoint as
//! commits move it.
//!
//! One task per server, [`Checkpoints`], waits on the store's commit
//! notifications ([`Store::changes`]) and reads the checkpoint once per
//! wake; every stream waits on what it publishes, so a change costs one
//! read however many streams follow. A stream sends an event when the
//! checkpoint moved past the one it last announced. When nothing was
//! announced for a heartbeat period it sends a heartbeat, after reading
//! the history itself: should a notification ever be lost (or a commit
//! come from another process that does not notify), the heartbeat
//! announces the change (the safety net; the notification is the path).
//! An event carries the checkpoint, and, when the caller asked for them
//! and they are small, the changes since the previous event, as a delta
//! `GetPeerData` would stream them to that caller: the caller then applies
//! them without a call of its own. While streams ask for them, the same
//! task reads each move's changes once for all of them, after publishing
//! the checkpoint ([`carried::SharedChanges`]): a change costs two reads
//! however many streams follow, with or without the changes. A stream that
//! is not where the shared changes start reads its own. Changes that are
//! not carried the caller fetches with a delta `GetPeerData`, so what a
//! stream misses costs latency, never data.
//!
//! Each stream's announcer is a task that hands its events over through an
//! [`outbox`]: a caller that leaves an event unread for the send timeout
//! (its HTTP/2 window and the few buffered events full) loses its stream
//! with `DEADLINE_EXCEEDED`, and resumes with a new call from its own
//! checkpoint; it never delays the other streams, which wait on the
//! published checkpoint, not on each other.
//!
//! A stream lives no longer than the token it was opened with: it ends
//! when its [`StreamSlot`] says the token was revoked (at once for
//! `RevokeToken`, within the token cache period for a token revoked by
//! another process), and every event that reads the database for the
//! stream (a heartbeat, its own changes) first checks that the token still
//! exists.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::carried::{self, Carried, SharedChanges};
use super::export;
use super::outbox::{self, Delivery};
use crate::api::sessions::StreamSlot;
use crate::error::{Error, Result};
use crate::metrics::{ReadCounter, StreamMeter};
use crate::proto::v1 as pb;
use crate::store::{DbConn, Store, revisions, tokens};

/// Heartbeat period when the caller does not choose one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Longest heartbeat period a caller may ask for.
pub const MAX_HEARTBEAT_SECONDS: u32 = 3600;
/// Events buffered between the announcer and the network.
const CHANNEL_DEPTH: usize = 4;

/// The stream of a `Follow` call.
pub type FollowStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::FollowEvent, Status>> + Send>>;

/// Who opened a stream, and what they asked for.
#[derive(Debug)]
pub struct Subscription {
    /// The caller's checkpoint.
    pub since: Option<pb::Checkpoint>,
    /// The heartbeat period.
    pub heartbeat: Duration,
    /// The token the stream was opened with (`None`: no token checked).
    pub token_id: Option<i64>,
    /// How to read the changes an event carries (the caller's registry
    /// name and peer); `None` when the caller wants checkpoints only.
    pub changes: Option<export::Request>,
    /// The stream's place among its token's streams.
    pub slot: Option<StreamSlot>,
}

/// The registry's checkpoint as commits move it, and the changes of each
/// move while streams ask for them, read once per commit notification by
/// one task and shared by every `Follow` stream.
#[derive(Clone)]
pub struct Checkpoints {
    latest: watch::Receiver<Option<pb::Checkpoint>>,
    changes: watch::Receiver<Option<Arc<SharedChanges>>>,
    /// How many streams ask for the changes.
    wanting: Arc<AtomicUsize>,
    /// Counts the reads made for the streams, this task's and theirs.
    reads: ReadCounter,
}

impl Checkpoints {
    /// Starts the task that reads `store`'s checkpoint after each commit
    /// (and the changes, while streams ask for them, as this registry,
    /// `registry_name`, serves them), until `stop` is cancelled, counting
    /// its reads and those of the streams in `reads`.
    pub fn start(
        store: Store,
        registry_name: String,
        reads: ReadCounter,
        stop: CancellationToken,
    ) -> Checkpoints {
        let (latest, latest_receiver) = watch::channel(None);
        let (changes, changes_receiver) = watch::channel(None);
        let wanting = Arc::new(AtomicUsize::new(0));
        // Subscribed before the first read: a commit after it wakes the task.
        let mut wakes = store.changes();
        let (counted, wanted) = (reads.clone(), wanting.clone());
        tokio::spawn(async move {
            // Where the changes last published end.
            let mut changes_end: Option<pb::Checkpoint> = None;
            loop {
                counted.read();
                match read_checkpoint(&store).await {
                    Ok(read) => {
                        latest.send_if_modified(|known| {
                            let moved = known.as_ref() != Some(&read);
                            *known = Some(read.clone());
                            moved
                        });
                        changes_end = match changes_end.take() {
                            Some(end) if end != read && wanted.load(Ordering::Relaxed) > 0 => {
                                let shared = SharedChanges::read(
                                    &store,
                                    &counted,
                                    &registry_name,
                                    end,
                                    read,
                                )
                                .await;
                                let reached = shared.reached.clone();
                                changes.send_replace(Some(Arc::new(shared)));
                                Some(reached)
                            }
                            // Nothing moved, or no stream to read them for:
                            // the next changes start here.
                            _ => Some(read),
                        };
                    }
                    // The streams' heartbeats read it themselves.
                    Err(e) => tracing::warn!(error = %e, "follow: reading the checkpoint"),
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = wakes.changed() => if changed.is_err() { return },
                }
            }
        });
        Checkpoints {
            latest: latest_receiver,
            changes: changes_receiver,
            wanting,
            reads,
        }
    }
}

/// The checkpoint of the history `store` holds.
async fn read_checkpoint(store: &Store) -> Result<pb::Checkpoint> {
    checkpoint(&mut store.read().await?).await
}

/// The checkpoint of the history `conn` sees.
async fn checkpoint(conn: &mut DbConn) -> Result<pb::Checkpoint> {
    let history = revisions::history(conn).await?;
    Ok(pb::Checkpoint {
        epoch: history.epoch,
        revision: history.revision,
    })
}

/// Where a stream stands.
struct Announcer {
    store: Store,
    token_id: Option<i64>,
    changes: Option<export::Request>,
    slot: Option<StreamSlot>,
    /// The checkpoint after the last commit, from [`Checkpoints`].
    latest: watch::Receiver<Option<pb::Checkpoint>>,
    /// The changes of the last move, from [`Checkpoints`].
    shared: watch::Receiver<Option<Arc<SharedChanges>>>,
    /// Counts the stream among those asking for the changes, if it does.
    _wanting: Option<Wanting>,
    reads: ReadCounter,
    stop: CancellationToken,
    heartbeat: Duration,
    next_heartbeat: Instant,
    /// The checkpoint last announced (or the caller's, before the first
    /// event).
    announced: Option<pb::Checkpoint>,
}

/// The heartbeat period a caller asked for, checked.
pub fn heartbeat(seconds: u32) -> Result<Duration> {
    match seconds {
        0 => Ok(DEFAULT_HEARTBEAT),
        1..=MAX_HEARTBEAT_SECONDS => Ok(Duration::from_secs(seconds.into())),
        _ => Err(crate::error::Error::invalid(
            "heartbeat_seconds",
            seconds,
            format!("must be between 1 and {MAX_HEARTBEAT_SECONDS} (0 for the default)"),
        )),
    }
}

/// Announces the checkpoints of `store`, as `checkpoints` publishes them,
/// to a `subscription`, until `stop` is cancelled, its token is revoked,
/// the caller goes away or leaves an event unread for `send_timeout`; the
/// stream is counted in the metrics through `meter`.
pub fn stream(
    store: Store,
    checkpoints: &Checkpoints,
    subscription: Subscription,
    send_timeout: Duration,
    meter: StreamMeter,
    stop: CancellationToken,
) -> FollowStream {
    // Subscribed before the first read: a commit after it wakes the stream.
    let mut latest = checkpoints.latest.clone();
    latest.mark_unchanged();
    let mut shared = checkpoints.changes.clone();
    shared.mark_unchanged();
    let wanting = subscription
        .changes
        .is_some()
        .then(|| Wanting::new(&checkpoints.wanting));
    let delivery = Delivery {
        send_timeout,
        // The announcer watches the revocation itself, while it waits.
        slot: None,
        meter: Some(meter),
    };
    let mut announcer = Announcer {
        store,
        token_id: subscription.token_id,
        changes: subscription.changes,
        slot: subscription.slot,
        latest,
        shared,
        _wanting: wanting,
        reads: checkpoints.reads.clone(),
        stop,
        heartbeat: subscription.heartbeat,
        // Due at once: the first event tells the current checkpoint.
        next_heartbeat: Instant::now(),
        announced: subscription.since,
    };
    let events = outbox::spawn("Follow", CHANNEL_DEPTH, delivery, |mut out| async move {
        loop {
            let event = tokio::select! {
                event = announcer.next_event() => event,
                gone = out.closed() => return Err(gone),
            };
            let Some(event) = event else { return Ok(()) };
            let event = event?;
            let stop = announcer.stop.clone();
            tokio::select! {
                biased;
                () = stop.cancelled() => return Ok(()),
                () = announcer.revoked() => return Err(revoked()),
                sent = out.send(event) => sent?,
            }
        }
    });
    Box::pin(events)
}

impl Announcer {
    /// The next event to send; `None` ends the stream.
    async fn next_event(&mut self) -> Option<Result<pb::FollowEvent>> {
        loop {
            enum Woken {
                Stop,
                Revoked,
                Commit,
                Changes,
                Heartbeat,
            }
            // Once it has announced a checkpoint, a stream that asks for the
            // changes waits on the shared changes, the others on the
            // checkpoint.
            let carries = self.changes.is_some() && self.announced.is_some();
            let woken = tokio::select! {
                biased;
                () = self.stop.cancelled() => Woken::Stop,
                () = revoked_slot(&mut self.slot) => Woken::Revoked,
                changed = self.latest.changed(), if !carries => match changed {
                    Ok(()) => Woken::Commit,
                    Err(_) => Woken::Stop,
                },
                changed = self.shared.changed(), if carries => match changed {
                    Ok(()) => Woken::Changes,
                    Err(_) => Woken::Stop,
                },
                _ = tokio::time::sleep_until(self.next_heartbeat) => Woken::Heartbeat,
            };
            match woken {
                Woken::Stop => return None,
                Woken::Revoked => return Some(Err(revoked())),
                Woken::Commit => {
                    // The checkpoint as published: no read of this stream's
                    // own (its token's revocation ends it through its slot).
                    let latest = self.latest.borrow_and_update().clone();
                    match latest {
                        Some(latest) if self.is_new(&latest) => {
                            return Some(Ok(self.sent(latest, false, None)));
                        }
                        _ => continue,
                    }
                }
                Woken::Changes => {
                    let shared = self.shared.borrow_and_update().clone();
                    match shared {
                        Some(shared) if !self.is_new(&shared.reached) => continue,
                        // The shared changes, cut to the caller: no read of
                        // this stream's own.
                        Some(shared) if self.announced.as_ref() == Some(&shared.since) => {
                            let changes = self
                                .changes
                                .as_ref()
                                .and_then(|request| shared.for_audience(request.audience));
                            return Some(Ok(self.sent(shared.reached.clone(), false, changes)));
                        }
                        _ => {}
                    }
                    // Behind them: straight to its own, whose read checks the
                    // token; their snapshot says whether anything moved (a
                    // revoked token fails it, and the look below ends the
                    // stream).
                    match self.carried(None).await {
                        Carried::Unchanged => continue,
                        Carried::Changes(reached, changes) => {
                            return Some(Ok(self.sent(reached, false, Some(changes))));
                        }
                        Carried::Not => {}
                    }
                }
                Woken::Heartbeat => {}
            }
            let heartbeat_due = matches!(woken, Woken::Heartbeat);
            let current = match self.current().await {
                Ok(current) => current,
                Err(e) => return Some(Err(e)),
            };
            if self.is_new(&current) {
                return Some(Ok(self.change(current, heartbeat_due).await));
            }
            if heartbeat_due {
                return Some(Ok(self.sent(current, true, None)));
            }
        }
    }

    /// Completes when the stream's token is revoked.
    async fn revoked(&mut self) {
        revoked_slot(&mut self.slot).await
    }

    fn is_new(&self, current: &pb::Checkpoint) -> bool {
        match &self.announced {
            None => true,
            Some(last) => last.epoch != current.epoch || current.revision > last.revision,
        }
    }

    /// The event announcing that the checkpoint moved to `current`, with
    /// the changes when they can be carried (and were not just tried: only
    /// a heartbeat's look tries them here).
    async fn change(&mut self, current: pb::Checkpoint, try_carrying: bool) -> pb::FollowEvent {
        if try_carrying
            && let Carried::Changes(reached, changes) = self.carried(Some(&current)).await
        {
            return self.sent(reached, false, Some(changes));
        }
        self.sent(current, false, None)
    }

    /// The changes from the checkpoint last announced on, read for this
    /// stream, when the caller wants them and they can be carried
    /// (`current`, when known, is where they would end).
    async fn carried(&self, current: Option<&pb::Checkpoint>) -> Carried {
        let (Some(request), Some(since)) = (self.changes.as_ref(), self.announced.as_ref()) else {
            return Carried::Not;
        };
        carried::for_stream(&self.store, &self.reads, request, since, current).await
    }

    /// Records `checkpoint` as announced and makes its event.
    fn sent(
        &mut self,
        checkpoint: pb::Checkpoint,
        heartbeat: bool,
        changes: Option<pb::FollowChanges>,
    ) -> pb::FollowEvent {
        self.announced = Some(checkpoint.clone());
        self.next_heartbeat = Instant::now() + self.heartbeat;
        pb::FollowEvent {
            checkpoint: Some(checkpoint),
            heartbeat,
            changes,
        }
    }

    /// The current checkpoint, once the stream's token is known to be
    /// still valid.
    async fn current(&self) -> Result<pb::Checkpoint> {
        self.reads.read();
        let mut conn = self.store.read().await?;
        self.token_valid(&mut conn).await?;
        checkpoint(&mut conn).await
    }

    async fn token_valid(&self, conn: &mut DbConn) -> Result<()> {
        match self.token_id {
            Some(token_id) if !tokens::exists(conn, token_id).await? => {
                Err(Error::Unauthenticated(format!(
                    "token {token_id} was revoked; the Follow stream ends"
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Completes when `slot`'s token is revoked (never without a slot).
async fn revoked_slot(slot: &mut Option<StreamSlot>) {
    match slot {
        Some(slot) => slot.revoked().await,
        None => std::future::pending().await,
    }
}

/// The error that ends a stream whose token was revoked.
fn revoked() -> Error {
    Error::Unauthenticated("the token was revoked; the Follow stream ends".into())
}

/// Counts a stream among those asking for the changes while it lives.
struct Wanting(Arc<AtomicUsize>);

impl Wanting {
    fn new(count: &Arc<AtomicUsize>) -> Wanting {
        count.fetch_add(1, Ordering::Relaxed);
        Wanting(count.clone())
    }
}

impl Drop for Wanting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
