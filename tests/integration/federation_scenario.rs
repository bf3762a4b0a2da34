//! The federation scenario of the reference test: two registries, plc1 and
//! plc2, peered both ways; every step is followed by a refresh on both
//! sides and a check of the local and foreign counts of every kind on both.
//!
//! 1. Sites on both.
//! 2. Persons (role user) with keys on both.
//! 3. Nodes on both, then all of plc2's nodes deleted and re-created (new
//!    ids) twice.
//! 4. Slices on plc1 with persons, then with plc1's nodes, then with plc2's
//!    nodes (which plc2 must see as its own local nodes), which are removed
//!    again; then the slices are deleted.
//! 5. A refresh with nothing changed writes nothing.
//!
//! Sizes mini and normal run on each backend and mixed (the mixed runs
//! refresh three objects per round, so every class spans several rounds);
//! big is a long run, ignored unless asked for (`cargo nextest run
//! --run-ignored only federation_scenario::big`).

use std::collections::BTreeSet;

use crate::common::federation::{
    Counts, Populate, class, create_sites, peer_both_ways, refresh, relation, writes,
};
use crate::common::objects::{Api, new_node};
use crate::common::{Backend, TestServer};
use fedreg::proto::v1::{self as pb, Scope};

/// A data set of the reference test: objects per registry and slice sizes.
#[derive(Debug, Clone, Copy)]
struct Size {
    sites: usize,
    persons: usize,
    keys_per_person: usize,
    nodes: usize,
    slices: usize,
    nodes_per_slice: usize,
    persons_per_slice: usize,
}

const MINI: Size = Size {
    sites: 1,
    persons: 1,
    keys_per_person: 1,
    nodes: 1,
    slices: 1,
    nodes_per_slice: 1,
    persons_per_slice: 1,
};

const NORMAL: Size = Size {
    sites: 4,
    persons: 4,
    keys_per_person: 2,
    nodes: 5,
    slices: 4,
    nodes_per_slice: 3,
    persons_per_slice: 6,
};

const BIG: Size = Size {
    sites: 200,
    persons: 500,
    keys_per_person: 1,
    nodes: 350,
    slices: 500,
    nodes_per_slice: 3,
    persons_per_slice: 3,
};

/// Local and foreign counts of every kind on one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Census {
    sites: Counts,
    persons: Counts,
    keys: Counts,
    nodes: Counts,
    slices: Counts,
}

async fn census(server: &TestServer) -> Census {
    Census {
        sites: counts!(server, list_sites, sites),
        persons: counts!(server, list_persons, persons),
        keys: counts!(server, list_keys, keys),
        nodes: counts!(server, list_nodes, nodes),
        slices: counts!(server, list_slices, slices),
    }
}

fn counts(local: usize, foreign: usize) -> Counts {
    Counts { local, foreign }
}

/// The two registries of the scenario and their peer ids on each other.
struct Federation {
    plc1: TestServer,
    plc2: TestServer,
    plc2_on_plc1: i64,
    plc1_on_plc2: i64,
}

/// The ids of the objects plc1 and plc2 created, by position n.
#[derive(Default)]
struct Made {
    sites: Vec<i64>,
    persons: Vec<i64>,
    nodes: Vec<i64>,
}

impl Federation {
    async fn start(plc1_backend: Backend, plc2_backend: Backend, rounds: Rounds) -> Federation {
        let start = |backend, name: &'static str| {
            TestServer::start_with(backend, move |c| {
                c.registry_name = name.into();
                c.refresh_chunk = rounds.0;
            })
        };
        let plc1 = start(plc1_backend, "plc1").await;
        let plc2 = start(plc2_backend, "plc2").await;
        let (plc2_on_plc1, plc1_on_plc2) = peer_both_ways(&plc1, "plc1", &plc2, "plc2").await;
        Federation {
            plc1,
            plc2,
            plc2_on_plc1,
            plc1_on_plc2,
        }
    }

    /// Refreshes plc1 from plc2, then plc2 from plc1; returns both reports.
    async fn refresh_both(&self) -> (pb::RefreshReport, pb::RefreshReport) {
        let on_plc1 = refresh(&self.plc1, self.plc2_on_plc1).await;
        let on_plc2 = refresh(&self.plc2, self.plc1_on_plc2).await;
        (on_plc1, on_plc2)
    }

    /// Both registries' censuses equal the expected ones (`step` names the
    /// step in the failure message).
    async fn expect(&self, step: &str, plc1: Census, plc2: Census) {
        assert_eq!(census(&self.plc1).await, plc1, "plc1 after {step}");
        assert_eq!(census(&self.plc2).await, plc2, "plc2 after {step}");
    }
}

/// Creates nodes `<prefix>-node<n>.<domain>`, node n at site n mod sites.
async fn create_nodes(api: &mut Api, prefix: &str, sites: &[i64], count: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let hostname = format!("node{n}.{prefix}.example.org");
        let node = api
            .create_node(new_node(sites[n % sites.len()], &hostname))
            .await
            .expect("create node")
            .into_inner();
        ids.push(node.node_id);
    }
    ids
}

async fn delete_nodes(api: &mut Api, ids: &[i64]) {
    for &id in ids {
        api.delete_node(pb::DeleteRequest { id })
            .await
            .expect("delete node");
    }
}

/// All slices of `scope` on `server`, by name.
async fn slices_by_name(server: &TestServer, scope: Scope) -> Vec<pb::Slice> {
    let mut slices = list_all!(server, list_slices, slices, scope);
    slices.sort_by(|a, b| a.name.cmp(&b.name));
    slices
}

/// Hostnames of `node_ids` on `server`, with whether each node is local.
async fn hostnames(server: &TestServer, node_ids: &[i64]) -> BTreeSet<(String, bool)> {
    let mut api = server.registry().await;
    let mut out = BTreeSet::new();
    for &id in node_ids {
        let node = crate::common::objects::get_node(&mut api, id)
            .await
            .expect("node of a slice");
        out.insert((node.hostname, node.origin.is_none()));
    }
    out
}

/// E-mails of `person_ids` on `server`.
async fn emails(server: &TestServer, person_ids: &[i64]) -> BTreeSet<String> {
    let mut api = server.registry().await;
    let mut out = BTreeSet::new();
    for &id in person_ids {
        let person = api
            .get_person(pb::GetPersonRequest {
                key: Some(pb::get_person_request::Key::PersonId(id)),
            })
            .await
            .expect("person of a slice")
            .into_inner();
        out.insert(person.email);
    }
    out
}

/// Positions of the members of slice `n`: `(n + i) mod total`, i < per_slice.
fn members(n: usize, per_slice: usize, total: usize) -> BTreeSet<usize> {
    (0..per_slice).map(|i| (n + i) % total).collect()
}

/// Objects a refresh checks and writes per round.
#[derive(Debug, Clone, Copy)]
struct Rounds(usize);

/// The servers' default: every class of the suite's sizes fits one round.
const ONE_ROUND: Rounds = Rounds(fedreg::server::DEFAULT_REFRESH_CHUNK);

/// Three objects per round: every class of size normal spans rounds.
const SMALL_ROUNDS: Rounds = Rounds(3);

async fn scenario(plc1_backend: Backend, plc2_backend: Backend, size: Size, rounds: Rounds) {
    let fed = Federation::start(plc1_backend, plc2_backend, rounds).await;
    let s = size;
    let mut api1 = fed.plc1.registry().await;
    let mut api2 = fed.plc2.registry().await;
    let mut made1 = Made::default();
    let mut made2 = Made::default();

    // 1. Sites on both.
    made1.sites = create_sites(&fed.plc1, "plcone", s.sites).await;
    made2.sites = create_sites(&fed.plc2, "plctwo", s.sites).await;
    fed.refresh_both().await;
    let mut plc1 = Census {
        sites: counts(s.sites, s.sites),
        ..Default::default()
    };
    let mut plc2 = plc1;
    fed.expect("sites", plc1, plc2).await;

    // 2. Persons with keys: local only until refreshed, then foreign on the
    // other side, complete with their sites and roles after one refresh.
    made1.persons = Populate::new("plcone")
        .at_sites(&made1.sites)
        .persons(s.persons)
        .keys_per_person(s.keys_per_person)
        .on(&fed.plc1)
        .await
        .persons;
    made2.persons = Populate::new("plctwo")
        .at_sites(&made2.sites)
        .persons(s.persons)
        .keys_per_person(s.keys_per_person)
        .on(&fed.plc2)
        .await
        .persons;
    let keys = s.persons * s.keys_per_person;
    plc1.persons = counts(s.persons, 0);
    plc1.keys = counts(keys, 0);
    plc2.persons = plc1.persons;
    plc2.keys = plc1.keys;
    fed.expect("persons before refresh", plc1, plc2).await;
    let (report1, _) = fed.refresh_both().await;
    assert_eq!(class(&report1, "persons").added, s.persons as i64);
    assert_eq!(class(&report1, "keys").added, keys as i64);
    plc1.persons = counts(s.persons, s.persons);
    plc1.keys = counts(keys, keys);
    plc2.persons = plc1.persons;
    plc2.keys = plc1.keys;
    fed.expect("persons", plc1, plc2).await;
    for person in list_all!(fed.plc1, list_persons, persons, Scope::Foreign) {
        assert_eq!(person.role_ids, vec![30], "roles of {}", person.email);
        assert_eq!(person.site_ids.len(), 1, "sites of {}", person.email);
        assert_eq!(person.primary_site_id, Some(person.site_ids[0]));
        assert_eq!(person.key_ids.len(), s.keys_per_person);
    }

    // 3. Nodes on both; then plc2's nodes deleted and re-created with new
    // ids, twice, before one refresh: the caches converge.
    made1.nodes = create_nodes(&mut api1, "plcone", &made1.sites, s.nodes).await;
    made2.nodes = create_nodes(&mut api2, "plctwo", &made2.sites, s.nodes).await;
    fed.refresh_both().await;
    plc1.nodes = counts(s.nodes, s.nodes);
    plc2.nodes = plc1.nodes;
    fed.expect("nodes", plc1, plc2).await;
    let first_ids = made2.nodes.clone();
    for _ in 0..2 {
        delete_nodes(&mut api2, &made2.nodes).await;
        made2.nodes = create_nodes(&mut api2, "plctwo", &made2.sites, s.nodes).await;
    }
    assert!(made2.nodes.iter().all(|id| !first_ids.contains(id)));
    let (report1, report2) = fed.refresh_both().await;
    let nodes1 = class(&report1, "nodes");
    assert_eq!(
        (nodes1.added, nodes1.deleted, nodes1.updated),
        (s.nodes as i64, s.nodes as i64, 0)
    );
    assert_eq!(writes(&report2), 0, "plc1 did not change: {report2:?}");
    fed.expect("nodes re-created twice", plc1, plc2).await;

    // 4. Slices on plc1 with persons: plc2 sees them without nodes.
    for n in 0..s.slices {
        let slice = api1
            .create_slice(pb::CreateSliceRequest {
                name: format!("plcone{}_slice{n}", n % s.sites),
                ..Default::default()
            })
            .await
            .expect("create slice")
            .into_inner();
        for p in members(n, s.persons_per_slice, s.persons) {
            api1.add_person_to_slice(pb::SlicePersonRequest {
                slice_id: slice.slice_id,
                person_id: made1.persons[p],
            })
            .await
            .expect("add person to slice");
        }
    }
    fed.refresh_both().await;
    plc1.slices = counts(s.slices, 0);
    plc2.slices = counts(0, s.slices);
    fed.expect("slices", plc1, plc2).await;
    let local_slices = slices_by_name(&fed.plc1, Scope::Local).await;
    let cached_slices = slices_by_name(&fed.plc2, Scope::Foreign).await;
    for (local, cached) in local_slices.iter().zip(&cached_slices) {
        assert_eq!(local.name, cached.name);
        assert!(cached.node_ids.is_empty(), "{} has nodes", cached.name);
        assert_eq!(
            emails(&fed.plc2, &cached.person_ids).await,
            emails(&fed.plc1, &local.person_ids).await,
            "persons of {}",
            cached.name
        );
    }

    // plc1's own nodes in its slices: plc2's cached slices get them.
    let slice_no = |slice: &pb::Slice| -> usize {
        slice.name.rsplit("_slice").next().unwrap().parse().unwrap()
    };
    for slice in &local_slices {
        let n = slice_no(slice);
        let node_ids = members(n, s.nodes_per_slice, s.nodes)
            .into_iter()
            .map(|k| made1.nodes[k])
            .collect();
        api1.add_nodes_to_slice(pb::SliceNodesRequest {
            slice_id: slice.slice_id,
            node_ids,
        })
        .await
        .expect("add local nodes");
    }
    let (_, report2) = fed.refresh_both().await;
    let expected_links = (s.slices * s.nodes_per_slice.min(s.nodes)) as i64;
    assert_eq!(relation(&report2, "slice_nodes").added, expected_links);
    fed.expect("slices with plc1's nodes", plc1, plc2).await;
    for cached in slices_by_name(&fed.plc2, Scope::Foreign).await {
        let expected: BTreeSet<(String, bool)> =
            members(slice_no(&cached), s.nodes_per_slice, s.nodes)
                .into_iter()
                .map(|k| (format!("node{k}.plcone.example.org"), false))
                .collect();
        assert_eq!(hostnames(&fed.plc2, &cached.node_ids).await, expected);
    }

    // plc2's nodes (foreign on plc1) in plc1's slices: plc2 sees its own
    // local nodes in them, mapped through PeerNodes.
    let plc2_nodes_on_plc1 = list_all!(fed.plc1, list_nodes, nodes, Scope::Foreign);
    let cached_id = |k: usize| -> i64 {
        let hostname = format!("node{k}.plctwo.example.org");
        plc2_nodes_on_plc1
            .iter()
            .find(|node| node.hostname == hostname)
            .unwrap_or_else(|| panic!("{hostname} not cached on plc1"))
            .node_id
    };
    for slice in &local_slices {
        let node_ids = members(slice_no(slice), s.nodes_per_slice, s.nodes)
            .into_iter()
            .map(cached_id)
            .collect();
        api1.add_nodes_to_slice(pb::SliceNodesRequest {
            slice_id: slice.slice_id,
            node_ids,
        })
        .await
        .expect("add plc2's nodes");
    }
    let (_, report2) = fed.refresh_both().await;
    assert_eq!(relation(&report2, "slice_nodes").added, expected_links);
    fed.expect("slices with plc2's nodes", plc1, plc2).await;
    for cached in slices_by_name(&fed.plc2, Scope::Foreign).await {
        let positions = members(slice_no(&cached), s.nodes_per_slice, s.nodes);
        let expected: BTreeSet<(String, bool)> = positions
            .iter()
            .map(|k| (format!("node{k}.plcone.example.org"), false))
            .chain(
                positions
                    .iter()
                    .map(|k| (format!("node{k}.plctwo.example.org"), true)),
            )
            .collect();
        assert_eq!(hostnames(&fed.plc2, &cached.node_ids).await, expected);
    }
    // plc2's own view of its nodes lists the peer's slices on them.
    let own = crate::common::objects::get_node(&mut api2, made2.nodes[0])
        .await
        .expect("plc2 node");
    assert!(!own.slice_ids.is_empty(), "{own:?}");

    // Removed again: they disappear from plc2's cached slices.
    for slice in &local_slices {
        let node_ids = members(slice_no(slice), s.nodes_per_slice, s.nodes)
            .into_iter()
            .map(cached_id)
            .collect();
        api1.remove_nodes_from_slice(pb::SliceNodesRequest {
            slice_id: slice.slice_id,
            node_ids,
        })
        .await
        .expect("remove plc2's nodes");
    }
    let (_, report2) = fed.refresh_both().await;
    assert_eq!(relation(&report2, "slice_nodes").removed, expected_links);
    for cached in slices_by_name(&fed.plc2, Scope::Foreign).await {
        assert!(
            hostnames(&fed.plc2, &cached.node_ids)
                .await
                .iter()
                .all(|(_, local)| !local),
            "{} still holds plc2's nodes",
            cached.name
        );
    }

    // The slices deleted on plc1: none left on plc2.
    for slice in &local_slices {
        api1.delete_slice(pb::DeleteRequest { id: slice.slice_id })
            .await
            .expect("delete slice");
    }
    let (_, report2) = fed.refresh_both().await;
    assert_eq!(class(&report2, "slices").deleted, s.slices as i64);
    plc1.slices = counts(0, 0);
    plc2.slices = counts(0, 0);
    fed.expect("slices deleted", plc1, plc2).await;

    // 5. Nothing changed: nothing written, on either side.
    let (report1, report2) = fed.refresh_both().await;
    assert_eq!(writes(&report1), 0, "{report1:?}");
    assert_eq!(writes(&report2), 0, "{report2:?}");
    fed.expect("nothing changed", plc1, plc2).await;
}

async fn mini(backend: Backend) {
    scenario(backend, backend, MINI, ONE_ROUND).await;
}

async fn normal(backend: Backend) {
    scenario(backend, backend, NORMAL, ONE_ROUND).await;
}

/// Size big (200 sites, 500 persons, 350 nodes, 500 slices per registry).
async fn big(backend: Backend) {
    scenario(backend, backend, BIG, ONE_ROUND).await;
}

backend_tests!(mini, normal);

/// One registry on each backend, both ways round, refreshing in small
/// rounds.
mod mixed {
    use super::*;

    async fn sqlite_plc1_postgres_plc2() {
        scenario(Backend::Sqlite, Backend::Postgres, NORMAL, SMALL_ROUNDS).await;
    }

    async fn postgres_plc1_sqlite_plc2() {
        scenario(Backend::Postgres, Backend::Sqlite, NORMAL, SMALL_ROUNDS).await;
    }

    postgres_tests!(sqlite_plc1_postgres_plc2, postgres_plc1_sqlite_plc2);
}

long_backend_tests!(big);
