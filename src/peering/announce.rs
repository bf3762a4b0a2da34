//! `Follow`, the serving side: announces this registry's checkpoint as
//! commits move it.
//!
//! A stream waits on the store's commit notifications ([`Store::changes`]);
//! at each wake it reads the change history and sends an event when the
//! last revision moved past the one last announced. When nothing was
//! announced for a heartbeat period it sends a heartbeat, after reading
//! the history again: should a notification ever be lost, the heartbeat
//! announces the change (the safety net; the notification is the path).
//! Events carry checkpoints only; the caller fetches the changes with a
//! delta `GetPeerData`, so what a stream misses costs latency, never data.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::error::Result;
use crate::proto::v1 as pb;
use crate::store::{Store, revisions};

/// Heartbeat period when the caller does not choose one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// Longest heartbeat period a caller may ask for.
pub const MAX_HEARTBEAT_SECONDS: u32 = 3600;

/// The stream of a `Follow` call.
pub type FollowStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::FollowEvent, Status>> + Send>>;

/// Where a stream stands.
struct Announcer {
    store: Store,
    wakes: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    heartbeat: Duration,
    next_heartbeat: Instant,
    /// The checkpoint last announced (or the caller's, before the first
    /// event).
    announced: Option<pb::Checkpoint>,
    failed: bool,
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

/// Announces the checkpoints of `store` to a caller at `since`, until
/// `stop` turns true or the caller goes away.
pub fn stream(
    store: Store,
    since: Option<pb::Checkpoint>,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
) -> FollowStream {
    // Subscribed before the first read: a commit after it wakes the stream.
    let wakes = store.changes();
    let announcer = Announcer {
        store,
        wakes,
        stop,
        heartbeat,
        // Due at once: the first event tells the current checkpoint.
        next_heartbeat: Instant::now(),
        announced: since,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(
        announcer,
        |mut a| async move {
            if a.failed {
                return None;
            }
            let event = a.next_event().await?;
            if event.is_err() {
                a.failed = true;
            }
            Some((event, a))
        },
    ))
}

impl Announcer {
    /// The next event to send; `None` ends the stream.
    async fn next_event(&mut self) -> Option<std::result::Result<pb::FollowEvent, Status>> {
        loop {
            enum Woken {
                Stop,
                Commit,
                Heartbeat,
            }
            let woken = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stop| *stop) => Woken::Stop,
                changed = self.wakes.changed() => match changed {
                    Ok(()) => Woken::Commit,
                    Err(_) => Woken::Stop,
                },
                _ = tokio::time::sleep_until(self.next_heartbeat) => Woken::Heartbeat,
            };
            match woken {
                Woken::Stop => return None,
                Woken::Heartbeat => return Some(self.announce().await),
                Woken::Commit => match self.moved().await {
                    Ok(None) => continue,
                    Ok(Some(checkpoint)) => return Some(Ok(self.sent(checkpoint, false))),
                    Err(e) => return Some(Err(e.into())),
                },
            }
        }
    }

    /// An event for the current checkpoint: a change when it moved past
    /// the one announced, a heartbeat otherwise.
    async fn announce(&mut self) -> std::result::Result<pb::FollowEvent, Status> {
        let current = self.current().await?;
        let moved = self.is_new(&current);
        Ok(self.sent(current, !moved))
    }

    /// The current checkpoint when it moved past the one announced.
    async fn moved(&mut self) -> Result<Option<pb::Checkpoint>> {
        let current = self.current().await?;
        Ok(self.is_new(&current).then_some(current))
    }

    fn is_new(&self, current: &pb::Checkpoint) -> bool {
        match &self.announced {
            None => true,
            Some(last) => last.epoch != current.epoch || current.revision > last.revision,
        }
    }

    /// Records `checkpoint` as announced and makes its event.
    fn sent(&mut self, checkpoint: pb::Checkpoint, heartbeat: bool) -> pb::FollowEvent {
        self.announced = Some(checkpoint.clone());
        self.next_heartbeat = Instant::now() + self.heartbeat;
        pb::FollowEvent {
            checkpoint: Some(checkpoint),
            heartbeat,
        }
    }

    async fn current(&self) -> Result<pb::Checkpoint> {
        let mut conn = self.store.read().await?;
        let history = revisions::history(&mut conn).await?;
        Ok(pb::Checkpoint {
            epoch: history.epoch,
            revision: history.revision,
        })
    }
}
