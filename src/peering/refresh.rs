//! `RefreshPeer`: fetch, clean, guard, apply, all or nothing.
//!
//! 1. Take the peer's refresh locks (a second refresh fails at once).
//! 2. Fetch the peer's data over the network into a spool, cleaning it on
//!    the way, with no transaction open: a slow or broken peer never holds
//!    the database, and a large dump never sits in memory. With a
//!    checkpoint stored on the peer record (and unless `full` is asked),
//!    only the changes since it: a delta. Changes a follow event carried
//!    ([`Refresher::refresh_carried`]) are spooled without a call when they
//!    start at that checkpoint. A full dump is compared with the whole
//!    cache, which is read meanwhile ([`WholeCache::read`]).
//! 3. In one write transaction: the mass-delete guard, then every class and
//!    relation ([`super::sync`]), then the report and the new checkpoint on
//!    the peer record. Any error rolls everything back, checkpoint included,
//!    so an interrupted refresh resumes from the last committed one; readers
//!    never wait (MVCC on PostgreSQL, WAL on SQLite).
//!
//! A delta must leave the cache as a full refresh would. Objects a refresh
//! skips (bad data, a natural key taken) are not sent again by a delta
//! until they change at the peer, so a refresh that recorded any warning
//! stores no checkpoint: the next one is full, and decides them afresh.
//!
//! Failures and refusals are recorded on the peer record too, in a
//! transaction of their own. Every refresh that took the locks is counted
//! in the metrics ([`Metrics::refresh`]), from its report.
//!
//! Each refresh runs in a `refresh` tracing span (peer, id, mode), with a
//! child span per phase: `lock`, `fetch` (or `spool_carried`), `apply`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::fetch;
use super::report::ReportBuilder;
use super::spool::Spool;
use super::sync::WholeCache;
use super::{lock, sync, verify};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::proto::v1 as pb;
use crate::registry::peers::{self, PeerKey};
use crate::store::peers::{self as peer_store, PeerRow, RefreshRecord};
use crate::store::{DbConn, Store, cache, digests, now};

/// A cache smaller than this is never protected by the mass-delete guard.
const GUARD_MIN_CACHED: usize = 10;

/// Runs refreshes for one server.
#[derive(Clone)]
pub struct Refresher {
    /// The database.
    pub store: Store,
    /// Where the per-peer lock files go.
    pub data_dir: PathBuf,
    /// Largest fraction of a peer's cache a refresh may delete unforced,
    /// unless the peer record sets its own.
    pub default_max_delete_fraction: f64,
    /// Bounds on fetching a peer's data.
    pub limits: fetch::FetchLimits,
    /// Objects read back from the spool, checked and written per round.
    pub chunk_size: usize,
    /// Idle PostgreSQL connections for the refresh locks.
    pub lock_connections: lock::LockConnections,
    /// Clients of the peers, kept from refresh to refresh.
    pub clients: fetch::Clients,
    /// Where refreshes are counted.
    pub metrics: Arc<Metrics>,
}

/// How a refresh runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefreshOptions {
    /// Apply a refresh that the mass-delete guard would refuse.
    pub force: bool,
    /// Fetch everything even when the peer record holds a checkpoint.
    pub full: bool,
    /// Then compare the cache with the peer's digests and repair what
    /// differs ([`super::verify`]).
    pub verify: bool,
    /// What started the refresh, for the report.
    pub mode: pb::SyncMode,
}

impl RefreshOptions {
    /// A delta refresh (full without a checkpoint), guarded, started by `mode`.
    pub fn by(mode: pb::SyncMode) -> RefreshOptions {
        RefreshOptions {
            mode,
            ..RefreshOptions::default()
        }
    }
}

impl Refresher {
    /// `RefreshPeer`: refreshes the peer the request names, by hand.
    pub async fn refresh_peer(&self, req: pb::RefreshPeerRequest) -> Result<pb::RefreshReport> {
        let target = PeerKey::required("peer", req.peer)?;
        let options = RefreshOptions {
            force: req.force,
            full: req.full,
            verify: req.verify,
            mode: pb::SyncMode::Manual,
        };
        self.refresh(target, options).await
    }

    /// Refreshes a peer.
    pub async fn refresh(
        &self,
        target: PeerKey,
        options: RefreshOptions,
    ) -> Result<pb::RefreshReport> {
        self.refresh_carried(target, options, None).await
    }

    /// Refreshes a peer with the `changes` a `Follow` event carried when
    /// they start from the checkpoint stored on the peer record (fetching
    /// from the peer otherwise, as [`Refresher::refresh`] does).
    pub async fn refresh_carried(
        &self,
        target: PeerKey,
        options: RefreshOptions,
        changes: Option<&pb::FollowChanges>,
    ) -> Result<pb::RefreshReport> {
        let peer = {
            let mut conn = self.store.read().await?;
            peers::resolve(&mut conn, &target).await?
        };
        let span = tracing::info_span!(
            "refresh",
            peer = %peer.peername,
            peer_id = peer.peer_id,
            mode = options.mode.as_str_name()
        );
        async {
            let started = Instant::now();
            let lock = lock::acquire(&self.store, &self.data_dir, &self.lock_connections, &peer)
                .instrument(tracing::info_span!("lock"))
                .await?;
            let mut result = self.refresh_locked(&peer, options, changes, started).await;
            if options.verify
                && let Ok(refreshed) = &result
                && refreshed.outcome == pb::RefreshOutcome::Applied as i32
            {
                result = self.verify_locked(&peer, options, Instant::now()).await;
            }
            lock.release().await;
            result
        }
        .instrument(span)
        .await
    }

    /// [`Refresher::refresh`] once the peer's locks are held.
    async fn refresh_locked(
        &self,
        peer: &PeerRow,
        options: RefreshOptions,
        changes: Option<&pb::FollowChanges>,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        let mut report = ReportBuilder::new(&peer.peername, now(), options.mode);
        report.timer("lock", started.elapsed());
        let RefreshOptions { force, full, .. } = options;
        let result = self
            .run(peer, force, full, changes, &mut report, started)
            .await;
        self.conclude(peer, result, report, started).await
    }

    /// A verification once the peer's locks are held and the cache was
    /// refreshed: compares digests, then fetches and applies the objects
    /// that differ, keeping the checkpoint (the cache holds no more of the
    /// peer's changes than before).
    async fn verify_locked(
        &self,
        peer: &PeerRow,
        options: RefreshOptions,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        let mut report = ReportBuilder::new(&peer.peername, now(), options.mode);
        let result = self
            .verify_run(peer, options.force, &mut report, started)
            .instrument(tracing::info_span!("verify"))
            .await;
        self.conclude(peer, result, report, started).await
    }

    async fn verify_run(
        &self,
        peer: &PeerRow,
        force: bool,
        report: &mut ReportBuilder,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        let timeout = self.limits.idle_timeout;
        let mut client = self.clients.get(peer, timeout).await?;
        let comparison = verify::compare(&mut client, &self.store, peer.peer_id, timeout)
            .await
            .inspect_err(|_| self.clients.forget(peer.peer_id))?;
        report.timer(
            "compare",
            Duration::from_secs_f64(comparison.report.compare_seconds),
        );
        // The checkpoint the refresh just stored stays.
        let checkpoint = {
            let mut conn = self.store.read().await?;
            peer_store::require(&mut conn, peer.peer_id)
                .await?
                .checkpoint()
                .map(|(epoch, revision)| pb::Checkpoint { epoch, revision })
        };
        let mut verified = comparison.report.clone();
        if comparison.matched() {
            report.verify(verified);
            let mut conn = self.store.write().await?;
            return finish_applied(
                &mut conn,
                peer.peer_id,
                checkpoint.as_ref(),
                report,
                started,
            )
            .await;
        }
        let (mut spool, transport) = fetch::fetch_listed(
            &mut client,
            peer,
            comparison.only(),
            self.limits,
            &self.data_dir,
        )
        .await
        .inspect_err(|_| self.clients.forget(peer.peer_id))?;
        report.timer("transport", transport);
        verified.repair_bytes = spool.bytes() as i64;
        report.verify(verified);
        self.apply(peer, &mut spool, None, force, checkpoint, report, started)
            .instrument(tracing::info_span!("apply"))
            .await
    }

    /// Counts, logs and records the outcome of a refresh or verification.
    async fn conclude(
        &self,
        peer: &PeerRow,
        result: Result<pb::RefreshReport>,
        mut report: ReportBuilder,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        match result {
            Ok(done) => {
                self.metrics.refresh(&done);
                if done.outcome != pb::RefreshOutcome::Applied as i32 {
                    self.record(peer.peer_id, &done).await?;
                }
                tracing::info!(
                    peer = %peer.peername,
                    outcome = ?pb::RefreshOutcome::try_from(done.outcome).unwrap_or_default(),
                    seconds = done.total_seconds,
                    warnings = done.warnings.len(),
                    "refresh done"
                );
                Ok(done)
            }
            Err(e) => {
                let failed = std::mem::take(&mut report).finish(
                    pb::RefreshOutcome::Failed,
                    e.to_string(),
                    started.elapsed(),
                );
                tracing::warn!(peer = %peer.peername, error = %e, "refresh failed; cache unchanged");
                self.metrics.refresh(&failed);
                if let Err(record_error) = self.record(peer.peer_id, &failed).await {
                    tracing::warn!(error = %record_error, "recording the failed refresh");
                }
                Err(e)
            }
        }
    }

    async fn run(
        &self,
        peer: &PeerRow,
        force: bool,
        full: bool,
        changes: Option<&pb::FollowChanges>,
        report: &mut ReportBuilder,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        let since = match full {
            true => None,
            false => peer
                .checkpoint()
                .map(|(epoch, revision)| pb::Checkpoint { epoch, revision }),
        };
        let since_revision = since.as_ref().map_or(0, |c| c.revision);
        // A full dump is compared with the whole cache: read it while the
        // dump arrives.
        let read_ahead = since.is_none().then(|| self.read_whole_cache(peer.peer_id));
        // Changes a follow event carried spare the call when they start
        // where the cache stands.
        let (mut spool, transport, source) = match changes
            .filter(|c| since.is_some() && c.since == since)
        {
            Some(carried) => {
                let _phase = tracing::info_span!("spool_carried").entered();
                let spooling = Instant::now();
                let spool =
                    fetch::spool_carried(peer, carried.clone(), self.limits.dump, &self.data_dir)?;
                (spool, spooling.elapsed(), "carried")
            }
            None => {
                let (spool, transport) = self
                    .fetch(peer, since)
                    .instrument(tracing::info_span!("fetch"))
                    .await?;
                (spool, transport, "transport")
            }
        };
        report.snapshot(
            spool.kind,
            &spool.full_reason,
            since_revision,
            spool.checkpoint.as_ref().map_or(0, |c| c.revision),
        );
        report.timer(source, transport);
        report.timer(
            "peer_db",
            Duration::from_secs_f64(spool.peer_db_seconds.max(0.0)),
        );
        let read_ahead = match read_ahead {
            Some(reading) => {
                let (whole, took) = reading.await.map_err(|e| {
                    Error::Internal(format!("reading the cache ahead of the refresh: {e}"))
                })??;
                report.timer("cache_read", took);
                Some(whole)
            }
            None => None,
        };

        let checkpoint = spool.checkpoint.clone();
        self.apply(
            peer, &mut spool, read_ahead, force, checkpoint, report, started,
        )
        .instrument(tracing::info_span!("apply"))
        .await
    }

    /// Reads everything cached from the peer `peer_id` in a task of its
    /// own, with the time it took (see [`WholeCache::read`]).
    fn read_whole_cache(&self, peer_id: i64) -> AbortOnDropHandle<Result<(WholeCache, Duration)>> {
        let store = self.store.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            let reading = Instant::now();
            let mut conn = store.read().await?;
            let whole = WholeCache::read(&mut conn, peer_id).await?;
            Ok((whole, reading.elapsed()))
        }))
    }

    /// Applies a spool in one write transaction, behind the mass-delete
    /// guard (unless `force`), and records the report with `checkpoint`.
    /// `read_ahead`, for a full dump, is the whole cache read under the
    /// refresh lock.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        peer: &PeerRow,
        spool: &mut Spool,
        read_ahead: Option<WholeCache>,
        force: bool,
        checkpoint: Option<pb::Checkpoint>,
        report: &mut ReportBuilder,
        started: Instant,
    ) -> Result<pb::RefreshReport> {
        let fraction = peer
            .max_delete_fraction
            .unwrap_or(self.default_max_delete_fraction);
        let peer_id = peer.peer_id;
        let chunk_size = self.chunk_size;
        let checkpoint = checkpoint.as_ref();
        let mut conn = self.store.write().await?;
        conn.transaction(|c| {
            Box::pin(async move {
                digests::mark_applying(c, peer_id).await?;
                let how = Applying {
                    force,
                    fraction,
                    chunk_size,
                    read_ahead,
                };
                let done = apply_in(c, peer_id, spool, how, checkpoint, report, started).await?;
                digests::unmark_applying(c, peer_id).await?;
                Ok(done)
            })
        })
        .await
    }

    /// Fetches the peer's data since the checkpoint `since` (everything
    /// without one), with the time it took.
    async fn fetch(
        &self,
        peer: &PeerRow,
        since: Option<pb::Checkpoint>,
    ) -> Result<(Spool, Duration)> {
        let mut client = self.clients.get(peer, self.limits.idle_timeout).await?;
        fetch::fetch(&mut client, peer, since, self.limits, &self.data_dir)
            .await
            .inspect_err(|_| {
                // A fresh connection for the next attempt.
                self.clients.forget(peer.peer_id);
            })
    }

    /// Records a report on the peer in a transaction of its own.
    async fn record(&self, peer_id: i64, report: &pb::RefreshReport) -> Result<()> {
        let mut conn = self.store.write().await?;
        record_on(&mut conn, peer_id, report).await
    }
}

/// How one refresh applies its spool.
#[derive(Debug)]
struct Applying {
    /// Apply whatever the refresh deletes.
    force: bool,
    /// Largest fraction of the cache a refresh may delete unforced.
    fraction: f64,
    /// Objects read back, checked and written per round.
    chunk_size: usize,
    /// For a full dump, the whole cache, read under the refresh lock while
    /// the dump arrived.
    read_ahead: Option<WholeCache>,
}

/// The body of [`Refresher::apply`], inside its transaction.
async fn apply_in(
    c: &mut DbConn,
    peer_id: i64,
    spool: &mut Spool,
    Applying {
        force,
        fraction,
        chunk_size,
        read_ahead,
    }: Applying,
    checkpoint: Option<&pb::Checkpoint>,
    report: &mut ReportBuilder,
    started: Instant,
) -> Result<pb::RefreshReport> {
    if spool.is_empty_delta() {
        // Nothing changed at the peer: nothing to compare.
        return finish_applied(c, peer_id, checkpoint, report, started).await;
    }
    let guarding = Instant::now();
    let cached = sync::CachedIds::load(c, peer_id, spool, read_ahead).await?;
    let gone = cached.doomed(c, peer_id, spool).await?;
    // The ids loaded are all cached (for a full dump, the whole cache):
    // deletions within the limit of those are within the limit of the
    // cache, which is then not counted.
    let refusal = if force || gone as f64 <= fraction * cached.loaded() as f64 {
        None
    } else {
        let total = match cached.is_whole() {
            true => cached.loaded(),
            false => cache::counts(c, peer_id).await?.values().sum::<i64>() as usize,
        };
        guard(gone, total, fraction)
    };
    report.timer("guard", guarding.elapsed());
    if let Some(reason) = refusal {
        let refused =
            std::mem::take(report).finish(pb::RefreshOutcome::Refused, reason, started.elapsed());
        return Ok(refused);
    }
    sync::apply(c, peer_id, spool, cached, chunk_size, report).await?;
    finish_applied(c, peer_id, checkpoint, report, started).await
}

/// Records an applied refresh on the peer, in its transaction: the report,
/// and the checkpoint the cache now reflects (none after a refresh that
/// skipped anything: see the module's documentation).
async fn finish_applied(
    conn: &mut DbConn,
    peer_id: i64,
    checkpoint: Option<&pb::Checkpoint>,
    report: &mut ReportBuilder,
    started: Instant,
) -> Result<pb::RefreshReport> {
    let applied = std::mem::take(report).finish(
        pb::RefreshOutcome::Applied,
        String::new(),
        started.elapsed(),
    );
    let checkpoint = match applied.warnings.is_empty() {
        true => checkpoint,
        false => None,
    };
    peer_store::record_applied(
        conn,
        peer_id,
        &record_of(&applied),
        checkpoint.map(|c| (c.epoch.as_str(), c.revision)),
    )
    .await?;
    Ok(applied)
}

async fn record_on(conn: &mut DbConn, peer_id: i64, report: &pb::RefreshReport) -> Result<()> {
    peer_store::record_refresh(conn, peer_id, &record_of(report)).await
}

/// The columns that record `report` on the peer.
fn record_of(report: &pb::RefreshReport) -> RefreshRecord {
    RefreshRecord {
        last_refresh_time: Some(now()),
        last_refresh_outcome: report.outcome,
        last_refresh_report: Some(report.encode_to_vec()),
    }
}

/// The mass-delete guard: `Some(reason)` when deleting `gone` of the
/// `cached` objects is more than `fraction` of a non-trivial cache.
fn guard(gone: usize, cached: usize, fraction: f64) -> Option<String> {
    if cached < GUARD_MIN_CACHED || gone as f64 <= fraction * cached as f64 {
        return None;
    }
    Some(format!(
        "refused: this refresh would delete {gone} of the {cached} objects cached from the peer ({:.0}%), more than its limit of {:.0}%; the cache is unchanged. If the peer really removed them, refresh with force",
        100.0 * gone as f64 / cached as f64,
        100.0 * fraction
    ))
}
