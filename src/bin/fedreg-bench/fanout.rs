//! `fedreg-bench fanout`: one serving registry announcing its commits to
//! many `Follow` streams, on each backend.
//!
//! For each count N of `--streams`, a fresh serving registry (data set
//! mini) is followed by:
//!
//! - N plain clients, each a `Follow` stream of checkpoints only, all with
//!   one peer token (the registry runs with a `--streams-per-token` above
//!   N: the per-token limit is not what is measured), multiplexed
//!   `--streams-per-connection` to an HTTP/2 connection (so 1,000 streams
//!   need 20 connections, far below the file descriptor limit and the
//!   server's `--max-connections`);
//! - `--slow` clients that open a stream each, asking for the changes, on a
//!   connection of their own with a 1 KiB HTTP/2 window, and stop reading
//!   after the first event: the serving registry (run with
//!   `--send-timeout`) drops them once their window and its buffer are
//!   full. At the end each reads what it holds, must find the stream ended
//!   by the server, and resumes from the last checkpoint it read with a new
//!   stream, whose first event must reach the last commit;
//! - `--followers` real registries, following the serving one as peers do.
//!
//! Then `--changes` site renames are committed through the admin API, one
//! at a time. The clock starts when the call returns and stops at each
//! plain stream's event carrying the commit's revision (taken as soon as
//! the client decodes it; an event that arrives before the admin call
//! returns counts as 0), and when each follower's `GetPeer` says its cache
//! applied that revision (polled every [`POLL`], so those figures are
//! overstated by up to that much). The next commit waits until every stream
//! and follower has the last one, plus `--gap-ms`: the figures are
//! latencies, not queueing. Every stream must receive every commit's
//! revision, in order: a revision missing is lost, a lower one after a
//! higher one reordered, and the run fails with either, and when a slow
//! stream was not dropped or did not resume.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::proto::v1 as pb;
use fedreg::store::schema::sites;
use fedreg::store::{Store, revisions};
use fedreg::with_db;
use futures_util::future::try_join_all;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::FanoutArgs;
use crate::data;
use crate::follow::{get_peer, start_following};
use crate::load::{Peering, peer_token, peering};
use crate::results::{self, FanoutFigures, FanoutResults};
use crate::servers::{self, Backend, Database, Registry};
use crate::shapes::{Shape, Size};
use crate::stats::percentile;
use fedreg::channel::Bearer;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use tonic::transport::Channel;

/// Longest wait for one commit to reach everyone.
const PATIENCE: Duration = Duration::from_secs(30);
/// Interval between two looks at a follower's status.
const POLL: Duration = Duration::from_millis(1);
/// The streams' heartbeat period: longer than a run, so that every event
/// announces a commit.
const HEARTBEAT_SECONDS: u32 = 3600;
/// How long a slow stream is given to deliver what it holds, at the end.
const DRAIN: Duration = Duration::from_millis(500);

/// Runs `fedreg-bench fanout` as `args` say: prints the table, and fails
/// when any stream lost or reordered an event, or a slow stream was not
/// dropped or did not resume.
pub async fn run(args: &FanoutArgs) -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for &backend in args.backend.each() {
        for &streams in &args.streams {
            eprintln!("[{backend}] {streams} streams");
            runs.push(fanout(args, backend, streams).await?);
        }
    }
    let _ = std::fs::remove_dir_all(servers::work_dir());
    let results = FanoutResults { runs };
    println!("{}", results.table());
    if let Some(path) = &args.json {
        results::write_json(path, &results)?;
    }
    let faulty: Vec<String> = results
        .runs
        .iter()
        .filter(|r| r.lost + r.reordered > 0 || r.slow_ended < r.slow || r.slow_resumed < r.slow)
        .map(|r| {
            format!(
                "{} with {} streams: {} lost, {} reordered, {} of {} slow streams dropped, {} resumed",
                r.backend, r.streams, r.lost, r.reordered, r.slow_ended, r.slow, r.slow_resumed
            )
        })
        .collect();
    if !faulty.is_empty() {
        bail!("{}", faulty.join("; "));
    }
    Ok(())
}

/// A real registry following the serving one.
struct Follower {
    registry: Registry,
    database: Database,
    /// Its peer id for the serving registry.
    peer_id: i64,
}

/// Runs one fan-out of `streams` plain streams on `backend`.
async fn fanout(
    args: &FanoutArgs,
    backend: Backend,
    streams: usize,
) -> anyhow::Result<FanoutFigures> {
    let pg = &args.pg.pg_url;
    let work = servers::work_dir().join(format!("fanout-{backend}-{streams}"));
    let _ = std::fs::remove_dir_all(&work);
    let serving_db = Database::create(backend, pg, "fanout_serving").await?;
    let s_dir = work.join("serving");
    std::fs::create_dir_all(&s_dir).with_context(|| format!("creating {}", s_dir.display()))?;
    let s_url = serving_db.url(&s_dir);
    let store = data::fill(&s_url, Shape::new(Size::Mini, 1)).await?;
    // Room for the resumed slow streams too.
    let limit = (streams + 2 * args.slow + 1).to_string();
    let send_timeout = args.send_timeout.to_string();
    let metrics = servers::free_address()?;
    let s = Registry::start_with(
        "serving",
        &s_dir,
        &s_url,
        &[
            "--streams-per-token",
            &limit,
            "--send-timeout",
            &send_timeout,
            "--metrics-listen",
            &metrics,
        ],
    )
    .await?;

    let mut followers = Vec::new();
    for i in 0..args.followers {
        let name = format!("follower{i}");
        let database = Database::create(backend, pg, &format!("fanout_{name}")).await?;
        let dir = work.join(&name);
        let registry = Registry::start(&name, &dir, &database.url(&dir)).await?;
        let (peer_id, _) = servers::peer(&registry, &s).await?;
        start_following(&registry, peer_id).await?;
        followers.push(Follower {
            registry,
            database,
            peer_id,
        });
    }

    let token = peer_token(&s, "fanout").await?;
    let per_connection = args.streams_per_connection as usize;
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let mut readers = JoinSet::new();
    let mut client = None;
    let mut connections = 0;
    for i in 0..streams {
        if i % per_connection == 0 {
            client = Some(peering(&s, &token).await?);
            connections += 1;
        }
        let client = client.clone().ok_or_else(|| anyhow!("no connection"))?;
        readers.spawn(read_stream(i, client, tx.clone(), stop.clone()));
    }
    drop(tx);
    let mut slow = Vec::new();
    for _ in 0..args.slow {
        slow.push(SlowStream::open(&s, &token).await?);
    }

    let mut arrivals = Arrivals::new(rx, streams);
    let first = current_revision(&store).await?;
    arrivals.wait_for(first).await.context("the first events")?;

    let reads_before = follow_reads(&metrics).await?;
    let site_id = local_site(&store).await?;
    let mut api = s.registry();
    let mut commits = Vec::new();
    let mut visible_ms = Vec::new();
    for i in 0..args.changes {
        api.update_site(pb::UpdateSiteRequest {
            site_id,
            name: Some(format!("Fan-out change {i}")),
            ..Default::default()
        })
        .await
        .context("UpdateSite")?;
        let committed = Instant::now();
        let revision = current_revision(&store).await?;
        let (streamed, visible) = tokio::join!(
            arrivals.wait_for(revision),
            try_join_all(followers.iter().map(|f| visible(f, revision, committed))),
        );
        streamed.with_context(|| format!("change {i} (revision {revision})"))?;
        visible_ms.extend(visible.with_context(|| format!("change {i} in the followers"))?);
        commits.push((revision, committed));
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let reads = follow_reads(&metrics).await? - reads_before;
    let peak_mib = s.peak_memory_mib();
    stop.cancel();
    while let Some(joined) = readers.join_next().await {
        joined.context("stream reader")??;
    }
    // Past the send timeout since the last commit, every slow stream that
    // filled up has been dropped.
    if let Some((_, last_commit)) = commits.last() {
        let dropped_by = *last_commit + Duration::from_secs(args.send_timeout) + DRAIN;
        tokio::time::sleep_until(dropped_by.into()).await;
    }
    let last_revision = commits.last().map_or(first, |&(revision, _)| revision);
    let (mut slow_events, mut slow_ended, mut slow_resumed) = (0, 0, 0);
    for stream in &mut slow {
        let (events, ended) = stream.drain().await;
        slow_events += events;
        slow_ended += usize::from(ended);
        let reached = stream.resume(&s, &token).await?;
        slow_resumed += usize::from(reached >= last_revision);
    }

    let (events, received) = arrivals.into_events();
    let by_commit = latencies(&commits, &received);
    let (lost, reordered) = faults(&commits, &received);
    let mut all: Vec<f64> = by_commit.iter().flatten().copied().collect();
    let mut last: Vec<f64> = by_commit
        .iter()
        .filter_map(|l| l.iter().copied().max_by(f64::total_cmp))
        .collect();
    let figures = FanoutFigures {
        backend,
        streams,
        connections,
        slow: args.slow,
        followers: args.followers,
        changes: commits.len(),
        events,
        event_p50_ms: sorted_percentile(&mut all, 0.5),
        event_p99_ms: sorted_percentile(&mut all, 0.99),
        event_max_ms: sorted_percentile(&mut all, 1.0),
        last_event_p50_ms: sorted_percentile(&mut last, 0.5),
        last_event_p99_ms: sorted_percentile(&mut last, 0.99),
        cache_p50_ms: sorted_percentile(&mut visible_ms, 0.5),
        cache_p99_ms: sorted_percentile(&mut visible_ms, 0.99),
        lost,
        reordered,
        slow_events,
        slow_ended,
        slow_resumed,
        reads_per_change: (!commits.is_empty()).then(|| reads / commits.len() as f64),
        peak_mib,
    };
    drop(slow);
    s.stop().await;
    for f in followers {
        f.registry.stop().await;
        f.database.drop_database().await;
    }
    drop(store);
    serving_db.drop_database().await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(figures)
}

/// The serving registry's count of the database reads made for its Follow
/// streams, scraped from its metrics at `address`.
async fn follow_reads(address: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NAME: &str = "fedreg_follow_database_reads_total ";
    let mut connection = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to the metrics at {address}"))?;
    connection
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: fedreg\r\n\r\n")
        .await?;
    let mut text = String::new();
    connection.read_to_string(&mut text).await?;
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(NAME))
        .ok_or_else(|| anyhow!("no {NAME}in the metrics"))?;
    value.trim().parse().context("reading the follow reads")
}

/// The serving registry's last revision.
async fn current_revision(store: &Store) -> anyhow::Result<i64> {
    Ok(revisions::history(&mut store.read().await?).await?.revision)
}

/// A local site of the serving registry, the one the commits rename.
async fn local_site(store: &Store) -> anyhow::Result<i64> {
    let mut conn = store.read().await?;
    with_db!(conn, |c| {
        sites::table
            .filter(sites::peer_id.is_null())
            .select(sites::site_id)
            .first(c)
            .await
    })
    .context("reading the serving registry's sites")
}

/// Opens a plain `Follow` stream.
async fn open(client: &mut Peering) -> anyhow::Result<tonic::Streaming<pb::FollowEvent>> {
    Ok(client
        .follow(pb::FollowRequest {
            heartbeat_seconds: HEARTBEAT_SECONDS,
            ..Default::default()
        })
        .await
        .context("Follow")?
        .into_inner())
}

/// An event received on a plain stream.
struct Arrival {
    stream: usize,
    revision: i64,
    at: Instant,
}

/// Reads plain stream `index` until `stop`, sending each event's revision
/// and time to `arrivals`.
async fn read_stream(
    index: usize,
    mut client: Peering,
    arrivals: mpsc::UnboundedSender<Arrival>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut stream = open(&mut client).await?;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            event = stream.message() => event,
        };
        let at = Instant::now();
        let event = event
            .with_context(|| format!("stream {index}"))?
            .ok_or_else(|| anyhow!("stream {index} ended"))?;
        let revision = event.checkpoint.map_or(-1, |c| c.revision);
        // The receiver only goes away when the run failed.
        let _ = arrivals.send(Arrival {
            stream: index,
            revision,
            at,
        });
    }
}

/// The events of the plain streams, as they arrive.
struct Arrivals {
    rx: mpsc::UnboundedReceiver<Arrival>,
    /// By stream: the revisions received and when.
    received: Vec<Vec<(i64, Instant)>>,
    /// By stream: the highest revision received.
    highest: Vec<i64>,
    events: usize,
}

impl Arrivals {
    fn new(rx: mpsc::UnboundedReceiver<Arrival>, streams: usize) -> Arrivals {
        Arrivals {
            rx,
            received: vec![Vec::new(); streams],
            highest: vec![i64::MIN; streams],
            events: 0,
        }
    }

    /// Waits until every stream received `revision` (or a later one).
    async fn wait_for(&mut self, revision: i64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut behind = self.highest.iter().filter(|&&h| h < revision).count();
        while behind > 0 {
            let arrival = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("{behind} streams still without it after {PATIENCE:?}"))?
                .ok_or_else(|| anyhow!("every stream ended"))?;
            let highest = &mut self.highest[arrival.stream];
            if *highest < revision && arrival.revision >= revision {
                behind -= 1;
            }
            *highest = (*highest).max(arrival.revision);
            self.received[arrival.stream].push((arrival.revision, arrival.at));
            self.events += 1;
        }
        Ok(())
    }

    /// The events received, and each stream's.
    fn into_events(self) -> (usize, Vec<Vec<(i64, Instant)>>) {
        (self.events, self.received)
    }
}

/// Milliseconds from `committed` until `follower`'s cache applied
/// `revision`.
async fn visible(follower: &Follower, revision: i64, committed: Instant) -> anyhow::Result<f64> {
    loop {
        let peer = get_peer(&follower.registry, follower.peer_id).await?;
        if peer
            .follow_status
            .is_some_and(|s| s.applied_revision >= revision)
        {
            return Ok(committed.elapsed().as_secs_f64() * 1000.0);
        }
        if committed.elapsed() > PATIENCE {
            bail!(
                "{} did not apply revision {revision}",
                follower.registry.name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A stream that stops reading after its first event.
struct SlowStream {
    events: tonic::Streaming<pb::FollowEvent>,
    /// The checkpoint of the last event read.
    checkpoint: Option<pb::Checkpoint>,
}

impl SlowStream {
    /// Opens a stream asking for the changes, on a connection of its own
    /// with a 1 KiB stream window, and reads its first event.
    async fn open(registry: &Registry, token: &str) -> anyhow::Result<SlowStream> {
        let bearer = Bearer::new(Some(token)).map_err(|_| anyhow!("token is not ascii"))?;
        let narrow = Channel::from_shared(registry.url.clone())?
            .initial_stream_window_size(1024)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", registry.name))?;
        let mut stream = SlowStream {
            events: PeeringServiceClient::with_interceptor(narrow, bearer)
                .follow(changes_since(None))
                .await
                .context("Follow")?
                .into_inner(),
            checkpoint: None,
        };
        let first = tokio::time::timeout(PATIENCE, stream.events.message())
            .await
            .context("the slow stream's first event")??;
        stream.checkpoint = first.and_then(|e| e.checkpoint);
        Ok(stream)
    }

    /// Reads what the stream holds: the events, and whether the server had
    /// ended it for reading nothing.
    async fn drain(&mut self) -> (usize, bool) {
        let mut events = 0;
        loop {
            match tokio::time::timeout(DRAIN, self.events.message()).await {
                Err(_) => return (events, false),
                Ok(Ok(Some(event))) => {
                    events += 1;
                    self.checkpoint = event.checkpoint;
                }
                Ok(Ok(None)) => return (events, false),
                Ok(Err(status)) => {
                    return (events, status.code() == tonic::Code::DeadlineExceeded);
                }
            }
        }
    }

    /// Resumes from the last checkpoint read, with a new stream: the
    /// revision its first event reaches.
    async fn resume(&self, registry: &Registry, token: &str) -> anyhow::Result<i64> {
        let mut resumed = peering(registry, token)
            .await?
            .follow(changes_since(self.checkpoint.clone()))
            .await
            .context("resuming Follow")?
            .into_inner();
        let first = tokio::time::timeout(PATIENCE, resumed.message())
            .await
            .context("the resumed stream's first event")??
            .ok_or_else(|| anyhow!("the resumed stream ended at once"))?;
        Ok(first.checkpoint.map_or(0, |c| c.revision))
    }
}

/// A Follow request for the changes from `since`.
fn changes_since(since: Option<pb::Checkpoint>) -> pb::FollowRequest {
    pb::FollowRequest {
        since,
        heartbeat_seconds: HEARTBEAT_SECONDS,
        include_changes: true,
    }
}

/// Milliseconds from each commit to each stream's event of its revision,
/// by commit; a stream without it is left out (and counted lost).
fn latencies(commits: &[(i64, Instant)], received: &[Vec<(i64, Instant)>]) -> Vec<Vec<f64>> {
    commits
        .iter()
        .map(|&(revision, committed)| {
            received
                .iter()
                .filter_map(|events| {
                    let &(_, at) = events.iter().find(|(r, _)| *r == revision)?;
                    Some(at.saturating_duration_since(committed).as_secs_f64() * 1000.0)
                })
                .collect()
        })
        .collect()
}

/// Events lost (a commit's revision a stream never received) and
/// reordered (a revision lower than the one before it), over all streams.
fn faults(commits: &[(i64, Instant)], received: &[Vec<(i64, Instant)>]) -> (usize, usize) {
    let mut lost = 0;
    let mut reordered = 0;
    for events in received {
        lost += commits
            .iter()
            .filter(|(revision, _)| !events.iter().any(|(r, _)| r == revision))
            .count();
        reordered += events.windows(2).filter(|w| w[1].0 < w[0].0).count();
    }
    (lost, reordered)
}

/// The percentile `p` of `values`, sorting them.
fn sorted_percentile(values: &mut [f64], p: f64) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    (!values.is_empty()).then(|| percentile(values, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two commits (revisions 5 and 6): one stream gets both, one misses
    /// the first, one gets them in the wrong order.
    #[test]
    fn lost_and_reordered_events_are_counted() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let commits = [(5, at(10)), (6, at(20))];
        let received = vec![
            vec![(4, at(0)), (5, at(11)), (6, at(23))],
            vec![(4, at(0)), (6, at(21))],
            vec![(4, at(0)), (6, at(22)), (5, at(24))],
        ];
        assert_eq!(faults(&commits, &received), (1, 1));
        let by_commit = latencies(&commits, &received);
        assert_eq!(by_commit[0], [1.0, 14.0]);
        assert_eq!(by_commit[1], [3.0, 1.0, 2.0]);
    }
}
