//! `fedreg serve`: runs the server until SIGINT or SIGTERM.
//!
//! Every option here can also come from the environment (`FEDREG_...`) or
//! from the `[serve]` table of a configuration file, by its long name,
//! with no code elsewhere ([`super::config`]).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::{CliError, StorageArgs};
use crate::config::{ConfigFile, peers};
use crate::error::{Error, Result};
use crate::open_files;
use crate::peering::spool::DumpLimits;
use crate::registry::validate;
use crate::server::{self, ServerConfig};

/// Options of `fedreg serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FEDREG_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Address to serve Prometheus metrics on, over HTTP at /metrics (no
    /// token: bind it where only the monitoring reaches). Off by default.
    #[arg(long, env = "FEDREG_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// This registry's name, as peers see it.
    #[arg(long, env = "FEDREG_NAME", default_value = "fedreg")]
    pub name: String,
    /// PEM certificate to serve TLS with (needs --tls-key).
    #[arg(long, env = "FEDREG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FEDREG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) verifying client certificates (needs
    /// --tls-cert): callers may then present one, and peers whose record
    /// names a client identity must.
    #[arg(long, env = "FEDREG_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Refuse every TLS connection without a client certificate verified by
    /// --client-ca, admin clients included.
    #[arg(long, env = "FEDREG_REQUIRE_CLIENT_CERT")]
    pub require_client_cert: bool,
    /// PEM client certificate presented to https:// peers when refreshing
    /// or following them (needs --client-key).
    #[arg(long, env = "FEDREG_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "FEDREG_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Largest fraction of a peer's cache that a refresh may delete without
    /// --force (per-peer setting overrides it).
    #[arg(long, env = "FEDREG_MAX_DELETE_FRACTION", default_value_t = 0.5)]
    pub max_delete_fraction: f64,
    /// Seconds to wait for the next message of a peer during a refresh
    /// before giving up on it (the cache is then left as it was).
    #[arg(long, env = "FEDREG_PEER_TIMEOUT", default_value_t = 60)]
    pub peer_timeout: u64,
    /// Seconds a refresh may spend receiving a peer's data, however steadily
    /// it arrives (the cache is then left as it was).
    #[arg(long, env = "FEDREG_REFRESH_TIMEOUT",
          default_value_t = server::DEFAULT_REFRESH_TIMEOUT.as_secs())]
    pub refresh_timeout: u64,
    /// Most objects (and deleted ids) a peer's data may hold; a refresh
    /// receiving more fails.
    #[arg(long, env = "FEDREG_MAX_DUMP_OBJECTS",
          default_value_t = DumpLimits::default().max_objects)]
    pub max_dump_objects: usize,
    /// Most bytes a peer's data may hold, as spooled; a refresh receiving
    /// more fails.
    #[arg(long, env = "FEDREG_MAX_DUMP_BYTES",
          default_value_t = DumpLimits::default().max_bytes)]
    pub max_dump_bytes: u64,
    /// Objects a refresh reads back, checks and writes per round: bounds
    /// the memory of a refresh whatever the peer's size.
    #[arg(long, env = "FEDREG_REFRESH_CHUNK",
          default_value_t = server::DEFAULT_REFRESH_CHUNK as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub refresh_chunk: u32,
    /// Seconds the change log keeps a change for delta refreshes; a peer
    /// that has not refreshed for longer gets a full snapshot.
    #[arg(long, env = "FEDREG_CHANGE_RETENTION", default_value_t = 7 * 24 * 3600)]
    pub change_retention: u64,
    /// Seconds between verifications of the cache of each peer refreshed
    /// on a schedule or followed: its digests compared with the peer's,
    /// what differs fetched again. 0: never.
    #[arg(long, env = "FEDREG_VERIFY_INTERVAL", default_value_t = 24 * 3600)]
    pub verify_interval: u64,
    /// Seconds a GetPeerData or Follow caller may leave the next message
    /// unread before its stream ends (DEADLINE_EXCEEDED), freeing its
    /// database connection and its stream slot.
    #[arg(long, env = "FEDREG_SEND_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout: u64,
    /// Concurrent GetPeerData and Follow streams per token; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FEDREG_STREAMS_PER_TOKEN", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_token: u32,
    /// Seconds an authenticated token may be trusted when the database does
    /// not answer in time; the streams of a token revoked by another
    /// process end within this.
    #[arg(long, env = "FEDREG_TOKEN_CACHE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub token_cache: u64,
    /// Connections open at once; more wait in the listen backlog. Fewer
    /// when the open-file limit (raised to its hard limit at start) leaves
    /// no room for them.
    #[arg(long, env = "FEDREG_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a new connection has to send its first bytes.
    #[arg(long, env = "FEDREG_HANDSHAKE_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,
    /// Seconds between HTTP/2 keepalive pings.
    #[arg(long, env = "FEDREG_KEEPALIVE_INTERVAL", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_interval: u64,
    /// Seconds to wait for a keepalive ping's answer before closing the
    /// connection.
    #[arg(long, env = "FEDREG_KEEPALIVE_TIMEOUT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_timeout: u64,
    /// Seconds between health checks of the database; health reports
    /// NOT_SERVING while it does not answer within this.
    #[arg(long, env = "FEDREG_HEALTH_INTERVAL", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub health_interval: u64,
}

impl ServeArgs {
    /// What is wrong with these options, however they were given (flags,
    /// environment, configuration file): a fraction out of range, a file
    /// without the one it needs (a certificate without its key...), a file
    /// that cannot be read. Each error names its option as a field
    /// (`tls_cert` for `--tls-cert`).
    pub fn problems(&self) -> Vec<Error> {
        let mut problems = Vec::new();
        if let Err(e) = validate::fraction("max_delete_fraction", self.max_delete_fraction) {
            problems.push(e);
        }
        let (cert, key) = (self.tls_cert.is_some(), self.tls_key.is_some());
        let (client_cert, client_key) = (self.client_cert.is_some(), self.client_key.is_some());
        // Each file option, the option it needs and whether that one is set.
        let files = [
            ("tls_cert", &self.tls_cert, "--tls-key", key),
            ("tls_key", &self.tls_key, "--tls-cert", cert),
            ("client_ca", &self.client_ca, "--tls-cert", cert),
            ("client_cert", &self.client_cert, "--client-key", client_key),
            ("client_key", &self.client_key, "--client-cert", client_cert),
        ];
        for (field, file, needed, present) in files {
            let Some(file) = file else { continue };
            if !present {
                problems.push(Error::invalid(
                    field,
                    file.display(),
                    format!("needs {needed} too"),
                ));
            }
            if let Err(e) = std::fs::read(file) {
                problems.push(Error::invalid(
                    field,
                    file.display(),
                    format!("cannot read it: {e}"),
                ));
            }
        }
        if self.require_client_cert && self.client_ca.is_none() {
            problems.push(Error::invalid(
                "require_client_cert",
                true,
                "needs --client-ca too",
            ));
        }
        problems
    }
}

/// Serves until SIGINT or SIGTERM, then finishes the calls in flight.
/// The peers the configuration file at `config` declares are created or
/// updated once the database is open, before the server says it listens.
pub async fn serve(
    storage: &StorageArgs,
    args: ServeArgs,
    config: Option<&Path>,
) -> Result<(), CliError> {
    if let Some(problem) = args.problems().into_iter().next() {
        return Err(problem.into());
    }
    let declared = match config {
        Some(path) => peers::declare(&ConfigFile::read(path)?)?,
        None => Vec::new(),
    };
    let open_files = open_files::raise_limit();
    let max_connections = open_files::connections_within(args.max_connections as usize, open_files);
    if max_connections < args.max_connections as usize {
        tracing::warn!(
            asked = args.max_connections,
            serving = max_connections,
            open_files,
            "--max-connections is above what the open-file limit leaves room for"
        );
    }
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        data_dir: storage.data_dir.clone(),
        database_url: storage.database_url.clone(),
        registry_name: args.name,
        tls: args.tls_cert.zip(args.tls_key),
        client_ca: args.client_ca,
        require_client_cert: args.require_client_cert,
        client_cert: args.client_cert.zip(args.client_key),
        max_delete_fraction: args.max_delete_fraction,
        peer_timeout: Duration::from_secs(args.peer_timeout.max(1)),
        refresh_timeout: Duration::from_secs(args.refresh_timeout.max(1)),
        max_dump: DumpLimits {
            max_objects: args.max_dump_objects,
            max_bytes: args.max_dump_bytes,
        },
        refresh_chunk: args.refresh_chunk as usize,
        change_retention: Duration::from_secs(args.change_retention),
        verify_interval: Duration::from_secs(args.verify_interval),
        send_timeout: Duration::from_secs(args.send_timeout),
        streams_per_token: args.streams_per_token as usize,
        token_cache: Duration::from_secs(args.token_cache),
        max_connections,
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        keepalive_interval: Duration::from_secs(args.keepalive_interval),
        keepalive_timeout: Duration::from_secs(args.keepalive_timeout),
        health_interval: Duration::from_secs(args.health_interval),
    };
    let token_file = config.data_dir.join(server::ADMIN_TOKEN_FILE);
    let stop = shutdown_signal()?;
    let running = server::start(config).await?;
    let app = running.app().clone();
    if let Err(e) = peers::apply(&app.store, &app.followers, &declared).await {
        if let Err(stop) = running.shutdown().await {
            tracing::warn!(error = %stop, "stopping after the configuration file's peers failed");
        }
        return Err(e.into());
    }
    if let Some(token) = running.new_admin_token() {
        // Service managers keep stderr in their logs: the token goes there
        // only when a person is watching.
        if std::io::stderr().is_terminal() {
            eprintln!(
                "Created the first admin token (shown once; also saved to {}):\n\n    {token}\n",
                token_file.display()
            );
        } else {
            eprintln!(
                "Created the first admin token: it is in {} (readable by its owner only)",
                token_file.display()
            );
        }
    }
    eprintln!("fedreg listening on {}", running.addr());
    if let Some(addr) = running.metrics_addr() {
        eprintln!("fedreg metrics on http://{addr}/metrics");
    }
    Ok(running.serve_until(stop).await?)
}

/// Installs the SIGINT and SIGTERM handlers now, so that a signal arriving
/// at any time after this call (even before the server listens) shuts the
/// server down gracefully; the returned future completes on the first one.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| Error::Internal(format!("installing the {name} handler: {e}")))
        };
        let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
