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

/// Where one peer stands in the schedule.
#[derive(Debug, Clone, Copy)]
struct Slot {
    due: Instant,
    failures: u32,
    interval: i64,
}

/// The delay before the next refresh after `failures` consecutive
/// failures: the interval, doubled at each failure, with ±10% jitter.
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    crate::backoff::nth(interval, MAX_BACKOFF.max(interval), 0.1, failures)
}

/// Runs scheduled refreshes until `stop` is cancelled.
pub async fn run(refresher: Refresher, stop: CancellationToken) {
    let mut slots: HashMap<i64, Slot> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = tick(&refresher, &mut slots, &stop).await {
            tracing::warn!(error = %e, "refresh schedule");
        }
    }
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
        let interval = Duration::from_secs(peer.refresh_interval_seconds.max(1) as u64);
        let slot = slots.entry(peer.peer_id).or_insert_with(|| {
            // Due one interval after the last refresh (at once if overdue).
            let since = peer
                .last_refresh_time
                .map(|t| Duration::from_secs((now() - t).max(0) as u64))
                .unwrap_or(interval);
            Slot {
                due: Instant::now() + interval.saturating_sub(since),
                failures: 0,
                interval: peer.refresh_interval_seconds,
            }
        });
        if slot.interval != peer.refresh_interval_seconds {
            // A changed interval takes effect from now.
            *slot = Slot {
                due: Instant::now() + next_delay(interval, 0),
                failures: 0,
                interval: peer.refresh_interval_seconds,
            };
        }
        if Instant::now() < slot.due {
            continue;
        }
        let result = refresher
            .refresh(
                PeerKey::Id(peer.peer_id),
                RefreshOptions::by(pb::SyncMode::Scheduled),
            )
            .await;
        slot.failures = match &result {
            Ok(r) if r.outcome == pb::RefreshOutcome::Applied as i32 => 0,
            Err(Error::Aborted(_)) => slot.failures,
            _ => slot.failures + 1,
        };
        slot.due = Instant::now() + next_delay(interval, slot.failures);
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

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let i = Duration::from_secs(60);
        for (failures, base) in [(0, 60.0), (1, 120.0), (3, 480.0)] {
            let d = next_delay(i, failures).as_secs_f64();
            assert!(d >= base * 0.9 && d <= base * 1.1, "{failures}: {d}");
        }
        assert!(next_delay(i, 30) <= MAX_BACKOFF.mul_f64(1.1));
    }
}
