//! The `fedreg` command: serve, migrate, and manage tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::server::{self, ServerConfig};
use crate::store::tokens::{self, Role};
use crate::store::{Store, run_migrations};

/// Federation service for testbed registries.
#[derive(Debug, Parser)]
#[command(name = "fedreg", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Data directory: the embedded SQLite database, the first admin token
    /// (`admin-token`) and lock files. Created if missing.
    #[arg(
        long,
        global = true,
        env = "FEDREG_DATA_DIR",
        default_value = "fedreg-data"
    )]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user@host:port/db`) to use instead of the
    /// embedded SQLite database.
    #[arg(long, global = true, env = "FEDREG_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StorageArgs {
    fn url(&self) -> String {
        server::database_url(&self.data_dir, self.database_url.as_deref())
    }

    async fn open(&self) -> Result<Store> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            Error::Unavailable(format!(
                "creating data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        Store::open(&self.url()).await
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry's gRPC server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API tokens directly in the database.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Options of `fedreg serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FEDREG_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// This registry's name, as peers see it.
    #[arg(long, env = "FEDREG_NAME", default_value = "fedreg")]
    pub name: String,
    /// PEM certificate to serve TLS with (needs --tls-key).
    #[arg(long, env = "FEDREG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FEDREG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest fraction of a peer's cache that a refresh may delete without
    /// --force (per-peer setting overrides it).
    #[arg(long, env = "FEDREG_MAX_DELETE_FRACTION", default_value_t = 0.5)]
    pub max_delete_fraction: f64,
    /// Seconds to wait for the next message of a peer during a refresh
    /// before giving up on it (the cache is then left as it was).
    #[arg(long, env = "FEDREG_PEER_TIMEOUT", default_value_t = 60)]
    pub peer_timeout: u64,
}

/// `fedreg token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only once).
    Create {
        /// Label for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// `admin` or `peer`.
        #[arg(long, default_value = "admin")]
        role: String,
        /// For a peer token: the id of the peer it authenticates.
        #[arg(long)]
        peer_id: Option<i64>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        token_id: i64,
    },
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.storage, args).await,
        Command::Migrate => {
            std::fs::create_dir_all(&cli.storage.data_dir).ok();
            let applied = run_migrations(&cli.storage.url()).await?;
            println!("{applied} migration(s) applied");
            Ok(())
        }
        Command::Token(command) => token(&cli.storage, command).await,
    }
}

async fn serve(storage: &StorageArgs, args: ServeArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.max_delete_fraction) {
        return Err(Error::invalid(
            "max_delete_fraction",
            args.max_delete_fraction,
            "must be between 0 and 1",
        ));
    }
    let config = ServerConfig {
        listen: args.listen,
        data_dir: storage.data_dir.clone(),
        database_url: storage.database_url.clone(),
        registry_name: args.name,
        tls: args.tls_cert.zip(args.tls_key),
        max_delete_fraction: args.max_delete_fraction,
        peer_timeout: std::time::Duration::from_secs(args.peer_timeout.max(1)),
    };
    let token_file = config.data_dir.join(server::ADMIN_TOKEN_FILE);
    let stop = shutdown_signal()?;
    let running = server::start(config).await?;
    if let Some(token) = running.new_admin_token() {
        eprintln!(
            "Created the first admin token (shown once; also saved to {}):\n\n    {token}\n",
            token_file.display()
        );
    }
    eprintln!("fedreg listening on {}", running.addr());
    stop.await;
    running.shutdown().await
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

async fn token(storage: &StorageArgs, command: TokenCommand) -> Result<()> {
    let store = storage.open().await?;
    let mut conn = store.write().await?;
    match command {
        TokenCommand::Create {
            name,
            role,
            peer_id,
        } => {
            let (secret, row) =
                tokens::create(&mut conn, &name, Role::parse(&role)?, peer_id).await?;
            eprintln!(
                "token {} created (role {}); its secret, shown only once:",
                row.token_id, row.role
            );
            println!("{secret}");
        }
        TokenCommand::List => {
            println!(
                "{:>6}  {:<6}  {:>6}  {:<20}  NAME",
                "ID", "ROLE", "PEER", "LAST USED"
            );
            for t in tokens::list(&mut conn).await? {
                let peer = t
                    .peer_id
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into());
                let used = t
                    .last_used
                    .map(format_time)
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:>6}  {:<6}  {:>6}  {:<20}  {}",
                    t.token_id, t.role, peer, used, t.name
                );
            }
        }
        TokenCommand::Revoke { token_id } => {
            tokens::revoke(&mut conn, token_id).await?;
            println!("token {token_id} revoked");
        }
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
