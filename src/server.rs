//! The server process: storage, services, layers, listener and shutdown.
//!
//! [`start`] opens (and migrates) the database, takes the data directory's
//! lock when the database is an SQLite file in it, makes sure an admin token
//! exists, binds the listener and serves until [`RunningServer::shutdown`]:
//! then it stops accepting calls, lets the calls in flight finish and
//! returns. Tests start servers the same way on port 0.
//!
//! With [`ServerConfig::metrics_listen`], it also serves the Prometheus
//! metrics ([`crate::metrics`]) on that address; both listeners are bound
//! before anything is served, so a taken address fails the start.
//!
//! The limits that keep a server reachable whatever its callers do are set
//! here: connections ([`crate::listener`], HTTP/2 keepalive), streams per
//! token and their send timeout ([`crate::api::sessions`],
//! [`crate::peering::export`]); the health service reports `NOT_SERVING`
//! while the database does not answer.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::server::NamedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::auth::AuthLayer;
use crate::api::enrollment::EnrollmentApi;
use crate::api::logging::LoggingLayer;
use crate::api::peering::PeeringApi;
use crate::api::peers::PeerApi;
use crate::api::registry::RegistryApi;
use crate::api::sessions::{self, Sessions};
use crate::api::tokens::TokenApi;
use crate::error::{Error, Result};
use crate::listener;
use crate::metrics::sampled::Sampler;
use crate::metrics::{self, Metrics};
use crate::peering::fetch::Clients;
use crate::peering::fetch::FetchLimits;
use crate::peering::follow::{self, Followers};
use crate::peering::refresh::Refresher;
use crate::peering::spool::DumpLimits;
use crate::peering::{compaction, schedule};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::v1::enrollment_service_server::EnrollmentServiceServer;
use crate::proto::v1::peer_service_server::PeerServiceServer;
use crate::proto::v1::peering_service_server::PeeringServiceServer;
use crate::proto::v1::registry_service_server::RegistryServiceServer;
use crate::proto::v1::token_service_server::TokenServiceServer;
use crate::registry::invitations::Serving;
use crate::store::Store;
use crate::store::tokens::{self, Role};

pub use crate::data_dir::ADMIN_TOKEN_FILE;
/// File in the data directory locked by the server using it.
const LOCK_FILE: &str = "fedreg.lock";
/// The SQLite database file in the data directory.
const SQLITE_FILE: &str = "fedreg.db";

/// Objects per round of a refresh, unless configured otherwise.
pub const DEFAULT_REFRESH_CHUNK: usize = 4096;

/// Longest a refresh may spend receiving a peer's data, unless configured
/// otherwise.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long the change log keeps a change, unless configured otherwise.
pub const DEFAULT_CHANGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address to serve the Prometheus metrics on (`GET /metrics`); none
    /// when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Directory for the SQLite database, the admin token and lock files.
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL; `None` for SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// This registry's name, sent to peers.
    pub registry_name: String,
    /// PEM certificate and key to serve TLS; plain HTTP/2 when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// PEM CA certificate(s) verifying the client certificates callers may
    /// present over TLS (needs `tls`); a peer record's client identity can
    /// then be checked. `None`: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS connections without a client certificate verified by
    /// `client_ca` (admins included); otherwise one is optional and only
    /// peers whose record names a client identity need one.
    pub require_client_cert: bool,
    /// PEM certificate and key this registry presents to `https://` peers
    /// that ask for a client certificate.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Default largest fraction of a peer's cache a refresh may delete.
    pub max_delete_fraction: f64,
    /// Longest wait for the next message of a peer's `GetPeerData` stream.
    pub peer_timeout: Duration,
    /// Longest a refresh may spend receiving a peer's data.
    pub refresh_timeout: Duration,
    /// The most a peer's dump may hold.
    pub max_dump: DumpLimits,
    /// Objects a refresh reads back from its spool, checks and writes per
    /// round; bounds a refresh's memory whatever the peer's size.
    pub refresh_chunk: usize,
    /// How long the change log keeps a change: a peer away for longer gets
    /// a full snapshot instead of a delta.
    pub change_retention: Duration,
    /// How often the cache of each peer refreshed on a schedule or
    /// followed is verified against the peer's digests; zero: never.
    pub verify_interval: Duration,
    /// Longest wait for a `GetPeerData` or `Follow` caller to take the next message
    /// before its stream ends (`DEADLINE_EXCEEDED`) and gives its database
    /// connection back.
    pub send_timeout: Duration,
    /// Concurrent `GetPeerData` and `Follow` streams per token.
    pub streams_per_token: usize,
    /// How long an authenticated token may be trusted when the database
    /// does not answer in time; also how soon the streams of a token
    /// revoked by another process end.
    pub token_cache: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for a new connection's first bytes.
    pub handshake_timeout: Duration,
    /// Interval of the HTTP/2 keepalive pings.
    pub keepalive_interval: Duration,
    /// Longest wait for a keepalive ping's answer before the connection
    /// is closed.
    pub keepalive_timeout: Duration,
    /// How often the health service checks that the database answers;
    /// also how long the database has to answer.
    pub health_interval: Duration,
}

impl ServerConfig {
    /// A configuration with the defaults for `data_dir`: SQLite, loopback port 50051.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: None,
            data_dir: data_dir.into(),
            database_url: None,
            registry_name: "fedreg".into(),
            tls: None,
            client_ca: None,
            require_client_cert: false,
            client_cert: None,
            max_delete_fraction: 0.5,
            peer_timeout: Duration::from_secs(60),
            refresh_timeout: DEFAULT_REFRESH_TIMEOUT,
            max_dump: DumpLimits::default(),
            refresh_chunk: DEFAULT_REFRESH_CHUNK,
            change_retention: DEFAULT_CHANGE_RETENTION,
            verify_interval: Duration::from_secs(24 * 3600),
            send_timeout: crate::peering::outbox::DEFAULT_SEND_TIMEOUT,
            streams_per_token: 4,
            token_cache: Duration::from_secs(10),
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            health_interval: Duration::from_secs(5),
        }
    }

    /// The connection limits of the listener.
    fn connection_limits(&self) -> listener::Limits {
        listener::Limits {
            max_connections: self.max_connections,
            handshake_timeout: self.handshake_timeout,
            // A live client answers every keepalive ping.
            idle_timeout: self.keepalive_interval + self.keepalive_timeout,
        }
    }

    /// The database URL: the configured one, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        database_url(&self.data_dir, self.database_url.as_deref())
    }
}

/// The database URL for a data directory and an optional explicit URL.
pub fn database_url(data_dir: &Path, explicit: Option<&str>) -> String {
    match explicit {
        Some(url) => url.to_owned(),
        None => data_dir.join(SQLITE_FILE).to_string_lossy().into_owned(),
    }
}

/// State shared by the services of one server.
pub struct App {
    /// The database.
    pub store: Store,
    /// The configuration the server started with.
    pub config: ServerConfig,
    /// Runs peer refreshes.
    pub refresher: Refresher,
    /// Where following each followed peer stands.
    pub followers: Followers,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// This registry as its peers reach it (invitations).
    pub serving: Arc<Serving>,
}

/// A server started by [`start`].
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    app: Arc<App>,
    admin_token: Option<String>,
    stop: CancellationToken,
    /// Cancels `stop` when the server is dropped unstopped.
    _stop_on_drop: DropGuard,
    task: JoinHandle<Result<()>>,
    _lock: Option<File>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the metrics are served on, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The shared state (database and configuration).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// The admin token created at this start, when there was none before.
    pub fn new_admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Stops accepting calls, waits for the calls in flight, and returns.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| Error::Internal(format!("server task: {e}")))?
    }

    /// Serves until `signal` completes, then shuts down as
    /// [`RunningServer::shutdown`] does; returns early with the error of a
    /// server that stops by itself.
    pub async fn serve_until(mut self, signal: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            () = signal => self.shutdown().await,
            ended = &mut self.task => match ended {
                Ok(Ok(())) => Err(Error::Internal("the server stopped by itself".into())),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Internal(format!("server task: {e}"))),
            },
        }
    }
}

/// Opens storage, binds the listener and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer> {
    let url = config.database_url();
    crate::data_dir::prepare(&config.data_dir, &url)?;
    let lock = if crate::store::is_postgres_url(&url) {
        None
    } else {
        Some(lock_data_dir(&config.data_dir)?)
    };
    if config.client_ca.is_some() && config.tls.is_none() {
        return Err(Error::invalid(
            "client_ca",
            "",
            "client certificates need TLS: set the server's certificate and key too",
        ));
    }
    let client_identity = match &config.client_cert {
        Some((cert, key)) => Some(Identity::from_pem(read_pem(cert)?, read_pem(key)?)),
        None => None,
    };
    // An unusable certificate or key fails here, before anything listens.
    let transport = transport(&config)?;
    let tls_cert = config.tls.as_ref().map(|(cert, _)| cert.as_path());
    let serving = Arc::new(Serving::load(&config.registry_name, tls_cert)?);
    let store = Store::open(&url).await?;
    let admin_token = ensure_admin_token(&store, &config.data_dir).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Unavailable(format!("listening on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let metrics_listener = match config.metrics_listen {
        Some(metrics_addr) => Some(metrics::endpoint::bind(metrics_addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);
    let metrics = Arc::new(Metrics::new(SERVED_DESCRIPTORS));
    let refresher = Refresher {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        default_max_delete_fraction: config.max_delete_fraction,
        limits: FetchLimits {
            idle_timeout: config.peer_timeout,
            deadline: config.refresh_timeout,
            dump: config.max_dump,
        },
        chunk_size: config.refresh_chunk.max(1),
        lock_connections: Default::default(),
        clients: Clients::new(client_identity),
        metrics: metrics.clone(),
    };
    let app = Arc::new(App {
        store,
        config,
        refresher,
        followers: Followers::default(),
        metrics,
        serving,
    });
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(schedule::run(
        app.refresher.clone(),
        app.config.verify_interval,
        stopped.clone(),
    ));
    tokio::spawn(follow::run(
        app.refresher.clone(),
        app.followers.clone(),
        stopped.clone(),
    ));
    tokio::spawn(compaction::run(
        app.store.clone(),
        app.config.change_retention,
        stopped.clone(),
    ));
    let sessions = Sessions::new(sessions::Limits {
        streams_per_token: app.config.streams_per_token.max(1),
        token_cache: app.config.token_cache.max(Duration::from_millis(1)),
    });
    tokio::spawn(sessions::run_revocation_check(
        sessions.clone(),
        app.store.clone(),
        stopped.clone(),
    ));
    if let Some((metrics_listener, metrics_addr)) = metrics_listener {
        let sampler = Sampler {
            store: app.store.clone(),
            followers: Arc::new(app.followers.clone()),
        };
        tokio::spawn(metrics::endpoint::serve(
            metrics_listener,
            app.metrics.clone(),
            sampler,
            stopped.clone(),
        ));
        tracing::info!(%metrics_addr, "metrics served at /metrics");
    }
    let task = tokio::spawn(serve(app.clone(), transport, sessions, listener, stopped));
    tracing::info!(%addr, backend = ?app.store.kind(), "fedreg listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        app,
        admin_token,
        _stop_on_drop: stop.clone().drop_guard(),
        stop,
        task,
        _lock: lock,
    })
}

/// The transport's settings: TLS, HTTP/2 keepalive.
fn transport(config: &ServerConfig) -> Result<Server> {
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout));
    if let Some((cert, key)) = &config.tls {
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| Error::Unavailable(format!("reading {}: {e}", p.display())))
        };
        let identity = Identity::from_pem(read(cert)?, read(key)?);
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &config.client_ca {
            tls = tls
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(!config.require_client_cert);
        }
        builder = builder.tls_config(tls).map_err(|e| {
            Error::Unavailable(format!(
                "TLS certificate {} or key {}: {}",
                cert.display(),
                key.display(),
                crate::error::chain(&e)
            ))
        })?;
    }
    Ok(builder)
}

/// The encoded descriptors of every service served: fedreg's, health and
/// reflection.
const SERVED_DESCRIPTORS: &[&[u8]] = &[
    FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// The names the health service reports on: the server's and each service's.
const HEALTH_NAMES: &[&str] = &[
    "",
    <RegistryServiceServer<RegistryApi> as NamedService>::NAME,
    <TokenServiceServer<TokenApi> as NamedService>::NAME,
    <PeerServiceServer<PeerApi> as NamedService>::NAME,
    <PeeringServiceServer<PeeringApi> as NamedService>::NAME,
    <EnrollmentServiceServer<EnrollmentApi> as NamedService>::NAME,
];

/// Sets the health of the server and of each service.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(*name, status).await;
    }
}

/// Every `interval`, reports the server `NOT_SERVING` while the database
/// does not answer within `interval`, `SERVING` again once it does; until
/// `stop` is cancelled.
async fn watch_health(
    store: Store,
    health: HealthReporter,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut serving = true;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let answered = store.ping(interval).await;
        if stop.is_cancelled() {
            return;
        }
        match (&answered, serving) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "the database does not answer: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
            }
            (Ok(()), false) => {
                tracing::info!("the database answers again: SERVING");
                set_health(&health, ServingStatus::Serving).await;
            }
            _ => {}
        }
        serving = answered.is_ok();
    }
}

async fn serve(
    app: Arc<App>,
    builder: Server,
    sessions: Arc<Sessions>,
    listener: TcpListener,
    stopped: CancellationToken,
) -> Result<()> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    tokio::spawn(watch_health(
        app.store.clone(),
        health.clone(),
        app.config.health_interval,
        stopped.clone(),
    ));

    let store = app.store.clone();
    let router = builder
        .layer(LoggingLayer::new(app.metrics.clone()))
        .layer(AuthLayer::new(store.clone(), sessions.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(RegistryServiceServer::new(RegistryApi::new(store.clone())))
        .add_service(TokenServiceServer::new(TokenApi::new(
            store.clone(),
            sessions.clone(),
        )))
        .add_service(PeerServiceServer::new(PeerApi::new(
            app.refresher.clone(),
            app.followers.clone(),
            app.serving.clone(),
        )))
        .add_service(EnrollmentServiceServer::new(EnrollmentApi::new(
            store.clone(),
            app.followers.clone(),
            app.serving.clone(),
        )))
        .add_service(PeeringServiceServer::new(PeeringApi::new(
            store.clone(),
            app.config.registry_name.clone(),
            stopped.clone(),
            sessions,
            app.config.send_timeout,
            app.metrics.clone(),
        )));

    let shutdown = async move {
        stopped.cancelled().await;
        set_health(&health, ServingStatus::NotServing).await;
        tracing::info!("shutting down: finishing calls in flight");
    };
    let incoming = listener::incoming(listener, app.config.connection_limits());
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Internal(format!("server: {e}")))
}

/// The contents of a PEM file named in the configuration.
fn read_pem(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Unavailable(format!("reading {}: {e}", path.display())))
}

/// Locks the data directory so that a second server cannot use the same
/// SQLite files; the lock dies with the process.
fn lock_data_dir(data_dir: &Path) -> Result<File> {
    let path = data_dir.join(LOCK_FILE);
    crate::data_dir::try_lock(&path)?.ok_or_else(|| {
        Error::Aborted(format!(
            "another fedreg server is using data directory {} (lock {} is held); stop it or pick another --data-dir",
            data_dir.display(),
            path.display()
        ))
    })
}

/// Creates the first admin token when none exists, writes it to
/// `ADMIN_TOKEN_FILE` in the data directory (readable by its owner only) and
/// returns it.
async fn ensure_admin_token(store: &Store, data_dir: &Path) -> Result<Option<String>> {
    let mut conn = store.write().await?;
    if tokens::any_admin(&mut conn).await? {
        return Ok(None);
    }
    let (secret, _) = tokens::create(&mut conn, "initial admin", Role::Admin, None).await?;
    crate::data_dir::write_private(&data_dir.join(ADMIN_TOKEN_FILE), &format!("{secret}\n"))?;
    Ok(Some(secret))
}
