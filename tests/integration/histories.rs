//! Histories of changes at a peer, and the cache that refreshes make of
//! them, on real servers, both backends.
//!
//! Between two refreshes, objects at a peer are renamed, swap their
//! natural keys (login_base, e-mail, hostname), pass them along in chains,
//! are deleted and created again under the same key, change memberships
//! and are disabled. A natural key is unique in the peer's state after
//! each change, not along the way from one refresh to the next. Whatever
//! the history, one refresh must apply it in place, matching objects by
//! the peer's ids: same local ids, local references to cached objects
//! kept, delta and full refreshes giving the same cache, and the report
//! counting what was written. `world` states the checks run after every
//! refresh; `ops` the changes a history is made of.
//!
//! - Property tests (proptest): random histories, refreshed after random
//!   steps, delta and full alternately. In CI, `FEDREG_HISTORY_CASES`
//!   histories (default 8) of up to `FEDREG_HISTORY_OPS` steps (default
//!   25) per backend, from a fixed seed (`FEDREG_HISTORY_SEED`); a failure
//!   is shrunk (at most `FEDREG_HISTORY_SHRINK` runs, default 32) and the
//!   smallest failing history printed. The long run: `cargo nextest run
//!   --run-ignored only histories::` (64 histories of up to 60 steps
//!   per backend).
//! - Examples: a swap of two sites' login_bases whose slices hold nodes; a
//!   swap and a chain of hostnames; a swap of two persons' e-mails.

mod ops;
mod view;
mod world;

use ops::{Keyed, Op, history};
use view::Class;
use world::{Kind, World};

use crate::common::Backend;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

backend_tests!(
    random_histories_are_applied_in_place,
    a_swap_of_login_bases_keeps_ids_and_references,
    a_swap_and_a_chain_of_hostnames_keep_ids_and_references,
    a_swap_of_emails_keeps_ids_and_keys,
);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn random_histories_are_applied_in_place(backend: Backend) {
    let cases = env_or("FEDREG_HISTORY_CASES", 8);
    let ops = env_or("FEDREG_HISTORY_OPS", 25);
    run_histories(backend, cases as u32, ops as usize);
}

/// Runs `cases` random histories of up to `ops` steps, each on fresh
/// registries; panics with the smallest failing history found.
fn run_histories(backend: Backend, cases: u32, ops: usize) {
    let config = Config {
        cases,
        max_shrink_iters: env_or("FEDREG_HISTORY_SHRINK", 32) as u32,
        failure_persistence: None,
        ..Config::default()
    };
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&env_or("FEDREG_HISTORY_SEED", 20261206).to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&history(ops), |history| {
            runtime.block_on(run_history(backend, history))
        })
    });
    if let Err(failure) = result {
        panic!("{backend:?}: {failure}");
    }
}

/// One history on fresh registries, then a last refresh.
async fn run_history(backend: Backend, history: Vec<Op>) -> Result<(), TestCaseError> {
    let mut world = World::start(backend).await;
    let mut outcome = Ok(());
    for (step, op) in history.iter().enumerate() {
        if let Err(problems) = world.step(op).await {
            outcome = Err(format!("step {step} ({op:?}): {problems}"));
            break;
        }
    }
    if outcome.is_ok() {
        outcome = world
            .refresh_next()
            .await
            .map(drop)
            .map_err(|problems| format!("the last refresh: {problems}"));
    }
    world.stop().await;
    outcome.map_err(TestCaseError::fail)
}

/// The longer run: more and longer histories (minutes).
async fn long(backend: Backend) {
    run_histories(backend, 64, 60);
}

long_backend_tests!(long);

/// Applies `ops` at the serving registry, each one legal there.
async fn apply(world: &mut World, ops: &[Op]) {
    for op in ops {
        let skipped_or_done = world.step(op).await;
        skipped_or_done.unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}

/// Refreshes and asserts every check of the refresh.
async fn refresh_checked(world: &mut World, kind: Kind) {
    if let Err(problems) = world.refresh(kind).await {
        panic!("{problems}");
    }
}

/// The natural key of object `id` of `class` at the serving registry.
async fn key_at_peer(world: &World, class: Keyed, id: i64) -> String {
    class
        .key_of(&mut world.a.registry().await, id)
        .await
        .expect("the object exists")
}

async fn a_swap_of_login_bases_keeps_ids_and_references(backend: Backend) {
    let mut world = World::start(backend).await;
    let (mit, ucb) = (world.made.sites[0], world.made.sites[1]);
    let ids_before = (
        world.cached_id((Class::Sites, mit)),
        world.cached_id((Class::Sites, ucb)),
    );
    let nodes_before = world.nodes_of_local_slice(0).await;
    assert_eq!(nodes_before.len(), 2, "bee_one holds n1 and n2");

    // mit -> swap, ucb -> mit, mit (now swap) -> ucb; both own slices
    // with nodes (mit_web: n1, n2; ucb_db: n2, n4).
    apply(
        &mut world,
        &[Op::Swap {
            class: Keyed::Site,
            a: 0,
            b: 1,
        }],
    )
    .await;
    assert_eq!(key_at_peer(&world, Keyed::Site, mit).await, "ucb");
    assert_eq!(key_at_peer(&world, Keyed::Site, ucb).await, "mit");

    refresh_checked(&mut world, Kind::Delta).await;
    let ids_after = (
        world.cached_id((Class::Sites, mit)),
        world.cached_id((Class::Sites, ucb)),
    );
    assert_eq!(ids_after, ids_before, "the sites keep their local ids");
    assert_eq!(world.nodes_of_local_slice(0).await, nodes_before);

    // And back, through a full refresh.
    apply(
        &mut world,
        &[Op::Swap {
            class: Keyed::Site,
            a: 1,
            b: 0,
        }],
    )
    .await;
    refresh_checked(&mut world, Kind::Full).await;
    assert_eq!(key_at_peer(&world, Keyed::Site, mit).await, "mit");
    assert_eq!(world.nodes_of_local_slice(0).await, nodes_before);
    world.stop().await;
}

async fn a_swap_and_a_chain_of_hostnames_keep_ids_and_references(backend: Backend) {
    let mut world = World::start(backend).await;
    let (n1, n2) = (world.made.nodes[0], world.made.nodes[1]);
    let ids_before = (
        world.cached_id((Class::Nodes, n1)),
        world.cached_id((Class::Nodes, n2)),
    );
    let nodes_before = world.nodes_of_local_slice(0).await;
    assert_eq!(nodes_before, [n1, n2], "bee_one holds n1 and n2");

    // n1 <-> n2 through a spare hostname.
    apply(
        &mut world,
        &[Op::Swap {
            class: Keyed::Node,
            a: 0,
            b: 1,
        }],
    )
    .await;
    assert_eq!(
        key_at_peer(&world, Keyed::Node, n1).await,
        "n2.a.example.org"
    );
    refresh_checked(&mut world, Kind::Delta).await;
    let ids_after = (
        world.cached_id((Class::Nodes, n1)),
        world.cached_id((Class::Nodes, n2)),
    );
    assert_eq!(ids_after, ids_before, "the nodes keep their local ids");
    assert_eq!(world.nodes_of_local_slice(0).await, nodes_before);

    // The chain: the node named n2 (n1 now) -> n9, then the one named n1
    // (n2 now) -> n2.
    apply(
        &mut world,
        &[Op::Chain {
            class: Keyed::Node,
            a: 1,
            b: 0,
            free: 8,
        }],
    )
    .await;
    assert_eq!(
        key_at_peer(&world, Keyed::Node, n1).await,
        "n9.a.example.org"
    );
    assert_eq!(
        key_at_peer(&world, Keyed::Node, n2).await,
        "n2.a.example.org"
    );
    refresh_checked(&mut world, Kind::Delta).await;
    let ids_after = (
        world.cached_id((Class::Nodes, n1)),
        world.cached_id((Class::Nodes, n2)),
    );
    assert_eq!(ids_after, ids_before, "the nodes keep their local ids");
    assert_eq!(world.nodes_of_local_slice(0).await, nodes_before);
    world.stop().await;
}

async fn a_swap_of_emails_keeps_ids_and_keys(backend: Backend) {
    let mut world = World::start(backend).await;
    let (ann, bob) = (world.made.persons[0], world.made.persons[1]);
    let ids_before = (
        world.cached_id((Class::Persons, ann)),
        world.cached_id((Class::Persons, bob)),
        world.cached_id((Class::Keys, world.made.keys[0])),
        world.cached_id((Class::Keys, world.made.keys[1])),
    );
    apply(
        &mut world,
        &[Op::Swap {
            class: Keyed::Person,
            a: 0,
            b: 1,
        }],
    )
    .await;
    assert_eq!(
        key_at_peer(&world, Keyed::Person, ann).await,
        "bob@a.example.org"
    );
    // The delta, then a full refresh (the checks compare every person's
    // keys, sites and roles, by the peer's ids).
    refresh_checked(&mut world, Kind::Delta).await;
    refresh_checked(&mut world, Kind::Full).await;
    let ids_after = (
        world.cached_id((Class::Persons, ann)),
        world.cached_id((Class::Persons, bob)),
        world.cached_id((Class::Keys, world.made.keys[0])),
        world.cached_id((Class::Keys, world.made.keys[1])),
    );
    assert_eq!(
        ids_after, ids_before,
        "persons and keys keep their local ids"
    );
    world.stop().await;
}
