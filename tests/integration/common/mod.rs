//! Test harness: real fedreg servers on loopback ports, each with its own
//! fresh database, on SQLite or PostgreSQL. Tests get foreign objects the
//! way a registry does, by refreshing a peer: a real one
//! ([`objects::WithPeer`], [`federation`]) or a scripted one
//! ([`fake_peer::FakePeer`]); [`rows`] reads and sets the few stored
//! columns no API exposes; [`scrape`] reads a server's metrics.
//!
//! [`trials`] registers the tests and runs them. PostgreSQL tests use the
//! server at `FEDREG_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`),
//! creating one database per test and dropping it afterwards. When no server
//! is reachable they are reported as skipped, except under `CI=true`, where
//! they fail.

#![allow(dead_code)]

#[macro_use]
pub mod trials;

pub mod certs;
pub mod cli;
pub mod fake_peer;
#[macro_use]
pub mod federation;
pub mod objects;
pub mod peers;
pub mod proxy;
pub mod rows;
pub mod scrape;

use std::sync::atomic::{AtomicU32, Ordering};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
pub use fedreg::channel::{Authed, Bearer};
use fedreg::proto::v1::peer_service_client::PeerServiceClient;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::token_service_client::TokenServiceClient;
use fedreg::server::{RunningServer, ServerConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

/// The database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite in the server's temporary data directory.
    Sqlite,
    /// A fresh database on the test PostgreSQL server.
    Postgres,
}

fn pg_base() -> String {
    std::env::var("FEDREG_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped when this is dropped.
pub struct PgTestDb {
    name: String,
}

impl PgTestDb {
    /// Creates a fresh, empty database.
    pub async fn create() -> PgTestDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "fedreg_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            rand_suffix()
        );
        let mut conn = AsyncPgConnection::establish(&format!("{}/postgres", pg_base()))
            .await
            .expect("connect to PostgreSQL");
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        PgTestDb { name }
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        format!("{}/{}", pg_base(), self.name)
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = format!("{}/postgres", pg_base());
        // Drop runs outside any runtime guarantee: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin).await.ok()?;
                conn.batch_execute(&sql).await.ok()
            })
        })
        .join();
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A fedreg server running in this process on a loopback port.
pub struct TestServer {
    /// The running server.
    pub server: Option<RunningServer>,
    /// Its admin token.
    pub admin_token: String,
    /// The database it uses.
    pub backend: Backend,
    /// Its database URL.
    pub database_url: String,
    /// Its data directory.
    pub data_dir: tempfile::TempDir,
    /// How the test's clients reach it over TLS, when it serves TLS (set
    /// by the test, which made its certificate); plain HTTP/2 when `None`.
    pub client_tls: Option<ClientTlsConfig>,
    pg: Option<PgTestDb>,
}

impl TestServer {
    /// Starts a server named `fedreg` with a fresh database.
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_named(backend, "fedreg").await
    }

    /// Starts a server with the given registry name and a fresh database.
    pub async fn start_named(backend: Backend, name: &str) -> TestServer {
        TestServer::start_with(backend, |config| config.registry_name = name.into()).await
    }

    /// Starts a server after `tune` adjusts its configuration.
    pub async fn start_with(backend: Backend, tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgTestDb::create().await),
        };
        let mut config = ServerConfig::new(data_dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.database_url = pg.as_ref().map(PgTestDb::url);
        tune(&mut config);
        let database_url = config.database_url();
        let server = fedreg::server::start(config).await.expect("server starts");
        let admin_token = server
            .new_admin_token()
            .expect("fresh database gets an admin token")
            .to_owned();
        TestServer {
            server: Some(server),
            admin_token,
            backend,
            database_url,
            data_dir,
            client_tls: None,
            pg,
        }
    }

    /// Starts another server on the database of `other` (on PostgreSQL:
    /// several fedreg processes sharing one database), with its own data
    /// directory, after `tune` adjusts its configuration.
    pub async fn start_sharing(
        other: &TestServer,
        tune: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::new(data_dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.database_url = Some(other.database_url.clone());
        tune(&mut config);
        let server = fedreg::server::start(config).await.expect("server starts");
        TestServer {
            server: Some(server),
            admin_token: other.admin_token.clone(),
            backend: other.backend,
            database_url: other.database_url.clone(),
            data_dir,
            client_tls: None,
            pg: None,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("server running").addr()
    }

    /// The server's URL, as a peer would store it.
    pub fn url(&self) -> String {
        match self.client_tls {
            Some(_) => format!("https://{}", self.addr()),
            None => format!("http://{}", self.addr()),
        }
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        let mut endpoint = Channel::from_shared(self.url()).unwrap();
        if let Some(tls) = &self.client_tls {
            endpoint = endpoint.tls_config(tls.clone()).expect("TLS settings");
        }
        endpoint.connect().await.expect("connect")
    }

    async fn authed(&self, token: Option<&str>) -> Authed {
        InterceptedService::new(
            self.channel().await,
            Bearer::new(token).expect("ascii token"),
        )
    }

    /// A registry client with the admin token.
    pub async fn registry(&self) -> RegistryServiceClient<Authed> {
        RegistryServiceClient::new(self.authed(Some(&self.admin_token)).await)
    }

    /// A registry client with the given token (or none).
    pub async fn registry_as(&self, token: Option<&str>) -> RegistryServiceClient<Authed> {
        RegistryServiceClient::new(self.authed(token).await)
    }

    /// A token client with the admin token.
    pub async fn tokens(&self) -> TokenServiceClient<Authed> {
        TokenServiceClient::new(self.authed(Some(&self.admin_token)).await)
    }

    /// A new admin token named `name`, created through the API.
    pub async fn new_admin_token(&self, name: &str) -> fedreg::proto::v1::CreateTokenResponse {
        self.tokens()
            .await
            .create_token(fedreg::proto::v1::CreateTokenRequest {
                name: name.into(),
                role: "admin".into(),
                peer_id: None,
            })
            .await
            .expect("create token")
            .into_inner()
    }

    /// A token client with the given token (or none).
    pub async fn tokens_as(&self, token: Option<&str>) -> TokenServiceClient<Authed> {
        TokenServiceClient::new(self.authed(token).await)
    }

    /// A peer-management client with the admin token.
    pub async fn peers(&self) -> PeerServiceClient<Authed> {
        PeerServiceClient::new(self.authed(Some(&self.admin_token)).await)
    }

    /// A peering client with the given token.
    pub async fn peering_as(&self, token: Option<&str>) -> PeeringServiceClient<Authed> {
        PeeringServiceClient::new(self.authed(token).await)
    }

    /// Where the server serves its metrics (started with a
    /// `metrics_listen` address).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .and_then(|s| s.metrics_addr())
            .expect("the server serves metrics")
    }

    /// Stops the server gracefully.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Longest wait for something a server does in the background within
/// milliseconds; generous so that a loaded machine does not fail a test.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until `check` holds, polling; panics after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts that `result` failed with `code` and that its message contains
/// every one of `needles` (the field name and the value, typically).
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    needles: &[&str],
) {
    match result {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "wrong code; message: {}",
                status.message()
            );
            for needle in needles {
                assert!(
                    status.message().contains(needle),
                    "message {:?} does not mention {needle:?}",
                    status.message()
                );
            }
        }
    }
}
