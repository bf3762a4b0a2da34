//! The integration binary's own test harness (`harness = false` in
//! Cargo.toml): each test registers itself with one of the macros below,
//! and [`main`] hands them all to libtest-mimic, which lists, filters and
//! runs them as the built-in harness would, for `cargo test` and
//! cargo-nextest alike.
//!
//! The reason for it is PostgreSQL. Its server is probed once when the
//! binary starts, listing included (nextest learns which tests are ignored
//! from `--list`): when it is unreachable and `CI` is not `true`, every
//! PostgreSQL test is marked ignored, so nextest reports it as skipped and
//! `cargo test` as ignored, and one notice on stderr names the URL and
//! `FEDREG_TEST_PG`. Under `CI=true` nothing is ignored for want of
//! PostgreSQL, and its tests fail. A PostgreSQL test run without a server
//! anyway (`--run-ignored`) fails, saying why.
//!
//! A test's name is its module path within the binary and its own name,
//! `<feature>::<backend>::<test>` for [`backend_tests!`]. Each async test
//! runs on its own multi-thread tokio runtime with two workers.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};
use tokio_postgres::NoTls;

/// Defines two tests for each listed async function `fn(Backend)`:
/// `<module>::sqlite::<name>` and `<module>::postgres::<name>`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::sqlite::", stringify!($name)),
                $crate::common::trials::Body::Async(|| {
                    Box::pin($name($crate::common::Backend::Sqlite))
                }),
            ));
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::postgres::", stringify!($name)),
                $crate::common::trials::Body::Async(|| {
                    Box::pin($name($crate::common::Backend::Postgres))
                }),
            ).on_postgres());
        )*
    };
}

/// Like [`backend_tests!`] for long runs, ignored unless asked for
/// (`--run-ignored only`), named `<module>::<name>::sqlite` and
/// `<module>::<name>::postgres`.
#[macro_export]
macro_rules! long_backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::", stringify!($name), "::sqlite"),
                $crate::common::trials::Body::Async(|| {
                    Box::pin($name($crate::common::Backend::Sqlite))
                }),
            ).long());
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::", stringify!($name), "::postgres"),
                $crate::common::trials::Body::Async(|| {
                    Box::pin($name($crate::common::Backend::Postgres))
                }),
            ).on_postgres().long());
        )*
    };
}

/// Defines one test, `<module>::<name>`, for each listed plain function.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        $(
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::", stringify!($name)),
                $crate::common::trials::Body::Sync($name),
            ));
        )*
    };
}

/// Defines one test, `<module>::<name>`, for each listed async function
/// without arguments.
#[macro_export]
macro_rules! async_tests {
    ($($name:ident),* $(,)?) => {
        $(
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::", stringify!($name)),
                $crate::common::trials::Body::Async(|| Box::pin($name())),
            ));
        )*
    };
}

/// Like [`async_tests!`] for functions that need the PostgreSQL server
/// (mixed backends, several servers on one database).
#[macro_export]
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        $(
            ::inventory::submit!($crate::common::trials::Test::new(
                concat!(module_path!(), "::", stringify!($name)),
                $crate::common::trials::Body::Async(|| Box::pin($name())),
            ).on_postgres());
        )*
    };
}

/// One registered test.
pub struct Test {
    /// `module_path!()` of the registration and the test's name.
    path: &'static str,
    /// What it runs.
    body: Body,
    /// Whether it needs the PostgreSQL server.
    postgres: bool,
    /// Whether it only runs when asked for (minutes long).
    long: bool,
}

/// What a test runs.
#[derive(Clone, Copy)]
pub enum Body {
    /// A plain function.
    Sync(fn()),
    /// A future, run on a multi-thread runtime with two workers.
    Async(fn() -> Pin<Box<dyn Future<Output = ()>>>),
}

inventory::collect!(Test);

impl Test {
    /// A test named `path` (a module path and a name) running `body`.
    pub const fn new(path: &'static str, body: Body) -> Test {
        Test {
            path,
            body,
            postgres: false,
            long: false,
        }
    }

    /// The test needs the PostgreSQL server.
    pub const fn on_postgres(self) -> Test {
        Test {
            postgres: true,
            ..self
        }
    }

    /// The test is ignored unless asked for.
    pub const fn long(self) -> Test {
        Test { long: true, ..self }
    }

    /// The test's name: its path without the crate's name.
    fn name(&self) -> &'static str {
        self.path
            .split_once("::")
            .map_or(self.path, |(_crate, name)| name)
    }

    /// The libtest-mimic trial for this test, given whether PostgreSQL
    /// answered and whether its tests are ignored when it did not.
    fn trial(&self, postgres: &Result<(), String>, skip_postgres: bool) -> Trial {
        let body = self.body;
        let unreachable = match postgres {
            Err(e) if self.postgres => Some(match skip_postgres {
                true => format!("{e}; the test was asked for although ignored"),
                false => format!("{e}; under CI=true PostgreSQL tests must run"),
            }),
            _ => None,
        };
        let ignored = self.long || (unreachable.is_some() && skip_postgres);
        Trial::test(self.name(), move || {
            if let Some(problem) = unreachable {
                return Err(problem.into());
            }
            match body {
                Body::Sync(f) => f(),
                Body::Async(f) => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime")
                    .block_on(f()),
            }
            Ok(())
        })
        .with_ignored_flag(ignored)
    }
}

/// Runs the registered tests as the command line asks (libtest's options).
pub fn main() -> ExitCode {
    let args = Arguments::from_args();
    let postgres = probe_postgres();
    let skip_postgres = !std::env::var("CI").is_ok_and(|v| v == "true");
    if let (Err(e), true) = (&postgres, skip_postgres) {
        eprintln!("SKIPPED: PostgreSQL tests: {e}");
    }
    let mut tests: Vec<&Test> = inventory::iter::<Test>.into_iter().collect();
    tests.sort_by_key(|test| test.name());
    if let Some(twice) = tests.windows(2).find(|w| w[0].name() == w[1].name()) {
        panic!("two tests are named {}", twice[0].name());
    }
    let trials = tests
        .iter()
        .map(|test| test.trial(&postgres, skip_postgres))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// How long the probe waits for the PostgreSQL server to answer.
const PROBE_PATIENCE: Duration = Duration::from_secs(10);

/// Connects to the PostgreSQL server once; the error names its URL and how
/// to choose another.
fn probe_postgres() -> Result<(), String> {
    let url = super::pg_base();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let admin = format!("{url}/postgres");
    let connect = async {
        tokio::time::timeout(PROBE_PATIENCE, tokio_postgres::connect(&admin, NoTls)).await
    };
    let problem = match runtime.block_on(connect) {
        Ok(Ok(_)) => return Ok(()),
        // The error's own text and its cause's ("connection refused").
        Ok(Err(e)) => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
        Err(_) => format!("no answer within {PROBE_PATIENCE:?}"),
    };
    Err(format!(
        "PostgreSQL at {url} is not reachable ({}); set FEDREG_TEST_PG=postgres://USER@HOST:PORT",
        problem.trim().replace('\n', " ")
    ))
}
