//! Commit notifications: wakes whoever waits for this database's next
//! committed change (the follow streams of `PeeringService.Follow`).
//!
//! A wake says only "something may have been committed": a woken waiter
//! reads the change history ([`super::revisions::history`]) to learn
//! whether the last revision moved. Waking too often costs that one read;
//! never waking would stall followers, so every source of commits wakes:
//!
//! - SQLite: one process owns the database and writes through one writer
//!   connection, so the release of the writer (after its commit or
//!   rollback) wakes, in process.
//! - PostgreSQL: several fedreg processes may share the database, so the
//!   notification goes through the database: `export_revision()` notifies
//!   the channel `fedreg_export` in the transaction that takes a revision,
//!   and PostgreSQL delivers it at commit. One listener connection per
//!   process turns the notifications into wakes, reconnecting with
//!   back-off when its connection breaks (and waking then, since
//!   notifications sent while it was away are lost).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// The notification channel `export_revision()` notifies at commit.
pub const CHANNEL: &str = "fedreg_export";

/// Longest wait between attempts to reopen the listener connection.
const MAX_LISTEN_BACKOFF: Duration = Duration::from_secs(10);

/// Wakes the waiters for committed changes of one database.
pub struct ChangeFeed {
    wakes: watch::Sender<u64>,
    /// The listener task, aborted when the feed is dropped.
    listener: OnceLock<AbortOnDropHandle<()>>,
}

impl Default for ChangeFeed {
    fn default() -> ChangeFeed {
        ChangeFeed {
            wakes: watch::Sender::new(0),
            listener: OnceLock::new(),
        }
    }
}

impl ChangeFeed {
    /// Wakes every waiter.
    pub fn wake(&self) {
        self.wakes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes at every wake from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wakes.subscribe()
    }

    /// Starts, once, the task that turns the PostgreSQL notifications of
    /// `url` into wakes; it stops when the feed is dropped.
    pub fn listen_postgres(self: &Arc<ChangeFeed>, url: &str) {
        self.listener.get_or_init(|| {
            let feed = Arc::downgrade(self);
            AbortOnDropHandle::new(tokio::spawn(listen(feed, url.to_owned())))
        });
    }
}

/// Keeps a connection listening on [`CHANNEL`] and wakes the feed at every
/// notification, until the feed is gone.
async fn listen(feed: std::sync::Weak<ChangeFeed>, url: String) {
    let mut delays = crate::backoff::doubling(Duration::from_millis(100), MAX_LISTEN_BACKOFF, 0.0);
    loop {
        let backoff = delays.next().unwrap_or(MAX_LISTEN_BACKOFF);
        let result = listen_once(&feed, &url).await;
        let Some(live) = feed.upgrade() else { return };
        // Whatever was committed while not listening is announced now.
        live.wake();
        drop(live);
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = backoff.as_millis() as u64,
                "change notifications: listener connection lost"
            ),
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Listens on one connection until it breaks (`Err`) or the feed is gone
/// (`Ok`).
async fn listen_once(feed: &std::sync::Weak<ChangeFeed>, url: &str) -> Result<(), String> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("LISTEN: {e}"))?;
    match feed.upgrade() {
        Some(live) => live.wake(),
        None => return Ok(()),
    }
    let mut notifications = std::pin::pin!(conn.notifications_stream());
    while let Some(notification) = notifications.next().await {
        notification.map_err(|e| format!("receiving: {e}"))?;
        match feed.upgrade() {
            Some(live) => live.wake(),
            None => return Ok(()),
        }
    }
    Err("the connection closed".into())
}
