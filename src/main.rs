//! The `fedreg` binary: parses the command line and runs it.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a registry moves many small
/// rows between the database's threads and the async ones, which glibc's
/// allocator serves poorly (a large share of GetPeerData's time went to it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What is logged unless `FEDREG_LOG` says otherwise: info, and the TLS
/// handshakes the server refuses (a client certificate from an unknown CA,
/// expired...), which tonic reports at debug level.
const DEFAULT_LOG: &str = "info,tonic::transport::server::io_stream=debug";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FEDREG_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text for log files and journald.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match fedreg::cli::run(fedreg::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedreg: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
