//! The `fedreg` command.
//!
//! The command line is parsed by [`config::parse`], with the configuration
//! file (`--config`) under it.
//!
//! Three kinds of subcommand live here:
//! - server-side ones that work on the database directly, with the same
//!   `--data-dir` / `--database-url` as the server: `serve`, `migrate` and
//!   `token` ([`serve`], [`token`]);
//! - `config check`, which checks a configuration file ([`config`]);
//! - client ones that call a running server over gRPC with an admin token:
//!   `peer`, `refresh`, `status` and `call` ([`client`] connects, [`peer`],
//!   [`refresh`] and [`status`] print what the server answers, with
//!   [`table`] and [`progress`], or as JSON with [`json`]; [`call`] calls
//!   any method through reflection).
//!
//! Every command that reads (`peer list`, `peer show`, `status`, `token
//! list`, and `refresh`'s report) takes `--json`.
//!
//! Every subcommand fails with a [`CliError`]: a local error, or the gRPC
//! status a server answered, printed with its code.

pub mod call;
pub mod client;
pub mod config;
pub mod invite;
pub mod json;
pub mod peer;
pub mod progress;
pub mod refresh;
pub mod serve;
pub mod status;
pub mod table;
pub mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::ConfigErrors;
use crate::error::Error;
use crate::server;
use crate::store::{Store, run_migrations};

/// Federation service for testbed registries.
#[derive(Debug, Parser)]
#[command(name = "fedreg", version, about, long_about = None)]
pub struct Cli {
    /// TOML file of settings: the global options by their long names, those
    /// of `serve` in a [serve] table, peers to create or update at start in
    /// [[peer]] tables. Flags and environment variables override it.
    #[arg(long, global = true, env = "FEDREG_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the data lives.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// How `peer`, `refresh`, `status` and `call` reach a running server.
    #[command(flatten)]
    pub client: client::ClientArgs,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line, with the spans it happened in) for log collectors.
    #[arg(
        long,
        global = true,
        env = "FEDREG_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives.
#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Data directory: the embedded SQLite database, the first admin token
    /// (`admin-token`) and lock files. Created if missing, private to its
    /// owner (mode 0700; the database and token files 0600).
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

    async fn open(&self) -> Result<Store, Error> {
        let url = self.url();
        crate::data_dir::prepare(&self.data_dir, &url)?;
        Store::open(&url).await
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text, coloured at a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// What is logged unless `FEDREG_LOG` says otherwise: info, and the TLS
/// handshakes the server refuses (a client certificate from an unknown CA,
/// expired...), which tonic reports at debug level.
const DEFAULT_LOG: &str = "info,tonic::transport::server::io_stream=debug";

/// Sends the process's logs to stderr in `format`, filtered by `FEDREG_LOG`
/// (an `EnvFilter` directive; `DEFAULT_LOG` when unset).
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let filter =
        EnvFilter::try_from_env("FEDREG_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            // Colours for a person at a terminal; plain text for log files
            // and journald.
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry's gRPC server until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage API tokens directly in the database.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Manage the peers of a running server.
    #[command(subcommand)]
    Peer(peer::PeerCommand),
    /// Refresh the cache of one peer on a running server and print the report.
    Refresh(refresh::RefreshArgs),
    /// Show every peer of a running server: mode, last refresh, outcome,
    /// lag and last error.
    Status(status::StatusArgs),
    /// Call any method of a running server with a JSON request, as grpcurl
    /// does; `list` and `describe` show what its reflection serves.
    Call(call::CallArgs),
    /// Check configuration files.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A local failure: storage, settings, files.
    #[error(transparent)]
    Local(#[from] Error),
    /// The configuration file has errors.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// A call to the server failed with this status.
    #[error("{}: {message}", code_name(*.code))]
    Rpc {
        /// The status code.
        code: tonic::Code,
        /// The server's message, and a hint when one helps.
        message: String,
    },
    /// The mass-delete guard refused a refresh; nothing was applied.
    #[error("{0}")]
    Refused(String),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> CliError {
        CliError::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl CliError {
    /// The process exit code: 3 for a refused refresh, 1 for anything else
    /// (2 is a usage error, from the argument parser).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 3,
            _ => 1,
        }
    }
}

/// A status code as gRPC spells it: `NOT_FOUND`, `INVALID_ARGUMENT`...
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::serve(&cli.storage, args, cli.config.as_deref()).await?,
        Command::Migrate => {
            let url = cli.storage.url();
            crate::data_dir::prepare(&cli.storage.data_dir, &url)?;
            let applied = run_migrations(&url).await?;
            println!("{applied} migration(s) applied");
        }
        Command::Token(command) => token::token(&cli.storage, command).await?,
        Command::Peer(command) => peer::peer(&cli.storage, &cli.client, command).await?,
        Command::Refresh(args) => refresh::refresh(&cli.storage, &cli.client, args).await?,
        Command::Status(args) => status::status(&cli.storage, &cli.client, args).await?,
        Command::Call(args) => call::call(&cli.storage.data_dir, &cli.client, args).await?,
        Command::Config(command) => config::config(command)?,
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
/// Beyond the years jiff knows (-9999 to 9999), the seconds themselves.
pub fn format_time(secs: i64) -> String {
    match jiff::Timestamp::from_second(secs) {
        Ok(time) => time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(
            code_name(tonic::Code::DeadlineExceeded),
            "DEADLINE_EXCEEDED"
        );
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_time(1_764_067_501), "2025-11-25 10:45:01");
    }
}
