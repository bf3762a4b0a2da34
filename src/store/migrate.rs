//! Schema migrations, embedded in the binary, one set per backend.
//!
//! PostgreSQL migrations run through diesel-async's `AsyncMigrationHarness`
//! (the pure-Rust driver behind diesel's synchronous migration API, so no
//! libpq); SQLite migrations run on a plain `SqliteConnection`. Both are
//! blocking and run on tokio's blocking pool.

use diesel::{Connection, SqliteConnection};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{SQLITE_PRAGMAS, is_postgres_url};
use crate::error::{Error, Result};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Applies the pending migrations to the database at `url`; returns how many ran.
pub async fn run_migrations(url: &str) -> Result<usize> {
    let url = url.to_owned();
    if is_postgres_url(&url) {
        let conn = AsyncPgConnection::establish(&url)
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to PostgreSQL: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let mut harness = AsyncMigrationHarness::new(conn);
            harness
                .run_pending_migrations(POSTGRES)
                .map(|done| done.len())
                .map_err(|e| Error::Internal(format!("migrating PostgreSQL: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(format!("migration task: {e}")))?
    } else {
        tokio::task::spawn_blocking(move || {
            let mut conn = SqliteConnection::establish(&url)
                .map_err(|e| Error::Unavailable(format!("opening SQLite database {url}: {e}")))?;
            diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)
                .map_err(Error::from)?;
            conn.run_pending_migrations(SQLITE)
                .map(|done| done.len())
                .map_err(|e| Error::Internal(format!("migrating SQLite: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(format!("migration task: {e}")))?
    }
}
