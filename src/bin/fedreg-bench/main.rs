//! `fedreg-bench`: times federation between two real fedreg servers.
//!
//! Starts a serving and a refreshing registry (child processes, loopback),
//! fills the serving one with a data set of the reference federation test,
//! then times on the refreshing one: the first refresh, a refresh with
//! nothing changed and one after 1% changed (each as a full refresh and as a
//! delta refresh from the checkpoint), GetPeerData alone, and the floor: the
//! same rows bulk-loaded into the same schema by the database's fastest
//! plain method, right after each run of the first refresh. Prints a
//! markdown table (and JSON with `--json`).
//!
//! `fedreg-bench serve ...` runs a fedreg server (used for the children);
//! `fedreg-bench load ...` holds a mixed load on one server ([`load`]).

mod data;
mod follow;
mod load;
mod replication;
mod servers;
mod shapes;

use std::fmt::Write as _;
use std::time::Instant;

use clap::Parser;
use fedreg::proto::v1 as pb;
use fedreg::store::Store;

use servers::{Database, Registry};
use shapes::Shape;

/// mimalloc instead of the system allocator: a registry moves many small
/// rows between the database's threads and the async ones, which glibc's
/// allocator serves poorly (a large share of GetPeerData's time went to it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmark of RefreshPeer and GetPeerData between two fedreg servers.
#[derive(Debug, Parser)]
#[command(name = "fedreg-bench")]
struct Args {
    /// Data set: mini, normal, big or huge (REFERENCE.md's federation test).
    #[arg(long, default_value = "huge")]
    size: String,
    /// Multiplies the data set's object counts (memberships keep their ratios).
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// sqlite, postgres, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Runs per step; the table shows the median.
    #[arg(long)]
    runs: Option<usize>,
    /// PostgreSQL server for the postgres backend (databases are created on it).
    #[arg(
        long,
        env = "FEDREG_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg_url: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Changes timed in follow mode (commit on the serving registry to the
    /// refreshing one's cache), and in PostgreSQL's logical replication as
    /// the baseline; 0 skips both.
    #[arg(long, default_value_t = 1000)]
    follow_changes: usize,
}

/// One line of the results table.
#[derive(Debug, Clone)]
struct Measure {
    size: String,
    backend: String,
    step: &'static str,
    seconds: f64,
    objects: usize,
    bytes: Option<u64>,
    floor_ratio: Option<f64>,
    peak_mib: Option<f64>,
    changes: Option<i64>,
    phases: String,
    /// For a latency (the time is then its median): the 99th percentile.
    p99_seconds: Option<f64>,
    /// For the follow latency on PostgreSQL: the median and 99th
    /// percentile, milliseconds, between write stamps, as the baseline is
    /// measured.
    stamped_ms: Option<(f64, f64)>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a == "serve") {
        let logs = std::env::var("FEDREG_LOG").unwrap_or_else(|_| "warn".into());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(logs))
            .with_writer(std::io::stderr)
            .init();
        let cli = fedreg::cli::Cli::parse_from(
            std::iter::once("fedreg".to_owned()).chain(argv[1..].iter().cloned()),
        );
        return match fedreg::cli::run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fedreg: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Hidden: `replication-baseline [CHANGES]` measures PostgreSQL's own
    // logical replication latency, the baseline for follow mode.
    if argv.get(1).is_some_and(|a| a == "replication-baseline") {
        return replication::command(&argv[2..]).await;
    }
    if argv.get(1).is_some_and(|a| a == "load") {
        return load::command(&argv[2..]).await;
    }
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedreg-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let shape = Shape::named(&args.size, args.scale.max(1)).ok_or_else(|| {
        format!(
            "unknown size {:?}: use mini, normal, big or huge",
            args.size
        )
    })?;
    let runs = args
        .runs
        .unwrap_or(if shape.objects() > 100_000 { 1 } else { 3 })
        .max(1);
    let backends: Vec<&str> = match args.backend.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => {
            return Err(format!(
                "unknown backend {other:?}: use sqlite, postgres or both"
            ));
        }
    };
    eprintln!(
        "data set {}: {} objects, {} memberships; {runs} run(s) per step",
        shape.label(),
        shape.objects(),
        shape.memberships()
    );
    let mut results = Vec::new();
    for backend in backends {
        results.extend(bench_backend(args, shape, backend, runs).await?);
    }
    let _ = std::fs::remove_dir_all(servers::work_dir());
    let baseline = match args.follow_changes {
        0 => None,
        n => {
            eprintln!("baseline: PostgreSQL logical replication, {n} changes");
            Some(replication::measure(&args.pg_url, n).await?)
        }
    };
    println!("{}", table(&results));
    if args.follow_changes > 0 {
        println!("{}", follow_table(shape, &results, baseline.as_ref()));
    }
    if let Some(replication::Baseline::Measured(b)) = &baseline {
        results.push(latency_measure(
            shape,
            "postgres-logical-replication",
            "replication: commit to visible",
            b.median_ms,
            b.p99_ms,
            b.changes,
        ));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, json(&results))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Compact phase timers of a report: `transport 0.120 · sites 0.010 ...`.
fn phases(report: &pb::RefreshReport) -> String {
    report
        .timers
        .iter()
        .filter(|t| t.seconds >= 0.0005)
        .map(|t| format!("{} {:.3}", t.phase, t.seconds))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Every phase timer of a small refresh, to a tenth of a millisecond:
/// `total 2.9 ms: lock 0.2 · transport 1.1 ...`.
fn fine_phases(report: &pb::RefreshReport) -> String {
    let timers: Vec<String> = report
        .timers
        .iter()
        .filter(|t| t.seconds >= 0.00005)
        .map(|t| format!("{} {:.1}", t.phase, t.seconds * 1000.0))
        .collect();
    format!(
        "last refresh {:.1} ms: {}",
        report.total_seconds * 1000.0,
        timers.join(" · ")
    )
}

/// Rows the refresh wrote, by the report's counters.
fn changes(report: &pb::RefreshReport) -> i64 {
    report
        .classes
        .iter()
        .map(|c| c.added + c.updated + c.deleted)
        .sum::<i64>()
        + report
            .relations
            .iter()
            .map(|r| r.added + r.removed)
            .sum::<i64>()
}

/// The refresh steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Into an empty cache (the peer record is re-created before each run
    /// after the first).
    First,
    /// Nothing changed on the serving side since the last refresh; a full
    /// refresh (`false`) or a delta.
    Unchanged(bool),
    /// After [`data::change_one_percent`] on the serving side; a full
    /// refresh (`false`) or a delta.
    OnePercent(bool),
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::First => "first refresh",
            Step::Unchanged(false) => "nothing changed (full)",
            Step::Unchanged(true) => "nothing changed (delta)",
            Step::OnePercent(false) => "1% changed (full)",
            Step::OnePercent(true) => "1% changed (delta)",
        }
    }

    /// Whether the step refreshes from the checkpoint.
    fn delta(self) -> bool {
        matches!(self, Step::Unchanged(true) | Step::OnePercent(true))
    }
}

/// The two registries of one backend and what the steps share.
struct Bench<'a> {
    shape: Shape,
    serving: &'a Registry,
    serving_store: &'a Store,
    refreshing: &'a Registry,
    /// The refreshing registry's peer id for the serving one.
    peer_id: i64,
    /// The peer token the serving registry issued to the refreshing one.
    token: String,
}

/// Refreshes `peer_id` on `r` and times it; `Ok(None)` when the
/// mass-delete guard refused it, an error for any other outcome.
async fn refresh(
    r: &Registry,
    peer_id: i64,
    force: bool,
    full: bool,
) -> Result<Option<(f64, pb::RefreshReport)>, String> {
    let started = Instant::now();
    let report = r
        .peers()
        .refresh_peer(pb::RefreshPeerRequest {
            peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
            force,
            full,
        })
        .await
        .map_err(|e| format!("RefreshPeer: {e}"))?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    match pb::RefreshOutcome::try_from(report.outcome) {
        Ok(pb::RefreshOutcome::Applied) => Ok(Some((seconds, report))),
        Ok(pb::RefreshOutcome::Refused) => Ok(None),
        _ => Err(format!(
            "refresh not applied: outcome {} {}",
            report.outcome, report.reason
        )),
    }
}

/// Runs `step` `runs` times; the measure holds the median time, the peak
/// memory of the refreshing server and the last report. Checks what the
/// refresh wrote: everything on a first refresh, nothing when nothing
/// changed, something after a change.
async fn refresh_step(
    b: &mut Bench<'_>,
    step: Step,
    runs: usize,
    mut floor: Option<&mut Floor<'_>>,
) -> Result<Measure, String> {
    let r = b.refreshing;
    let (mut times, mut peak, mut last) = (Vec::new(), 0f64, None);
    for run in 0..runs {
        match step {
            Step::First if run > 0 => {
                r.peers()
                    .delete_peer(pb::DeletePeerRequest { peer_id: b.peer_id })
                    .await
                    .map_err(|e| format!("DeletePeer: {e}"))?;
                b.peer_id = servers::create_peer_record(r, b.serving, &b.token).await?;
            }
            Step::OnePercent(delta) => {
                let mut conn = b.serving_store.write().await.map_err(|e| e.to_string())?;
                // Other objects for the delta runs than for the full ones.
                let round = if delta { run + runs } else { run };
                data::change_one_percent(&mut conn, b.shape, round).await?;
            }
            _ => {}
        }
        r.reset_peak_memory();
        let full = !step.delta();
        let (t, report) = match refresh(r, b.peer_id, false, full).await? {
            Some(done) => done,
            None => {
                eprintln!("  the mass-delete guard refused the refresh; refreshing with force");
                refresh(r, b.peer_id, true, full)
                    .await?
                    .ok_or("a forced refresh was refused")?
            }
        };
        let snapshot = pb::SnapshotKind::try_from(report.snapshot).unwrap_or_default();
        let expected = match full {
            true => pb::SnapshotKind::Full,
            false => pb::SnapshotKind::Delta,
        };
        if step != Step::First && snapshot != expected {
            return Err(format!(
                "{}: the peer sent {snapshot:?} ({})",
                step.label(),
                report.full_reason
            ));
        }
        peak = peak.max(r.peak_memory_mib().unwrap_or(0.0));
        let written = changes(&report);
        let expected = (b.shape.objects() + b.shape.memberships()) as i64;
        match step {
            Step::First if written != expected => {
                return Err(format!(
                    "first refresh wrote {written} rows, expected {expected}: {:?}",
                    report.warnings.first()
                ));
            }
            Step::Unchanged(_) if written != 0 => {
                return Err(format!(
                    "a refresh with nothing changed wrote {written} rows"
                ));
            }
            Step::OnePercent(_) if written == 0 => {
                return Err("a refresh after 1% changed wrote nothing".into());
            }
            _ => {}
        }
        times.push(t);
        last = Some(report);
        if let Some(floor) = floor.as_mut() {
            floor.run().await?;
        }
    }
    let report = last.ok_or("no run")?;
    Ok(Measure {
        size: b.shape.label(),
        backend: String::new(),
        step: step.label(),
        seconds: median(times),
        objects: b.shape.objects(),
        bytes: None,
        floor_ratio: None,
        peak_mib: Some(peak),
        changes: Some(changes(&report)),
        phases: phases(&report),
        p99_seconds: None,
        stamped_ms: None,
    })
}

/// Streams GetPeerData from the serving registry `runs` times with the
/// peer token, everything or (with `since`) the changes after a
/// checkpoint; the measure holds the median time, the objects and bytes
/// received, and the serving server's peak memory. Also returns the
/// checkpoint the stream ended at.
async fn get_peer_data_step(
    b: &Bench<'_>,
    runs: usize,
    since: Option<pb::Checkpoint>,
) -> Result<(Measure, Option<pb::Checkpoint>), String> {
    let s = b.serving;
    let (mut times, mut peak, mut sent, mut bytes) = (Vec::new(), 0f64, 0usize, 0u64);
    let mut reached = None;
    for _ in 0..runs {
        s.reset_peak_memory();
        let started = Instant::now();
        let mut stream = s
            .peering(&b.token)
            .get_peer_data(pb::GetPeerDataRequest {
                since: since.clone(),
            })
            .await
            .map_err(|e| format!("GetPeerData: {e}"))?
            .into_inner();
        (sent, bytes) = (0, 0);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|e| format!("GetPeerData stream: {e}"))?
        {
            bytes += prost::Message::encoded_len(&chunk) as u64;
            if let Some(pb::peer_data_chunk::Part::Trailer(t)) = &chunk.part {
                reached = t.checkpoint.clone();
            }
            if let Some(pb::peer_data_chunk::Part::Batch(b)) = &chunk.part {
                sent += b.sites.len()
                    + b.keys.len()
                    + b.persons.len()
                    + b.nodes.len()
                    + b.slices.len()
                    + b.peer_nodes.len();
            }
        }
        times.push(started.elapsed().as_secs_f64());
        peak = peak.max(s.peak_memory_mib().unwrap_or(0.0));
    }
    let step = match since {
        None => "GetPeerData alone (serving peak)",
        Some(_) => "GetPeerData since the checkpoint, nothing changed",
    };
    let measure = Measure {
        size: b.shape.label(),
        backend: String::new(),
        step,
        seconds: median(times),
        objects: sent,
        bytes: Some(bytes),
        floor_ratio: None,
        peak_mib: Some(peak),
        changes: None,
        phases: String::new(),
        p99_seconds: None,
        stamped_ms: None,
    };
    Ok((measure, reached))
}

/// The floor: the refreshing side's rows (foreign, with their peer
/// mapping) bulk-loaded into a fresh database. It runs right after each run
/// of the first refresh, so that the two meet the machine in the same state
/// (its speed drifts from minute to minute).
struct Floor<'a> {
    args: &'a Args,
    shape: Shape,
    backend: &'a str,
    work: &'a std::path::Path,
    /// Seconds of each run so far.
    times: Vec<f64>,
}

impl Floor<'_> {
    /// One bulk load into a fresh database.
    async fn run(&mut self) -> Result<(), String> {
        let floor_db = Database::create(self.backend, &self.args.pg_url, "floor").await?;
        let dir = self.work.join(format!("floor-{}", self.times.len()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let url = floor_db.url(&dir);
        fedreg::store::run_migrations(&url)
            .await
            .map_err(|e| e.to_string())?;
        let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
        data::execute(
            &mut store.write().await.map_err(|e| e.to_string())?,
            "INSERT INTO peers (peer_id, peername, peer_url, date_created) VALUES (1, 'serving', 'http://127.0.0.1:1', 0)",
        )
        .await?;
        drop(store);
        let tables = data::tables(self.shape, Some(1));
        let started = Instant::now();
        data::load(&url, &tables).await?;
        self.times.push(started.elapsed().as_secs_f64());
        floor_db.drop_database().await;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

async fn bench_backend(
    args: &Args,
    shape: Shape,
    backend: &str,
    runs: usize,
) -> Result<Vec<Measure>, String> {
    let work = servers::work_dir().join(backend);
    let _ = std::fs::remove_dir_all(&work);
    let serving_db = Database::create(backend, &args.pg_url, "serving").await?;
    let refreshing_db = Database::create(backend, &args.pg_url, "refreshing").await?;
    let (s_dir, r_dir) = (work.join("serving"), work.join("refreshing"));
    std::fs::create_dir_all(&s_dir).map_err(|e| e.to_string())?;

    eprintln!("[{backend}] filling the serving registry");
    let s_url = serving_db.url(&s_dir);
    fedreg::store::run_migrations(&s_url)
        .await
        .map_err(|e| e.to_string())?;
    data::load(&s_url, &data::tables(shape, None)).await?;
    let serving_store = Store::connect(&s_url).await.map_err(|e| e.to_string())?;
    data::bump_sequences(&mut serving_store.write().await.map_err(|e| e.to_string())?).await?;

    let s = Registry::start("serving", &s_dir, &s_url).await?;
    let r = Registry::start("refreshing", &r_dir, &refreshing_db.url(&r_dir)).await?;
    let (peer_id, token) = servers::peer(&r, &s).await?;
    let mut bench = Bench {
        shape,
        serving: &s,
        serving_store: &serving_store,
        refreshing: &r,
        peer_id,
        token,
    };
    let mut floor = Floor {
        args,
        shape,
        backend,
        work: &work,
        times: Vec::new(),
    };
    let mut out = Vec::new();
    for step in [
        Step::First,
        Step::Unchanged(false),
        Step::Unchanged(true),
        Step::OnePercent(false),
        Step::OnePercent(true),
    ] {
        eprintln!("[{backend}] {}", step.label());
        let floor = (step == Step::First).then_some(&mut floor);
        out.push(refresh_step(&mut bench, step, runs, floor).await?);
    }
    eprintln!("[{backend}] GetPeerData alone");
    let (everything, reached) = get_peer_data_step(&bench, runs, None).await?;
    out.push(everything);
    eprintln!("[{backend}] GetPeerData since the checkpoint");
    out.push(get_peer_data_step(&bench, runs, reached).await?.0);
    if args.follow_changes > 0 {
        eprintln!(
            "[{backend}] follow: {} changes, commit to cache",
            args.follow_changes
        );
        let r_store = Store::connect(&refreshing_db.url(&r_dir))
            .await
            .map_err(|e| e.to_string())?;
        let watch = match backend {
            "sqlite" => follow::Watch::Poll(&r_store),
            _ => follow::Watch::Stamps {
                serving: serving_db.url(&s_dir),
                refreshing: refreshing_db.url(&r_dir),
            },
        };
        let l = follow::measure(
            &s,
            &serving_store,
            &r,
            watch,
            bench.peer_id,
            args.follow_changes,
        )
        .await?;
        let mut measure = latency_measure(shape, "", FOLLOW_STEP, l.median_ms, l.p99_ms, l.changes);
        measure.phases = l.last_report.as_ref().map(fine_phases).unwrap_or_default();
        measure.stamped_ms = l.stamped_ms;
        out.push(measure);
    }
    s.stop().await;
    r.stop().await;

    let floor = median(std::mem::take(&mut floor.times));
    out.push(Measure {
        size: shape.label(),
        backend: String::new(),
        step: "floor (bulk load, same schema)",
        seconds: floor,
        objects: shape.objects(),
        bytes: None,
        floor_ratio: Some(1.0),
        peak_mib: None,
        changes: Some((shape.objects() + shape.memberships()) as i64),
        phases: String::new(),
        p99_seconds: None,
        stamped_ms: None,
    });
    for m in &mut out {
        m.backend = backend.to_owned();
        if !m.step.starts_with("GetPeerData") && m.step != FOLLOW_STEP {
            m.floor_ratio = Some(m.seconds / floor);
        }
    }
    serving_db.drop_database().await;
    refreshing_db.drop_database().await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(out)
}

/// The step of the follow-mode latencies.
const FOLLOW_STEP: &str = "follow: commit to cache";

/// A latency figure as a line of the results: the median as the time,
/// the 99th percentile in the phases.
fn latency_measure(
    shape: Shape,
    backend: &str,
    step: &'static str,
    median_ms: f64,
    p99_ms: f64,
    changes: usize,
) -> Measure {
    Measure {
        size: shape.label(),
        backend: backend.to_owned(),
        step,
        seconds: median_ms / 1000.0,
        objects: changes,
        bytes: None,
        floor_ratio: None,
        peak_mib: None,
        changes: None,
        phases: String::new(),
        p99_seconds: Some(p99_ms / 1000.0),
        stamped_ms: None,
    }
}

/// The follow-mode table: per backend, the median and 99th percentile from
/// commit to cache, against logical replication's median.
fn follow_table(
    shape: Shape,
    results: &[Measure],
    baseline: Option<&replication::Baseline>,
) -> String {
    let mut t = String::from(
        "| size | backend | follow: commit to cache | median ms | p99 ms | stamped median ms | stamped p99 ms | × replication median |\n|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let base = match baseline {
        Some(replication::Baseline::Measured(b)) => Some(b.median_ms),
        _ => None,
    };
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    for m in results.iter().filter(|m| m.step == FOLLOW_STEP) {
        let p99 = m.p99_seconds.unwrap_or(f64::NAN);
        // Compared as the baseline is measured where the stamps exist.
        let compared = m.stamped_ms.map_or(m.seconds * 1000.0, |s| s.0);
        let _ = writeln!(
            t,
            "| {} | {} | {} changes | {:.2} | {:.2} | {} | {} | {} |",
            m.size,
            m.backend,
            m.objects,
            m.seconds * 1000.0,
            p99 * 1000.0,
            ms(m.stamped_ms.map(|s| s.0)),
            ms(m.stamped_ms.map(|s| s.1)),
            base.map(|b| format!("{:.1}", compared / b))
                .unwrap_or_default()
        );
    }
    match baseline {
        Some(replication::Baseline::Measured(b)) => {
            let _ = writeln!(
                t,
                "| {} | PostgreSQL logical replication (baseline) | {} changes | | | {:.2} | {:.2} | 1.0 |",
                shape.label(),
                b.changes,
                b.median_ms,
                b.p99_ms
            );
        }
        Some(replication::Baseline::Unavailable(why)) => {
            let _ = writeln!(t, "\nbaseline not measured: {why}");
        }
        None => {}
    }
    t
}

fn table(results: &[Measure]) -> String {
    let mut t = String::from(
        "| size | backend | step | wall s (median) | objects/s | × floor | peak MiB | rows written | phases (s) |\n|---|---|---|---:|---:|---:|---:|---:|---|\n",
    );
    for m in results {
        let rate = m.objects as f64 / m.seconds;
        let rate = match (m.bytes, m.p99_seconds) {
            (_, Some(p99)) => format!("(latency; p99 {:.2} ms)", p99 * 1000.0),
            (Some(b), None) => format!("{rate:.0} ({:.1} MB/s)", b as f64 / m.seconds / 1e6),
            (None, None) => format!("{rate:.0}"),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {} |",
            m.size,
            m.backend,
            m.step,
            m.seconds,
            rate,
            m.floor_ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
            m.peak_mib.map(|p| format!("{p:.0}")).unwrap_or_default(),
            m.changes.map(|c| c.to_string()).unwrap_or_default(),
            m.phases
        );
    }
    t
}

fn json(results: &[Measure]) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_else(|| "null".into());
    let items: Vec<String> = results
        .iter()
        .map(|m| {
            format!(
                "{{\"size\":{},\"backend\":{},\"step\":{},\"seconds\":{},\"objects\":{},\"bytes\":{},\"floor_ratio\":{},\"peak_mib\":{},\"rows_written\":{},\"phases\":{},\"p99_seconds\":{},\"stamped_median_ms\":{},\"stamped_p99_ms\":{}}}",
                quote(&m.size),
                quote(&m.backend),
                quote(m.step),
                m.seconds,
                m.objects,
                m.bytes.map(|b| b.to_string()).unwrap_or_else(|| "null".into()),
                opt(m.floor_ratio),
                opt(m.peak_mib),
                m.changes.map(|c| c.to_string()).unwrap_or_else(|| "null".into()),
                quote(&m.phases),
                opt(m.p99_seconds),
                opt(m.stamped_ms.map(|s| s.0)),
                opt(m.stamped_ms.map(|s| s.1))
            )
        })
        .collect();
    format!("[\n  {}\n]\n", items.join(",\n  "))
}
