//! Running the real `fedreg` binary from tests: a clean environment, a
//! time limit, and assertions on its exit code and output.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// The `fedreg` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_fedreg");

/// The environment variables `fedreg` reads: cleared so that the caller's
/// environment cannot change what a test runs.
const FEDREG_ENV: &[&str] = &[
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

/// `fedreg --data-dir DIR [--database-url URL]`, with a clean environment.
pub fn fedreg(data_dir: &Path, database_url: Option<String>) -> Command {
    let mut command = Command::new(BIN);
    for var in FEDREG_ENV {
        command.env_remove(var);
    }
    command
        .env("FEDREG_LOG", "info")
        .env_remove("NO_COLOR")
        .arg("--data-dir")
        .arg(data_dir)
        .args(database_url.map(|url| format!("--database-url={url}")))
        .stdin(Stdio::null())
        .kill_on_drop(true);
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
