//! fedreg's integration tests, in one binary: real servers on loopback
//! ports, each test with its own fresh database, on SQLite and PostgreSQL.
//!
//! One module per feature; [`common`] is the harness (servers, databases,
//! clients, a scripted peer, certificates, and [`common::trials`], which
//! registers and runs the tests in place of libtest: `harness = false`). A
//! module's `backend_tests!(...)` list defines `sqlite::<test>` and
//! `postgres::<test>` for each of its async test functions, so a test's
//! full name reads `<feature>::<backend>::<test>`: `cargo nextest run
//! slices::` runs one feature, `cargo nextest run postgres::` one backend.
//! When PostgreSQL is unreachable its tests are reported as skipped, except
//! under `CI=true`, where they fail.

#[macro_use]
mod common;

mod auth;
mod cli;
mod cli_peering;
mod clients;
mod config;
mod delta_sync;
mod docs;
mod federation_scenario;
mod federation_three;
mod follow;
mod histories;
mod invite;
mod keys;
mod metrics;
mod nodes;
mod peer_data_pages;
mod peer_data_rules;
mod peering_faults;
mod peering_schedule;
mod peering_secrets;
mod peering_sites;
mod persons;
mod reflection;
mod schema;
mod serving_limits;
mod sites;
mod slices;
mod tokens;
mod verify;

fn main() -> std::process::ExitCode {
    common::trials::main()
}
