//! One refresh per peer at a time, across threads and processes; and one
//! follower per peer among processes sharing a database ([`FollowLease`]).
//!
//! Two locks, both released by the operating system or the database when
//! their holder dies, so a crash never leaves one behind:
//! - an fs4 (flock) lock on `locks/peer-<id>.lock` in the data directory,
//!   which serialises refreshes of processes sharing a data directory (and
//!   of one process: every attempt opens the file anew);
//! - on PostgreSQL, a session advisory lock held on a dedicated connection
//!   for the whole refresh, which serialises processes that share the
//!   database but not the data directory. Closing the connection releases it.
//!   A refresh that ends normally unlocks it instead and keeps the
//!   connection for the next refresh ([`LockConnections`]): opening one
//!   costs more than a small delta refresh.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::peers::PeerRow;

/// First key of fedreg's refresh locks (the second is the peer id).
const ADVISORY_LOCK_CLASS: i32 = 0x6672_6567; // "freg"
/// First key of the follow leases (the second is the peer id).
const FOLLOW_LEASE_CLASS: i32 = 0x6672_6566; // "fref"

/// Idle connections kept cannot outnumber this.
const MAX_IDLE: usize = 4;

/// Idle PostgreSQL connections, unlocked, kept for the advisory locks of
/// later refreshes; cheap to clone.
#[derive(Clone, Default)]
pub struct LockConnections(Arc<Mutex<Vec<AsyncPgConnection>>>);

impl LockConnections {
    fn take(&self) -> Option<AsyncPgConnection> {
        self.0.lock().ok()?.pop()
    }

    fn keep(&self, conn: AsyncPgConnection) {
        if let Ok(mut idle) = self.0.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// Held while a peer is being refreshed; [`RefreshLock::release`] (or
/// dropping it) releases the locks.
pub struct RefreshLock {
    _file: File,
    pg: Option<(AsyncPgConnection, i32)>,
    idle: LockConnections,
}

impl RefreshLock {
    /// Releases the locks, keeping the advisory lock's connection for the
    /// next refresh when it unlocks cleanly (otherwise it is closed, which
    /// releases the lock too).
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.pg.take()
            && diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
                .bind::<diesel::sql_types::Integer, _>(ADVISORY_LOCK_CLASS)
                .bind::<diesel::sql_types::Integer, _>(key)
                .execute(&mut conn)
                .await
                .is_ok()
        {
            self.idle.keep(conn);
        }
    }
}

fn busy(peer: &PeerRow, how: &str) -> Error {
    Error::Aborted(format!(
        "peer {} (peer_id {}) is being refreshed by another call ({how}); try again when it is done",
        peer.peername, peer.peer_id
    ))
}

/// Takes the refresh locks of `peer`, or fails at once with ABORTED;
/// `idle` holds connections that earlier refreshes left for reuse.
pub async fn acquire(
    store: &Store,
    data_dir: &Path,
    idle: &LockConnections,
    peer: &PeerRow,
) -> Result<RefreshLock> {
    let name = format!("peer-{}.lock", peer.peer_id);
    let Some(file) = try_lock_file(data_dir, &name)? else {
        let path = data_dir.join("locks").join(name);
        return Err(busy(peer, &format!("lock file {} is held", path.display())));
    };
    let pg = match store.postgres_url() {
        Some(url) => Some(advisory_lock(url, idle, peer).await?),
        None => None,
    };
    Ok(RefreshLock {
        _file: file,
        pg,
        idle: idle.clone(),
    })
}

/// Locks the file `name` in the data directory's `locks`, unless another
/// holder has it (`None`).
fn try_lock_file(data_dir: &Path, name: &str) -> Result<Option<File>> {
    let dir = data_dir.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
    crate::data_dir::try_lock(&dir.join(name))
}

/// Tries the session advisory lock (`class`, `key`) on `conn`.
async fn try_advisory_lock(
    mut conn: AsyncPgConnection,
    class: i32,
    key: i32,
) -> diesel::QueryResult<(AsyncPgConnection, bool)> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS locked")
        .bind::<diesel::sql_types::Integer, _>(class)
        .bind::<diesel::sql_types::Integer, _>(key)
        .get_result(&mut conn)
        .await?;
    Ok((conn, row.locked))
}

/// The second key of a peer's advisory locks.
fn lock_key(peer_id: i64) -> Result<i32> {
    i32::try_from(peer_id)
        .map_err(|_| Error::Internal(format!("peer_id {peer_id} too large for a lock key")))
}

async fn connect(url: &str) -> Result<AsyncPgConnection> {
    AsyncPgConnection::establish(url)
        .await
        .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))
}

/// Held while this process follows a peer, so that of the processes that
/// share a database, one follows each peer and the others stand by. On
/// PostgreSQL a session advisory lock on a connection of its own, held for
/// as long as the lease; on SQLite an fs4 lock on the file
/// `<database>-follow-<peer id>.lock` beside the database. Both are
/// released when their holder dies.
pub struct FollowLease {
    _file: Option<File>,
    pg: Option<AsyncPgConnection>,
}

impl FollowLease {
    /// Takes the lease of following peer `peer_id`, or `None` when another
    /// process holds it.
    pub async fn take(store: &Store, peer_id: i64) -> Result<Option<FollowLease>> {
        if let Some(url) = store.postgres_url() {
            let key = lock_key(peer_id)?;
            let (conn, locked) = try_advisory_lock(connect(url).await?, FOLLOW_LEASE_CLASS, key)
                .await
                .map_err(|e| Error::Unavailable(format!("taking the follow lease: {e}")))?;
            return Ok(locked.then_some(FollowLease {
                _file: None,
                pg: Some(conn),
            }));
        }
        let database = Path::new(store.sqlite_path().unwrap_or_default());
        let path = database.with_file_name(format!(
            "{}-follow-{}.lock",
            database.file_name().unwrap_or_default().to_string_lossy(),
            peer_id
        ));
        Ok(crate::data_dir::try_lock(&path)?.map(|file| FollowLease {
            _file: Some(file),
            pg: None,
        }))
    }

    /// Whether the lease still holds: not once the database closed its
    /// connection (a restart), which released the advisory lock.
    pub fn holds(&mut self) -> bool {
        self.pg
            .as_mut()
            .is_none_or(|conn| !PoolableConnection::is_broken(conn))
    }
}

/// Takes the peer's advisory lock on a connection of its own: an idle one
/// if it still works, a new one otherwise. Returns it with the lock's key.
async fn advisory_lock(
    url: &str,
    idle: &LockConnections,
    peer: &PeerRow,
) -> Result<(AsyncPgConnection, i32)> {
    let key = lock_key(peer.peer_id)?;
    // An idle connection may have died (a restarted server): then a new one.
    let reused = match idle.take() {
        Some(conn) => try_advisory_lock(conn, ADVISORY_LOCK_CLASS, key).await.ok(),
        None => None,
    };
    let (conn, locked) = match reused {
        Some(done) => done,
        None => try_advisory_lock(connect(url).await?, ADVISORY_LOCK_CLASS, key).await?,
    };
    if locked {
        Ok((conn, key))
    } else {
        idle.keep(conn);
        Err(busy(
            peer,
            "another fedreg process on this database holds its lock",
        ))
    }
}
