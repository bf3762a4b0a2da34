//! Baseline for follow mode: how fast PostgreSQL's own logical replication
//! makes a committed change visible in another database.
//!
//! Two fresh databases of one server are linked by a publication and a
//! subscription on a table `change`. The publisher gets one INSERT per
//! transaction, sequentially, and the next change is only sent once the
//! previous one has arrived, so the figures are latency, not queueing.
//!
//! - Commit: each row carries `committed_at = clock_timestamp()` taken by
//!   the publisher while inserting it, i.e. just before its transaction
//!   commits. The latency therefore includes the commit itself (the WAL
//!   flush), which logical decoding has to wait for anyway.
//! - Visible: on the subscriber, an `ENABLE ALWAYS` row trigger records
//!   `clock_timestamp()` in `arrival` when the apply worker inserts the row,
//!   i.e. just before the apply transaction commits (the criterion of the
//!   target figure this is compared to). It also sends a NOTIFY, so the
//!   benchmark learns of the arrival without hammering the server with polls.
//!
//! Latency = arrived_at - committed_at, both from the server's clock and
//! computed on the subscriber; the result is its median and 99th percentile.
//!
//! The client's wall clock right after the INSERT returned is not used as the
//! commit time: on a busy host the client is often scheduled after the apply
//! worker, and up to half of the latencies measured that way came out
//! negative (the change was visible before the client learnt of its commit).
//!
//! Everything is created per run and removed afterwards, also on errors: the
//! subscription first (its replication slot on the publisher would otherwise
//! retain WAL forever), then any slot left in the publisher database, then
//! both databases.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::cli::BaselineArgs;
use crate::pg::{PgServer, exec, notified_within};
use crate::stats::percentile;

/// Commit-to-visible latencies of PostgreSQL logical replication between two
/// databases of one server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicationBaseline {
    /// Median latency from a commit on the publisher (its row's
    /// `clock_timestamp()`, just before the commit) to the trigger firing on
    /// the subscriber, in milliseconds.
    pub median_ms: f64,
    /// 99th percentile of the same latency, in milliseconds.
    pub p99_ms: f64,
    /// Number of changes (one-row transactions) measured.
    pub changes: usize,
}

/// The outcome of [`measure`]: the figures, or why they could not be taken.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The baseline was measured.
    Measured(ReplicationBaseline),
    /// Why the baseline could not be measured (e.g. wal_level is not
    /// logical), with the fix to print.
    Unavailable(String),
}

/// Channel of the subscriber trigger's notifications (payload: the change id).
const CHANNEL: &str = "fedreg_bench_arrival";
/// Longest wait for the subscription's initial table sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one change to arrive on the subscriber.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the arrival table is checked if no notification came.
const ARRIVAL_POLL: Duration = Duration::from_millis(2);

/// Measures PostgreSQL's logical replication latency over `changes` one-row
/// transactions, between two databases it creates (and drops) on `pg`.
///
/// Returns [`Baseline::Unavailable`] when the server is not set up for
/// logical replication, `Err` when the measurement failed (after cleaning
/// up) or when the cleanup itself failed (naming what is left over).
pub async fn measure(pg: &PgServer, changes: usize) -> anyhow::Result<Baseline> {
    if changes == 0 {
        bail!("the replication baseline needs at least one change");
    }
    let mut admin = pg.connect("postgres").await?;
    let wal_level = setting(&mut admin, "wal_level").await?;
    if wal_level != "logical" {
        let major = setting(&mut admin, "server_version_num")
            .await
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .map_or_else(|| "<version>".to_owned(), |v| (v / 10_000).to_string());
        return Ok(Baseline::Unavailable(format!(
            "PostgreSQL's wal_level is {wal_level}; for the logical replication baseline run: \
             ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL \
             (pg_ctlcluster --skip-systemctl-redirect {major} main restart)"
        )));
    }
    drop(admin);
    let names = Names::new();
    let measured = run(pg, &names, changes).await;
    let cleaned = cleanup(pg, &names).await;
    match (measured, cleaned) {
        (Ok(baseline), Ok(())) => Ok(Baseline::Measured(baseline)),
        (Err(e), Ok(())) => Err(e.context("replication baseline")),
        (Ok(_), Err(c)) => Err(c.context("replication baseline cleanup")),
        (Err(e), Err(c)) => Err(anyhow!(
            "replication baseline: {e:#}; cleanup afterwards: {c:#}"
        )),
    }
}

/// `fedreg-bench replication-baseline`: prints [`measure`]'s figures.
pub async fn command(args: &BaselineArgs) -> anyhow::Result<()> {
    match measure(&args.pg.pg_url, args.changes.get()).await? {
        Baseline::Measured(b) => {
            println!(
                "PostgreSQL logical replication, commit to visible: median {:.3} ms, p99 {:.3} ms over {} changes",
                b.median_ms, b.p99_ms, b.changes
            );
            Ok(())
        }
        Baseline::Unavailable(why) => bail!("replication baseline unavailable: {why}"),
    }
}

/// Names of everything one run creates, unique per process and instant.
struct Names {
    /// Publisher database.
    publisher: String,
    /// Subscriber database; also the subscription's and the slot's name
    /// (slots are cluster-wide, so it must be unique too).
    subscriber: String,
}

impl Names {
    /// Names no other run uses.
    fn new() -> Names {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pid = std::process::id();
        Names {
            publisher: format!("fedreg_bench_pub_{pid}_{nanos}"),
            subscriber: format!("fedreg_bench_sub_{pid}_{nanos}"),
        }
    }
}

/// Sets up the two databases, replicates `changes` rows and computes the
/// latencies. Leaves everything in place for [`cleanup`].
async fn run(pg: &PgServer, names: &Names, changes: usize) -> anyhow::Result<ReplicationBaseline> {
    let mut admin = pg.connect("postgres").await?;
    for db in [&names.publisher, &names.subscriber] {
        exec(&mut admin, &format!("CREATE DATABASE {db}")).await?;
    }
    drop(admin);

    let mut publisher = pg.connect(&names.publisher).await?;
    exec(
        &mut publisher,
        "CREATE TABLE change (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
         CREATE PUBLICATION fedreg_bench FOR TABLE change",
    )
    .await?;
    let mut subscriber = pg.connect(&names.subscriber).await?;
    // The apply worker runs with an empty search_path: qualify `arrival`.
    exec(
        &mut subscriber,
        &format!(
            "CREATE TABLE change (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
             CREATE TABLE arrival (id bigint PRIMARY KEY, arrived_at timestamptz NOT NULL);
             CREATE FUNCTION record_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.arrival (id, arrived_at) VALUES (NEW.id, clock_timestamp());
                 PERFORM pg_notify('{CHANNEL}', NEW.id::text);
                 RETURN NULL;
             END $$;
             CREATE TRIGGER record_arrival AFTER INSERT ON change
                 FOR EACH ROW EXECUTE FUNCTION record_arrival();
             ALTER TABLE change ENABLE ALWAYS TRIGGER record_arrival;
             LISTEN {CHANNEL}"
        ),
    )
    .await?;

    // Within one server, CREATE SUBSCRIPTION would hang creating its slot
    // (slot creation waits for the CREATE's own transaction): create it first.
    let slot = &names.subscriber;
    exec(
        &mut publisher,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .await?;
    exec(
        &mut subscriber,
        &format!(
            "CREATE SUBSCRIPTION {slot} CONNECTION '{}' PUBLICATION fedreg_bench \
             WITH (create_slot = false, slot_name = '{slot}')",
            pg.url(&names.publisher).replace('\'', "''")
        ),
    )
    .await?;
    wait_for_sync(&mut subscriber).await?;

    for id in 1..=changes as i64 {
        // One statement, one transaction: the publisher stamps the row just
        // before its commit, and the stamp is replicated with it.
        diesel::sql_query("INSERT INTO change (id, committed_at) VALUES ($1, clock_timestamp())")
            .bind::<BigInt, _>(id)
            .execute(&mut publisher)
            .await
            .with_context(|| format!("inserting change {id} on the publisher"))?;
        wait_for_arrival(&mut subscriber, id).await?;
    }

    #[derive(diesel::QueryableByName)]
    struct Latency {
        #[diesel(sql_type = BigInt)]
        latency_us: i64,
    }
    let rows: Vec<Latency> = diesel::sql_query(
        "SELECT (extract(epoch FROM a.arrived_at - c.committed_at) * 1000000)::bigint
             AS latency_us
         FROM change c JOIN arrival a USING (id)",
    )
    .load(&mut subscriber)
    .await
    .context("reading the latencies on the subscriber")?;
    if rows.len() != changes {
        bail!(
            "only {} of {changes} changes have arrived on the subscriber",
            rows.len()
        );
    }
    let mut latencies: Vec<f64> = rows.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    Ok(ReplicationBaseline {
        median_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        changes: latencies.len(),
    })
}

/// Waits until the subscription's initial sync of `change` is done (state
/// `r`, ready, in pg_subscription_rel).
async fn wait_for_sync(subscriber: &mut AsyncPgConnection) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct State {
        #[diesel(sql_type = Text)]
        state: String,
    }
    let start = Instant::now();
    loop {
        let states: Vec<State> = diesel::sql_query(
            "SELECT srsubstate::text AS state FROM pg_subscription_rel
             WHERE srrelid = 'public.change'::regclass",
        )
        .load(subscriber)
        .await
        .context("reading the subscription's state")?;
        if states.iter().any(|s| s.state == "r") {
            return Ok(());
        }
        if start.elapsed() > SYNC_TIMEOUT {
            let state = states
                .as_slice()
                .first()
                .map_or("none", |s| s.state.as_str());
            bail!(
                "the subscription's initial sync did not finish within {} s (state {state}; \
                 see the PostgreSQL log)",
                SYNC_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until change `id` has arrived on the subscriber: its trigger's
/// NOTIFY, or (should notifications not come) its row in `arrival`.
async fn wait_for_arrival(subscriber: &mut AsyncPgConnection, id: i64) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let payload = id.to_string();
    let start = Instant::now();
    loop {
        if notified_within(subscriber, &payload, ARRIVAL_POLL)
            .await
            .with_context(|| format!("waiting for change {id} on the subscriber"))?
        {
            return Ok(());
        }
        let arrived: Count = diesel::sql_query("SELECT count(*) AS n FROM arrival WHERE id = $1")
            .bind::<BigInt, _>(id)
            .get_result(subscriber)
            .await
            .with_context(|| format!("checking the arrival of change {id}"))?;
        if arrived.n > 0 {
            return Ok(());
        }
        if start.elapsed() > ARRIVAL_TIMEOUT {
            bail!(
                "change {id} did not arrive on the subscriber within {} s",
                ARRIVAL_TIMEOUT.as_secs()
            );
        }
    }
}

/// Removes everything [`run`] may have created, as far as it got: the
/// subscription, slots left in the publisher database, both databases.
/// Each step runs even if an earlier one failed; the errors are joined.
async fn cleanup(pg: &PgServer, names: &Names) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut errors = Vec::new();
    let mut admin = pg.connect("postgres").await?;
    let sub = &names.subscriber;

    // The subscription lives in the subscriber database (pg_subscription is
    // shared, so the admin connection sees whether there is one).
    let subscriptions: anyhow::Result<Count> =
        diesel::sql_query("SELECT count(*) AS n FROM pg_subscription WHERE subname = $1")
            .bind::<Text, _>(sub)
            .get_result(&mut admin)
            .await
            .with_context(|| format!("looking for subscription {sub}"));
    match subscriptions {
        Ok(Count { n: 0 }) => {}
        Ok(_) => {
            if let Err(e) = drop_subscription(pg, sub).await {
                errors.push(e);
            }
        }
        Err(e) => errors.push(e),
    }

    // Slots of the publisher database: ours if the subscription never took
    // it over, table sync slots, or one the fallback above detached.
    if let Err(e) = drop_slots(&mut admin, &names.publisher).await {
        errors.push(e);
    }

    for db in [&names.subscriber, &names.publisher] {
        if let Err(e) = exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        )
        .await
        {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let errors: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        bail!(
            "{} (check pg_subscription, pg_replication_slots and databases named fedreg_bench_*)",
            errors.join("; ")
        )
    }
}

/// Drops subscription `name` (in the database of the same name), which also
/// drops its slot on the publisher; if that fails (e.g. the publisher is
/// unreachable), detaches the slot and drops the subscription without it.
async fn drop_subscription(pg: &PgServer, name: &str) -> anyhow::Result<()> {
    let mut conn = pg.connect(name).await?;
    let Err(first) = exec(&mut conn, &format!("DROP SUBSCRIPTION IF EXISTS {name}")).await else {
        return Ok(());
    };
    // One statement each: DROP SUBSCRIPTION cannot run in a transaction block.
    for sql in [
        format!("ALTER SUBSCRIPTION {name} DISABLE"),
        format!("ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"),
        format!("DROP SUBSCRIPTION {name}"),
    ] {
        exec(&mut conn, &sql)
            .await
            .map_err(|e| anyhow!("{first:#}; then {e:#}"))?;
    }
    Ok(())
}

/// Drops every replication slot of database `db`, ending the WAL senders
/// still using them; retries for a few seconds while they shut down.
async fn drop_slots(admin: &mut AsyncPgConnection, db: &str) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let start = Instant::now();
    loop {
        let attempt = async {
            diesel::sql_query(
                "SELECT count(pg_terminate_backend(active_pid)) AS n FROM pg_replication_slots
                 WHERE database = $1 AND active_pid IS NOT NULL",
            )
            .bind::<Text, _>(db)
            .get_result::<Count>(admin)
            .await?;
            diesel::sql_query(
                "SELECT count(pg_drop_replication_slot(slot_name)) AS n FROM pg_replication_slots
                 WHERE database = $1 AND NOT active",
            )
            .bind::<Text, _>(db)
            .get_result::<Count>(admin)
            .await?;
            diesel::sql_query("SELECT count(*) AS n FROM pg_replication_slots WHERE database = $1")
                .bind::<Text, _>(db)
                .get_result::<Count>(admin)
                .await
        };
        match attempt.await {
            Ok(Count { n: 0 }) => return Ok(()),
            Ok(Count { n }) if start.elapsed() > Duration::from_secs(10) => {
                bail!("{n} replication slot(s) of {db} could not be dropped");
            }
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                return Err(e).with_context(|| format!("dropping the replication slots of {db}"));
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The value of server setting `name`.
async fn setting(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<String> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let row: Setting = diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .with_context(|| format!("reading setting {name}"))?;
    Ok(row.value)
}
