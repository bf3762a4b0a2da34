//! Registries under test: fedreg servers in child processes (so that each
//! one's peak memory is its own), their databases, and clients to them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::peer_service_client::PeerServiceClient;
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::token_service_client::TokenServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The database of a registry under test.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite file in the registry's data directory.
    Sqlite,
    /// A PostgreSQL database created (and dropped) by the benchmark.
    Postgres { base: String, name: String },
}

impl Database {
    /// A fresh database for `backend`; on PostgreSQL it is named
    /// `fedreg_bench_<role>_<pid>`, so that concurrent runs never share one.
    pub async fn create(backend: &str, pg_base: &str, role: &str) -> Result<Database, String> {
        match backend {
            "sqlite" => Ok(Database::Sqlite),
            _ => {
                let name = format!("fedreg_bench_{role}_{}", std::process::id());
                let mut admin = AsyncPgConnection::establish(&format!("{pg_base}/postgres"))
                    .await
                    .map_err(|e| format!("PostgreSQL at {pg_base}: {e}"))?;
                // One statement each: DROP/CREATE DATABASE cannot share a transaction.
                for sql in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("CREATE DATABASE {name}"),
                ] {
                    admin.batch_execute(&sql).await.map_err(|e| e.to_string())?;
                }
                Ok(Database::Postgres {
                    base: pg_base.to_owned(),
                    name: name.to_owned(),
                })
            }
        }
    }

    /// The database URL for a registry whose data directory is `data_dir`.
    pub fn url(&self, data_dir: &Path) -> String {
        match self {
            Database::Sqlite => data_dir.join("fedreg.db").to_string_lossy().into_owned(),
            Database::Postgres { base, name } => format!("{base}/{name}"),
        }
    }

    /// Drops a PostgreSQL database; SQLite files go with their directory.
    pub async fn drop_database(&self) {
        if let Database::Postgres { base, name } = self
            && let Ok(mut admin) = AsyncPgConnection::establish(&format!("{base}/postgres")).await
        {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(pub MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that authenticates every call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A fedreg server running in a child process.
pub struct Registry {
    pub name: String,
    pub url: String,
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
    ) -> Result<Registry, String> {
        Registry::start_with(name, data_dir, database_url, &[]).await
    }

    /// Starts a server as [`Registry::start`] does, with `serve`'s extra
    /// options `extra`.
    pub async fn start_with(
        name: &str,
        data_dir: &Path,
        database_url: &str,
        extra: &[&str],
    ) -> Result<Registry, String> {
        std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
            ])
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
            .map_err(|e| format!("starting server {name}: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .map_err(|_| format!("server {name} did not start in time"))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("server {name} exited before listening"))?;
            if line.contains("fedreg listening on") {
                break;
            }
        }
        // Keep draining the server's stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
            .map_err(|e| format!("reading {name}'s admin token: {e}"))?
            .trim()
            .to_owned();
        let url = format!("http://127.0.0.1:{port}");
        let channel = Channel::from_shared(url.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connecting to {name}: {e}"))?;
        Ok(Registry {
            name: name.to_owned(),
            url,
            admin_token,
            child,
            channel,
        })
    }

    fn authed(&self, token: &str) -> Authed {
        let value = format!("Bearer {token}").parse().expect("token is ascii");
        InterceptedService::new(self.channel.clone(), Bearer(value))
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
pub async fn peer(client: &Registry, server: &Registry) -> Result<(i64, String), String> {
    // The server's record of the client, and the token the client presents.
    let record = server
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: client.name.clone(),
            peer_url: client.url.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("CreatePeer on {}: {e}", server.name))?
        .into_inner();
    let token = server
        .tokens()
        .create_token(pb::CreateTokenRequest {
            name: format!("peer {}", client.name),
            role: "peer".into(),
            peer_id: Some(record.peer_id),
        })
        .await
        .map_err(|e| format!("CreateToken on {}: {e}", server.name))?
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
) -> Result<i64, String> {
    Ok(client
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: server.name.clone(),
            peer_url: server.url.clone(),
            outbound_token: token.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("CreatePeer on {}: {e}", client.name))?
        .into_inner()
        .peer_id)
}

/// A temporary directory for the run's data directories.
pub fn work_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fedreg-bench-{}", std::process::id()))
}
