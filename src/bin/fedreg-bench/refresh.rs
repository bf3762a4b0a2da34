//! The refresh benchmark, `fedreg-bench` without a subcommand.
//!
//! Per backend: starts a serving and a refreshing registry (child
//! processes, loopback), fills the serving one with a data set, then times
//! on the refreshing one: the first refresh, a refresh with nothing changed
//! and one after 1% changed (each as a full refresh and as a delta refresh
//! from the checkpoint), GetPeerData alone and since the checkpoint, follow
//! mode ([`crate::follow`]), verifications ([`crate::verify`]), and the floor: the same rows bulk-loaded into
//! the same schema by the database's fastest plain method, right after each
//! run of the first refresh. Then PostgreSQL's logical replication as
//! follow mode's baseline ([`crate::replication`]). Prints the tables of
//! [`RefreshResults`] (and writes it as JSON with `--json`).

use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use fedreg::peering::report::writes;
use fedreg::proto::v1 as pb;
use fedreg::store::Store;

use crate::cli::RefreshArgs;
use crate::pg::PgServer;
use crate::results::{self, FollowFigures, RefreshResults, StepFigures};
use crate::servers::{self, Backend, Database, Registry};
use crate::shapes::Shape;
use crate::stats::median;
use crate::{data, follow, replication, verify};

/// Runs the refresh benchmark as `args` say.
pub async fn run(args: &RefreshArgs) -> anyhow::Result<()> {
    let shape = Shape::new(args.size, args.scale.max(1));
    let runs = args
        .runs
        .unwrap_or(if shape.objects() > 100_000 { 1 } else { 3 })
        .max(1);
    eprintln!(
        "data set {}: {} objects, {} memberships; {runs} run(s) per step",
        shape.label(),
        shape.objects(),
        shape.memberships()
    );
    let (mut steps, mut follow) = (Vec::new(), Vec::new());
    for &backend in args.backend.each() {
        let figures = bench_backend(args, shape, backend, runs).await?;
        steps.extend(figures.steps);
        follow.extend(figures.follow);
    }
    if !args.keep_databases {
        let _ = std::fs::remove_dir_all(servers::work_dir());
    }
    let baseline = match args.follow_changes {
        0 => None,
        n => {
            eprintln!("baseline: PostgreSQL logical replication, {n} changes");
            Some(replication::measure(&args.pg.pg_url, n).await?)
        }
    };
    let results = RefreshResults::new(shape, runs, args.follow_changes, steps, follow, baseline);
    println!("{}", results.table());
    if results.follow_changes > 0 {
        println!("{}", results.follow_table());
    }
    if let Some(path) = &args.json {
        results::write_json(path, &results)?;
    }
    Ok(())
}

/// Compact phase timers of a report: `transport 0.120 · sites 0.010 ...`.
pub fn phases(report: &pb::RefreshReport) -> String {
    report
        .timers
        .iter()
        .filter(|t| t.seconds >= 0.0005)
        .map(|t| format!("{} {:.3}", t.phase, t.seconds))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Every phase timer of a small refresh, to a tenth of a millisecond:
/// `last refresh 2.9 ms: lock 0.2 · transport 1.1 ...`.
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
    /// Every step, in the order they run.
    const ALL: [Step; 5] = [
        Step::First,
        Step::Unchanged(false),
        Step::Unchanged(true),
        Step::OnePercent(false),
        Step::OnePercent(true),
    ];

    /// The step's name in the table.
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

/// The step of the follow-mode latencies.
const FOLLOW_STEP: &str = "follow: commit to cache";

/// The two registries of one backend and what the steps share.
struct Bench<'a> {
    /// The data set.
    shape: Shape,
    /// The registries' database.
    backend: Backend,
    /// The registry that serves the data set.
    serving: &'a Registry,
    /// The serving registry's database, for the changes.
    serving_store: &'a Store,
    /// The registry that refreshes its cache of the serving one.
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
) -> anyhow::Result<Option<(f64, pb::RefreshReport)>> {
    let started = Instant::now();
    let report = r
        .peers()
        .refresh_peer(pb::RefreshPeerRequest {
            peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
            force,
            full,
            verify: false,
        })
        .await
        .context("RefreshPeer")?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    match pb::RefreshOutcome::try_from(report.outcome) {
        Ok(pb::RefreshOutcome::Applied) => Ok(Some((seconds, report))),
        Ok(pb::RefreshOutcome::Refused) => Ok(None),
        _ => bail!(
            "refresh not applied: outcome {} {}",
            report.outcome,
            report.reason
        ),
    }
}

/// Runs `step` `runs` times; the figures hold the median time, the peak
/// memory of the refreshing server and the last report. Checks what the
/// refresh wrote: everything on a first refresh, nothing when nothing
/// changed, something after a change.
async fn refresh_step(
    b: &mut Bench<'_>,
    step: Step,
    runs: usize,
    mut floor: Option<&mut Floor<'_>>,
) -> anyhow::Result<StepFigures> {
    let r = b.refreshing;
    let (mut times, mut peak, mut last) = (Vec::new(), 0f64, None);
    for run in 0..runs {
        match step {
            Step::First if run > 0 => {
                r.peers()
                    .delete_peer(pb::DeletePeerRequest { peer_id: b.peer_id })
                    .await
                    .context("DeletePeer")?;
                b.peer_id = servers::create_peer_record(r, b.serving, &b.token).await?;
            }
            Step::OnePercent(delta) => {
                let mut conn = b.serving_store.write().await?;
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
                    .ok_or_else(|| anyhow!("a forced refresh was refused"))?
            }
        };
        let snapshot = pb::SnapshotKind::try_from(report.snapshot).unwrap_or_default();
        let expected = match full {
            true => pb::SnapshotKind::Full,
            false => pb::SnapshotKind::Delta,
        };
        if step != Step::First && snapshot != expected {
            bail!(
                "{}: the peer sent {snapshot:?} ({})",
                step.label(),
                report.full_reason
            );
        }
        peak = peak.max(r.peak_memory_mib().unwrap_or(0.0));
        let written = writes(&report);
        let expected = (b.shape.objects() + b.shape.memberships()) as i64;
        match step {
            Step::First if written != expected => bail!(
                "first refresh wrote {written} rows, expected {expected}: {:?}",
                report.warnings.first()
            ),
            Step::Unchanged(_) if written != 0 => {
                bail!("a refresh with nothing changed wrote {written} rows")
            }
            Step::OnePercent(_) if written == 0 => {
                bail!("a refresh after 1% changed wrote nothing")
            }
            _ => {}
        }
        times.push(t);
        last = Some(report);
        if let Some(floor) = floor.as_mut() {
            floor.run().await?;
        }
    }
    let report = last.ok_or_else(|| anyhow!("no run"))?;
    Ok(StepFigures {
        peak_mib: Some(peak),
        rows_written: Some(writes(&report)),
        // A small refresh's timers are in milliseconds, to a tenth.
        phases: match report.total_seconds < 0.1 {
            true => fine_phases(&report),
            false => phases(&report),
        },
        run_seconds: times.clone(),
        ..StepFigures::timed(
            b.shape,
            b.backend,
            step.label(),
            median(times),
            b.shape.objects(),
        )
    })
}

/// Streams GetPeerData from the serving registry `runs` times with the
/// peer token, everything or (with `since`) the changes after a
/// checkpoint; the figures hold the median time, the objects and bytes
/// received, and the serving server's peak memory. Also returns the
/// checkpoint the stream ended at.
async fn get_peer_data_step(
    b: &Bench<'_>,
    runs: usize,
    since: Option<pb::Checkpoint>,
) -> anyhow::Result<(StepFigures, Option<pb::Checkpoint>)> {
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
                only: None,
            })
            .await
            .context("GetPeerData")?
            .into_inner();
        (sent, bytes) = (0, 0);
        while let Some(chunk) = stream.message().await.context("GetPeerData stream")? {
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
    let figures = StepFigures {
        peak_mib: Some(peak),
        ..StepFigures::timed(b.shape, b.backend, step, median(times), sent).with_bytes(bytes)
    };
    Ok((figures, reached))
}

/// The floor: the refreshing side's rows (foreign, with their peer
/// mapping) bulk-loaded into a fresh database. It runs right after each run
/// of the first refresh, so that the two meet the machine in the same state
/// (its speed drifts from minute to minute).
struct Floor<'a> {
    /// The PostgreSQL server, for the postgres backend.
    pg: &'a PgServer,
    /// The data set.
    shape: Shape,
    /// The database it is loaded into.
    backend: Backend,
    /// Where the runs' data directories go.
    work: &'a std::path::Path,
    /// Seconds of each run so far.
    times: Vec<f64>,
}

impl Floor<'_> {
    /// One bulk load into a fresh database.
    async fn run(&mut self) -> anyhow::Result<()> {
        let floor_db = Database::create(self.backend, self.pg, "floor").await?;
        let dir = self.work.join(format!("floor-{}", self.times.len()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let url = floor_db.url(&dir);
        fedreg::store::run_migrations(&url).await?;
        let store = Store::connect(&url).await?;
        data::execute(
            &mut store.write().await?,
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

/// The figures of one backend.
struct BackendFigures {
    /// Its lines of the first table.
    steps: Vec<StepFigures>,
    /// Its line of the follow table, if follow mode was timed.
    follow: Option<FollowFigures>,
}

/// Runs every step on `backend`.
async fn bench_backend(
    args: &RefreshArgs,
    shape: Shape,
    backend: Backend,
    runs: usize,
) -> anyhow::Result<BackendFigures> {
    let pg = &args.pg.pg_url;
    let work = servers::work_dir().join(backend.name());
    let _ = std::fs::remove_dir_all(&work);
    let serving_db = Database::create(backend, pg, "serving").await?;
    let refreshing_db = Database::create(backend, pg, "refreshing").await?;
    let (s_dir, r_dir) = (work.join("serving"), work.join("refreshing"));
    std::fs::create_dir_all(&s_dir).with_context(|| format!("creating {}", s_dir.display()))?;

    eprintln!("[{backend}] filling the serving registry");
    let s_url = serving_db.url(&s_dir);
    let serving_store = data::fill(&s_url, shape).await?;

    let s = Registry::start("serving", &s_dir, &s_url).await?;
    let r = Registry::start("refreshing", &r_dir, &refreshing_db.url(&r_dir)).await?;
    let (peer_id, token) = servers::peer(&r, &s).await?;
    let mut bench = Bench {
        shape,
        backend,
        serving: &s,
        serving_store: &serving_store,
        refreshing: &r,
        peer_id,
        token,
    };
    let mut floor = Floor {
        pg,
        shape,
        backend,
        work: &work,
        times: Vec::new(),
    };
    let mut refreshes = Vec::new();
    for step in Step::ALL {
        eprintln!("[{backend}] {}", step.label());
        let floor = (step == Step::First).then_some(&mut floor);
        refreshes.push(refresh_step(&mut bench, step, runs, floor).await?);
    }
    eprintln!("[{backend}] GetPeerData alone");
    let (everything, reached) = get_peer_data_step(&bench, runs, None).await?;
    eprintln!("[{backend}] GetPeerData since the checkpoint");
    let (since, _) = get_peer_data_step(&bench, runs, reached).await?;
    let r_store = Store::connect(&refreshing_db.url(&r_dir)).await?;
    eprintln!("[{backend}] verify");
    let verifying = verify::Verifying {
        shape,
        backend,
        refreshing: &r,
        refreshing_store: &r_store,
        peer_id: bench.peer_id,
        dump_bytes: everything.bytes.unwrap_or(0),
    };
    let verified = verify::steps(&verifying, runs).await?;
    let mut others = vec![everything, since];
    others.extend(verified);
    let mut follow = None;
    if args.follow_changes > 0 {
        eprintln!(
            "[{backend}] follow: {} changes, commit to cache",
            args.follow_changes
        );
        let watch = match backend {
            Backend::Sqlite => follow::Watch::Poll(&r_store),
            Backend::Postgres => follow::Watch::Stamps {
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
        others.push(StepFigures {
            phases: l.last_report.as_ref().map(fine_phases).unwrap_or_default(),
            ..StepFigures::latency(shape, backend, FOLLOW_STEP, &l)
        });
        follow = Some(FollowFigures::new(shape, backend, &l));
    }
    s.stop().await;
    r.stop().await;

    let floor_times = std::mem::take(&mut floor.times);
    let floor_seconds = median(floor_times.clone());
    let rows = (shape.objects() + shape.memberships()) as i64;
    let mut floor_figures = StepFigures {
        rows_written: Some(rows),
        run_seconds: floor_times.clone(),
        ..StepFigures::timed(
            shape,
            backend,
            "floor (bulk load, same schema)",
            floor_seconds,
            shape.objects(),
        )
    };
    // The refreshes and the floor itself are compared to the floor; the
    // first refresh's runs each to the floor run made right after it.
    for m in refreshes.iter_mut().chain([&mut floor_figures]) {
        m.floor_ratio = Some(m.seconds / floor_seconds);
        m.run_floor_ratios = match m.step == Step::First.label() {
            true => m
                .run_seconds
                .iter()
                .zip(&floor_times)
                .map(|(t, f)| t / f)
                .collect(),
            false => m.run_seconds.iter().map(|t| t / floor_seconds).collect(),
        };
    }
    let mut steps = refreshes;
    steps.extend(others);
    steps.push(floor_figures);
    if args.keep_databases {
        eprintln!(
            "[{backend}] kept: serving {}, refreshing {}",
            serving_db.url(&s_dir),
            refreshing_db.url(&r_dir)
        );
    } else {
        serving_db.drop_database().await;
        refreshing_db.drop_database().await;
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(BackendFigures { steps, follow })
}
