//! Scheduled refreshes: peers with a refresh interval are refreshed by the
//! server itself.
//!
//! Each peer is due `interval` after its last refresh, give or take a
//! random tenth (jitter, so that registries started together do not
//! refresh each other in lockstep). After a failure the wait doubles with
//! each consecutive failure, up to a day, so an unreachable peer is not
//! hammered; the first success resets it. Refreshes run one after another
//! on one task. A refresh another process is running (ABORTED) is not a
//! failure: the peer is simply tried again at its next turn.
//!
//! Verifications ([`super::verify`]) run on the same task: every peer
//! refreshed on a schedule or followed is verified every
//! `--verify-interval`, first one interval after the server started, with
//! the same jitter and backoff.
//!
//! `Slot` makes these decisions apart from the database and the network,
//! on tokio's clock; its tests run on a paused one.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::refresh::{RefreshOptions, Refresher};
use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::peers::PeerKey;
use crate::store::now;
use crate::store::peers::{self, PeerRow};

/// How often the schedule is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// Where one peer stands in the schedule: when its next refresh is due and
/// how many refreshes in a row failed. The decisions of the schedule, apart
/// from the database and the network, on tokio's clock (so that tests can
/// pause it).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the next refresh is due.
    due: Instant,
    /// Refreshes in a row that did not apply.
    failures: u32,
    /// The peer's interval in seconds, as its record says.
    interval: i64,
}

/// What a scheduled refresh came to, for the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It applied: the wait starts over from the interval.
    Applied,
    /// Another process was refreshing the peer: neither success nor
    /// failure.
    Busy,
    /// Anything else (an error, a refusal): the wait doubles.
    Failed,
}

impl Slot {
    /// A peer the schedule has not seen yet, refreshed every `interval`
    /// seconds, last `since` ago: due one interval after that refresh, at
    /// once when overdue or never refreshed.
    fn first(interval: i64, since: Option<Duration>) -> Slot {
        let every = Slot::every(interval);
        Slot {
            due: Instant::now() + every.saturating_sub(since.unwrap_or(every)),
            failures: 0,
            interval,
        }
    }

    /// A peer whose interval changed to `interval`: it takes effect from
    /// now, failures forgotten.
    fn changed(interval: i64) -> Slot {
        Slot {
            due: Instant::now() + next_delay(Slot::every(interval), 0),
            failures: 0,
            interval,
        }
    }

    /// An interval in seconds as a duration, at least a second.
    fn every(interval: i64) -> Duration {
        Duration::from_secs(interval.max(1) as u64)
    }

    /// Whether the next refresh is due now.
    fn is_due(&self) -> bool {
        Instant::now() >= self.due
    }

    /// Records a refresh that just ended and sets when the next is due.
    fn record(&mut self, outcome: Outcome) {
        self.failures = match outcome {
            Outcome::Applied => 0,
            Outcome::Busy => self.failures,
            Outcome::Failed => self.failures + 1,
        };
        self.due = Instant::now() + next_delay(Slot::every(self.interval), self.failures);
    }
}

/// The delay before the next refresh after `failures` consecutive
/// failures: the interval, doubled at each failure, with ±10% jitter.
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    crate::backoff::nth(interval, MAX_BACKOFF.max(interval), 0.1, failures)
}

/// Runs scheduled refreshes, and verifications every `verify_interval`
/// (none when zero), until `stop` is cancelled.
pub async fn run(refresher: Refresher, verify_interval: Duration, stop: CancellationToken) {
    let mut slots: HashMap<i64, Slot> = HashMap::new();
    let mut verify_slots: HashMap<i64, Slot> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = tick(&refresher, &mut slots, &stop).await {
            tracing::warn!(error = %e, "refresh schedule");
        }
        if verify_interval.is_zero() {
            continue;
        }
        if let Err(e) = verify_tick(&refresher, verify_interval, &mut verify_slots, &stop).await {
            tracing::warn!(error = %e, "verification schedule");
        }
    }
}

/// Verifies the peers refreshed on a schedule or followed whose
/// verification is due.
async fn verify_tick(
    refresher: &Refresher,
    interval: Duration,
    slots: &mut HashMap<i64, Slot>,
    stop: &CancellationToken,
) -> Result<()> {
    let peers: Vec<PeerRow> = {
        let mut conn = refresher.store.read().await?;
        let mut peers = peers::scheduled(&mut conn).await?;
        peers.extend(peers::followed(&mut conn).await?);
        peers
    };
    slots.retain(|id, _| peers.iter().any(|p| p.peer_id == *id));
    let seconds = interval.as_secs().max(1) as i64;
    for peer in peers {
        if stop.is_cancelled() {
            return Ok(());
        }
        let slot = slots
            .entry(peer.peer_id)
            .or_insert_with(|| Slot::changed(seconds));
        if !slot.is_due() {
            continue;
        }
        let options = RefreshOptions {
            verify: true,
            ..RefreshOptions::by(pb::SyncMode::Scheduled)
        };
        let result = refresher.refresh(PeerKey::Id(peer.peer_id), options).await;
        slot.record(match &result {
            Ok(r) if r.outcome == pb::RefreshOutcome::Applied as i32 => Outcome::Applied,
            Err(Error::Aborted(_)) => Outcome::Busy,
            _ => Outcome::Failed,
        });
        match &result {
            Ok(r) => {
                let differing = super::report::differing(r);
                tracing::info!(peer = %peer.peername, differing, "scheduled verification");
            }
            Err(e) => tracing::warn!(
                peer = %peer.peername,
                error = %e,
                retry_in_seconds = (slot.due - Instant::now()).as_secs(),
                "scheduled verification failed"
            ),
        }
    }
    Ok(())
}

async fn tick(
    refresher: &Refresher,
    slots: &mut HashMap<i64, Slot>,
    stop: &CancellationToken,
) -> Result<()> {
    let scheduled: Vec<PeerRow> = {
        let mut conn = refresher.store.read().await?;
        peers::scheduled(&mut conn).await?
    };
    slots.retain(|id, _| scheduled.iter().any(|p| p.peer_id == *id));
    for peer in scheduled {
        if stop.is_cancelled() {
            return Ok(());
        }
        let slot = slots.entry(peer.peer_id).or_insert_with(|| {
            let since = peer
                .last_refresh_time
                .map(|t| Duration::from_secs((now() - t).max(0) as u64));
            Slot::first(peer.refresh_interval_seconds, since)
        });
        if slot.interval != peer.refresh_interval_seconds {
            *slot = Slot::changed(peer.refresh_interval_seconds);
        }
        if !slot.is_due() {
            continue;
        }
        let result = refresher
            .refresh(
                PeerKey::Id(peer.peer_id),
                RefreshOptions::by(pb::SyncMode::Scheduled),
            )
            .await;
        slot.record(match &result {
            Ok(r) if r.outcome == pb::RefreshOutcome::Applied as i32 => Outcome::Applied,
            Err(Error::Aborted(_)) => Outcome::Busy,
            _ => Outcome::Failed,
        });
        if slot.failures > 0 {
            tracing::warn!(
                peer = %peer.peername,
                failures = slot.failures,
                retry_in_seconds = (slot.due - Instant::now()).as_secs(),
                "scheduled refresh did not apply"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::time::advance;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// Asserts that `slot` falls due between `low` and `high` from now, and
    /// not before: the paused clock is moved to just short of `low`, then
    /// to `high`.
    async fn due_between(slot: &Slot, low: Duration, high: Duration) {
        let wait = slot.due - Instant::now();
        assert!(
            low <= wait && wait <= high,
            "{wait:?} not in {low:?}..={high:?}"
        );
        advance(low - Duration::from_millis(1)).await;
        assert!(!slot.is_due(), "due before {low:?}");
        advance(high - low + Duration::from_millis(1)).await;
        assert!(slot.is_due(), "not due by {high:?}");
    }

    /// The interval `scale` times over, give or take the jitter of a tenth.
    fn around(interval: Duration, scale: u32) -> (Duration, Duration) {
        let d = interval * scale;
        (d.mul_f64(0.9), d.mul_f64(1.1))
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let i = Duration::from_secs(60);
        for (failures, base) in [(0, 60.0), (1, 120.0), (3, 480.0)] {
            let d = next_delay(i, failures).as_secs_f64();
            assert!(d >= base * 0.9 && d <= base * 1.1, "{failures}: {d}");
        }
        assert!(next_delay(i, 30) <= MAX_BACKOFF.mul_f64(1.1));
    }

    #[tokio::test(start_paused = true)]
    async fn never_refreshed_is_due_at_once_then_every_interval() {
        let mut slot = Slot::first(60, None);
        assert!(slot.is_due());
        for _ in 0..3 {
            slot.record(Outcome::Applied);
            let (low, high) = around(MINUTE, 1);
            due_between(&slot, low, high).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_due_one_interval_after_the_last_refresh() {
        let slot = Slot::first(60, Some(Duration::from_secs(40)));
        assert_eq!(slot.due - Instant::now(), Duration::from_secs(20));
        due_between(&slot, Duration::from_secs(20), Duration::from_secs(20)).await;
        let overdue = Slot::first(60, Some(HOUR));
        assert!(overdue.is_due());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_double_the_wait_up_to_a_day_and_success_resets_it() {
        let mut slot = Slot::first(3600, None);
        // 1, 2, 4, 8 and 16 hours, then the cap of a day.
        for (failures, scale) in [(1, 2), (2, 4), (3, 8), (4, 16)] {
            slot.record(Outcome::Failed);
            assert_eq!(slot.failures, failures);
            let (low, high) = around(HOUR, scale);
            due_between(&slot, low, high).await;
        }
        for failures in [5, 6] {
            slot.record(Outcome::Failed);
            assert_eq!(slot.failures, failures);
            let (low, high) = around(MAX_BACKOFF, 1);
            due_between(&slot, low, high).await;
        }
        slot.record(Outcome::Applied);
        assert_eq!(slot.failures, 0);
        let (low, high) = around(HOUR, 1);
        due_between(&slot, low, high).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_peer_keeps_its_failures() {
        let mut slot = Slot::first(60, None);
        slot.record(Outcome::Failed);
        slot.record(Outcome::Busy);
        assert_eq!(slot.failures, 1);
        let (low, high) = around(MINUTE, 2);
        due_between(&slot, low, high).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_interval_counts_from_now_without_failures() {
        let slot = Slot::changed(60);
        assert_eq!((slot.failures, slot.interval), (0, 60));
        let (low, high) = around(MINUTE, 1);
        due_between(&slot, low, high).await;
    }
}
