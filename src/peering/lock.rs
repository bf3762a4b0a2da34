//! One refresh per peer at a time, across threads and processes.
//!
//! Two locks, both released by the operating system or the database when
//! their holder dies, so a crash never leaves one behind:
//! - an fs4 (flock) lock on `locks/peer-<id>.lock` in the data directory,
//!   which serialises refreshes of processes sharing a data directory (and
//!   of one process: every attempt opens the file anew);
//! - on PostgreSQL, a session advisory lock held on a dedicated connection
//!   for the whole refresh, which serialises processes that share the
//!   database but not the data directory. Closing the connection releases it.

use std::fs::File;
use std::path::Path;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::peers::PeerRow;

/// First key of fedreg's advisory locks (the second is the peer id).
const ADVISORY_LOCK_CLASS: i32 = 0x6672_6567; // "freg"

/// Held while a peer is being refreshed; dropping it releases the locks.
pub struct RefreshLock {
    _file: File,
    _pg: Option<AsyncPgConnection>,
}

fn busy(peer: &PeerRow, how: &str) -> Error {
    Error::Aborted(format!(
        "peer {} (peer_id {}) is being refreshed by another call ({how}); try again when it is done",
        peer.peername, peer.peer_id
    ))
}

/// Takes the refresh locks of `peer`, or fails at once with ABORTED.
pub async fn acquire(store: &Store, data_dir: &Path, peer: &PeerRow) -> Result<RefreshLock> {
    let dir = data_dir.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Unavailable(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("peer-{}.lock", peer.peer_id));
    let file = File::create(&path)
        .map_err(|e| Error::Unavailable(format!("creating {}: {e}", path.display())))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => {}
        Err(fs4::TryLockError::WouldBlock) => {
            return Err(busy(peer, &format!("lock file {} is held", path.display())));
        }
        Err(fs4::TryLockError::Error(e)) => {
            return Err(Error::Unavailable(format!(
                "locking {}: {e}",
                path.display()
            )));
        }
    }
    let pg = match store.postgres_url() {
        Some(url) => Some(advisory_lock(url, peer).await?),
        None => None,
    };
    Ok(RefreshLock {
        _file: file,
        _pg: pg,
    })
}

/// Opens a connection of its own and takes the peer's advisory lock on it.
async fn advisory_lock(url: &str, peer: &PeerRow) -> Result<AsyncPgConnection> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
    let key = i32::try_from(peer.peer_id).map_err(|_| {
        Error::Internal(format!("peer_id {} too large for a lock key", peer.peer_id))
    })?;
    let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS locked")
        .bind::<diesel::sql_types::Integer, _>(ADVISORY_LOCK_CLASS)
        .bind::<diesel::sql_types::Integer, _>(key)
        .get_result(&mut conn)
        .await?;
    if row.locked {
        Ok(conn)
    } else {
        Err(busy(
            peer,
            "another fedreg process on this database holds its lock",
        ))
    }
}
