//! The PostgreSQL server the benchmark creates its databases on, and the
//! few calls it makes there directly.
//!
//! `--pg-url` (or `FEDREG_BENCH_PG`) names a server, not a database: it is
//! parsed once by `tokio_postgres` (a `postgres://` URL or a libpq
//! `key=value` string), and every database URL the benchmark hands out is
//! derived from it with [`PgServer::url`]. Those URLs serve the registries
//! under test, the benchmark's own connections and, as libpq also takes
//! URLs, the subscription of the replication baseline. The user, password,
//! hosts and ports carry over; any database named in `--pg-url` does not.

use std::fmt::Write as _;
use std::pin::pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_postgres::config::Host;

/// What `--pg-url` is when neither it nor `FEDREG_BENCH_PG` is given.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Characters kept as they are in a URL's user, password and host: the
/// unreserved ones (RFC 3986).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A PostgreSQL server, as `--pg-url` names it (shared: each database the
/// benchmark creates keeps its server).
#[derive(Debug, Clone)]
pub struct PgServer(Arc<tokio_postgres::Config>);

impl FromStr for PgServer {
    type Err = tokio_postgres::Error;

    fn from_str(s: &str) -> Result<PgServer, Self::Err> {
        s.parse().map(|config| PgServer(Arc::new(config)))
    }
}

impl PgServer {
    /// The `postgres://` URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        let config = &*self.0;
        let encode = |s: &str| utf8_percent_encode(s, UNRESERVED).to_string();
        let mut url = String::from("postgres://");
        if let Some(user) = config.get_user() {
            url.push_str(&encode(user));
            if let Some(password) = config.get_password() {
                url.push(':');
                url.push_str(&encode(&String::from_utf8_lossy(password)));
            }
            url.push('@');
        }
        let ports = config.get_ports();
        for (i, host) in config.get_hosts().iter().enumerate() {
            if i > 0 {
                url.push(',');
            }
            match host {
                Host::Tcp(name) if name.contains(':') => {
                    let _ = write!(url, "[{name}]");
                }
                Host::Tcp(name) => url.push_str(&encode(name)),
                Host::Unix(path) => url.push_str(&encode(&path.to_string_lossy())),
            }
            // One port for every host, or one for each.
            if let Some(port) = ports.get(i).or(ports.first().filter(|_| ports.len() == 1)) {
                let _ = write!(url, ":{port}");
            }
        }
        url.push('/');
        url.push_str(&encode(db));
        url
    }

    /// Connects to database `db` on this server.
    pub async fn connect(&self, db: &str) -> anyhow::Result<AsyncPgConnection> {
        connect_url(&self.url(db)).await
    }
}

/// Connects to the database at `url`.
pub async fn connect_url(url: &str) -> anyhow::Result<AsyncPgConnection> {
    AsyncPgConnection::establish(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Runs `sql` (one or more statements), naming it in the error.
pub async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<()> {
    conn.batch_execute(sql)
        .await
        .with_context(|| format!("in: {sql:.120}"))
}

/// Whether a notification carrying `payload` arrives on `conn` within
/// `wait` (one carrying another payload, an earlier change's, counts as
/// nothing yet).
pub async fn notified_within(
    conn: &mut AsyncPgConnection,
    payload: &str,
    wait: Duration,
) -> anyhow::Result<bool> {
    let mut notifications = pin!(conn.notifications_stream());
    match tokio::time::timeout(wait, notifications.next()).await {
        Ok(Some(Ok(n))) => Ok(n.payload == payload),
        Ok(None) | Err(_) => Ok(false),
        Ok(Some(Err(e))) => Err(e).context("waiting for a notification"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL of `db` on the server `server` names.
    fn url(server: &str, db: &str) -> String {
        server.parse::<PgServer>().expect("parses").url(db)
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            url(DEFAULT_PG_URL, "db"),
            "postgres://postgres@127.0.0.1:5432/db"
        );
        assert_eq!(
            url("postgresql://u:p%40ss@[::1]/other", "db"),
            "postgres://u:p%40ss@[::1]:5432/db"
        );
        assert_eq!(
            url("host=/run/postgresql,h2 port=5433 user=me", "db"),
            "postgres://me@%2Frun%2Fpostgresql:5433,h2:5433/db"
        );
        assert!("mysql://x".parse::<PgServer>().is_err());
    }

    /// A derived URL names the same server again.
    #[test]
    fn round_trip() {
        let server: PgServer = "postgres://u%3Ax:p%20w@h1:1,h2:2/x"
            .parse()
            .expect("parses");
        let again: tokio_postgres::Config = server.url("db").parse().expect("parses");
        assert_eq!(again.get_user(), Some("u:x"));
        assert_eq!(again.get_password(), Some(&b"p w"[..]));
        assert_eq!(again.get_ports(), &[1, 2]);
        assert_eq!(again.get_dbname(), Some("db"));
        assert_eq!(
            again.get_hosts(),
            &[Host::Tcp("h1".into()), Host::Tcp("h2".into())]
        );
    }
}
