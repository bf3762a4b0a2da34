//! Registries under test: fedreg servers in child processes (so that each
//! one's peak memory is its own), their databases, and clients to them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use diesel_async::SimpleAsyncConnection;
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::peer_service_client::PeerServiceClient;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::token_service_client::TokenServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::pg::{PgServer, exec};

/// The database system of the registries under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite, embedded in each registry.
    Sqlite,
    /// PostgreSQL, on the server `--pg-url` names.
    Postgres,
}

impl Backend {
    /// The backend's name, as on the command line and in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The database of a registry under test.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file in the registry's data directory.
    Sqlite,
    /// A PostgreSQL database created (and dropped) by the benchmark.
    Postgres {
        /// The server it is on.
        pg: PgServer,
        /// The database's name.
        name: String,
    },
}

impl Database {
    /// A fresh database on `backend`; on PostgreSQL it is named
    /// `fedreg_bench_<role>_<pid>`, so that concurrent runs never share one.
    pub async fn create(backend: Backend, pg: &PgServer, role: &str) -> anyhow::Result<Database> {
        match backend {
            Backend::Sqlite => Ok(Database::Sqlite),
            Backend::Postgres => {
                let name = format!("fedreg_bench_{role}_{}", std::process::id());
                let mut admin = pg.connect("postgres").await?;
                // One statement each: DROP/CREATE DATABASE cannot share a transaction.
                for sql in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("CREATE DATABASE {name}"),
                ] {
                    exec(&mut admin, &sql).await?;
                }
                Ok(Database::Postgres {
                    pg: pg.clone(),
                    name,
                })
            }
        }
    }

    /// The database URL for a registry whose data directory is `data_dir`.
    pub fn url(&self, data_dir: &Path) -> String {
        match self {
            Database::Sqlite => data_dir.join("fedreg.db").to_string_lossy().into_owned(),
            Database::Postgres { pg, name } => pg.url(name),
        }
    }

    /// Drops a PostgreSQL database; SQLite files go with their directory.
    pub async fn drop_database(&self) {
        if let Database::Postgres { pg, name } = self
            && let Ok(mut admin) = pg.connect("postgres").await
        {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

pub use fedreg::channel::{Authed, Bearer};

/// A fedreg server running in a child process.
pub struct Registry {
    /// Its name, as its peers see it.
    pub name: String,
    /// Its gRPC endpoint.
    pub url: String,
    /// The first admin token, which the server wrote to its data directory.
    pub admin_token: String,
    child: Child,
    channel: Channel,
}

impl Registry {
    /// Starts `fedreg serve` (this executable in server mode) on a free
    /// loopback port with `data_dir` and `database_url`.
    pub async fn start(
        name: &str,
        data_dir: &Path,
        database_url: &str,
    ) -> anyhow::Result<Registry> {
        Registry::start_with(name, data_dir, database_url, &[]).await
    }

    /// Starts a server as [`Registry::start`] does, with `serve`'s extra
    /// options `extra`.
    pub async fn start_with(
        name: &str,
        data_dir: &Path,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Registry> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let listen = free_address()?;
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", &listen, "--name", name])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .args(extra)
            .env(
                "FEDREG_LOG",
                std::env::var("FEDREG_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting server {name}"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("server {name} has no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .map_err(|_| anyhow!("server {name} did not start in time"))?
                .with_context(|| format!("reading server {name}'s stderr"))?
                .ok_or_else(|| anyhow!("server {name} exited before listening"))?;
            if line.contains("fedreg listening on") {
                break;
            }
        }
        // Keep draining the server's stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
            .with_context(|| format!("reading {name}'s admin token"))?
            .trim()
            .to_owned();
        let url = format!("http://{listen}");
        let channel = Channel::from_shared(url.clone())?
            .connect()
            .await
            .with_context(|| format!("connecting to {name}"))?;
        Ok(Registry {
            name: name.to_owned(),
            url,
            admin_token,
            child,
            channel,
        })
    }

    /// A channel to the server that presents `token`.
    fn authed(&self, token: &str) -> Authed {
        let bearer = Bearer::new(Some(token)).expect("token is ascii");
        InterceptedService::new(self.channel.clone(), bearer)
    }

    /// Peer management with the admin token.
    pub fn peers(&self) -> PeerServiceClient<Authed> {
        PeerServiceClient::new(self.authed(&self.admin_token)).max_decoding_message_size(64 << 20)
    }

    /// The registry API with the admin token.
    pub fn registry(&self) -> RegistryServiceClient<Authed> {
        RegistryServiceClient::new(self.authed(&self.admin_token))
    }

    /// Token management with the admin token.
    pub fn tokens(&self) -> TokenServiceClient<Authed> {
        TokenServiceClient::new(self.authed(&self.admin_token))
    }

    /// The peering service with `token`.
    pub fn peering(&self, token: &str) -> PeeringServiceClient<Authed> {
        PeeringServiceClient::new(self.authed(token))
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resets the peak resident memory the kernel records for the server.
    pub fn reset_peak_memory(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// Peak resident memory of the server, in MiB, since the last reset.
    pub fn peak_memory_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Registers `server` as a peer of `client`: the server issues a peer token
/// that the client stores as its outbound token. Returns the client's peer
/// id for the server and the token.
pub async fn peer(client: &Registry, server: &Registry) -> anyhow::Result<(i64, String)> {
    // The server's record of the client, and the token the client presents.
    let record = server
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: client.name.clone(),
            peer_url: client.url.clone(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("CreatePeer on {}", server.name))?
        .into_inner();
    let token = server
        .tokens()
        .create_token(pb::CreateTokenRequest {
            name: format!("peer {}", client.name),
            role: "peer".into(),
            peer_id: Some(record.peer_id),
        })
        .await
        .with_context(|| format!("CreateToken on {}", server.name))?
        .into_inner()
        .token;
    let id = create_peer_record(client, server, &token).await?;
    Ok((id, token))
}

/// Creates `client`'s record of `server`, with `token` as outbound token.
pub async fn create_peer_record(
    client: &Registry,
    server: &Registry,
    token: &str,
) -> anyhow::Result<i64> {
    Ok(client
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: server.name.clone(),
            peer_url: server.url.clone(),
            outbound_token: token.to_owned(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("CreatePeer on {}", client.name))?
        .into_inner()
        .peer_id)
}

/// A temporary directory for the run's data directories.
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fedreg-bench-{}", std::process::id()))
}

/// A free loopback address, `127.0.0.1:PORT`.
pub fn free_address() -> anyhow::Result<String> {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port")?;
    Ok(address.to_string())
}
