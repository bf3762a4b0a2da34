//! Storage: one repository layer over PostgreSQL and SQLite.
//!
//! # One copy of each query for both backends
//!
//! diesel's `MultiConnection` derive would be the natural way to write a query
//! once for several backends, but it exists only for diesel's synchronous
//! connections; diesel-async has no multi-backend connection. The options
//! seen in other projects are (a) generic functions bounded on
//! `AsyncConnection<Backend = B>` plus a `where` clause per query (the bounds
//! grow with every query and leak into every caller), (b) duplicating the
//! repositories per backend, or (c) an enum of connections and a macro that
//! expands one query body once per variant. fedreg uses (c): [`DbConn`]
//! borrows as a [`Db`] (one variant per backend) and [`crate::with_db!`] matches on
//! it, so each query is written once and type-checked against both backends
//! at compile time. Where a backend needs different SQL (bulk loading, locks)
//! the match is written out and the difference is visible in one place.
//!
//! # Connections
//!
//! PostgreSQL: a bb8 pool of `AsyncPgConnection` (pure-Rust driver, no
//! libpq), JIT compilation off; every caller gets a pooled connection, one
//! the server closed being replaced at checkout (noticed without a round
//! trip). SQLite: a
//! bb8 pool of reader connections and one writer connection behind a
//! mutex, all in WAL mode with foreign keys on and a busy timeout. One
//! writer per process means SQLite writers queue in order instead of
//! failing with `SQLITE_BUSY`, and readers never wait for a writer (WAL).
//! [`Store::read`] and [`Store::write`] hand out the right kind.
//! [`Store::pool_stats`] tells the metrics where each pool stands:
//! connections in use and idle, checkouts that waited (bb8 counts them
//! for its pools; the writer's are counted here).
//!
//! A stream to a caller (`GetPeerData`) holds its connection for as long as
//! the caller takes to read it: [`Store::read_for_stream`] lends at most
//! half of the pool that way, so that short calls (authentication, admin
//! calls, health) always find a connection, whatever the streams do.
//!
//! Transactions go through diesel-async's transaction manager
//! ([`DbConn::transaction`]), so a connection dropped mid-transaction (a
//! cancelled call) is marked broken and never returns to the pool.

pub mod schema;

pub mod cache;
pub mod changes;
pub mod digests;
pub mod invitations;
pub mod keys;
pub mod listing;
pub mod memberships;
pub mod nodes;
pub mod peers;
pub mod persons;
pub mod prepared;
pub mod revisions;
pub mod sites;
pub mod slices;
pub mod tokens;

mod migrate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::SqliteConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection, TransactionManager};
use futures_util::FutureExt;
use scoped_futures::ScopedBoxFuture;
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use changes::ChangeFeed;

pub use migrate::run_migrations;

/// An SQLite connection usable from async code.
pub type SqliteAsync = SyncConnectionWrapper<SqliteConnection>;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// PostgreSQL through diesel-async's `AsyncPgConnection`.
    Postgres,
    /// Embedded SQLite through `SyncConnectionWrapper`.
    Sqlite,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Backend>,
    feed: Arc<ChangeFeed>,
    /// Connections streams may hold at once (see [`Store::read_for_stream`]).
    streams: Arc<Semaphore>,
}

/// Pooled PostgreSQL connections.
const PG_POOL_SIZE: u32 = 16;
/// Pooled SQLite readers.
const SQLITE_READERS: u32 = 8;
/// How long a caller waits for a pooled connection.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection lent to a stream by [`Store::read_for_stream`]; derefs to
/// its [`DbConn`].
pub struct StreamConn {
    conn: DbConn,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for StreamConn {
    type Target = DbConn;

    fn deref(&self) -> &DbConn {
        &self.conn
    }
}

impl std::ops::DerefMut for StreamConn {
    fn deref_mut(&mut self) -> &mut DbConn {
        &mut self.conn
    }
}

enum Backend {
    Postgres {
        pool: Pool<AsyncPgConnection>,
        url: String,
    },
    Sqlite {
        readers: Pool<SqliteAsync>,
        writer: Arc<Mutex<SqliteAsync>>,
        writer_waits: WaitCount,
        path: String,
    },
}

/// Checkouts that had to wait, and how long they waited in all.
#[derive(Debug, Default)]
struct WaitCount {
    waits: AtomicU64,
    nanos: AtomicU64,
}

impl WaitCount {
    fn record(&self, waited: Duration) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// One connection pool of a [`Store`] as it stands, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStats {
    /// Which pool: `postgres` (every connection on PostgreSQL),
    /// `sqlite_readers` or `sqlite_writer` (the one SQLite writer).
    pub pool: &'static str,
    /// The most connections the pool opens.
    pub max: u32,
    /// Connections checked out now.
    pub in_use: u32,
    /// Connections open and idle now.
    pub idle: u32,
    /// Checkouts that had to wait for a connection, since the store opened.
    pub waits: u64,
    /// The time those checkouts waited, in all.
    pub wait_time: Duration,
    /// Checkouts that gave up waiting (after `POOL_TIMEOUT`).
    pub timeouts: u64,
}

impl PoolStats {
    /// The stats of a bb8 pool of at most `max` connections, from its state.
    fn of(pool: &'static str, max: u32, state: bb8::State) -> PoolStats {
        PoolStats {
            pool,
            max,
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            waits: state.statistics.get_waited,
            wait_time: state.statistics.get_wait_time,
            timeouts: state.statistics.get_timed_out,
        }
    }
}

/// A connection checked out of a [`Store`].
#[expect(
    clippy::large_enum_variant,
    reason = "checked out once per call and held in place; boxing would allocate on every checkout"
)]
pub enum DbConn {
    /// A pooled PostgreSQL connection.
    Pg(PooledConnection<'static, AsyncPgConnection>),
    /// A pooled SQLite reader.
    SqliteRead(PooledConnection<'static, SqliteAsync>),
    /// The SQLite writer, held exclusively.
    SqliteWrite(SqliteWriter),
}

/// The SQLite writer checked out of a [`Store`]; releasing it wakes the
/// store's [`ChangeFeed`], since whatever it committed is visible by then.
pub struct SqliteWriter {
    conn: OwnedMutexGuard<SqliteAsync>,
    feed: Arc<ChangeFeed>,
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        self.feed.wake();
    }
}

/// A connection borrowed as its concrete backend type, for [`crate::with_db!`].
pub enum Db<'a> {
    /// PostgreSQL.
    Pg(&'a mut AsyncPgConnection),
    /// SQLite.
    Sqlite(&'a mut SqliteAsync),
}

/// Runs one query body against whichever backend a [`DbConn`] holds.
///
/// `with_db!(conn, |c| sites::table.count().get_result(c).await)` expands the
/// body once per backend, with `c` bound to the concrete connection type.
#[macro_export]
macro_rules! with_db {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn.db() {
            $crate::store::Db::Pg($c) => $body,
            $crate::store::Db::Sqlite($c) => $body,
        }
    };
}

/// Loads the rows of a query on whichever backend a [`DbConn`] holds. On
/// SQLite the rows are read and turned into Rust values on the database's
/// thread, in one go: diesel-async's own `load` first copies every value of
/// every row into an owned row, which then crosses threads (an allocation
/// and a free per value, on two threads). The query must own its bind
/// values; it is written once and built for each backend.
#[macro_export]
macro_rules! load_rows {
    ($conn:expr, $query:expr) => {
        match $conn.db() {
            $crate::store::Db::Pg(c) => diesel_async::RunQueryDsl::load($query, c).await,
            $crate::store::Db::Sqlite(c) => {
                let query = $query;
                c.spawn_blocking(move |sync| diesel::RunQueryDsl::load(query, sync))
                    .await
            }
        }
    };
}

/// Executes a multi-row `INSERT` (optionally with `ON CONFLICT`) on
/// whichever backend a [`DbConn`] holds; returns the affected row count.
///
/// diesel emits multi-row inserts for SQLite only through its synchronous
/// `ExecuteDsl`, so on SQLite the statement runs on the wrapped synchronous
/// connection; the query expression is still written once.
#[macro_export]
macro_rules! execute_batch {
    ($conn:expr, $query:expr) => {
        match $conn.db() {
            $crate::store::Db::Pg(c) => diesel_async::RunQueryDsl::execute($query, c).await,
            $crate::store::Db::Sqlite(c) => {
                let query = $query;
                c.spawn_blocking(move |sync| diesel::RunQueryDsl::execute(query, sync))
                    .await
            }
        }
    };
}

/// Pragmas applied to every SQLite connection: foreign keys enforced, a busy
/// timeout for the rare cross-process writer, WAL so readers never block.
/// `synchronous` stays at SQLite's default (FULL).
const SQLITE_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL;";

impl Store {
    /// Opens the database at `url` (`postgres://...` or an SQLite file path)
    /// and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        run_migrations(url).await?;
        Ok(store)
    }

    /// Opens the database at `url` without migrating it.
    pub async fn connect(url: &str) -> Result<Store> {
        let backend = if is_postgres_url(url) {
            let mut config = ManagerConfig::<AsyncPgConnection>::default();
            config.recycling_method =
                RecyclingMethod::CustomFunction(Box::new(|conn| closed_check(conn).boxed()));
            config.custom_setup = Box::new(|url| establish_postgres(url.to_owned()).boxed());
            let manager = AsyncDieselConnectionManager::new_with_config(url, config);
            let pool = Pool::builder()
                .max_size(PG_POOL_SIZE)
                .connection_timeout(POOL_TIMEOUT)
                .build(manager)
                .await
                .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
            // Fail now, with a clear message, rather than on the first call.
            pool.get()
                .await
                .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
            Backend::Postgres {
                pool,
                url: url.to_owned(),
            }
        } else {
            let mut config = ManagerConfig::<SqliteAsync>::default();
            // A file connection does not go stale: no test query.
            config.recycling_method = RecyclingMethod::Fast;
            config.custom_setup = Box::new(|url| establish_sqlite(url.to_owned()).boxed());
            let manager = AsyncDieselConnectionManager::new_with_config(url, config);
            let writer = establish_sqlite(url.to_owned())
                .await
                .map_err(|e| Error::Unavailable(format!("opening SQLite database {url}: {e}")))?;
            let readers = Pool::builder()
                .max_size(SQLITE_READERS)
                .connection_timeout(POOL_TIMEOUT)
                .build(manager)
                .await
                .map_err(|e| Error::Unavailable(format!("opening SQLite database {url}: {e}")))?;
            Backend::Sqlite {
                readers,
                writer: Arc::new(Mutex::new(writer)),
                writer_waits: WaitCount::default(),
                path: url.to_owned(),
            }
        };
        let pool_size = match backend {
            Backend::Postgres { .. } => PG_POOL_SIZE,
            Backend::Sqlite { .. } => SQLITE_READERS,
        };
        Ok(Store {
            inner: Arc::new(backend),
            feed: Arc::default(),
            streams: Arc::new(Semaphore::new((pool_size / 2) as usize)),
        })
    }

    /// A receiver that changes after commits (see [`changes`]): wait on it,
    /// then read the change history to see what moved.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        if let Backend::Postgres { url, .. } = &*self.inner {
            self.feed.listen_postgres(url);
        }
        self.feed.subscribe()
    }

    /// The database behind this store.
    pub fn kind(&self) -> BackendKind {
        match *self.inner {
            Backend::Postgres { .. } => BackendKind::Postgres,
            Backend::Sqlite { .. } => BackendKind::Sqlite,
        }
    }

    /// The PostgreSQL URL, for connections outside the pool; `None` on SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        match &*self.inner {
            Backend::Postgres { url, .. } => Some(url),
            Backend::Sqlite { .. } => None,
        }
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn sqlite_path(&self) -> Option<&str> {
        match &*self.inner {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Postgres { .. } => None,
        }
    }

    /// A connection for reading; never waits for a writer.
    pub async fn read(&self) -> Result<DbConn> {
        match &*self.inner {
            Backend::Postgres { pool, .. } => {
                Ok(DbConn::Pg(pool.get_owned().await.map_err(pool_error)?))
            }
            Backend::Sqlite { readers, .. } => Ok(DbConn::SqliteRead(
                readers.get_owned().await.map_err(pool_error)?,
            )),
        }
    }

    /// A connection for reading, to be held by a stream: waits (holding
    /// nothing) while half of the pool is already lent to streams.
    pub async fn read_for_stream(&self) -> Result<StreamConn> {
        let permit = self
            .streams
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("the store is closed".into()))?;
        Ok(StreamConn {
            conn: self.read().await?,
            _permit: permit,
        })
    }

    /// Whether the database answers a small read within `timeout`
    /// (checking out a connection included).
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        let check = async {
            let mut conn = self.read().await?;
            with_db!(conn, |c| c
                .batch_execute("SELECT token_id FROM tokens LIMIT 1")
                .await)?;
            Ok(())
        };
        tokio::time::timeout(timeout, check).await.map_err(|_| {
            Error::Unavailable(format!("the database did not answer within {timeout:?}"))
        })?
    }

    /// A connection for writing. On SQLite this is the single writer and
    /// waits until the previous writer is done.
    pub async fn write(&self) -> Result<DbConn> {
        match &*self.inner {
            Backend::Postgres { pool, .. } => {
                Ok(DbConn::Pg(pool.get_owned().await.map_err(pool_error)?))
            }
            Backend::Sqlite {
                writer,
                writer_waits,
                ..
            } => {
                let conn = match writer.clone().try_lock_owned() {
                    Ok(conn) => conn,
                    Err(_) => {
                        let waiting = Instant::now();
                        let conn = writer.clone().lock_owned().await;
                        writer_waits.record(waiting.elapsed());
                        conn
                    }
                };
                Ok(DbConn::SqliteWrite(SqliteWriter {
                    conn,
                    feed: self.feed.clone(),
                }))
            }
        }
    }

    /// Where each connection pool stands: connections in use and idle,
    /// waits for a connection.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        match &*self.inner {
            Backend::Postgres { pool, .. } => {
                vec![PoolStats::of("postgres", PG_POOL_SIZE, pool.state())]
            }
            Backend::Sqlite {
                readers,
                writer,
                writer_waits,
                ..
            } => {
                // Takes the writer for an instant when it is free.
                let in_use = u32::from(writer.try_lock().is_err());
                let writer = PoolStats {
                    pool: "sqlite_writer",
                    max: 1,
                    in_use,
                    idle: 1 - in_use,
                    waits: writer_waits.waits.load(Ordering::Relaxed),
                    wait_time: Duration::from_nanos(writer_waits.nanos.load(Ordering::Relaxed)),
                    timeouts: 0,
                };
                vec![
                    PoolStats::of("sqlite_readers", SQLITE_READERS, readers.state()),
                    writer,
                ]
            }
        }
    }
}

/// The check of a pooled PostgreSQL connection at checkout: whether the
/// server closed it (a restart, an idle timeout), which the driver notices
/// without a round trip. A `SELECT 1` per checkout would cost more than a
/// small query, on every call.
async fn closed_check(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    match PoolableConnection::is_broken(conn) {
        false => Ok(()),
        true => Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ClosedConnection,
            Box::new("the server closed the connection".to_owned()),
        )),
    }
}

fn pool_error(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("database connection: {e}"))
}

/// Whether `url` names a PostgreSQL database rather than an SQLite file.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Session settings of every PostgreSQL connection. JIT compilation is
/// off: fedreg's statements are short (a page, a chunk, a digest range),
/// yet PostgreSQL's estimates for a join over a list of ranges or a
/// multi-row write can pass its JIT threshold, and compiling then costs
/// more than running (100 ms per verification query at 100× huge).
const POSTGRES_SETTINGS: &str = "SET jit = off";

/// A new connection to `url` with its session `settings` applied.
async fn establish_with<C: AsyncConnection + SimpleAsyncConnection>(
    url: String,
    settings: &str,
) -> diesel::ConnectionResult<C> {
    let mut conn = C::establish(&url).await?;
    conn.batch_execute(settings)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    Ok(conn)
}

async fn establish_postgres(url: String) -> diesel::ConnectionResult<AsyncPgConnection> {
    establish_with(url, POSTGRES_SETTINGS).await
}

async fn establish_sqlite(url: String) -> diesel::ConnectionResult<SqliteAsync> {
    establish_with(url, SQLITE_PRAGMAS).await
}

impl DbConn {
    /// Borrows the connection as its concrete backend type.
    pub fn db(&mut self) -> Db<'_> {
        match self {
            DbConn::Pg(c) => Db::Pg(c),
            DbConn::SqliteRead(c) => Db::Sqlite(c),
            DbConn::SqliteWrite(c) => Db::Sqlite(&mut c.conn),
        }
    }

    /// The database behind this connection.
    pub fn kind(&self) -> BackendKind {
        match self {
            DbConn::Pg(_) => BackendKind::Postgres,
            DbConn::SqliteRead(_) | DbConn::SqliteWrite(_) => BackendKind::Sqlite,
        }
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back
    /// when it returns `Err`. If the future is dropped half-way the
    /// connection is marked broken and never reused.
    pub async fn transaction<'a, T, E, F>(&'a mut self, f: F) -> std::result::Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut DbConn) -> ScopedBoxFuture<'a, 'r, std::result::Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: From<Error> + Send + 'a,
    {
        with_db!(self, |c| begin(c).await).map_err(|e| E::from(Error::from(e)))?;
        self.finish_transaction(f).await
    }

    /// Runs `f` as [`DbConn::transaction`] does, in a read-only transaction
    /// that sees one snapshot of the database throughout: REPEATABLE READ
    /// on PostgreSQL (begun in one statement), a WAL read transaction on
    /// SQLite (one snapshot from its first read on).
    pub async fn snapshot<'a, T, E, F>(&'a mut self, f: F) -> std::result::Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut DbConn) -> ScopedBoxFuture<'a, 'r, std::result::Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: From<Error> + Send + 'a,
    {
        let begun = match self.db() {
            Db::Pg(c) => {
                diesel_async::AnsiTransactionManager::begin_transaction_sql(
                    c,
                    "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                )
                .await
            }
            Db::Sqlite(c) => begin(c).await,
        };
        begun.map_err(|e| E::from(Error::from(e)))?;
        self.finish_transaction(f).await
    }

    /// Runs `f` in the transaction just begun, then commits or rolls back.
    async fn finish_transaction<'a, T, E, F>(&'a mut self, f: F) -> std::result::Result<T, E>
    where
        F: for<'r> FnOnce(&'r mut DbConn) -> ScopedBoxFuture<'a, 'r, std::result::Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: From<Error> + Send + 'a,
    {
        match f(self).await {
            Ok(value) => {
                with_db!(self, |c| commit(c).await).map_err(|e| E::from(Error::from(e)))?;
                Ok(value)
            }
            Err(e) => {
                // The caller's error is the one worth reporting; a failed
                // rollback leaves the connection marked broken.
                let _ = with_db!(self, |c| rollback(c).await);
                Err(e)
            }
        }
    }
}

async fn begin<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
    C::TransactionManager::begin_transaction(c).await
}

async fn commit<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
    C::TransactionManager::commit_transaction(c).await
}

async fn rollback<C: AsyncConnection>(c: &mut C) -> diesel::QueryResult<()> {
    C::TransactionManager::rollback_transaction(c).await
}

/// Current time as Unix seconds, the unit of every time column.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
