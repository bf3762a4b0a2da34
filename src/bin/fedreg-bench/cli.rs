//! The command line of `fedreg-bench`.
//!
//! Without a subcommand it runs the refresh benchmark ([`RefreshArgs`],
//! [`crate::refresh`]); `load` holds a mixed load on one server
//! ([`LoadArgs`], [`crate::load`]); `replication-baseline` measures
//! PostgreSQL's logical replication alone ([`BaselineArgs`],
//! [`crate::replication`]); `fanout` times one registry announcing its
//! commits to many `Follow` streams ([`FanoutArgs`], [`crate::fanout`]);
//! `serve` runs a fedreg server, which is how the
//! benchmark starts the registries it times.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::pg::{DEFAULT_PG_URL, PgServer};
use crate::servers::Backend;
use crate::shapes::Size;

/// Times federation between two fedreg servers.
///
/// Starts a serving and a refreshing registry (child processes, loopback),
/// fills the serving one with a data set, then times on the refreshing one:
/// the first refresh, a refresh with nothing changed and one after 1%
/// changed (each as a full refresh and as a delta refresh from the
/// checkpoint), GetPeerData alone and since the checkpoint, follow mode
/// against PostgreSQL's logical replication, and the floor: the same rows
/// bulk-loaded into the same schema by the database's fastest plain method.
/// Prints markdown tables (and JSON with --json).
#[derive(Debug, Parser)]
#[command(name = "fedreg-bench", args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Something else than the refresh benchmark.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The refresh benchmark's options.
    #[command(flatten)]
    pub refresh: RefreshArgs,
}

/// What `fedreg-bench` runs instead of the refresh benchmark.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hold a mixed load on one serving registry per backend.
    Load(LoadArgs),
    /// Measure PostgreSQL's logical replication latency alone (follow
    /// mode's baseline).
    ReplicationBaseline(BaselineArgs),
    /// Time one serving registry announcing its commits to many Follow
    /// streams (plain clients and real following registries).
    Fanout(FanoutArgs),
    /// Run a fedreg server (how the benchmark starts its registries).
    #[command(hide = true)]
    Serve(Box<ServerArgs>),
}

/// The registries' database: `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backends {
    /// SQLite only.
    Sqlite,
    /// PostgreSQL only.
    Postgres,
    /// SQLite, then PostgreSQL.
    Both,
}

impl Backends {
    /// The backends to run, in order.
    pub fn each(self) -> &'static [Backend] {
        match self {
            Backends::Sqlite => &[Backend::Sqlite],
            Backends::Postgres => &[Backend::Postgres],
            Backends::Both => &[Backend::Sqlite, Backend::Postgres],
        }
    }
}

/// The PostgreSQL server, for every command that uses one.
#[derive(Debug, Args)]
pub struct PgArgs {
    /// PostgreSQL server for the postgres backend (a URL or libpq
    /// key=value string; the benchmark creates and drops its databases
    /// there, so a database named here is not used).
    #[arg(long, env = "FEDREG_BENCH_PG", default_value = DEFAULT_PG_URL)]
    pub pg_url: PgServer,
}

/// Options of the refresh benchmark.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Data set the serving registry is filled with.
    #[arg(long, value_enum, default_value_t = Size::Huge)]
    pub size: Size,
    /// Multiplies the data set's object counts (memberships keep their
    /// ratios).
    #[arg(long, default_value_t = 1)]
    pub scale: usize,
    /// Database of the registries.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    pub backend: Backends,
    /// Runs per step; the table shows the median [default: 1 for data sets
    /// of more than 100,000 objects, else 3].
    #[arg(long)]
    pub runs: Option<usize>,
    /// The PostgreSQL server.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Changes timed in follow mode (commit on the serving registry to the
    /// refreshing one's cache), and in PostgreSQL's logical replication as
    /// the baseline; 0 skips both.
    #[arg(long, default_value_t = 1000)]
    pub follow_changes: usize,
    /// Leaves the registries' databases (and data directories) in place
    /// after the run, and prints where they are, for inspection.
    #[arg(long)]
    pub keep_databases: bool,
}

/// Options of `fedreg-bench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Data set of the serving registry.
    #[arg(long, value_enum, default_value_t = Size::Big)]
    pub size: Size,
    /// Database of the registries.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    pub backend: Backends,
    /// Seconds the load is held.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Concurrent GetPeerData readers.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Of the readers, those that pause after every message.
    #[arg(long, default_value_t = 2)]
    pub slow: usize,
    /// Milliseconds a slow reader pauses after every message.
    #[arg(long, default_value_t = 20)]
    pub slow_ms: u64,
    /// Peer tokens the readers are spread over.
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// Admin writes per second.
    #[arg(long, default_value_t = 20)]
    pub writes: u32,
    /// Follow streams (with changes), each with a token of its own.
    #[arg(long, default_value_t = 2)]
    pub followers: usize,
    /// The serving registry's --streams-per-token (the greedy client holds
    /// this many and asks for one more).
    #[arg(long, default_value_t = 4)]
    pub streams_per_token: usize,
    /// The PostgreSQL server.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Options of `fedreg-bench replication-baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Changes (one-row transactions) to time.
    #[arg(default_value = "1000")]
    pub changes: NonZeroUsize,
    /// The PostgreSQL server.
    #[command(flatten)]
    pub pg: PgArgs,
}

/// Options of `fedreg-bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Database of the registries.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    pub backend: Backends,
    /// Plain Follow streams (checkpoints only), one run per count.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub streams: Vec<usize>,
    /// Plain streams sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_connection: u32,
    /// Real registries following the serving one (their caches are timed).
    #[arg(long, default_value_t = 2)]
    pub followers: usize,
    /// Streams that stop reading after their first event, each on a
    /// connection of its own.
    #[arg(long, default_value_t = 1)]
    pub slow: usize,
    /// The serving registry's `--send-timeout`, seconds: how long a slow
    /// stream holds its place before it is dropped.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub send_timeout: u64,
    /// Commits timed per run.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub changes: u32,
    /// Milliseconds between a commit reaching everyone and the next one.
    #[arg(long, default_value_t = 5)]
    pub gap_ms: u64,
    /// The PostgreSQL server.
    #[command(flatten)]
    pub pg: PgArgs,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Options of `fedreg-bench serve`: those of `fedreg serve`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the data lives.
    #[command(flatten)]
    pub storage: fedreg::cli::StorageArgs,
    /// How the server runs.
    #[command(flatten)]
    pub serve: fedreg::cli::serve::ServeArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// The invocations CI and the README use.
    #[test]
    fn invocations() {
        let cli = Cli::try_parse_from(
            "fedreg-bench --size normal --backend both --runs 1 --follow-changes 100".split(' '),
        )
        .expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.refresh.size, Size::Normal);
        assert_eq!(cli.refresh.backend, Backends::Both);
        assert_eq!(cli.refresh.runs, Some(1));
        assert_eq!(cli.refresh.follow_changes, 100);
        let cli = Cli::try_parse_from(
            "fedreg-bench load --size normal --backend both --seconds 3 --streams 4 --slow 1 \
             --peers 2 --writes 10 --followers 1"
                .split_whitespace(),
        )
        .expect("parses");
        let Some(Command::Load(load)) = cli.command else {
            panic!("not load: {cli:?}");
        };
        assert_eq!(
            (load.size, load.seconds, load.streams),
            (Size::Normal, 3, 4)
        );
        let cli =
            Cli::try_parse_from(["fedreg-bench", "replication-baseline", "50"]).expect("parses");
        let Some(Command::ReplicationBaseline(baseline)) = cli.command else {
            panic!("not replication-baseline: {cli:?}");
        };
        assert_eq!(baseline.changes.get(), 50);
        let cli = Cli::try_parse_from(
            "fedreg-bench fanout --backend sqlite --streams 10,100 --followers 1 --changes 20"
                .split(' '),
        )
        .expect("parses");
        let Some(Command::Fanout(fanout)) = cli.command else {
            panic!("not fanout: {cli:?}");
        };
        assert_eq!(fanout.streams, [10, 100]);
        assert_eq!((fanout.followers, fanout.changes, fanout.slow), (1, 20, 1));
        assert!(Cli::try_parse_from(["fedreg-bench", "fanout", "--changes", "0"]).is_err());
        assert!(Cli::try_parse_from(["fedreg-bench", "--size", "enormous"]).is_err());
        assert!(Cli::try_parse_from(["fedreg-bench", "replication-baseline", "0"]).is_err());
    }
}
