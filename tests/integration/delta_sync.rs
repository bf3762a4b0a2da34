//! Delta refresh: a refresh with a checkpoint fetches only what changed at
//! the peer since, deletions included, and must leave the cache exactly as
//! a full refresh would. Checked on real servers, both backends:
//! - a hand-made sequence of changes, and what the delta carries;
//! - random sequences of creates, updates, deletes and membership changes
//!   on three registries, interleaved with delta and full refreshes and
//!   server restarts: after every delta refresh, a full refresh of the same
//!   peer must find nothing to write (a fixed seed in CI; `long` runs
//!   four seeds of 3,000 steps: `cargo nextest run --run-ignored only
//!   --test delta_sync`; `FEDREG_DELTA_STEPS` and `FEDREG_DELTA_SEED` set
//!   the CI test's run);
//! - a peer away for longer than the change log's retention gets a full
//!   snapshot and converges; a rebuilt peer database (another epoch) too;
//! - a delta cut short leaves the checkpoint where it was.

use std::time::Duration;

use crate::common::fake_peer::{Ending, FakePeer, dump, node, site};
use crate::common::federation::{
    get_peer, peer_both_ways, peer_one_way, refresh, refresh_full, writes,
};
use crate::common::{Backend, TestServer};
use fedreg::proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

backend_tests!(
    a_delta_carries_the_changes_and_the_deletions,
    random_changes_converge_as_full_refreshes_do,
    a_peer_away_longer_than_the_retention_gets_everything,
    a_rebuilt_peer_database_gets_everything,
    a_delta_cut_short_keeps_the_checkpoint,
    a_delta_that_deletes_too_much_is_refused,
);

fn kind(report: &pb::RefreshReport) -> pb::SnapshotKind {
    pb::SnapshotKind::try_from(report.snapshot).expect("a known snapshot kind")
}

/// Received objects per class, in sync order.
fn received(report: &pb::RefreshReport) -> Vec<(String, i64, i64)> {
    report
        .classes
        .iter()
        .map(|c| (c.class.clone(), c.received, c.deleted))
        .collect()
}

/// Asserts that a full refresh of `peer_id` on `on` writes nothing: the
/// cache is what a full refresh makes of the peer's data.
async fn assert_full_writes_nothing(on: &TestServer, peer_id: i64, context: &str) {
    let full = refresh_full(on, peer_id).await;
    assert_eq!(kind(&full), pb::SnapshotKind::Full);
    assert_eq!(
        writes(&full),
        0,
        "{context}: a full refresh after the delta changed the cache: {:?} {:?}",
        full.classes,
        full.relations
    );
}

async fn a_delta_carries_the_changes_and_the_deletions(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let (a_on_b, b_on_a) = peer_both_ways(&b, "plcb", &a, "plca").await;
    let mut api = a.registry().await;
    let made = crate::common::federation::Populate::new("alpha")
        .sites(4)
        .persons(6)
        .keys_per_person(1)
        .on(&a)
        .await;
    let mut nodes = Vec::new();
    for (i, site_id) in made.sites.iter().enumerate() {
        nodes.push(
            crate::common::objects::node(&mut api, *site_id, &format!("n{i}.alpha.example.org"))
                .await,
        );
    }
    let slice = crate::common::objects::slice(&mut api, "alpha0_web").await;
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: slice,
        node_ids: nodes.clone(),
    })
    .await
    .expect("add nodes");
    // b's own node, cached on a, in a's slice: it comes back to b as b's
    // own node (PeerNodes), in full snapshots and deltas alike.
    let mut api_b = b.registry().await;
    let b_site = crate::common::objects::site(&mut api_b, "beta").await;
    let b_node = crate::common::objects::node(&mut api_b, b_site, "n.beta.example.org").await;
    refresh(&a, b_on_a).await;
    let cached_b_node = crate::common::objects::node_named(&mut api, "n.beta.example.org").await;
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: slice,
        node_ids: vec![cached_b_node.node_id],
    })
    .await
    .expect("add b's node");

    let first = refresh(&b, a_on_b).await;
    assert_eq!(kind(&first), pb::SnapshotKind::Full, "no checkpoint yet");
    assert!(first.revision > 0, "{first:?}");
    assert_eq!(
        get_peer(&b, a_on_b).await.checkpoint_revision,
        Some(first.revision)
    );
    let cached_slice = crate::common::objects::slice_named(&mut api_b, "alpha0_web").await;
    assert_eq!(cached_slice.node_ids.len(), 5, "4 of a's nodes and b's own");
    assert!(cached_slice.node_ids.contains(&b_node));

    // Nothing changed: an empty delta, at the same revision.
    let again = refresh(&b, a_on_b).await;
    assert_eq!(kind(&again), pb::SnapshotKind::Delta);
    assert_eq!(
        (again.since_revision, again.revision),
        (first.revision, first.revision)
    );
    assert_eq!(writes(&again), 0);
    assert!(again.classes.is_empty(), "nothing to compare: {again:?}");

    // Some changes: an update, a deletion that cascades, a membership, a
    // node leaving the export through a whitelist.
    api.update_site(pb::UpdateSiteRequest {
        site_id: made.sites[1],
        name: Some("Renamed".into()),
        ..Default::default()
    })
    .await
    .expect("rename site");
    api.delete_person(pb::DeleteRequest {
        id: made.persons[0],
    })
    .await
    .expect("delete person");
    api.delete_site(pb::DeleteRequest { id: made.sites[3] })
        .await
        .expect("delete site with its node");
    api.add_person_to_slice(pb::SlicePersonRequest {
        slice_id: slice,
        person_id: made.persons[1],
    })
    .await
    .expect("add person to slice");
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: nodes[2],
        slice_id: slice,
    })
    .await
    .expect("whitelist");

    let delta = refresh(&b, a_on_b).await;
    assert_eq!(kind(&delta), pb::SnapshotKind::Delta);
    assert_eq!(delta.since_revision, first.revision);
    assert!(delta.revision > first.revision);
    assert_eq!(
        received(&delta),
        [
            // The renamed site; the deleted one.
            ("sites".to_owned(), 1, 1),
            // The deleted person's key.
            ("keys".to_owned(), 0, 1),
            // The person whose site went (its membership changed); the
            // deleted one.
            ("persons".to_owned(), 1, 1),
            // The whitelisted node, and the deleted site's node (gone with
            // its site, by cascade, before the nodes' turn: counted too).
            ("nodes".to_owned(), 0, 2),
            // The slice, whose persons and nodes changed.
            ("slices".to_owned(), 1, 0),
        ]
    );
    let cached_slice = crate::common::objects::slice_named(&mut api_b, "alpha0_web").await;
    assert_eq!(cached_slice.node_ids.len(), 3, "{cached_slice:?}");
    assert!(
        cached_slice.node_ids.contains(&b_node),
        "b's own node stays"
    );
    assert_eq!(cached_slice.person_ids.len(), 1);
    assert_eq!(
        get_peer(&b, a_on_b).await.checkpoint_revision,
        Some(delta.revision)
    );
    assert_full_writes_nothing(&b, a_on_b, "hand-made changes").await;
}

/// Three registries changing their own objects at random and refreshing
/// each other.
struct World {
    servers: Vec<TestServer>,
    /// Stopped servers whose databases the running ones still use.
    stopped: Vec<TestServer>,
    /// `peer_ids[i][j]`: the id of registry j's record on registry i.
    peer_ids: Vec<Vec<i64>>,
    /// Local ids each registry made, possibly deleted since (operations on
    /// a deleted id fail, and a failed operation is simply skipped).
    made: Vec<Made>,
    counter: usize,
    deltas: usize,
}

#[derive(Default)]
struct Made {
    sites: Vec<(i64, String)>,
    persons: Vec<i64>,
    keys: Vec<i64>,
    nodes: Vec<i64>,
    slices: Vec<i64>,
}

const NAMES: [&str; 3] = ["ra", "rb", "rc"];

impl World {
    async fn start(backend: Backend) -> World {
        let mut servers = Vec::new();
        for name in NAMES {
            servers.push(TestServer::start_named(backend, name).await);
        }
        let mut peer_ids = vec![vec![0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                if i != j {
                    peer_ids[i][j] =
                        peer_one_way(&servers[i], NAMES[i], &servers[j], NAMES[j]).await;
                }
            }
        }
        World {
            servers,
            stopped: Vec::new(),
            peer_ids,
            made: (0..3).map(|_| Made::default()).collect(),
            counter: 0,
            deltas: 0,
        }
    }

    fn next(&mut self) -> usize {
        self.counter += 1;
        self.counter
    }

    /// One random step on registry `r`.
    async fn step(&mut self, rng: &mut StdRng, r: usize) {
        let n = self.next();
        let name = NAMES[r];
        let mut api = self.servers[r].registry().await;
        let pick = |rng: &mut StdRng, ids: &[i64]| -> i64 {
            if ids.is_empty() {
                0
            } else {
                ids[rng.random_range(0..ids.len())]
            }
        };
        let made = &mut self.made[r];
        let site_ids: Vec<i64> = made.sites.iter().map(|(id, _)| *id).collect();
        match rng.random_range(0..22) {
            0 | 1 => {
                let login_base = format!("{name}s{n}");
                if let Ok(site) = api
                    .create_site(pb::CreateSiteRequest {
                        login_base: login_base.clone(),
                        name: format!("Site {n}"),
                        ..Default::default()
                    })
                    .await
                {
                    made.sites.push((site.into_inner().site_id, login_base));
                }
            }
            2 => {
                let _ = api
                    .update_site(pb::UpdateSiteRequest {
                        site_id: pick(rng, &site_ids),
                        name: Some(format!("Renamed {n}")),
                        ..Default::default()
                    })
                    .await;
            }
            3 => {
                let _ = api
                    .delete_site(pb::DeleteRequest {
                        id: pick(rng, &site_ids),
                    })
                    .await;
            }
            4 | 5 => {
                if let Ok(person) = api
                    .create_person(pb::CreatePersonRequest {
                        email: format!("p{n}@{name}.example.org"),
                        first_name: "P".into(),
                        last_name: format!("{n}"),
                        enabled: Some(rng.random_bool(0.8)),
                        ..Default::default()
                    })
                    .await
                {
                    made.persons.push(person.into_inner().person_id);
                }
            }
            6 => {
                let _ = api
                    .update_person(pb::UpdatePersonRequest {
                        person_id: pick(rng, &made.persons),
                        enabled: Some(rng.random_bool(0.7)),
                        title: Some(format!("t{n}")),
                        ..Default::default()
                    })
                    .await;
            }
            7 => {
                let _ = api
                    .delete_person(pb::DeleteRequest {
                        id: pick(rng, &made.persons),
                    })
                    .await;
            }
            8 => {
                if let Ok(key) = api
                    .create_key(pb::CreateKeyRequest {
                        person_id: pick(rng, &made.persons),
                        key_type: "ssh".into(),
                        key: crate::common::federation::ssh_key(n, &format!("k{n}@{name}")),
                    })
                    .await
                {
                    made.keys.push(key.into_inner().key_id);
                }
            }
            9 => {
                let key_id = pick(rng, &made.keys);
                let _ = match rng.random_bool(0.5) {
                    true => api
                        .delete_key(pb::DeleteRequest { id: key_id })
                        .await
                        .map(|_| ()),
                    false => api
                        .update_key(pb::UpdateKeyRequest {
                            key_id,
                            is_blacklisted: Some(rng.random_bool(0.5)),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                };
            }
            10 => {
                let request = pb::PersonSiteRequest {
                    person_id: pick(rng, &made.persons),
                    site_id: pick(rng, &site_ids),
                    is_primary: rng.random_bool(0.5),
                };
                let _ = match rng.random_bool(0.7) {
                    true => api.add_person_to_site(request).await,
                    false => api.remove_person_from_site(request).await,
                };
            }
            11 => {
                let request = pb::PersonRoleRequest {
                    person_id: pick(rng, &made.persons),
                    role_id: [10, 20, 30, 40][rng.random_range(0..4)],
                };
                let _ = match rng.random_bool(0.6) {
                    true => api.add_role_to_person(request).await,
                    false => api.remove_role_from_person(request).await,
                };
            }
            12 | 13 => {
                if let Ok(node) = api
                    .create_node(crate::common::objects::new_node(
                        pick(rng, &site_ids),
                        &format!("n{n}.{name}.example.org"),
                    ))
                    .await
                {
                    made.nodes.push(node.into_inner().node_id);
                }
            }
            14 => {
                let states = ["boot", "safeboot", "reinstall", "disabled"];
                let _ = api
                    .update_node(pb::UpdateNodeRequest {
                        node_id: pick(rng, &made.nodes),
                        boot_state: Some(states[rng.random_range(0..4)].into()),
                        ..Default::default()
                    })
                    .await;
            }
            15 => {
                let _ = api
                    .delete_node(pb::DeleteRequest {
                        id: pick(rng, &made.nodes),
                    })
                    .await;
            }
            16 => {
                if made.sites.is_empty() {
                    return;
                }
                let (_, login_base) = &made.sites[rng.random_range(0..made.sites.len())];
                if let Ok(slice) = api
                    .create_slice(pb::CreateSliceRequest {
                        name: format!("{login_base}_sl{n}"),
                        instantiation: "plc-instantiated".into(),
                        creator_person_id: Some(pick(rng, &made.persons)).filter(|p| *p != 0),
                        ..Default::default()
                    })
                    .await
                {
                    made.slices.push(slice.into_inner().slice_id);
                }
            }
            17 => {
                let slice_id = pick(rng, &made.slices);
                let _ = match rng.random_range(0..3) {
                    0 => api
                        .delete_slice(pb::DeleteRequest { id: slice_id })
                        .await
                        .map(|_| ()),
                    _ => api
                        .update_slice(pb::UpdateSliceRequest {
                            slice_id,
                            description: Some(format!("d{n}")),
                            is_system: Some(rng.random_bool(0.15)),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                };
            }
            18 => {
                // A local node, or one cached from a peer.
                let node_id = match rng.random_bool(0.5) {
                    true => pick(rng, &made.nodes),
                    false => {
                        let foreign = api
                            .list_nodes(pb::ListRequest {
                                scope: pb::Scope::Foreign as i32,
                                page_size: 1000,
                                ..Default::default()
                            })
                            .await
                            .expect("list nodes")
                            .into_inner()
                            .nodes;
                        let ids: Vec<i64> = foreign.iter().map(|n| n.node_id).collect();
                        pick(rng, &ids)
                    }
                };
                let request = pb::SliceNodesRequest {
                    slice_id: pick(rng, &made.slices),
                    node_ids: vec![node_id],
                };
                let _ = match rng.random_bool(0.7) {
                    true => api.add_nodes_to_slice(request).await,
                    false => api.remove_nodes_from_slice(request).await,
                };
            }
            19 => {
                let request = pb::SlicePersonRequest {
                    slice_id: pick(rng, &made.slices),
                    person_id: pick(rng, &made.persons),
                };
                let _ = match rng.random_bool(0.7) {
                    true => api.add_person_to_slice(request).await,
                    false => api.remove_person_from_slice(request).await,
                };
            }
            20 => {
                let request = pb::NodeWhitelistRequest {
                    node_id: pick(rng, &made.nodes),
                    slice_id: pick(rng, &made.slices),
                };
                let _ = match rng.random_bool(0.5) {
                    true => api.add_slice_to_node_whitelist(request).await,
                    false => api.remove_slice_from_node_whitelist(request).await,
                };
            }
            _ => {
                let from = (r + rng.random_range(1..3)) % 3;
                self.delta_then_full(r, from).await;
            }
        }
    }

    /// A refresh of `from` on `on` (a delta when a checkpoint is stored),
    /// then a full refresh, which must find nothing to write.
    async fn delta_then_full(&mut self, on: usize, from: usize) {
        let peer_id = self.peer_ids[on][from];
        let report = refresh(&self.servers[on], peer_id).await;
        if kind(&report) == pb::SnapshotKind::Delta {
            self.deltas += 1;
        }
        let context = format!("{} from {} ({:?})", NAMES[on], NAMES[from], kind(&report));
        assert_full_writes_nothing(&self.servers[on], peer_id, &context).await;
    }

    /// Stops registry `r` and starts it again on the same database, on a
    /// new port that its peers are told.
    async fn restart(&mut self, r: usize) {
        self.servers[r].stop().await;
        let restarted =
            TestServer::start_sharing(&self.servers[r], |c| c.registry_name = NAMES[r].into())
                .await;
        let old = std::mem::replace(&mut self.servers[r], restarted);
        self.stopped.push(old);
        let url = self.servers[r].url();
        for other in (0..3).filter(|o| *o != r) {
            self.servers[other]
                .peers()
                .await
                .update_peer(pb::UpdatePeerRequest {
                    peer_id: self.peer_ids[other][r],
                    peer_url: Some(url.clone()),
                    ..Default::default()
                })
                .await
                .expect("new peer url");
        }
    }
}

async fn random_changes_converge_as_full_refreshes_do(backend: Backend) {
    let steps: usize = std::env::var("FEDREG_DELTA_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let seed: u64 = std::env::var("FEDREG_DELTA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261202);
    random_run(backend, steps, seed).await;
}

/// `steps` random steps from `seed` on three registries, a restart every
/// 80 steps, then everyone refreshes everyone; every delta refresh is
/// checked against a full one.
async fn random_run(backend: Backend, steps: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::start(backend).await;
    for step in 0..steps {
        let r = rng.random_range(0..3);
        if step % 80 == 79 {
            world.restart(r).await;
        } else {
            world.step(&mut rng, r).await;
        }
    }
    // Everyone refreshes everyone, twice: the second round sees the
    // changes the first one made to local slices.
    for _ in 0..2 {
        for on in 0..3 {
            for from in (0..3).filter(|f| *f != on) {
                world.delta_then_full(on, from).await;
            }
        }
    }
    assert!(
        world.deltas >= 10,
        "seed {seed}: only {} refreshes were deltas",
        world.deltas
    );
}

/// The longer run: four seeds of 3,000 steps (minutes).
async fn long(backend: Backend) {
    for seed in [11, 12, 13, 14] {
        random_run(backend, 3000, seed).await;
    }
}

long_backend_tests!(long);

async fn a_peer_away_longer_than_the_retention_gets_everything(backend: Backend) {
    let a = TestServer::start_with(backend, |c| {
        c.registry_name = "plca".into();
        c.change_retention = Duration::from_secs(1);
    })
    .await;
    let b = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
    let made = crate::common::federation::Populate::new("alpha")
        .sites(5)
        .persons(4)
        .keys_per_person(1)
        .on(&a)
        .await;
    let first = refresh(&b, a_on_b).await;
    assert_eq!(kind(&first), pb::SnapshotKind::Full);

    let mut api = a.registry().await;
    for site_id in &made.sites[..2] {
        api.delete_site(pb::DeleteRequest { id: *site_id })
            .await
            .expect("delete site");
    }
    api.update_person(pb::UpdatePersonRequest {
        person_id: made.persons[3],
        title: Some("Dr".into()),
        ..Default::default()
    })
    .await
    .expect("update person");
    // Compaction runs every second and drops what is older than a second.
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let back = refresh(&b, a_on_b).await;
    assert_eq!(kind(&back), pb::SnapshotKind::Full, "{back:?}");
    assert!(
        back.full_reason.contains("older than the kept history"),
        "{}",
        back.full_reason
    );
    assert_eq!(crate::common::federation::class(&back, "sites").deleted, 2);
    assert_eq!(
        crate::common::federation::class(&back, "persons").updated,
        1
    );
    let again = refresh(&b, a_on_b).await;
    assert_eq!(kind(&again), pb::SnapshotKind::Delta);
    assert_full_writes_nothing(&b, a_on_b, "after the full snapshot").await;
}

async fn a_rebuilt_peer_database_gets_everything(backend: Backend) {
    let mut a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
    crate::common::federation::Populate::new("alpha")
        .sites(3)
        .on(&a)
        .await;
    refresh(&b, a_on_b).await;

    // The same database after a restart: deltas go on.
    let restarted = TestServer::start_sharing(&a, |c| c.registry_name = "plca".into()).await;
    a.stop().await;
    let set_url = |url: String| pb::UpdatePeerRequest {
        peer_id: a_on_b,
        peer_url: Some(url),
        ..Default::default()
    };
    b.peers()
        .await
        .update_peer(set_url(restarted.url()))
        .await
        .expect("url");
    crate::common::objects::site(&mut restarted.registry().await, "later").await;
    let delta = refresh(&b, a_on_b).await;
    assert_eq!(kind(&delta), pb::SnapshotKind::Delta);
    assert_eq!(crate::common::federation::class(&delta, "sites").added, 1);

    // Another database under the same name: another epoch.
    let rebuilt = TestServer::start_named(backend, "plca").await;
    peer_one_way(&b, "plcb", &rebuilt, "plca").await;
    b.peers()
        .await
        .update_peer(set_url(rebuilt.url()))
        .await
        .expect("url");
    crate::common::objects::site(&mut rebuilt.registry().await, "alpha0").await;
    let full = refresh(&b, a_on_b).await;
    assert_eq!(kind(&full), pb::SnapshotKind::Full);
    assert!(full.full_reason.contains("epoch"), "{}", full.full_reason);
    let sites = crate::common::federation::class(&full, "sites");
    assert_eq!((sites.received, sites.deleted), (1, 3), "{full:?}");
}

/// A scripted stream with a header, `batch` and a trailer at `revision`,
/// full or delta.
fn scripted(
    batch: pb::PeerDataBatch,
    kind: pb::SnapshotKind,
    revision: i64,
) -> Vec<pb::PeerDataChunk> {
    let checkpoint = Some(pb::Checkpoint {
        epoch: "e1".into(),
        revision,
    });
    let deleted = batch
        .deleted
        .as_ref()
        .map_or(0, |d| d.node_ids.len() as i64);
    let mut chunks = dump(batch);
    for chunk in &mut chunks {
        match &mut chunk.part {
            Some(pb::peer_data_chunk::Part::Header(h)) => {
                h.checkpoint = checkpoint.clone();
                h.kind = kind as i32;
            }
            Some(pb::peer_data_chunk::Part::Trailer(t)) => {
                t.checkpoint = checkpoint.clone();
                t.deleted = deleted;
            }
            _ => {}
        }
    }
    chunks
}

async fn a_delta_cut_short_keeps_the_checkpoint(backend: Backend) {
    let server = TestServer::start(backend).await;
    let everything = pb::PeerDataBatch {
        sites: vec![site(1, "one")],
        nodes: vec![node(1, "n1.one.org", 1), node(2, "n2.one.org", 1)],
        ..Default::default()
    };
    let fake = FakePeer::start(everything.clone()).await;
    fake.set(
        scripted(everything, pb::SnapshotKind::Full, 5),
        Ending::Complete,
    );
    let peer_id = fake.register(&server, "fake").await;
    refresh(&server, peer_id).await;
    assert_eq!(
        get_peer(&server, peer_id).await.checkpoint_revision,
        Some(5)
    );

    let delta = pb::PeerDataBatch {
        nodes: vec![node(3, "n3.one.org", 1)],
        deleted: Some(pb::DeletedObjects {
            node_ids: vec![2],
            ..Default::default()
        }),
        ..Default::default()
    };
    fake.set(
        scripted(delta.clone(), pb::SnapshotKind::Delta, 7),
        Ending::BreakAfter(2),
    );
    let cut = crate::common::federation::try_refresh(&server, peer_id, false).await;
    assert!(cut.is_err(), "{cut:?}");
    let record = get_peer(&server, peer_id).await;
    assert_eq!(record.checkpoint_revision, Some(5), "unchanged");
    assert_eq!(record.cached.expect("counts").nodes, 2, "nothing applied");

    fake.set(
        scripted(delta, pb::SnapshotKind::Delta, 7),
        Ending::Complete,
    );
    let applied = refresh(&server, peer_id).await;
    assert_eq!((applied.since_revision, applied.revision), (5, 7));
    let nodes = crate::common::federation::class(&applied, "nodes");
    assert_eq!((nodes.received, nodes.added, nodes.deleted), (1, 1, 1));
    assert_eq!(
        get_peer(&server, peer_id).await.checkpoint_revision,
        Some(7)
    );
}

async fn a_delta_that_deletes_too_much_is_refused(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
    let sites = crate::common::federation::create_sites(&a, "gone", 20).await;
    refresh(&b, a_on_b).await;
    let mut api = a.registry().await;
    for site_id in &sites[..15] {
        api.delete_site(pb::DeleteRequest { id: *site_id })
            .await
            .expect("delete site");
    }
    // A few deletions pass: they are within the limit of what the delta
    // loaded, let alone of the whole cache.
    api.delete_site(pb::DeleteRequest { id: sites[19] })
        .await
        .expect("delete site");
    let refused = crate::common::federation::try_refresh(&b, a_on_b, false)
        .await
        .expect("a report");
    assert_eq!(
        refused.outcome(),
        pb::RefreshOutcome::Refused,
        "{refused:?}"
    );
    assert!(
        refused.reason.contains("16 of the 20"),
        "{}",
        refused.reason
    );
    assert_eq!(
        get_peer(&b, a_on_b).await.cached.unwrap_or_default().sites,
        20
    );
    let forced = crate::common::federation::try_refresh(&b, a_on_b, true)
        .await
        .expect("a report");
    assert_eq!(kind(&forced), pb::SnapshotKind::Delta);
    assert_eq!(
        crate::common::federation::class(&forced, "sites").deleted,
        16
    );

    // One more deletion of the four left is within the limit.
    api.delete_site(pb::DeleteRequest { id: sites[18] })
        .await
        .expect("delete site");
    let small = refresh(&b, a_on_b).await;
    assert_eq!(kind(&small), pb::SnapshotKind::Delta);
    assert_eq!(crate::common::federation::class(&small, "sites").deleted, 1);
    assert_full_writes_nothing(&b, a_on_b, "after the deletions").await;
}
