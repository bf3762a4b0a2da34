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
//! client apart), and with `--json` writes the same figures as JSON
//! ([`LoadResults`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::LoadArgs;
use crate::data;
use crate::results::{self, CallFigures, LoadResults};
use crate::servers::{self, Backend, Bearer, Database, Registry};
use crate::shapes::Shape;

/// Runs `fedreg-bench load` as `args` say: prints each backend's table, and
/// fails when any call failed.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let shape = Shape::new(args.size, 1);
    let mut all = Vec::new();
    for &backend in args.backend.each() {
        let results = load_backend(args, shape, backend).await?;
        println!("{}", results.table());
        all.push(results);
    }
    let _ = std::fs::remove_dir_all(servers::work_dir());
    if let Some(path) = &args.json {
        results::write_json(path, &all)?;
    }
    let failed: Vec<String> = all
        .iter()
        .filter(|r| r.errors() > 0)
        .map(|r| format!("{}: {} failed calls", r.backend, r.errors()))
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// What the calls of one kind gave.
#[derive(Default)]
struct Calls {
    /// Seconds of each successful call.
    latencies: Vec<f64>,
    /// Calls that failed.
    errors: usize,
    /// Refused with RESOURCE_EXHAUSTED, as documented (greedy client).
    refused: usize,
    /// Objects received (GetPeerData) or events (Follow).
    items: usize,
    /// The first failure's message.
    first_error: Option<String>,
}

/// What the load's calls gave, by call; shared by its tasks.
#[derive(Default, Clone)]
struct Record {
    /// The calls of each kind, by name.
    calls: Arc<Mutex<BTreeMap<&'static str, Calls>>>,
}

impl Record {
    /// Records a call of `call`: its seconds and items, or its failure.
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

    /// Records a call of `call` refused as documented.
    fn refused(&self, call: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.entry(call).or_default().refused += 1;
    }

    /// The figures of each kind of call, held for `held`.
    fn figures(&self, held: Duration) -> Vec<CallFigures> {
        let calls = std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()));
        let held = held.as_secs_f64();
        calls
            .into_iter()
            .map(|(call, c)| CallFigures {
                first_error: c.first_error,
                ..CallFigures::new(call, c.latencies, c.errors, c.refused, c.items, held)
            })
            .collect()
    }
}

/// A new connection to `registry` (each reader its own, as peers have).
pub async fn connect(registry: &Registry) -> anyhow::Result<Channel> {
    Channel::from_shared(registry.url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", registry.name))
}

/// A peering client that presents a peer token.
pub type Peering = PeeringServiceClient<servers::Authed>;

/// A peering client to `registry` with `token`, on a connection of its own.
pub async fn peering(registry: &Registry, token: &str) -> anyhow::Result<Peering> {
    let bearer = Bearer::new(Some(token)).map_err(|_| anyhow!("token is not ascii"))?;
    Ok(
        PeeringServiceClient::with_interceptor(connect(registry).await?, bearer)
            .max_decoding_message_size(64 << 20),
    )
}

/// A peer token issued by `registry` for a new peer `name`.
pub async fn peer_token(registry: &Registry, name: &str) -> anyhow::Result<String> {
    let peer_id = registry
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: name.into(),
            peer_url: format!("http://{name}.invalid:1"),
            ..Default::default()
        })
        .await
        .context("CreatePeer")?
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
        .context("CreateToken")?
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
async fn greedy_dump(client: &mut Peering, pause: Option<Duration>, report: &Record) {
    /// The greedy token's line of the table.
    const CALL: &str = "GetPeerData (greedy, slow)";
    match read_dump(client, pause).await {
        Err(e) if e.code() == tonic::Code::ResourceExhausted => {
            report.refused(CALL);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        outcome => report.record(CALL, outcome.map_err(|e| e.to_string())),
    }
}

/// Holds the load on `backend` and returns what it gave.
async fn load_backend(
    args: &LoadArgs,
    shape: Shape,
    backend: Backend,
) -> anyhow::Result<LoadResults> {
    let pg = &args.pg.pg_url;
    let work = servers::work_dir().join(format!("load-{backend}"));
    let _ = std::fs::remove_dir_all(&work);
    let serving_db = Database::create(backend, pg, "load_serving").await?;
    let refreshing_db = Database::create(backend, pg, "load_refreshing").await?;
    let (s_dir, r_dir) = (work.join("serving"), work.join("refreshing"));
    std::fs::create_dir_all(&s_dir).with_context(|| format!("creating {}", s_dir.display()))?;
    eprintln!(
        "[{backend}] filling the serving registry ({})",
        shape.label()
    );
    let s_url = serving_db.url(&s_dir);
    drop(data::fill(&s_url, shape).await?);
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
    let report = Record::default();
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
                    verify: false,
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
        joined.context("load task")?;
    }
    let held = started.elapsed();
    let results = LoadResults {
        backend,
        data_set: shape.into(),
        seconds: held.as_secs_f64(),
        readers: args.streams,
        slow_readers: args.slow.min(args.streams),
        peer_tokens: args.peers,
        writes_per_second: args.writes,
        followers: args.followers,
        peak_mib: s.peak_memory_mib(),
        calls: report.figures(held),
    };
    s.stop().await;
    r.stop().await;
    serving_db.drop_database().await;
    refreshing_db.drop_database().await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(results)
}
