//! What a run found: every figure the printed tables show, as serializable
//! structs, and the markdown tables rendered from them.
//!
//! The tables are rendered from these structs only, and `--json` writes the
//! same structs with `serde_json`, so a script reading the JSON sees every
//! figure a person reads in the tables (derived ones, such as rates and the
//! ratios to the floor and to the replication baseline, included).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::follow::Latencies;
use crate::replication::Baseline;
use crate::servers::Backend;
use crate::shapes::Shape;
use crate::stats::percentile;

/// Writes `results` as pretty-printed JSON to `path`.
pub fn write_json(path: &Path, results: &impl Serialize) -> anyhow::Result<()> {
    let mut json = serde_json::to_string_pretty(results)?;
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

/// A data set, as the results name it.
#[derive(Debug, Clone, Serialize)]
pub struct DataSet {
    /// Its label: the size, times the scale if not 1 (`huge×10`).
    pub size: String,
    /// The multiplier of the size's object counts.
    pub scale: usize,
    /// Objects (sites, keys, persons, nodes, slices).
    pub objects: usize,
    /// Memberships (person-site, person-role, person-key, slice-node,
    /// slice-person).
    pub memberships: usize,
}

impl From<Shape> for DataSet {
    fn from(shape: Shape) -> DataSet {
        DataSet {
            size: shape.label(),
            scale: shape.scale,
            objects: shape.objects(),
            memberships: shape.memberships(),
        }
    }
}

/// The results of the refresh benchmark.
#[derive(Debug, Serialize)]
pub struct RefreshResults {
    /// The data set of the serving registry.
    pub data_set: DataSet,
    /// Runs per step (the step figures are their medians).
    pub runs: usize,
    /// Changes timed in follow mode and in the baseline (0: neither ran).
    pub follow_changes: usize,
    /// The lines of the first table, per backend in the order they ran.
    pub steps: Vec<StepFigures>,
    /// The follow-mode lines of the second table, one per backend.
    pub follow: Vec<FollowFigures>,
    /// PostgreSQL's logical replication, the last line of the second table
    /// (absent when follow mode was not timed).
    pub baseline: Option<Baseline>,
}

/// One line of the first table: a step timed on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct StepFigures {
    /// The data set's label.
    pub size: String,
    /// The registries' database.
    pub backend: Backend,
    /// What was timed.
    pub step: &'static str,
    /// Wall-clock seconds (the median of the runs; for a latency, the
    /// median latency).
    pub seconds: f64,
    /// Objects the step handled (for a latency: the changes measured).
    pub objects: usize,
    /// `objects / seconds`; none for a latency.
    pub objects_per_second: Option<f64>,
    /// Bytes received (GetPeerData).
    pub bytes: Option<u64>,
    /// `bytes / seconds`, in MB (10^6 bytes) per second.
    pub megabytes_per_second: Option<f64>,
    /// The time as a multiple of the floor's (refreshes and the floor).
    pub floor_ratio: Option<f64>,
    /// Each run's seconds, in order (refreshes and the floor).
    pub run_seconds: Vec<f64>,
    /// Each run's time as a multiple of the floor: of the floor run made
    /// beside it (the first refresh), or of the floor's median (the other
    /// refreshes).
    pub run_floor_ratios: Vec<f64>,
    /// Peak resident memory of the server doing the work, MiB.
    pub peak_mib: Option<f64>,
    /// Rows the refresh wrote (the floor: rows it loaded).
    pub rows_written: Option<i64>,
    /// The refresh report's phase timers, as printed.
    pub phases: String,
    /// For a latency: its 99th percentile, seconds.
    pub p99_seconds: Option<f64>,
    /// For a verification: the bytes it moved (digests and objects fetched
    /// again) as a share of a full dump's bytes.
    pub dump_share: Option<f64>,
}

impl StepFigures {
    /// A step that handled `objects` in `seconds`.
    pub fn timed(
        shape: Shape,
        backend: Backend,
        step: &'static str,
        seconds: f64,
        objects: usize,
    ) -> StepFigures {
        StepFigures {
            size: shape.label(),
            backend,
            step,
            seconds,
            objects,
            objects_per_second: Some(objects as f64 / seconds),
            bytes: None,
            megabytes_per_second: None,
            floor_ratio: None,
            run_seconds: Vec::new(),
            run_floor_ratios: Vec::new(),
            peak_mib: None,
            rows_written: None,
            phases: String::new(),
            p99_seconds: None,
            dump_share: None,
        }
    }

    /// Records that the step received `bytes`.
    pub fn with_bytes(mut self, bytes: u64) -> StepFigures {
        self.bytes = Some(bytes);
        self.megabytes_per_second = Some(bytes as f64 / self.seconds / 1e6);
        self
    }

    /// A latency over `latencies.changes` changes: the median as the time.
    pub fn latency(
        shape: Shape,
        backend: Backend,
        step: &'static str,
        latencies: &Latencies,
    ) -> StepFigures {
        StepFigures {
            objects_per_second: None,
            p99_seconds: Some(latencies.p99_ms / 1000.0),
            ..StepFigures::timed(
                shape,
                backend,
                step,
                latencies.median_ms / 1000.0,
                latencies.changes,
            )
        }
    }

    /// The rate column: objects per second, with MB/s for a transfer, or a
    /// latency's 99th percentile.
    fn rate(&self) -> String {
        match (self.p99_seconds, self.objects_per_second) {
            (Some(p99), _) => format!("(latency; p99 {:.2} ms)", p99 * 1000.0),
            (None, rate) => {
                let rate = rate.unwrap_or_default();
                match self.megabytes_per_second {
                    Some(mb) => format!("{rate:.0} ({mb:.1} MB/s)"),
                    None => format!("{rate:.0}"),
                }
            }
        }
    }
}

/// One backend's line of the follow table: commit on the serving registry
/// to the refreshing registry's cache.
#[derive(Debug, Clone, Serialize)]
pub struct FollowFigures {
    /// The data set's label.
    pub size: String,
    /// The registries' database.
    pub backend: Backend,
    /// Changes measured.
    pub changes: usize,
    /// Median latency, milliseconds.
    pub median_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// PostgreSQL: the median between the two rows' write stamps, as the
    /// baseline is measured.
    pub stamped_median_ms: Option<f64>,
    /// PostgreSQL: the 99th percentile between the write stamps.
    pub stamped_p99_ms: Option<f64>,
    /// The median (the stamped one where there is one) as a multiple of
    /// the replication baseline's median, when it was measured.
    pub replication_ratio: Option<f64>,
}

impl FollowFigures {
    /// The figures of `latencies` on `backend`; compared to the baseline
    /// by [`RefreshResults::new`].
    pub fn new(shape: Shape, backend: Backend, latencies: &Latencies) -> FollowFigures {
        FollowFigures {
            size: shape.label(),
            backend,
            changes: latencies.changes,
            median_ms: latencies.median_ms,
            p99_ms: latencies.p99_ms,
            stamped_median_ms: latencies.stamped_ms.map(|s| s.0),
            stamped_p99_ms: latencies.stamped_ms.map(|s| s.1),
            replication_ratio: None,
        }
    }
}

impl RefreshResults {
    /// The results, with each follow line compared to the baseline.
    pub fn new(
        shape: Shape,
        runs: usize,
        follow_changes: usize,
        steps: Vec<StepFigures>,
        mut follow: Vec<FollowFigures>,
        baseline: Option<Baseline>,
    ) -> RefreshResults {
        if let Some(Baseline::Measured(b)) = &baseline {
            for f in &mut follow {
                // Compared as the baseline is measured where the stamps exist.
                let compared = f.stamped_median_ms.unwrap_or(f.median_ms);
                f.replication_ratio = Some(compared / b.median_ms);
            }
        }
        RefreshResults {
            data_set: shape.into(),
            runs,
            follow_changes,
            steps,
            follow,
            baseline,
        }
    }

    /// The first table: every step of every backend.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| size | backend | step | wall s (median) | objects/s | × floor | × floor, worst run | peak MiB | rows written | phases, last run (s; ms below 0.1 s) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for m in &self.steps {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
                m.size,
                m.backend,
                m.step,
                m.seconds,
                m.rate(),
                fixed(m.floor_ratio, 2),
                fixed(m.run_floor_ratios.iter().copied().reduce(f64::max), 2),
                fixed(m.peak_mib, 0),
                m.rows_written.map(|c| c.to_string()).unwrap_or_default(),
                m.phases
            );
        }
        t
    }

    /// The follow table: per backend, the median and 99th percentile from
    /// commit to cache, against logical replication's median.
    pub fn follow_table(&self) -> String {
        let mut t = String::from(
            "| size | backend | follow: commit to cache | median ms | p99 ms | stamped median ms | stamped p99 ms | × replication median |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
        );
        for f in &self.follow {
            let _ = writeln!(
                t,
                "| {} | {} | {} changes | {:.2} | {:.2} | {} | {} | {} |",
                f.size,
                f.backend,
                f.changes,
                f.median_ms,
                f.p99_ms,
                fixed(f.stamped_median_ms, 2),
                fixed(f.stamped_p99_ms, 2),
                fixed(f.replication_ratio, 1)
            );
        }
        match &self.baseline {
            Some(Baseline::Measured(b)) => {
                let _ = writeln!(
                    t,
                    "| {} | PostgreSQL logical replication (baseline) | {} changes | | | {:.2} | {:.2} | 1.0 |",
                    self.data_set.size, b.changes, b.median_ms, b.p99_ms
                );
            }
            Some(Baseline::Unavailable(why)) => {
                let _ = writeln!(t, "\nbaseline not measured: {why}");
            }
            None => {}
        }
        t
    }
}

/// `value` with `decimals` decimals; empty when there is none.
fn fixed(value: Option<f64>, decimals: usize) -> String {
    value.map(|v| format!("{v:.decimals$}")).unwrap_or_default()
}

/// The results of `fedreg-bench load` on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResults {
    /// The registries' database.
    pub backend: Backend,
    /// The serving registry's data set.
    pub data_set: DataSet,
    /// Seconds the load was held.
    pub seconds: f64,
    /// GetPeerData readers.
    pub readers: usize,
    /// Of the readers, those that paused after every message.
    pub slow_readers: usize,
    /// Peer tokens the readers were spread over.
    pub peer_tokens: usize,
    /// Admin writes per second asked for.
    pub writes_per_second: u32,
    /// Follow streams.
    pub followers: usize,
    /// Peak resident memory of the serving server, MiB, if known.
    pub peak_mib: Option<f64>,
    /// The figures of each kind of call, by name.
    pub calls: Vec<CallFigures>,
}

/// What the calls of one kind gave under load.
#[derive(Debug, Clone, Serialize)]
pub struct CallFigures {
    /// The call, as the table names it.
    pub call: &'static str,
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls that failed.
    pub errors: usize,
    /// Calls refused with RESOURCE_EXHAUSTED, as documented (the greedy
    /// client).
    pub refused: usize,
    /// Successful calls per second.
    pub per_second: f64,
    /// Latency percentiles of the successful calls, milliseconds (none
    /// without one).
    pub p50_ms: Option<f64>,
    /// 90th percentile, milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub p99_ms: Option<f64>,
    /// The slowest, milliseconds.
    pub max_ms: Option<f64>,
    /// Objects received (GetPeerData) or events (Follow) per second.
    pub items_per_second: f64,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl CallFigures {
    /// The figures of `call` from the latencies (seconds) of its
    /// successful calls, held for `held` seconds.
    pub fn new(
        call: &'static str,
        mut latencies: Vec<f64>,
        errors: usize,
        refused: usize,
        items: usize,
        held: f64,
    ) -> CallFigures {
        latencies.sort_by(f64::total_cmp);
        let ms = |p: f64| (!latencies.is_empty()).then(|| percentile(&latencies, p) * 1000.0);
        CallFigures {
            call,
            ok: latencies.len(),
            errors,
            refused,
            per_second: latencies.len() as f64 / held,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
            items_per_second: items as f64 / held,
            first_error: None,
        }
    }
}

impl LoadResults {
    /// Calls that failed, of every kind.
    pub fn errors(&self) -> usize {
        self.calls.iter().map(|c| c.errors).sum()
    }

    /// The load's description, its table and its first errors.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\nload on {}, data set {} ({} objects), {:.0} s: {} GetPeerData readers ({} slow) over {} peer tokens, \
             a greedy token, {} writes/s, {} followers, a refresh loop; serving peak {}\n\n\
             | call | ok | errors | refused | per s | p50 ms | p90 ms | p99 ms | max ms | items/s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.backend,
            self.data_set.size,
            self.data_set.objects,
            self.seconds,
            self.readers,
            self.slow_readers,
            self.peer_tokens,
            self.writes_per_second,
            self.followers,
            self.peak_mib
                .map_or_else(|| "unknown".into(), |m| format!("{m:.0} MiB")),
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        for c in &self.calls {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.0} |",
                c.call,
                c.ok,
                c.errors,
                c.refused,
                c.per_second,
                ms(c.p50_ms),
                ms(c.p90_ms),
                ms(c.p99_ms),
                ms(c.max_ms),
                c.items_per_second,
            );
        }
        for c in &self.calls {
            if let Some(e) = &c.first_error {
                let _ = write!(out, "\nfirst {} error: {e}", c.call);
            }
        }
        out
    }
}

/// The results of `fedreg-bench fanout`.
#[derive(Debug, Serialize)]
pub struct FanoutResults {
    /// One line per backend and stream count, in the order they ran.
    pub runs: Vec<FanoutFigures>,
}

/// One fan-out run: a serving registry, its plain streams and followers.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutFigures {
    /// The registries' database.
    pub backend: Backend,
    /// Plain Follow streams (checkpoints only).
    pub streams: usize,
    /// HTTP/2 connections the plain streams shared.
    pub connections: usize,
    /// Streams that never read their events.
    pub slow: usize,
    /// Real registries following the serving one.
    pub followers: usize,
    /// Commits timed.
    pub changes: usize,
    /// Events the plain streams received (the first, current checkpoint
    /// included).
    pub events: usize,
    /// Commit to event, over every stream and commit: median, milliseconds.
    pub event_p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub event_p99_ms: Option<f64>,
    /// The slowest, milliseconds.
    pub event_max_ms: Option<f64>,
    /// Commit to the last stream's event, over the commits: median,
    /// milliseconds.
    pub last_event_p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub last_event_p99_ms: Option<f64>,
    /// Commit to visible in a follower's cache, over every follower and
    /// commit: median, milliseconds.
    pub cache_p50_ms: Option<f64>,
    /// 99th percentile, milliseconds.
    pub cache_p99_ms: Option<f64>,
    /// Commits' revisions a plain stream never received, over all streams.
    pub lost: usize,
    /// Events whose revision was below the one before, over all streams.
    pub reordered: usize,
    /// Events the slow streams held, delivered when they were read at the
    /// end.
    pub slow_events: usize,
    /// Slow streams the server had ended for reading nothing.
    pub slow_ended: usize,
    /// Slow streams that, resumed from their last checkpoint, reached the
    /// last commit.
    pub slow_resumed: usize,
    /// Database reads the serving registry made for its Follow streams
    /// (all of them, the followers' included) per commit.
    pub reads_per_change: Option<f64>,
    /// Peak resident memory of the serving server, MiB, if known.
    pub peak_mib: Option<f64>,
}

impl FanoutResults {
    /// The table of the runs.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "\n| backend | streams | connections | slow | followers | changes | event p50 ms | \
             event p99 ms | event max ms | last stream p50 ms | last stream p99 ms | \
             cache p50 ms | cache p99 ms | lost | reordered | slow held / ended / resumed | \
             db reads / change | peak MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        for r in &self.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} |",
                r.backend,
                r.streams,
                r.connections,
                r.slow,
                r.followers,
                r.changes,
                ms(r.event_p50_ms),
                ms(r.event_p99_ms),
                ms(r.event_max_ms),
                ms(r.last_event_p50_ms),
                ms(r.last_event_p99_ms),
                ms(r.cache_p50_ms),
                ms(r.cache_p99_ms),
                r.lost,
                r.reordered,
                r.slow_events,
                r.slow_ended,
                r.slow_resumed,
                r.reads_per_change
                    .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                r.peak_mib.map_or_else(|| "-".into(), |m| format!("{m:.0}")),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::ReplicationBaseline;
    use crate::shapes::Size;

    /// Latencies of 10 changes: a median of 1 ms, a p99 of 3 ms, and on
    /// PostgreSQL stamped ones of 2 and 4 ms.
    fn latencies(backend: Backend) -> Latencies {
        Latencies {
            median_ms: 1.0,
            p99_ms: 3.0,
            stamped_ms: (backend == Backend::Postgres).then_some((2.0, 4.0)),
            changes: 10,
            last_report: None,
        }
    }

    /// The follow figures of [`latencies`].
    fn follow(backend: Backend) -> FollowFigures {
        FollowFigures::new(Shape::new(Size::Mini, 1), backend, &latencies(backend))
    }

    /// The follow table and the JSON carry the baseline and the ratios to
    /// it (to the stamped median where there is one).
    #[test]
    fn baseline_compared() {
        let baseline = Baseline::Measured(ReplicationBaseline {
            median_ms: 0.5,
            p99_ms: 0.9,
            changes: 10,
        });
        let results = RefreshResults::new(
            Shape::new(Size::Mini, 1),
            1,
            10,
            Vec::new(),
            vec![follow(Backend::Sqlite), follow(Backend::Postgres)],
            Some(baseline),
        );
        let table = results.follow_table();
        assert!(table.contains("| mini | sqlite | 10 changes | 1.00 | 3.00 |  |  | 2.0 |"));
        assert!(
            table.contains("| mini | postgres | 10 changes | 1.00 | 3.00 | 2.00 | 4.00 | 4.0 |")
        );
        assert!(table.contains(
            "| mini | PostgreSQL logical replication (baseline) | 10 changes | | | 0.50 | 0.90 | 1.0 |"
        ));
        let json = serde_json::to_value(&results).expect("serializes");
        assert_eq!(json["baseline"]["measured"]["median_ms"], 0.5);
        assert_eq!(json["follow"][1]["replication_ratio"], 4.0);
    }

    /// A transfer shows its rate in MB/s, a latency its 99th percentile.
    #[test]
    fn rates() {
        let shape = Shape::new(Size::Mini, 1);
        let transfer =
            StepFigures::timed(shape, Backend::Sqlite, "t", 0.5, 5).with_bytes(2_000_000);
        assert_eq!(transfer.rate(), "10 (4.0 MB/s)");
        let latency =
            StepFigures::latency(shape, Backend::Sqlite, "l", &latencies(Backend::Sqlite));
        assert_eq!(latency.rate(), "(latency; p99 3.00 ms)");
    }
}
