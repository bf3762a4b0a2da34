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

use std::pin::pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt;

/// Commit-to-visible latencies of PostgreSQL logical replication between two
/// databases of one server.
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, PartialEq)]
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
/// transactions, between two databases it creates (and drops) on the server
/// at `pg_base` (like `postgres://postgres@127.0.0.1:5432`, no database;
/// trust authentication, or a password in the URL).
///
/// Returns [`Baseline::Unavailable`] when the server is not set up for
/// logical replication, `Err` when the measurement failed (after cleaning
/// up) or when the cleanup itself failed (naming what is left over).
pub async fn measure(pg_base: &str, changes: usize) -> Result<Baseline, String> {
    if changes == 0 {
        return Err("the replication baseline needs at least one change".into());
    }
    let pg_base = pg_base.trim_end_matches('/');
    let mut admin = connect(pg_base, "postgres").await?;
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
    let publisher_conninfo = conninfo(pg_base, &names.publisher)?;
    let measured = run(pg_base, &names, &publisher_conninfo, changes).await;
    let cleaned = cleanup(pg_base, &names).await;
    match (measured, cleaned) {
        (Ok(baseline), Ok(())) => Ok(Baseline::Measured(baseline)),
        (Err(e), Ok(())) => Err(format!("replication baseline: {e}")),
        (Ok(_), Err(c)) => Err(format!("replication baseline cleanup: {c}")),
        (Err(e), Err(c)) => Err(format!(
            "replication baseline: {e}; cleanup afterwards: {c}"
        )),
    }
}

/// `fedreg-bench replication-baseline [CHANGES]`: prints [`measure`]'s
/// figures for CHANGES (default 1000) changes on the server named by
/// `FEDREG_BENCH_PG` (default `postgres://postgres@127.0.0.1:5432`).
pub async fn command(args: &[String]) -> std::process::ExitCode {
    let changes = match args.first().map(|a| a.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: fedreg-bench replication-baseline [CHANGES (a positive number)]");
            return std::process::ExitCode::FAILURE;
        }
    };
    let pg_base = std::env::var("FEDREG_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    match measure(&pg_base, changes).await {
        Ok(Baseline::Measured(b)) => {
            println!(
                "PostgreSQL logical replication, commit to visible: median {:.3} ms, p99 {:.3} ms over {} changes",
                b.median_ms, b.p99_ms, b.changes
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(Baseline::Unavailable(why)) => {
            eprintln!("replication baseline unavailable: {why}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fedreg-bench: {e}");
            std::process::ExitCode::FAILURE
        }
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
async fn run(
    pg_base: &str,
    names: &Names,
    publisher_conninfo: &str,
    changes: usize,
) -> Result<ReplicationBaseline, String> {
    let mut admin = connect(pg_base, "postgres").await?;
    for db in [&names.publisher, &names.subscriber] {
        exec(&mut admin, &format!("CREATE DATABASE {db}")).await?;
    }
    drop(admin);

    let mut publisher = connect(pg_base, &names.publisher).await?;
    exec(
        &mut publisher,
        "CREATE TABLE change (id bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
         CREATE PUBLICATION fedreg_bench FOR TABLE change",
    )
    .await?;
    let mut subscriber = connect(pg_base, &names.subscriber).await?;
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
            publisher_conninfo.replace('\'', "''")
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
            .map_err(|e| format!("inserting change {id} on the publisher: {e}"))?;
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
    .map_err(|e| format!("reading the latencies on the subscriber: {e}"))?;
    if rows.len() != changes {
        return Err(format!(
            "only {} of {changes} changes have arrived on the subscriber",
            rows.len()
        ));
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
async fn wait_for_sync(subscriber: &mut AsyncPgConnection) -> Result<(), String> {
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
        .map_err(|e| format!("reading the subscription's state: {e}"))?;
        if states.iter().any(|s| s.state == "r") {
            return Ok(());
        }
        if start.elapsed() > SYNC_TIMEOUT {
            let state = states
                .as_slice()
                .first()
                .map_or("none", |s| s.state.as_str());
            return Err(format!(
                "the subscription's initial sync did not finish within {} s (state {state}; \
                 see the PostgreSQL log)",
                SYNC_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until change `id` has arrived on the subscriber: its trigger's
/// NOTIFY, or (should notifications not come) its row in `arrival`.
async fn wait_for_arrival(subscriber: &mut AsyncPgConnection, id: i64) -> Result<(), String> {
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
            .map_err(|e| format!("waiting for change {id} on the subscriber: {e}"))?
        {
            return Ok(());
        }
        let arrived: Count = diesel::sql_query("SELECT count(*) AS n FROM arrival WHERE id = $1")
            .bind::<BigInt, _>(id)
            .get_result(subscriber)
            .await
            .map_err(|e| format!("checking the arrival of change {id}: {e}"))?;
        if arrived.n > 0 {
            return Ok(());
        }
        if start.elapsed() > ARRIVAL_TIMEOUT {
            return Err(format!(
                "change {id} did not arrive on the subscriber within {} s",
                ARRIVAL_TIMEOUT.as_secs()
            ));
        }
    }
}

/// Whether a notification carrying `payload` arrives on `conn` within
/// `wait` (one carrying another payload, an earlier change's, counts as
/// nothing yet).
pub async fn notified_within(
    conn: &mut AsyncPgConnection,
    payload: &str,
    wait: Duration,
) -> Result<bool, String> {
    let mut notifications = pin!(conn.notifications_stream());
    match tokio::time::timeout(wait, notifications.next()).await {
        Ok(Some(Ok(n))) => Ok(n.payload == payload),
        Ok(None) | Err(_) => Ok(false),
        Ok(Some(Err(e))) => Err(e.to_string()),
    }
}

/// Removes everything [`run`] may have created, as far as it got: the
/// subscription, slots left in the publisher database, both databases.
/// Each step runs even if an earlier one failed; the errors are joined.
async fn cleanup(pg_base: &str, names: &Names) -> Result<(), String> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut errors = Vec::new();
    let mut admin = connect(pg_base, "postgres").await?;
    let sub = &names.subscriber;

    // The subscription lives in the subscriber database (pg_subscription is
    // shared, so the admin connection sees whether there is one).
    let subscriptions: Result<Count, String> =
        diesel::sql_query("SELECT count(*) AS n FROM pg_subscription WHERE subname = $1")
            .bind::<Text, _>(sub)
            .get_result(&mut admin)
            .await
            .map_err(|e| format!("looking for subscription {sub}: {e}"));
    match subscriptions {
        Ok(Count { n: 0 }) => {}
        Ok(_) => {
            if let Err(e) = drop_subscription(pg_base, sub).await {
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
        Err(format!(
            "{} (check pg_subscription, pg_replication_slots and databases named fedreg_bench_*)",
            errors.join("; ")
        ))
    }
}

/// Drops subscription `name` (in the database of the same name), which also
/// drops its slot on the publisher; if that fails (e.g. the publisher is
/// unreachable), detaches the slot and drops the subscription without it.
async fn drop_subscription(pg_base: &str, name: &str) -> Result<(), String> {
    let mut conn = connect(pg_base, name).await?;
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
            .map_err(|e| format!("{first}; then {e}"))?;
    }
    Ok(())
}

/// Drops every replication slot of database `db`, ending the WAL senders
/// still using them; retries for a few seconds while they shut down.
async fn drop_slots(admin: &mut AsyncPgConnection, db: &str) -> Result<(), String> {
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
                return Err(format!(
                    "{n} replication slot(s) of {db} could not be dropped"
                ));
            }
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                return Err(format!("dropping the replication slots of {db}: {e}"));
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The libpq connection string the subscriber uses to reach database `db`
/// on the server of `pg_base` (`postgres://[user[:password]@]host[:port]`).
fn conninfo(pg_base: &str, db: &str) -> Result<String, String> {
    let rest = pg_base
        .strip_prefix("postgres://")
        .or_else(|| pg_base.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("{pg_base}: not a postgres:// URL"))?;
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        // [IPv6]:port
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{pg_base}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = port.filter(|p| !p.is_empty()).unwrap_or("5432");
    if port.parse::<u16>().is_err() {
        return Err(format!("{pg_base}: bad port {port:?}"));
    }
    let host = if host.is_empty() { "localhost" } else { host };
    let mut parts = vec![
        format!("host={}", quote(host)),
        format!("port={port}"),
        format!("dbname={}", quote(db)),
    ];
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        parts.push(format!("user={}", quote(&percent_decode(user)?)));
        if let Some(password) = password {
            parts.push(format!("password={}", quote(&percent_decode(password)?)));
        }
    }
    Ok(parts.join(" "))
}

/// A libpq connection string value in single quotes.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Decodes a URL's `%XX` escapes.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The value at quantile `p` of sorted `values`: index round((n - 1) p).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Connects to database `db` on the server of `pg_base`.
async fn connect(pg_base: &str, db: &str) -> Result<AsyncPgConnection, String> {
    connect_url(&format!("{pg_base}/{db}")).await
}

/// Connects to the database at `url`.
pub async fn connect_url(url: &str) -> Result<AsyncPgConnection, String> {
    AsyncPgConnection::establish(url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

/// Runs `sql` (one or more statements), naming it in the error.
pub async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> Result<(), String> {
    conn.batch_execute(sql)
        .await
        .map_err(|e| format!("{e} (in: {sql:.120})"))
}

/// The value of server setting `name`.
async fn setting(conn: &mut AsyncPgConnection, name: &str) -> Result<String, String> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let row: Setting = diesel::sql_query("SELECT current_setting($1) AS value")
        .bind::<Text, _>(name)
        .get_result(conn)
        .await
        .map_err(|e| format!("reading setting {name}: {e}"))?;
    Ok(row.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_from_url() {
        assert_eq!(
            conninfo("postgres://postgres@127.0.0.1:5432", "db").as_deref(),
            Ok("host='127.0.0.1' port=5432 dbname='db' user='postgres'")
        );
        assert_eq!(
            conninfo("postgresql://u:p%40ss@[::1]", "db").as_deref(),
            Ok("host='::1' port=5432 dbname='db' user='u' password='p@ss'")
        );
        assert!(conninfo("mysql://x", "db").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 501.0);
        assert_eq!(percentile(&v, 0.99), 990.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
