//! Compaction of the change log: entries older than the retention go, and
//! the history's horizon moves past them.
//!
//! A peer whose checkpoint is older than the horizon (away for longer than
//! the retention) gets a full snapshot on its next refresh, so nothing is
//! lost: the log only makes deltas possible. The retention bounds the log
//! to the changes of that period, one entry per changed object.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::store::{Store, now, revisions};

/// Longest pause between two compactions.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Compacts the log every quarter of `retention` (between a second and an
/// hour) until `stop` is cancelled.
pub async fn run(store: Store, retention: Duration, stop: CancellationToken) {
    let period = (retention / 4).clamp(Duration::from_secs(1), MAX_PERIOD);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        if let Err(e) = compact(&store, retention).await {
            tracing::warn!(error = %e, "compacting the change log");
        }
    }
}

/// Drops the log entries older than `retention`, once.
pub async fn compact(store: &Store, retention: Duration) -> Result<()> {
    let cutoff = now() - retention.as_secs() as i64;
    let mut conn = store.write().await?;
    if let Some(horizon) = revisions::compact(&mut conn, cutoff).await? {
        tracing::debug!(horizon, "change log compacted");
    }
    Ok(())
}
