//! `fedreg-bench load`: one serving registry under a steady mixed load for a
//! set time, on each backend.
//!
//! Against a serving registry filled with a data set, for `--seconds`:
//! `--streams` clients read `GetPeerData` dumps back to back, each on a
//! connection of its own, spread over `--peers` peer tokens (`--slow` of
//! them pause after every message); a greedy client holds its token's limit
//! of streams and keeps asking for one more (refused with
//! `RESOURCE_EXHAUSTED`, as documented); `--writes` admin writes per second
//! (a site created, then updated); `--followers` `Follow` streams with the
//! changes; a second registry refreshing the serving one back to back; a
//! health check every 100 ms. Prints, per call, the count, errors, refusals
//! and latency percentiles, the dumps' objects per second and the serving
//! server's peak memory; fails when any call failed (refusals of the greedy
//! client apart).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use fedreg::store::Store;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::data;
use crate::replication::percentile;
use crate::servers::{self, Bearer, Database, Registry};
use crate::shapes::Shape;

/// Options of `fedreg-bench load`.
#[derive(Debug, Parser)]
#[command(name = "fedreg-bench load")]
struct LoadArgs {
    /// Data set of the serving registry: mini, normal, big or huge.
    #[arg(long, default_value = "big")]
    size: String,
    /// sqlite, postgres, or both.
    #[arg(long, default_value = "both")]
    backend: String,
    /// Seconds the load is held.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Concurrent GetPeerData readers.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Of the readers, those that pause after every message.
    #[arg(long, default_value_t = 2)]
    slow: usize,
    /// Milliseconds a slow reader pauses after every message.
    #[arg(long, default_value_t = 20)]
    slow_ms: u64,
    /// Peer tokens the readers are spread over.
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Admin writes per second.
    #[arg(long, default_value_t = 20)]
    writes: u32,
    /// Follow streams (with changes), each with a token of its own.
    #[arg(long, default_value_t = 2)]
    followers: usize,
    /// The serving registry's --streams-per-token (the greedy client holds
    /// this many and asks for one more).
    #[arg(long, default_value_t = 4)]
    streams_per_token: usize,
    /// PostgreSQL server for the postgres backend.
    #[arg(
        long,
        env = "FEDREG_BENCH_PG",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pg_url: String,
}

/// Runs `fedreg-bench load ARGS`.
pub async fn command(args: &[String]) -> std::process::ExitCode {
    let args = LoadArgs::parse_from(
        std::iter::once("fedreg-bench load".to_owned()).chain(args.iter().cloned()),
    );
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedreg-bench load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &LoadArgs) -> Result<(), String> {
    let shape = Shape::named(&args.size, 1).ok_or_else(|| {
        format!(
            "unknown size {:?}: use mini, normal, big or huge",
            args.size
        )
    })?;
    let backends: &[&str] = match args.backend.as_str() {
        "both" => &["sqlite", "postgres"],
        "sqlite" => &["sqlite"],
        "postgres" => &["postgres"],
        other => {
            return Err(format!(
                "unknown backend {other:?}: use sqlite, postgres or both"
            ));
        }
    };
    let mut failed = Vec::new();
    for backend in backends {
        let report = load_backend(args, shape, backend).await?;
        println!("{}", report.table(backend, shape, args));
        if report.errors() > 0 {
            failed.push(format!("{backend}: {} failed calls", report.errors()));
        }
    }
    let _ = std::fs::remove_dir_all(servers::work_dir());
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("; ")),
    }
}

/// What the calls of one kind gave.
#[derive(Default)]
struct Calls {
    /// Seconds of each successful call.
    latencies: Vec<f64>,
    errors: usize,
    /// Refused with RESOURCE_EXHAUSTED, as documented (greedy client).
    refused: usize,
    /// Objects received (GetPeerData) or events (Follow).
    items: usize,
    first_error: Option<String>,
}

/// The figures of one run, by call.
#[derive(Default, Clone)]
struct Report {
    calls: Arc<Mutex<BTreeMap<&'static str, Calls>>>,
    held: Duration,
    peak_mib: Option<f64>,
}

impl Report {
    fn record(&self, call: &'static str, outcome: Result<(f64, usize), String>) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let calls = calls.entry(call).or_default();
        match outcome {
            Ok((seconds, items)) => {
                calls.latencies.push(seconds);
                calls.items += items;
            }
            Err(e) => {
                calls.errors += 1;
                calls.first_error.get_or_insert(e);
            }
        }
    }

    fn refused(&self, call: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.entry(call).or_default().refused += 1;
    }

    fn errors(&self) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().map(|c| c.errors).sum()
    }

    fn table(&self, backend: &str, shape: Shape, args: &LoadArgs) -> String {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let secs = self.held.as_secs_f64();
        let mut out = format!(
            "\nload on {backend}, data set {} ({} objects), {secs:.0} s: {} GetPeerData readers ({} slow) over {} peer tokens, \
             a greedy token, {} writes/s, {} followers, a refresh loop; serving peak {}\n\n\
             | call | ok | errors | refused | per s | p50 ms | p90 ms | p99 ms | max ms | items/s |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            shape.label(),
            shape.objects(),
            args.streams,
            args.slow.min(args.streams),
            args.peers,
            args.writes,
            args.followers,
            self.peak_mib
                .map_or_else(|| "unknown".into(), |m| format!("{m:.0} MiB")),
        );
        for (call, c) in calls.iter() {
            let mut sorted = c.latencies.clone();
            sorted.sort_by(f64::total_cmp);
            let ms = |p: f64| match sorted.is_empty() {
                true => "-".to_owned(),
                false => format!("{:.1}", percentile(&sorted, p) * 1000.0),
            };
            out.push_str(&format!(
                "| {call} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {:.0} |\n",
                sorted.len(),
                c.errors,
                c.refused,
                sorted.len() as f64 / secs,
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(1.0),
                c.items as f64 / secs,
            ));
        }
        for (call, c) in calls.iter() {
            if let Some(e) = &c.first_error {
                out.push_str(&format!("\nfirst {call} error: {e}"));
            }
        }
        out
    }
}

/// A new connection to `registry` (each reader its own, as peers have).
async fn connect(registry: &Registry) -> Result<Channel, String> {
    Channel::from_shared(registry.url.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", registry.name))
}

type Peering =
    PeeringServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn peering(registry: &Registry, token: &str) -> Result<Peering, String> {
    let bearer = Bearer(
        format!("Bearer {token}")
            .parse()
            .map_err(|_| "token is not ascii")?,
    );
    Ok(
        PeeringServiceClient::with_interceptor(connect(registry).await?, bearer)
            .max_decoding_message_size(64 << 20),
    )
}

/// A peer token issued by `registry` for a new peer `name`.
async fn peer_token(registry: &Registry, name: &str) -> Result<String, String> {
    let peer_id = registry
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: name.into(),
            peer_url: format!("http://{name}.invalid:1"),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("CreatePeer: {e}"))?
        .into_inner()
        .peer_id;
    Ok(registry
        .tokens()
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .map_err(|e| format!("CreateToken: {e}"))?
        .into_inner()
        .token)
}

/// Reads one whole dump; pauses `pause` after every message. The time and
/// the objects received.
async fn read_dump(
    client: &mut Peering,
    pause: Option<Duration>,
) -> Result<(f64, usize), tonic::Status> {
    let started = Instant::now();
    let mut stream = client
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await?
        .into_inner();
    let (mut objects, mut complete) = (0, false);
    while let Some(chunk) = stream.message().await? {
        match &chunk.part {
            Some(pb::peer_data_chunk::Part::Batch(b)) => {
                objects +=
                    b.sites.len() + b.keys.len() + b.persons.len() + b.nodes.len() + b.slices.len();
            }
            Some(pb::peer_data_chunk::Part::Trailer(_)) => complete = true,
            _ => {}
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    match complete {
        true => Ok((started.elapsed().as_secs_f64(), objects)),
        false => Err(tonic::Status::data_loss(
            "the dump ended without its trailer",
        )),
    }
}

/// One dump for the greedy token, whose refusals (its streams over the
/// limit, whichever of its clients asks) are expected.
async fn greedy_dump(client: &mut Peering, pause: Option<Duration>, report: &Report) {
    const CALL: &str = "GetPeerData (greedy, slow)";
    match read_dump(client, pause).await {
        Err(e) if e.code() == tonic::Code::ResourceExhausted => {
            report.refused(CALL);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        outcome => report.record(CALL, outcome.map_err(|e| e.to_string())),
    }
}

async fn load_backend(args: &LoadArgs, shape: Shape, backend: &str) -> Result<Report, String> {
    let work = servers::work_dir().join(format!("load-{backend}"));
    let _ = std::fs::remove_dir_all(&work);
    let serving_db = Database::create(backend, &args.pg_url, "load_serving").await?;
    let refreshing_db = Database::create(backend, &args.pg_url, "load_refreshing").await?;
    let (s_dir, r_dir) = (work.join("serving"), work.join("refreshing"));
    std::fs::create_dir_all(&s_dir).map_err(|e| e.to_string())?;
    eprintln!(
        "[{backend}] filling the serving registry ({})",
        shape.label()
    );
    let s_url = serving_db.url(&s_dir);
    fedreg::store::run_migrations(&s_url)
        .await
        .map_err(|e| e.to_string())?;
    data::load(&s_url, &data::tables(shape, None)).await?;
    {
        let store = Store::connect(&s_url).await.map_err(|e| e.to_string())?;
        data::bump_sequences(&mut store.write().await.map_err(|e| e.to_string())?).await?;
    }
    let limit = args.streams_per_token.max(1).to_string();
    let s =
        Registry::start_with("serving", &s_dir, &s_url, &["--streams-per-token", &limit]).await?;
    let r = Registry::start("refreshing", &r_dir, &refreshing_db.url(&r_dir)).await?;
    let (r_peer_id, _) = servers::peer(&r, &s).await?;
    let mut reader_tokens = Vec::new();
    for i in 0..args.peers.max(1) {
        reader_tokens.push(peer_token(&s, &format!("reader{i}")).await?);
    }
    let greedy_token = peer_token(&s, "greedy").await?;
    let mut follower_tokens = Vec::new();
    for i in 0..args.followers {
        follower_tokens.push(peer_token(&s, &format!("follower{i}")).await?);
    }

    eprintln!("[{backend}] holding the load for {} s", args.seconds);
    let report = Report::default();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    s.reset_peak_memory();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();

    for i in 0..args.streams {
        let mut client = peering(&s, &reader_tokens[i % reader_tokens.len()]).await?;
        let pause = (i < args.slow).then(|| Duration::from_millis(args.slow_ms));
        let report = report.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let outcome = read_dump(&mut client, pause).await;
                report.record("GetPeerData", outcome.map_err(|e| e.to_string()));
            }
        });
    }

    // The greedy client: its token's limit of streams, read slowly, and
    // one more asked for every 100 ms.
    let limit = args.streams_per_token.max(1);
    for _ in 0..limit {
        let mut client = peering(&s, &greedy_token).await?;
        let report = report.clone();
        let pause = Duration::from_millis(args.slow_ms);
        tasks.spawn(async move {
            while Instant::now() < deadline {
                greedy_dump(&mut client, Some(pause), &report).await;
            }
        });
    }
    {
        let mut client = peering(&s, &greedy_token).await?;
        let report = report.clone();
        tasks.spawn(async move {
            // Once its streams are open.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while Instant::now() < deadline {
                greedy_dump(&mut client, None, &report).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    let mut api = s.registry();
    let writes = args.writes;
    let write_report = report.clone();
    tasks.spawn(async move {
        if writes == 0 {
            return;
        }
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(writes)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_site = None;
        let mut n = 0u64;
        while Instant::now() < deadline {
            ticks.tick().await;
            let started = Instant::now();
            match last_site.take() {
                None => {
                    let created = api
                        .create_site(pb::CreateSiteRequest {
                            login_base: format!("load{n}"),
                            name: format!("Load {n}"),
                            ..Default::default()
                        })
                        .await;
                    if let Ok(site) = &created {
                        last_site = Some(site.get_ref().site_id);
                    }
                    let outcome = created.map(|_| (started.elapsed().as_secs_f64(), 0));
                    write_report.record("CreateSite", outcome.map_err(|e| e.to_string()));
                }
                Some(site_id) => {
                    let updated = api
                        .update_site(pb::UpdateSiteRequest {
                            site_id,
                            name: Some(format!("Load {n} renamed")),
                            ..Default::default()
                        })
                        .await;
                    let outcome = updated.map(|_| (started.elapsed().as_secs_f64(), 0));
                    write_report.record("UpdateSite", outcome.map_err(|e| e.to_string()));
                }
            }
            n += 1;
        }
    });

    for token in &follower_tokens {
        let mut client = peering(&s, token).await?;
        let report = report.clone();
        tasks.spawn(async move {
            let opened = Instant::now();
            let stream = client
                .follow(pb::FollowRequest {
                    heartbeat_seconds: 1,
                    include_changes: true,
                    ..Default::default()
                })
                .await;
            let mut stream = match stream {
                Ok(stream) => stream.into_inner(),
                Err(e) => return report.record("Follow (events)", Err(e.to_string())),
            };
            let mut events = 0;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, stream.message()).await {
                    Err(_) => break,
                    Ok(Ok(Some(_))) => events += 1,
                    Ok(Ok(None)) => {
                        return report.record("Follow (events)", Err("the stream ended".into()));
                    }
                    Ok(Err(e)) => return report.record("Follow (events)", Err(e.to_string())),
                }
            }
            report.record(
                "Follow (events)",
                Ok((opened.elapsed().as_secs_f64(), events)),
            );
        });
    }

    let mut peers = r.peers();
    let refresh_report = report.clone();
    tasks.spawn(async move {
        while Instant::now() < deadline {
            let started = Instant::now();
            let refreshed = peers
                .refresh_peer(pb::RefreshPeerRequest {
                    peer: Some(pb::refresh_peer_request::Peer::PeerId(r_peer_id)),
                    force: false,
                    full: false,
                })
                .await;
            let outcome = match refreshed {
                Ok(report) if report.get_ref().outcome == pb::RefreshOutcome::Applied as i32 => {
                    Ok((started.elapsed().as_secs_f64(), 0))
                }
                Ok(report) => Err(format!(
                    "outcome {}: {}",
                    report.get_ref().outcome,
                    report.get_ref().reason
                )),
                Err(e) => Err(e.to_string()),
            };
            refresh_report.record("RefreshPeer (refreshing registry)", outcome);
        }
    });

    let mut health = HealthClient::new(connect(&s).await?);
    let health_report = report.clone();
    tasks.spawn(async move {
        while Instant::now() < deadline {
            let started = Instant::now();
            let outcome = match health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            {
                Ok(r) if r.get_ref().status == 1 => Ok((started.elapsed().as_secs_f64(), 0)),
                Ok(r) => Err(format!("health status {}", r.get_ref().status)),
                Err(e) => Err(e.to_string()),
            };
            health_report.record("Health/Check", outcome);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| format!("load task: {e}"))?;
    }
    let mut report = report;
    report.held = started.elapsed();
    report.peak_mib = s.peak_memory_mib();
    s.stop().await;
    r.stop().await;
    serving_db.drop_database().await;
    refreshing_db.drop_database().await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(report)
}
