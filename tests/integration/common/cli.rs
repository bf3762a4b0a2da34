//! Running the real `fedreg` binary from tests: a clean environment, a
//! time limit, and assertions on its exit code and output; `fedreg serve`
//! as a child process ([`Storage`], [`serve`], [`Served`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use fedreg::proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use super::{Backend, PgTestDb};

/// The `fedreg` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_fedreg");

/// The environment variables `fedreg` reads: cleared so that the caller's
/// environment cannot change what a test runs.
const FEDREG_ENV: &[&str] = &[
    "FEDREG_CONFIG",
    "FEDREG_DATA_DIR",
    "FEDREG_DATABASE_URL",
    "FEDREG_LISTEN",
    "FEDREG_METRICS_LISTEN",
    "FEDREG_NAME",
    "FEDREG_TLS_CERT",
    "FEDREG_TLS_KEY",
    "FEDREG_MAX_DELETE_FRACTION",
    "FEDREG_PEER_TIMEOUT",
    "FEDREG_SERVER",
    "FEDREG_TOKEN",
    "FEDREG_CACERT",
];

/// `fedreg`, with a clean environment.
pub fn bare() -> Command {
    cleaned(Command::new(BIN))
}

/// `fedreg`, with a clean environment, started by a shell that first sets
/// its soft open-file limit to `limit`.
pub fn with_open_file_limit(limit: u64) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
        .arg(BIN);
    cleaned(command)
}

/// `command` with the environment variables `fedreg` reads removed.
fn cleaned(mut command: Command) -> Command {
    for var in FEDREG_ENV {
        command.env_remove(var);
    }
    command
        .env("FEDREG_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `fedreg --data-dir DIR [--database-url URL]`, with a clean environment.
pub fn fedreg(data_dir: &Path, database_url: Option<String>) -> Command {
    on_storage(bare(), data_dir, database_url)
}

/// `command` given `--data-dir DIR [--database-url URL]`.
fn on_storage(mut command: Command, data_dir: &Path, database_url: Option<String>) -> Command {
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(database_url.map(|url| format!("--database-url={url}")));
    command
}

/// Runs a command to completion (at most a minute).
pub async fn run(mut command: Command) -> Output {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("fedreg finishes within a minute")
        .expect("fedreg runs")
}

/// The command's stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The command's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `output` is a success and returns its stdout.
#[track_caller]
pub fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "fedreg failed ({}): {}",
        output.status,
        stderr(output)
    );
    stdout(output)
}

/// Asserts that `output` is a failure (exit code 1) whose stderr mentions
/// every one of `needles`.
#[track_caller]
pub fn failure(output: &Output, needles: &[&str]) {
    failure_with(output, 1, needles);
}

/// Asserts that `output` exited with `code` and that its stderr mentions
/// every one of `needles`.
#[track_caller]
pub fn failure_with(output: &Output, code: i32, needles: &[&str]) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit code {code}; stdout {:?}, stderr {:?}",
        stdout(output),
        stderr(output)
    );
    let message = stderr(output);
    for needle in needles {
        assert!(
            message.contains(needle),
            "stderr {message:?} does not mention {needle:?}"
        );
    }
}

/// Where a spawned `fedreg` keeps its data.
pub struct Storage {
    /// Holds the data directory; removed on drop.
    root: tempfile::TempDir,
    /// The data directory (not created: `fedreg` creates it).
    pub data_dir: PathBuf,
    /// The PostgreSQL database, on that backend.
    pg: Option<PgTestDb>,
}

impl Storage {
    /// A data directory to be, and on PostgreSQL a fresh database.
    pub async fn new(backend: Backend) -> Storage {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgTestDb::create().await),
        };
        Storage { root, data_dir, pg }
    }

    /// `fedreg` with this storage's `--data-dir` and `--database-url`.
    pub fn command(&self) -> Command {
        fedreg(&self.data_dir, self.database_url())
    }

    /// [`Storage::command`], started with a soft open-file limit of
    /// `limit`.
    pub fn command_with_open_file_limit(&self, limit: u64) -> Command {
        on_storage(
            with_open_file_limit(limit),
            &self.data_dir,
            self.database_url(),
        )
    }

    /// The PostgreSQL database's URL; `None` on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.pg.as_ref().map(PgTestDb::url)
    }

    /// The temporary directory that holds the data directory, for the
    /// test's other files.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

/// A `fedreg serve` child process.
pub struct Served {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The admin token it created, if it created one (read from the file
    /// its startup message names: stderr is a pipe, so it does not print it).
    pub new_token: Option<String>,
    /// Its stderr up to listening.
    pub startup: Vec<String>,
    /// The rest of its stderr, once it exits.
    rest: JoinHandle<Vec<String>>,
}

/// Starts `fedreg serve` on a free loopback port and waits until it listens.
pub async fn serve(mut command: Command) -> Served {
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    start(command).await
}

/// Runs `command`, a `fedreg ... serve ...`, and waits until it listens.
pub async fn start(mut command: Command) -> Served {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fedreg serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Some(addr) = line.strip_prefix("fedreg listening on ") {
                return addr.parse::<SocketAddr>().expect("listen address");
            }
            seen.push(line);
        }
        panic!("fedreg serve exited before listening: {seen:#?}");
    })
    .await
    .expect("fedreg serve listens within a minute");
    let new_token = seen
        .iter()
        .find_map(|l| l.strip_prefix("Created the first admin token: it is in "))
        .and_then(|rest| rest.strip_suffix(" (readable by its owner only)"))
        .map(|file| {
            std::fs::read_to_string(file)
                .expect("the named token file")
                .trim()
                .to_owned()
        });
    Served {
        child,
        addr,
        new_token,
        startup: seen,
        rest: tokio::spawn(drain(lines)),
    }
}

async fn drain(mut lines: tokio::io::Lines<BufReader<ChildStderr>>) -> Vec<String> {
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    rest
}

impl Served {
    /// A client of this server with `token`.
    pub async fn client(&self, token: &str) -> fedreg::client::Client {
        fedreg::client::Client::connect(&format!("http://{}", self.addr), Some(token), None)
            .await
            .expect("connect to fedreg serve")
    }

    /// A registry client of this server with `token`.
    pub async fn registry(
        &self,
        token: &str,
    ) -> pb::registry_service_client::RegistryServiceClient<super::Authed> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to fedreg serve");
        pb::registry_service_client::RegistryServiceClient::new(
            tonic::service::interceptor::InterceptedService::new(
                channel,
                super::Bearer::new(Some(token)).unwrap(),
            ),
        )
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and the
    /// stderr written after startup.
    pub async fn terminate(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("fedreg exits within 30 s of SIGTERM")
            .expect("wait for fedreg");
        let rest = self.rest.await.expect("stderr reader");
        (status.code(), rest)
    }
}
