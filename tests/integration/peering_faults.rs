//! Refreshes against a scripted peer: bad data skipped object by object,
//! broken and stalled streams leaving the cache untouched, one refresh per
//! peer at a time, and the mass-delete guard; on both backends.

use std::time::Duration;

use crate::common::fake_peer::{Ending, FakePeer, dump, key, node, person, site, slice};
use crate::common::federation::{class, relation, try_refresh, writes};
use crate::common::{Backend, TestServer, assert_status};
use base64::Engine;
use fedreg::proto::v1 as pb;
use tonic::Code;

/// A registry with a peer record for `fake` (peer_timeout 2 s); returns the
/// server and the peer's id.
async fn registry_peered_with(backend: Backend, fake: &FakePeer) -> (TestServer, i64) {
    registry_peered_in_rounds(backend, fake, fedreg::server::DEFAULT_REFRESH_CHUNK).await
}

/// [`registry_peered_with`], refreshing `chunk` objects per round.
async fn registry_peered_in_rounds(
    backend: Backend,
    fake: &FakePeer,
    chunk: usize,
) -> (TestServer, i64) {
    let server = TestServer::start_with(backend, |c| {
        c.registry_name = "home".into();
        c.peer_timeout = Duration::from_secs(2);
        c.refresh_chunk = chunk;
    })
    .await;
    let peer_id = fake.register(&server, "fake").await;
    (server, peer_id)
}

fn sites(n: i64, prefix: &str) -> pb::PeerDataBatch {
    pb::PeerDataBatch {
        sites: (1..=n).map(|i| site(i, &format!("{prefix}{i}"))).collect(),
        ..Default::default()
    }
}

/// Every foreign site as the registry lists it, and the peer's counts.
async fn snapshot(server: &TestServer, peer_id: i64) -> (Vec<pb::Site>, pb::CachedCounts) {
    let sites = list_all!(server, list_sites, sites, pb::Scope::Foreign);
    let peer = server
        .peers()
        .await
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(peer_id)),
        })
        .await
        .unwrap()
        .into_inner();
    (sites, peer.cached.unwrap())
}

async fn last_outcome(server: &TestServer, peer_id: i64) -> (i32, String) {
    let peer = server
        .peers()
        .await
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(peer_id)),
        })
        .await
        .unwrap()
        .into_inner();
    let reason = peer
        .last_refresh_report
        .map(|r| r.reason)
        .unwrap_or_default();
    (peer.last_refresh_outcome, reason)
}

async fn broken_streams_leave_the_cache_untouched(backend: Backend) {
    let fake = FakePeer::start(sites(20, "site")).await;
    let (server, peer_id) = registry_peered_with(backend, &fake).await;
    let first = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(class(&first, "sites").added, 20);
    let before = snapshot(&server, peer_id).await;

    // The next dump changes everything, but never arrives whole.
    let changed = dump(sites(25, "renamed"));
    let cases = [
        (changed.clone(), Ending::BreakAfter(2), "disk on fire"),
        (
            changed[..2].to_vec(),
            Ending::Complete,
            "without its trailer",
        ),
        (changed.clone(), Ending::StallAfter(2), "stalled"),
    ];
    for (chunks, ending, needle) in cases {
        fake.set(chunks, ending);
        assert_status(
            try_refresh(&server, peer_id, false).await,
            Code::Unavailable,
            &["fake", needle],
        );
        assert_eq!(snapshot(&server, peer_id).await, before, "{needle}");
        let (outcome, reason) = last_outcome(&server, peer_id).await;
        assert_eq!(outcome, pb::RefreshOutcome::Failed as i32);
        assert!(reason.contains(needle), "{reason}");
    }

    // A trailer that disagrees with what arrived.
    let mut lying = changed.clone();
    if let Some(pb::peer_data_chunk::Part::Trailer(t)) = &mut lying[2].part {
        t.sites += 1;
    }
    fake.set(lying, Ending::Complete);
    assert_status(
        try_refresh(&server, peer_id, false).await,
        Code::Unavailable,
        &["trailer announces 26 sites but 25 arrived"],
    );
    assert_eq!(snapshot(&server, peer_id).await, before);

    // An unreachable peer.
    drop(fake);
    assert_status(
        try_refresh(&server, peer_id, false).await,
        Code::Unavailable,
        &["fake"],
    );
    assert_eq!(snapshot(&server, peer_id).await, before);
}

async fn one_refresh_per_peer_and_readers_keep_answering(backend: Backend) {
    let fake = FakePeer::start(sites(3, "site")).await;
    let (server, peer_id) = registry_peered_with(backend, &fake).await;
    try_refresh(&server, peer_id, false).await.unwrap();
    fake.set(dump(sites(3, "site")), Ending::StallAfter(1));

    let slow = {
        let mut peers = server.peers().await;
        tokio::spawn(async move {
            peers
                .refresh_peer(pb::RefreshPeerRequest {
                    peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
                    force: false,
                    full: false,
                    ..Default::default()
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !slow.is_finished(),
        "the first refresh is still waiting on its peer"
    );
    assert_status(
        try_refresh(&server, peer_id, false).await,
        Code::Aborted,
        &["fake", "being refreshed"],
    );
    // Readers answer while the refresh runs.
    let listed = list_all!(server, list_sites, sites, pb::Scope::Foreign);
    assert_eq!(listed.len(), 3);
    assert!(!slow.is_finished());
    let outcome = slow.await.unwrap();
    assert_status(outcome, Code::Unavailable, &["stalled"]);
    // The lock is gone with the refresh that held it.
    fake.set(dump(sites(3, "site")), Ending::Complete);
    let again = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(writes(&again), 0);
}

async fn mass_delete_guard_refuses_until_forced(backend: Backend) {
    let fake = FakePeer::start(sites(20, "site")).await;
    let (server, peer_id) = registry_peered_with(backend, &fake).await;
    try_refresh(&server, peer_id, false).await.unwrap();

    // The peer suddenly serves a quarter of its sites.
    fake.serve(sites(5, "site"));
    let refused = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(refused.outcome, pb::RefreshOutcome::Refused as i32);
    assert!(
        refused.reason.contains("15 of the 20"),
        "{}",
        refused.reason
    );
    assert!(refused.reason.contains("force"), "{}", refused.reason);
    assert_eq!(snapshot(&server, peer_id).await.1.sites, 20);
    assert_eq!(
        last_outcome(&server, peer_id).await.0,
        pb::RefreshOutcome::Refused as i32
    );

    let forced = try_refresh(&server, peer_id, true).await.unwrap();
    assert_eq!(forced.outcome, pb::RefreshOutcome::Applied as i32);
    assert_eq!(class(&forced, "sites").deleted, 15);
    assert_eq!(snapshot(&server, peer_id).await.1.sites, 5);

    // A per-peer threshold overrides the server's default.
    fake.serve(sites(40, "site"));
    try_refresh(&server, peer_id, false).await.unwrap();
    server
        .peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            max_delete_fraction: Some(0.9),
            ..Default::default()
        })
        .await
        .unwrap();
    fake.serve(sites(10, "site"));
    let applied = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(applied.outcome, pb::RefreshOutcome::Applied as i32);
    assert_eq!(class(&applied, "sites").deleted, 30);
}

/// An OpenSSH ed25519 public key line with a made-up key.
fn ssh_key(comment: &str) -> String {
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], &[7u8; 32][..]] {
        blob.extend((part.len() as u32).to_be_bytes());
        blob.extend(part);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("ssh-ed25519 {b64} {comment}")
}

async fn bad_peer_data_is_skipped_object_by_object(backend: Backend) {
    bad_peer_data_in_rounds_of(backend, fedreg::server::DEFAULT_REFRESH_CHUNK).await;
}

/// One object per round: every check that spans objects (ids and natural
/// keys seen twice, keys held by cached objects) now spans rounds, and
/// must decide exactly as it does within one.
async fn bad_peer_data_is_skipped_the_same_one_object_per_round(backend: Backend) {
    bad_peer_data_in_rounds_of(backend, 1).await;
}

async fn bad_peer_data_in_rounds_of(backend: Backend, chunk: usize) {
    let mut batch = pb::PeerDataBatch {
        sites: vec![
            site(1, "good"),
            site(2, "Bad Base!"),
            site(3, "taken"),
            site(4, "good"),
            site(1, "again"),
        ],
        keys: vec![
            key(1, &ssh_key("ada@good")),
            pb::ExportedKey {
                key_type: "gpg".into(),
                ..key(2, &ssh_key("gpg"))
            },
            key(3, "ssh-rsa not!base64 x@y"),
        ],
        persons: vec![
            pb::ExportedPerson {
                key_ids: vec![1, 2],
                site_ids: vec![1, 3],
                primary_site_id: Some(1),
                role_ids: vec![30, 99],
                ..person(1, "ada@good.example.org")
            },
            pb::ExportedPerson {
                enabled: false,
                ..person(2, "off@good.example.org")
            },
            person(3, "not-an-email"),
            person(4, "ada@good.example.org"),
        ],
        nodes: vec![
            node(1, "n1.good.example.org", 1),
            node(2, "n2.good.example.org", 999),
            pb::ExportedNode {
                boot_state: "exploded".into(),
                ..node(3, "n3.good.example.org", 1)
            },
            pb::ExportedNode {
                boot_state: "dbg".into(),
                ..node(4, "n4.good.example.org", 1)
            },
            node(5, "not a hostname", 1),
            node(6, "mine.taken.example.org", 1),
        ],
        slices: vec![
            pb::ExportedSlice {
                node_ids: vec![1, 4, 3, 777],
                person_ids: vec![1, 2],
                // A person skipped until the peer fixes its e-mail.
                creator_person_id: Some(3),
                ..slice(1, "good_one", 1)
            },
            slice(2, "good_two", 999),
            pb::ExportedSlice {
                instantiation: "teleported".into(),
                ..slice(3, "good_three", 1)
            },
            slice(4, "other_four", 1),
        ],
        peer_nodes: vec![],
        deleted: None,
    };
    let fake = FakePeer::start(batch.clone()).await;
    let (server, peer_id) = registry_peered_in_rounds(backend, &fake, chunk).await;
    let mut api = server.registry().await;
    let taken = api
        .create_site(pb::CreateSiteRequest {
            login_base: "taken".into(),
            name: "A local site".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    api.create_node(pb::CreateNodeRequest {
        site_id: taken.site_id,
        hostname: "mine.taken.example.org".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let report = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(report.outcome, pb::RefreshOutcome::Applied as i32);
    let expect = |class_name: &str, added: i64, skipped: i64| {
        let c = class(&report, class_name);
        assert_eq!(
            (c.added, c.skipped),
            (added, skipped),
            "{class_name}: {report:#?}"
        );
    };
    expect("sites", 1, 4);
    expect("keys", 1, 2);
    // The disabled person is dropped by cleaning, not reported.
    expect("persons", 1, 2);
    expect("nodes", 2, 4);
    expect("slices", 1, 3);

    let warned = |class_name: &str, id: i64, needle: &str| {
        assert!(
            report.warnings.iter().any(|w| w.class == class_name
                && w.peer_object_id == id
                && w.reason.contains(needle)),
            "no {class_name} {id} warning about {needle:?}: {:#?}",
            report.warnings
        );
    };
    warned("sites", 2, "login_base");
    warned("sites", 3, "already used here by another authority");
    warned("sites", 4, "appears twice");
    warned("sites", 1, "its id appears twice");
    warned("keys", 2, "unknown key_type");
    warned("keys", 3, "key");
    warned("persons", 3, "email");
    warned("persons", 4, "appears twice");
    warned("nodes", 2, "not among the peer's synced sites");
    warned("nodes", 3, "boot_state");
    warned("nodes", 5, "hostname");
    warned("nodes", 6, "already used here by another authority");
    warned("slices", 2, "not among the peer's synced sites");
    warned("slices", 3, "instantiation");
    warned("slices", 4, "login_base");
    warned("person_roles", 1, "99");
    assert!(report.warnings.iter().all(|w| !w.reason.is_empty()));

    // Memberships of what was kept: unknown and skipped ids are dropped.
    assert_eq!(relation(&report, "person_keys").added, 1);
    assert_eq!(relation(&report, "slice_nodes").added, 2);
    assert_eq!(relation(&report, "slice_persons").added, 1);
    assert_eq!(relation(&report, "site_persons").added, 1);
    assert_eq!(relation(&report, "person_roles").added, 1);

    // The old boot state was rewritten; the skipped creator became null.
    let nodes_cached = snapshot(&server, peer_id).await.1;
    assert_eq!((nodes_cached.nodes, nodes_cached.slices), (2, 1));
    let cached_slice = list_all!(server, list_slices, slices, pb::Scope::Foreign);
    assert_eq!(cached_slice[0].creator_person_id, None);

    // The same bad data again writes nothing and warns the same. What was
    // kept is found unchanged by its digest, except the slice whose
    // creator is not cached.
    let again = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(writes(&again), 0, "{again:#?}");
    assert_eq!(again.warnings.len(), report.warnings.len());
    let unchanged: Vec<i64> = again.classes.iter().map(|c| c.unchanged).collect();
    assert_eq!(unchanged, [1, 1, 1, 2, 0], "{:#?}", again.classes);

    // Fixing the data at the peer lets the skipped objects in, with what
    // refers to them: the slice's digest is the same, yet it gets its
    // creator and its node.
    batch.sites[1].login_base = "fixed".into();
    batch.nodes[2].boot_state = "boot".into();
    batch.persons[2].email = "three@good.example.org".into();
    fake.serve(batch);
    let fixed = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(class(&fixed, "sites").added, 1);
    assert_eq!(class(&fixed, "nodes").added, 1);
    assert_eq!(class(&fixed, "persons").added, 1);
    assert_eq!(class(&fixed, "slices").updated, 1, "{fixed:#?}");
    assert_eq!(
        relation(&fixed, "slice_nodes").added,
        1,
        "node 3 joins its slice"
    );
    let persons = list_all!(server, list_persons, persons, pb::Scope::Foreign);
    let three = persons
        .iter()
        .find(|p| p.email == "three@good.example.org")
        .expect("person 3 cached");
    let cached_slice = list_all!(server, list_slices, slices, pb::Scope::Foreign);
    assert_eq!(cached_slice[0].creator_person_id, Some(three.person_id));
}

/// A slice and a person whose digests do not change, with a member that
/// the peer fixes between two full refreshes: the owner stays unchanged
/// (its row is not read), yet the member, accepted now, joins it.
async fn a_member_accepted_later_joins_its_unchanged_owner(backend: Backend) {
    let mut batch = pb::PeerDataBatch {
        sites: vec![site(1, "good")],
        keys: vec![
            key(1, &ssh_key("one@good")),
            pb::ExportedKey {
                key_type: "gpg".into(),
                ..key(2, &ssh_key("two@good"))
            },
        ],
        persons: vec![pb::ExportedPerson {
            key_ids: vec![1, 2],
            site_ids: vec![1],
            primary_site_id: Some(1),
            ..person(1, "ada@good.example.org")
        }],
        nodes: vec![
            node(1, "n1.good.example.org", 1),
            pb::ExportedNode {
                boot_state: "exploded".into(),
                ..node(2, "n2.good.example.org", 1)
            },
        ],
        slices: vec![pb::ExportedSlice {
            node_ids: vec![1, 2],
            person_ids: vec![1],
            ..slice(1, "good_one", 1)
        }],
        ..Default::default()
    };
    let fake = FakePeer::start(batch.clone()).await;
    let (server, peer_id) = registry_peered_with(backend, &fake).await;
    let first = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(relation(&first, "slice_nodes").added, 1, "{first:#?}");
    assert_eq!(relation(&first, "person_keys").added, 1, "{first:#?}");
    let again = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(writes(&again), 0, "{again:#?}");

    batch.keys[1].key_type = "ssh".into();
    batch.nodes[1].boot_state = "boot".into();
    fake.serve(batch);
    let fixed = try_refresh(&server, peer_id, false).await.unwrap();
    let unchanged = |name: &str| class(&fixed, name).unchanged;
    assert_eq!(
        (unchanged("persons"), unchanged("slices")),
        (1, 1),
        "{fixed:#?}"
    );
    assert_eq!(
        (class(&fixed, "keys").added, class(&fixed, "nodes").added),
        (1, 1)
    );
    assert_eq!(relation(&fixed, "slice_nodes").added, 1, "{fixed:#?}");
    assert_eq!(relation(&fixed, "person_keys").added, 1, "{fixed:#?}");
    let settled = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(writes(&settled), 0, "{settled:#?}");
}

/// One object per round: a key moves to a person of an earlier round (it
/// must leave its old owner before it joins the new one, or the key's
/// uniqueness would fail the refresh) and a login_base moves to a site of
/// a later round (its old holder is renamed by then).
async fn keys_and_names_move_between_objects_across_rounds(backend: Backend) {
    let dump = |keys_of: [Vec<i64>; 2], login_bases: [&str; 2]| {
        let [first_keys, second_keys] = keys_of;
        pb::PeerDataBatch {
            sites: vec![site(1, login_bases[0]), site(2, login_bases[1])],
            keys: vec![key(1, &ssh_key("moving@example.org"))],
            persons: vec![
                pb::ExportedPerson {
                    key_ids: first_keys,
                    ..person(1, "first@example.org")
                },
                pb::ExportedPerson {
                    key_ids: second_keys,
                    ..person(2, "second@example.org")
                },
            ],
            ..Default::default()
        }
    };
    let fake = FakePeer::start(dump([vec![], vec![1]], ["alpha", "beta"])).await;
    let (server, peer_id) = registry_peered_in_rounds(backend, &fake, 1).await;
    let first = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(relation(&first, "person_keys").added, 1, "{first:#?}");

    fake.serve(dump([vec![1], vec![]], ["delta", "alpha"]));
    let moved = try_refresh(&server, peer_id, false).await.unwrap();
    assert_eq!(moved.outcome, pb::RefreshOutcome::Applied as i32);
    assert!(moved.warnings.is_empty(), "{:#?}", moved.warnings);
    let person_keys = relation(&moved, "person_keys");
    assert_eq!((person_keys.added, person_keys.removed), (1, 1));
    assert_eq!(class(&moved, "sites").updated, 2);

    let persons = list_all!(server, list_persons, persons, pb::Scope::Foreign);
    let keys_of = |email: &str| {
        persons
            .iter()
            .find(|p| p.email == email)
            .map(|p| p.key_ids.len())
    };
    assert_eq!(keys_of("first@example.org"), Some(1));
    assert_eq!(keys_of("second@example.org"), Some(0));
    let mut login_bases: Vec<String> = list_all!(server, list_sites, sites, pb::Scope::Foreign)
        .into_iter()
        .map(|s| s.login_base)
        .collect();
    login_bases.sort();
    assert_eq!(login_bases, ["alpha", "delta"]);
}

/// An object kept unchanged holds its natural key: a new object of the
/// same peer that wants it later in the dump is skipped as a duplicate,
/// whether it comes in the same round or a later one, and whatever the
/// case of the key as sent (an e-mail is kept lowercased).
async fn a_new_object_cannot_take_the_key_of_an_unchanged_one(backend: Backend) {
    for chunk in [1, 100] {
        let dump = |duplicates: bool| {
            let mut batch = pb::PeerDataBatch {
                sites: vec![site(1, "alpha")],
                persons: vec![person(1, "Ada@Example.org")],
                ..Default::default()
            };
            if duplicates {
                batch.sites.push(site(2, "alpha"));
                batch.persons.push(person(2, "ada@example.org"));
            }
            batch
        };
        let fake = FakePeer::start(dump(false)).await;
        let (server, peer_id) = registry_peered_in_rounds(backend, &fake, chunk).await;
        let first = try_refresh(&server, peer_id, false).await.unwrap();
        assert!(first.warnings.is_empty(), "{:#?}", first.warnings);

        fake.serve(dump(true));
        let report = try_refresh(&server, peer_id, false).await.unwrap();
        assert_eq!(report.outcome, pb::RefreshOutcome::Applied as i32);
        for name in ["sites", "persons"] {
            let c = class(&report, name);
            assert_eq!(
                (c.unchanged, c.added, c.skipped),
                (1, 0, 1),
                "chunk {chunk}, {name}: {report:#?}"
            );
            assert!(
                report.warnings.iter().any(|w| w.class == name
                    && w.peer_object_id == 2
                    && w.reason.contains("appears twice")),
                "chunk {chunk}, {name}: {:#?}",
                report.warnings
            );
        }
        let sites = list_all!(server, list_sites, sites, pb::Scope::Foreign);
        let persons = list_all!(server, list_persons, persons, pb::Scope::Foreign);
        assert_eq!(
            (sites.len(), persons.len()),
            (1, 1),
            "chunk {chunk}: {sites:#?} {persons:#?}"
        );
        assert_eq!(
            (sites[0].login_base.as_str(), persons[0].email.as_str()),
            ("alpha", "ada@example.org")
        );
    }
}

/// Two fedreg servers on one PostgreSQL database, each with its own data
/// directory (so their lock files differ): the advisory lock still lets only
/// one of them refresh a peer at a time.
mod shared_database {
    use super::*;

    async fn two_servers_refresh_a_peer_one_at_a_time() {
        let fake = FakePeer::start(sites(3, "site")).await;
        let (first, peer_id) = registry_peered_with(Backend::Postgres, &fake).await;
        let second = TestServer::start_sharing(&first, |c| {
            c.registry_name = "home".into();
            c.peer_timeout = Duration::from_secs(2);
        })
        .await;
        fake.set(dump(sites(3, "site")), Ending::StallAfter(1));
        let slow = {
            let mut peers = first.peers().await;
            tokio::spawn(async move {
                peers
                    .refresh_peer(pb::RefreshPeerRequest {
                        peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
                        force: false,
                        full: false,
                        ..Default::default()
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!slow.is_finished(), "the first refresh waits on its peer");
        assert_status(
            try_refresh(&second, peer_id, false).await,
            Code::Aborted,
            &["fake", "being refreshed"],
        );
        assert_status(slow.await.unwrap(), Code::Unavailable, &["stalled"]);
        // The first server's lock went with its refresh: the second applies.
        fake.set(dump(sites(3, "site")), Ending::Complete);
        let applied = try_refresh(&second, peer_id, false).await.unwrap();
        assert_eq!(class(&applied, "sites").added, 3);
    }

    postgres_tests!(two_servers_refresh_a_peer_one_at_a_time);
}

backend_tests!(
    broken_streams_leave_the_cache_untouched,
    one_refresh_per_peer_and_readers_keep_answering,
    mass_delete_guard_refuses_until_forced,
    bad_peer_data_is_skipped_object_by_object,
    bad_peer_data_is_skipped_the_same_one_object_per_round,
    keys_and_names_move_between_objects_across_rounds,
    a_member_accepted_later_joins_its_unchanged_owner,
    a_new_object_cannot_take_the_key_of_an_unchanged_one,
);
