//! `fedreg-bench`: times federation between two real fedreg servers.
//!
//! - [`cli`]: the command line; [`main`] parses it and runs the command.
//! - Commands: [`refresh`] (the default: refreshes, GetPeerData, follow
//!   mode and the floor), [`load`] (a mixed load on one server),
//!   [`replication`] (PostgreSQL's logical replication, follow mode's
//!   baseline), [`fanout`] (one registry announcing to many Follow
//!   streams), and `serve` (a fedreg server: the registries under test are
//!   this executable in child processes).
//! - Steps and what they share: [`servers`] (the registries and their
//!   databases), [`data`] and [`shapes`] (the data sets and their bulk
//!   loads), [`follow`] (follow mode's latency), [`pg`] (the PostgreSQL
//!   server), [`stats`] (medians and percentiles).
//! - [`results`]: every figure a run prints, serializable, and the tables
//!   rendered from them.

mod cli;
mod data;
mod fanout;
mod follow;
mod load;
mod pg;
mod refresh;
mod replication;
mod results;
mod servers;
mod shapes;
mod stats;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ServerArgs};

/// mimalloc instead of the system allocator: a registry moves many small
/// rows between the database's threads and the async ones, which glibc's
/// allocator serves poorly (a large share of GetPeerData's time went to it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Parses the command line and runs the command.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        None => refresh::run(&cli.refresh).await,
        Some(Command::Load(args)) => load::run(&args).await,
        Some(Command::ReplicationBaseline(args)) => replication::command(&args).await,
        Some(Command::Fanout(args)) => fanout::run(&args).await,
        Some(Command::Serve(args)) => serve(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedreg-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a fedreg server, logging at `FEDREG_LOG`'s level (warn by default).
async fn serve(args: Box<ServerArgs>) -> anyhow::Result<()> {
    let logs = std::env::var("FEDREG_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(logs))
        .with_writer(std::io::stderr)
        .init();
    let ServerArgs { storage, serve } = *args;
    fedreg::cli::serve::serve(&storage, serve, None).await?;
    Ok(())
}
