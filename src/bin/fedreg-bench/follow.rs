//! The follow-mode step: how long a change committed on the serving
//! registry takes to be in the refreshing registry's cache when the
//! refreshing registry follows it.
//!
//! The refreshing registry is set to follow the serving one and given time
//! to catch up. Then, one change at a time, a local site of the serving
//! registry is renamed through its API; the clock starts when the call
//! returns (the change is committed by then) and stops when the new name
//! is visible in the refreshing registry's cache:
//!
//! - SQLite: a query on the refreshing registry's database sees it; the
//!   query polls every [`POLL`], so a latency is overstated by up to that
//!   much, never understated.
//! - PostgreSQL: a trigger on the refreshing database's `sites` notifies
//!   the benchmark, which PostgreSQL delivers at the commit that makes the
//!   name visible (no polling load on the server). Two more triggers stamp
//!   the change as the logical replication baseline is stamped
//!   ([`crate::replication`]): `clock_timestamp()` when the serving
//!   registry writes the row, just before its commit, and when the
//!   refreshing registry writes its cached copy, just before its commit.
//!   Those stamps give the second figure, measured like the baseline.
//!
//! Changes are paced (the next one after the previous arrived), so the
//! figures are latencies, not queueing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use fedreg::proto::v1 as pb;
use fedreg::store::Store;
use fedreg::store::schema::sites;
use fedreg::with_db;

use crate::pg::{connect_url, exec, notified_within};
use crate::servers::Registry;
use crate::stats::percentile;

/// Interval between two looks at the refreshing registry's cache.
const POLL: Duration = Duration::from_micros(200);
/// Longest wait for one change, or for following to start.
const PATIENCE: Duration = Duration::from_secs(60);

/// Notification channel of the arrival trigger.
const CHANNEL: &str = "fedreg_bench_followed";
/// How often the arrival table is checked if no notification came.
const ARRIVAL_POLL: Duration = Duration::from_millis(2);

/// How the benchmark learns that a change reached the refreshing registry.
pub enum Watch<'a> {
    /// By polling the refreshing registry's database (SQLite).
    Poll(&'a Store),
    /// By the triggers that stamp and announce the change (PostgreSQL):
    /// the URLs of the serving and the refreshing databases.
    Stamps {
        /// The serving registry's database.
        serving: String,
        /// The refreshing registry's database.
        refreshing: String,
    },
}

/// Commit-to-cache latencies of follow mode.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Median, milliseconds.
    pub median_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// With [`Watch::Stamps`]: the median and 99th percentile between the
    /// two rows' write stamps, as the baseline measures.
    pub stamped_ms: Option<(f64, f64)>,
    /// Changes measured.
    pub changes: usize,
    /// The report of the last refresh the follow stream ran.
    pub last_report: Option<pb::RefreshReport>,
}

/// Makes `refreshing` follow its peer `peer_id` (the `serving` registry),
/// then times `changes` site renames on `serving` until each is in the
/// cache of `refreshing`, learnt as `watch` says.
pub async fn measure(
    serving: &Registry,
    serving_store: &Store,
    refreshing: &Registry,
    watch: Watch<'_>,
    peer_id: i64,
    changes: usize,
) -> anyhow::Result<Latencies> {
    start_following(refreshing, peer_id).await?;

    let site_ids: Vec<i64> = {
        let mut conn = serving_store.read().await?;
        with_db!(conn, |c| {
            sites::table
                .filter(sites::peer_id.is_null())
                .order(sites::site_id)
                .limit(changes as i64)
                .select(sites::site_id)
                .load(c)
                .await
        })
        .context("reading the serving registry's sites")?
    };
    if site_ids.is_empty() {
        bail!("the serving registry has no site to change");
    }
    let mut api = serving.registry();
    let mut watcher = Watcher::open(&watch, peer_id).await?;
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let site_id = site_ids[i % site_ids.len()];
        let name = format!("{NAME_PREFIX}{i}");
        api.update_site(pb::UpdateSiteRequest {
            site_id,
            name: Some(name.clone()),
            ..Default::default()
        })
        .await
        .context("UpdateSite")?;
        let committed = Instant::now();
        watcher
            .wait_for(site_id, &name, committed)
            .await
            .with_context(|| format!("change {i} (site {site_id})"))?;
        latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let stamped_ms = match (&watch, &mut watcher) {
        (Watch::Stamps { serving, .. }, Watcher::Notified(conn)) => {
            let mut stamped = stamped_latencies(serving, conn).await?;
            stamped.sort_by(f64::total_cmp);
            Some((percentile(&stamped, 0.5), percentile(&stamped, 0.99)))
        }
        _ => None,
    };
    Ok(Latencies {
        median_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        stamped_ms,
        changes,
        last_report: get_peer(refreshing, peer_id).await?.last_refresh_report,
    })
}

/// The new names the benchmark gives sites; the triggers watch these only.
const NAME_PREFIX: &str = "Followed change ";

/// The SQL of a table `table` of stamps and of the trigger that fills it:
/// after `events` on `sites`, for the benchmark's names on rows where
/// `rows` holds, the name and `clock_timestamp()`, then `and_then`.
fn stamping(table: &str, events: &str, rows: &str, and_then: &str) -> String {
    format!(
        "CREATE TABLE {table} (name text PRIMARY KEY, at timestamptz NOT NULL);
         CREATE FUNCTION {table}_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO {table} VALUES (NEW.name, clock_timestamp()) ON CONFLICT DO NOTHING;
             {and_then}
             RETURN NULL;
         END $$;
         CREATE TRIGGER {table}_stamp AFTER {events} ON sites FOR EACH ROW
             WHEN ({rows} AND NEW.name LIKE '{NAME_PREFIX}%')
             EXECUTE FUNCTION {table}_stamp();"
    )
}

/// A connection that learns of arrivals.
enum Watcher {
    /// Polls the refreshing registry's cache.
    Polled(fedreg::store::DbConn, i64),
    /// Listens on the refreshing database for the arrival trigger.
    Notified(AsyncPgConnection),
}

impl Watcher {
    /// Opens the watch; with stamps, installs the triggers first.
    async fn open(watch: &Watch<'_>, peer_id: i64) -> anyhow::Result<Watcher> {
        match watch {
            Watch::Poll(store) => Ok(Watcher::Polled(store.read().await?, peer_id)),
            Watch::Stamps {
                serving,
                refreshing,
            } => {
                let mut s = connect_url(serving).await?;
                exec(
                    &mut s,
                    &stamping("bench_commit", "UPDATE", "NEW.peer_id IS NULL", ""),
                )
                .await?;
                let mut r = connect_url(refreshing).await?;
                let notify = format!("PERFORM pg_notify('{CHANNEL}', NEW.name);");
                let arrival = stamping(
                    "bench_arrival",
                    "INSERT OR UPDATE",
                    "NEW.peer_id IS NOT NULL",
                    &notify,
                );
                exec(&mut r, &format!("{arrival} LISTEN {CHANNEL};")).await?;
                Ok(Watcher::Notified(r))
            }
        }
    }

    /// Waits until site `site_id` is cached under `name`.
    async fn wait_for(&mut self, site_id: i64, name: &str, since: Instant) -> anyhow::Result<()> {
        loop {
            let arrived = match self {
                Watcher::Polled(cache, peer_id) => {
                    let peer_id = *peer_id;
                    let seen: i64 = with_db!(cache, |c| {
                        sites::table
                            .filter(sites::peer_id.eq(peer_id))
                            .filter(sites::peer_site_id.eq(site_id))
                            .filter(sites::name.eq(name))
                            .count()
                            .get_result(c)
                            .await
                    })
                    .context("looking in the refreshing registry's cache")?;
                    if seen == 0 {
                        // tokio's timer ticks in milliseconds: sleep on a
                        // blocking thread.
                        tokio::task::spawn_blocking(|| std::thread::sleep(POLL)).await?;
                    }
                    seen > 0
                }
                Watcher::Notified(conn) => notified(conn, name).await?,
            };
            if arrived {
                return Ok(());
            }
            if since.elapsed() > PATIENCE {
                bail!("did not reach the follower in {} s", PATIENCE.as_secs());
            }
        }
    }
}

/// Whether `name` arrived: its notification within [`ARRIVAL_POLL`], or
/// (should notifications not come) its row in `bench_arrival`.
async fn notified(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<bool> {
    if notified_within(conn, name, ARRIVAL_POLL).await? {
        return Ok(true);
    }
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let seen: Count = diesel::sql_query("SELECT count(*) AS n FROM bench_arrival WHERE name = $1")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .context("checking the arrival table")?;
    Ok(seen.n > 0)
}

/// The latencies between the two stamps of each change, milliseconds.
async fn stamped_latencies(
    serving: &str,
    refreshing: &mut AsyncPgConnection,
) -> anyhow::Result<Vec<f64>> {
    #[derive(diesel::QueryableByName)]
    struct Stamp {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = BigInt)]
        micros: i64,
    }
    let read = |table: &str| {
        format!("SELECT name, (extract(epoch FROM at) * 1000000)::bigint AS micros FROM {table}")
    };
    let committed: Vec<Stamp> = diesel::sql_query(read("bench_commit"))
        .load(&mut connect_url(serving).await?)
        .await
        .context("reading the commit stamps")?;
    let arrived: HashMap<String, i64> = diesel::sql_query(read("bench_arrival"))
        .load::<Stamp>(refreshing)
        .await
        .context("reading the arrival stamps")?
        .into_iter()
        .map(|s| (s.name, s.micros))
        .collect();
    committed
        .iter()
        .map(|c| match arrived.get(&c.name) {
            Some(at) => Ok((at - c.micros) as f64 / 1000.0),
            None => Err(anyhow!("{} has no arrival stamp", c.name)),
        })
        .collect()
}

/// Turns follow mode on for `peer_id` on `registry`, and waits until its
/// cache has caught up with the peer.
pub async fn start_following(registry: &Registry, peer_id: i64) -> anyhow::Result<()> {
    registry
        .peers()
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            follow: Some(true),
            ..Default::default()
        })
        .await
        .context("UpdatePeer follow")?;
    wait_caught_up(registry, peer_id).await
}

/// Waits until `on` is connected to its followed peer and up to date.
pub async fn wait_caught_up(on: &Registry, peer_id: i64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let peer = get_peer(on, peer_id).await?;
        let status = peer.follow_status.unwrap_or_default();
        if status.connected && status.lag_revisions == 0 && status.applied_revision > 0 {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            bail!("following did not start: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The record of peer `peer_id` on `on`.
pub async fn get_peer(on: &Registry, peer_id: i64) -> anyhow::Result<pb::Peer> {
    Ok(on
        .peers()
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(peer_id)),
        })
        .await
        .context("GetPeer")?
        .into_inner())
}
