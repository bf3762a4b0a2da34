//! What a refresh takes from a peer, and what it refuses: renames applied
//! in place, one invalid object never failing the refresh, the admin API's
//! validators on peer data, keys that belong to no person, protocol state
//! checked (epochs, revisions, snapshot kinds, a deadline, a size cap),
//! cascades counted, and `PeerNodes` claims limited to exported nodes; on
//! both backends.

use std::time::{Duration, Instant};

use crate::common::fake_peer::{Ending, FakePeer, dump, key, node, person, site, slice, snapshot};
use crate::common::federation::{
    class, peer_one_way, refresh, refresh_full, request_refresh, ssh_key, try_refresh, writes,
};
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1 as pb;
use tonic::Code;

/// A registry with a peer record for `fake`, after `tune`; returns the
/// server and the peer's id.
async fn peered_with(
    backend: Backend,
    fake: &FakePeer,
    tune: impl FnOnce(&mut fedreg::server::ServerConfig),
) -> (TestServer, i64) {
    let server = TestServer::start_with(backend, |c| {
        c.registry_name = "home".into();
        c.peer_timeout = Duration::from_secs(2);
        tune(c);
    })
    .await;
    let peer_id = fake.register(&server, "fake").await;
    (server, peer_id)
}

/// Whether `report` warns about object `id` of `class` with `needle` in
/// its reason.
fn warns(report: &pb::RefreshReport, class: &str, id: i64, needle: &str) -> bool {
    report
        .warnings
        .iter()
        .any(|w| w.class == class && w.peer_object_id == id && w.reason.contains(needle))
}

/// The foreign sites of `server` as (the peer's id, local id, login_base).
async fn foreign_sites(server: &TestServer) -> Vec<(i64, i64, String)> {
    let mut out: Vec<(i64, i64, String)> = list_all!(server, list_sites, sites, pb::Scope::Foreign)
        .into_iter()
        .map(|s| (peer_id_of(&s.origin), s.site_id, s.login_base))
        .collect();
    out.sort();
    out
}

/// The peer's id of a foreign object.
fn peer_id_of(origin: &Option<pb::Origin>) -> i64 {
    origin
        .as_ref()
        .map(|o| o.peer_object_id)
        .expect("a foreign object")
}

/// A site whose login_base another takes in the same dump is renamed in
/// place, whatever the order the dump lists them in: the new site is
/// added, the renamed one keeps its local id.
async fn a_new_site_takes_a_renamed_sites_login_base(backend: Backend) {
    let fake = FakePeer::start(pb::PeerDataBatch {
        sites: vec![site(1, "mit"), site(2, "ucb")],
        ..Default::default()
    })
    .await;
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    refresh(&server, peer_id).await;
    let before = foreign_sites(&server).await;

    // The new site comes first, then the chain: 2 takes 1's name, 1 a new one.
    fake.serve(pb::PeerDataBatch {
        sites: vec![site(3, "mit"), site(2, "mit2"), site(1, "ucb")],
        ..Default::default()
    });
    let report = refresh(&server, peer_id).await;
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    let sites = class(&report, "sites");
    assert_eq!((sites.added, sites.updated, sites.deleted), (1, 2, 0));
    let after = foreign_sites(&server).await;
    assert_eq!(after[0], (1, before[0].1, "ucb".to_owned()));
    assert_eq!(after[1], (2, before[1].1, "mit2".to_owned()));
    assert_eq!(after[2].2, "mit");
    assert_eq!(writes(&refresh(&server, peer_id).await), 0);
}

/// A peer site that fails its checks while its nodes and slices are still
/// sent: the site and what depends on it are skipped with one warning
/// each, the rest applies; once cached, they go together, counted.
async fn an_invalid_site_takes_its_dependents_along(backend: Backend) {
    let batch = |second_site: &str| pb::PeerDataBatch {
        sites: vec![site(1, "good"), site(2, second_site)],
        nodes: vec![
            node(10, "n10.good.example.org", 1),
            node(20, "n20.two.example.org", 2),
        ],
        slices: vec![
            pb::ExportedSlice {
                node_ids: vec![10, 20],
                ..slice(30, &format!("{second_site}_exp"), 2)
            },
            pb::ExportedSlice {
                node_ids: vec![10],
                ..slice(31, "good_exp", 1)
            },
        ],
        ..Default::default()
    };
    let fake = FakePeer::start(batch("BAD!")).await;
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    let report = refresh(&server, peer_id).await;
    assert!(warns(&report, "sites", 2, "login_base"), "{report:#?}");
    assert!(warns(&report, "nodes", 20, "not among"), "{report:#?}");
    assert!(warns(&report, "slices", 30, "not among"), "{report:#?}");
    assert_eq!(class(&report, "nodes").added, 1);
    assert_eq!(class(&report, "slices").added, 1);

    // Valid at first, then invalid: the site's node and slice go with it.
    fake.serve(batch("two"));
    let valid = refresh(&server, peer_id).await;
    assert!(valid.warnings.is_empty(), "{:#?}", valid.warnings);
    assert_eq!(class(&valid, "slices").added, 1);
    fake.serve(batch("BAD!"));
    let invalid = try_refresh(&server, peer_id, true).await.unwrap();
    assert_eq!(invalid.outcome, pb::RefreshOutcome::Applied as i32);
    let (nodes, slices) = (class(&invalid, "nodes"), class(&invalid, "slices"));
    assert_eq!((nodes.deleted, nodes.cascaded), (1, 1), "{invalid:#?}");
    assert_eq!((slices.deleted, slices.cascaded), (1, 1), "{invalid:#?}");
    assert_eq!(foreign_sites(&server).await.len(), 1);
}

/// Received objects pass the validators of the admin API; ids must be
/// positive; NUL characters are refused on both paths, and an error
/// quotes only the start of a long value.
async fn peer_data_passes_the_admin_validators(backend: Backend) {
    let long = "x".repeat(5 * 1024 * 1024);
    // The largest value a request may carry (the server takes messages of
    // up to 4 MiB).
    let one_mib = "x".repeat(1024 * 1024);
    let fake = FakePeer::start(pb::PeerDataBatch {
        sites: vec![
            site(1, "good"),
            pb::ExportedSite {
                name: "n".repeat(255),
                ..site(2, "longname")
            },
            pb::ExportedSite {
                name: long.clone(),
                ..site(3, "hugename")
            },
            pb::ExportedSite {
                max_slices: -7,
                ..site(4, "negative")
            },
            site(0, "zero"),
            site(-5, "below"),
            pb::ExportedSite {
                name: "nul\0name".into(),
                ..site(6, "nul")
            },
        ],
        persons: vec![pb::ExportedPerson {
            bio: long.clone(),
            ..person(1, "bio@good.example.org")
        }],
        slices: vec![pb::ExportedSlice {
            max_nodes: -1,
            ..slice(1, "good_exp", 1)
        }],
        ..Default::default()
    })
    .await;
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    let report = refresh(&server, peer_id).await;
    assert_eq!(class(&report, "sites").added, 1, "{report:#?}");
    assert!(warns(&report, "sites", 2, "name"));
    assert!(warns(&report, "sites", 3, "at most 254"));
    assert!(warns(&report, "sites", 4, "max_slices"));
    assert!(warns(&report, "sites", 0, "positive"));
    assert!(warns(&report, "sites", -5, "positive"));
    assert!(warns(&report, "sites", 6, "NUL"));
    assert!(warns(&report, "persons", 1, "bio"));
    assert!(warns(&report, "slices", 1, "max_nodes"));
    let longest = report.warnings.iter().map(|w| w.reason.len()).max();
    assert!(longest < Some(300), "a warning quotes a whole value");

    let mut api = server.registry().await;
    for name in ["nul\0name", &one_mib[..]] {
        let status = api
            .create_site(pb::CreateSiteRequest {
                login_base: "local".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("name"), "{status:?}");
        assert!(status.message().len() < 200, "{}", status.message().len());
    }
    let status = api
        .update_site(pb::UpdateSiteRequest {
            site_id: 1,
            url: Some("http://x\0".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::NotFound),
        "{status:?}"
    );
}

/// A key belongs to one person: a key no person of the peer lists is
/// skipped with a warning, the key of a person cleaning drops (disabled)
/// goes silently, a cached key no person lists any more goes though it is
/// unchanged, and a person disabled at a real peer takes its key along, in
/// a delta as in a full refresh.
async fn keys_belong_to_a_person(backend: Backend) {
    let fake = FakePeer::start(pb::PeerDataBatch {
        keys: vec![
            key(5, &ssh_key(5, "nobody")),
            key(6, &ssh_key(6, "disabled")),
            key(7, &ssh_key(7, "enabled")),
        ],
        persons: vec![
            pb::ExportedPerson {
                enabled: false,
                key_ids: vec![6],
                ..person(1, "off@example.org")
            },
            pb::ExportedPerson {
                key_ids: vec![7],
                ..person(2, "on@example.org")
            },
        ],
        ..Default::default()
    })
    .await;
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    let report = refresh(&server, peer_id).await;
    assert!(warns(&report, "keys", 5, "no person"), "{report:#?}");
    assert!(!report.warnings.iter().any(|w| w.peer_object_id == 6));
    assert_eq!(class(&report, "keys").added, 1);

    // A cached key sent again unchanged, but listed by no person any more,
    // goes: its digest vouches for its checks, not for its owner.
    fake.serve(pb::PeerDataBatch {
        keys: vec![key(7, &ssh_key(7, "enabled"))],
        persons: vec![person(2, "on@example.org")],
        ..Default::default()
    });
    let report = refresh(&server, peer_id).await;
    assert!(warns(&report, "keys", 7, "no person"), "{report:#?}");
    assert_eq!(class(&report, "keys").deleted, 1, "{report:#?}");
    let cached = list_all!(server, list_keys, keys, pb::Scope::Foreign);
    assert!(cached.is_empty(), "{cached:?}");

    // Two real registries: a person disabled at the serving one.
    let a = TestServer::start_named(backend, "a").await;
    let b = TestServer::start_named(backend, "b").await;
    let a_on_b = peer_one_way(&b, "b", &a, "a").await;
    let people = crate::common::federation::Populate::new("a")
        .sites(1)
        .persons(2)
        .keys_per_person(1)
        .on(&a)
        .await;
    refresh(&b, a_on_b).await;
    a.registry()
        .await
        .update_person(pb::UpdatePersonRequest {
            person_id: people.persons[0],
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let delta = refresh(&b, a_on_b).await;
    assert_eq!(delta.snapshot, pb::SnapshotKind::Delta as i32);
    assert_eq!(class(&delta, "persons").deleted, 1, "{delta:#?}");
    assert_eq!(class(&delta, "keys").deleted, 1, "{delta:#?}");
    let cached = list_all!(b, list_keys, keys, pb::Scope::Foreign);
    assert_eq!(cached.len(), 1);
    assert!(cached.iter().all(|k| k.person_id != 0), "{cached:?}");
    assert_eq!(writes(&refresh_full(&b, a_on_b).await), 0);
}

/// A delta of another epoch, or reaching a revision behind the
/// checkpoint, and a snapshot of an unknown kind, fail the refresh with
/// nothing applied and the checkpoint kept.
async fn protocol_state_is_checked(backend: Backend) {
    let checkpoint = |epoch: &str, revision| {
        Some(pb::Checkpoint {
            epoch: epoch.into(),
            revision,
        })
    };
    let sites = |login_base: &str| pb::PeerDataBatch {
        sites: vec![site(1, login_base)],
        ..Default::default()
    };
    let fake = FakePeer::start(sites("one")).await;
    fake.set(
        snapshot(
            sites("one"),
            pb::SnapshotKind::Full as i32,
            checkpoint("e1", 5),
        ),
        Ending::Complete,
    );
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    refresh(&server, peer_id).await;
    let stored = crate::common::federation::get_peer(&server, peer_id).await;

    let delta = pb::SnapshotKind::Delta as i32;
    for (chunks, needle) in [
        (snapshot(sites("two"), delta, checkpoint("e2", 6)), "epoch"),
        (snapshot(sites("two"), delta, checkpoint("e1", 4)), "behind"),
        (
            snapshot(sites("two"), 7, checkpoint("e1", 6)),
            "unknown snapshot kind",
        ),
    ] {
        fake.set(chunks, Ending::Complete);
        assert_status(
            try_refresh(&server, peer_id, false).await,
            Code::Unavailable,
            &[needle],
        );
        assert_eq!(foreign_sites(&server).await[0].2, "one");
        let peer = crate::common::federation::get_peer(&server, peer_id).await;
        assert_eq!(peer.checkpoint_revision, stored.checkpoint_revision);
    }
    // The same delta in the right epoch applies.
    fake.set(
        snapshot(sites("two"), delta, checkpoint("e1", 6)),
        Ending::Complete,
    );
    refresh(&server, peer_id).await;
    assert_eq!(foreign_sites(&server).await[0].2, "two");
}

/// A peer that keeps a refresh waiting with empty batches fails it at the
/// refresh deadline; one that sends more than the cap fails it at once.
async fn a_peer_cannot_hold_or_flood_a_refresh(backend: Backend) {
    let fake = FakePeer::start(pb::PeerDataBatch::default()).await;
    let (server, peer_id) = peered_with(backend, &fake, |c| {
        c.refresh_timeout = Duration::from_secs(2);
        c.max_dump.max_objects = 50;
    })
    .await;
    fake.set(
        dump(pb::PeerDataBatch::default()),
        Ending::DripAfter(2, Duration::from_millis(200)),
    );
    let started = Instant::now();
    assert_status(
        try_refresh(&server, peer_id, false).await,
        Code::Unavailable,
        &["--refresh-timeout"],
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    fake.serve(pb::PeerDataBatch {
        sites: (1..=60).map(|i| site(i, &format!("s{i}"))).collect(),
        ..Default::default()
    });
    assert_status(
        try_refresh(&server, peer_id, false).await,
        Code::ResourceExhausted,
        &["--max-dump-objects"],
    );
    assert!(foreign_sites(&server).await.is_empty());
}

/// A delta listing one site that holds most of the cache through its
/// nodes: the mass-delete guard counts the nodes that go with it.
async fn the_guard_counts_cascades(backend: Backend) {
    let checkpoint = |revision| {
        Some(pb::Checkpoint {
            epoch: "e".into(),
            revision,
        })
    };
    let full = pb::PeerDataBatch {
        sites: vec![site(1, "big"), site(2, "small")],
        nodes: (1..=20)
            .map(|i| node(i, &format!("n{i}.big.example.org"), 1))
            .collect(),
        ..Default::default()
    };
    let fake = FakePeer::start(pb::PeerDataBatch::default()).await;
    fake.set(
        snapshot(full, pb::SnapshotKind::Full as i32, checkpoint(1)),
        Ending::Complete,
    );
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    let first = refresh(&server, peer_id).await;
    assert_eq!(class(&first, "nodes").added, 20, "{first:#?}");
    let gone = pb::PeerDataBatch {
        deleted: Some(pb::DeletedObjects {
            site_ids: vec![1],
            ..Default::default()
        }),
        ..Default::default()
    };
    fake.set(
        snapshot(gone, pb::SnapshotKind::Delta as i32, checkpoint(2)),
        Ending::Complete,
    );
    let refused = refresh(&server, peer_id).await;
    assert_eq!(refused.outcome, pb::RefreshOutcome::Refused as i32);
    assert!(
        refused.reason.contains("delete 21 of the 22"),
        "{refused:#?}"
    );
    let forced = try_refresh(&server, peer_id, true).await.unwrap();
    let nodes = class(&forced, "nodes");
    assert_eq!((nodes.deleted, nodes.cascaded), (20, 20), "{forced:#?}");
}

/// `PeerNodes` claims only local nodes this registry exports: a peer
/// cannot put its slice on a node reserved by a whitelist.
async fn peer_nodes_claim_only_exported_nodes(backend: Backend) {
    let fake = FakePeer::start(pb::PeerDataBatch::default()).await;
    let (server, peer_id) = peered_with(backend, &fake, |_| {}).await;
    let mut api = server.registry().await;
    let home = crate::common::objects::site(&mut api, "home").await;
    let open = crate::common::objects::node(&mut api, home, "open.home.example.org").await;
    let reserved = crate::common::objects::node(&mut api, home, "reserved.home.example.org").await;
    let mine = crate::common::objects::slice(&mut api, "home_mine").await;
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: reserved,
        slice_id: mine,
    })
    .await
    .unwrap();
    fake.serve(pb::PeerDataBatch {
        sites: vec![site(1, "far")],
        peer_nodes: vec![
            pb::PeerNode {
                node_id: 901,
                peer_node_id: open,
            },
            pb::PeerNode {
                node_id: 902,
                peer_node_id: reserved,
            },
        ],
        slices: vec![pb::ExportedSlice {
            node_ids: vec![901, 902],
            ..slice(1, "far_exp", 1)
        }],
        ..Default::default()
    });
    let report = refresh(&server, peer_id).await;
    assert!(warns(&report, "peer_nodes", 902, "exports"), "{report:#?}");
    let cached = crate::common::objects::slice_named(&mut api, "far_exp").await;
    assert_eq!(cached.node_ids, [open]);
}

/// Renaming a site renames its slices (a slice's name starts with its
/// site's login_base, always), unless a new name would be invalid; a slice
/// with a missing creator is NOT_FOUND.
async fn a_site_rename_renames_its_slices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site = crate::common::objects::site(&mut api, "mit").await;
    let exp = crate::common::objects::slice(&mut api, "mit_exp").await;
    api.update_site(pb::UpdateSiteRequest {
        site_id: site,
        login_base: Some("ucb".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let renamed = crate::common::objects::get_slice(&mut api, exp)
        .await
        .unwrap();
    assert_eq!(renamed.name, "ucb_exp");

    crate::common::objects::slice(&mut api, &format!("ucb_{}", "x".repeat(60))).await;
    let status = api
        .update_site(pb::UpdateSiteRequest {
            site_id: site,
            login_base: Some("a.much.longer.login.base".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("login_base"), "{status:?}");
    assert_eq!(
        crate::common::objects::get_slice(&mut api, exp)
            .await
            .unwrap()
            .name,
        "ucb_exp",
        "nothing changed"
    );

    let status = api
        .create_slice(pb::CreateSliceRequest {
            name: "ucb_orphan".into(),
            creator_person_id: Some(999),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("creator_person_id"), "{status:?}");
}

/// A site deleted at a real peer: the refresh's report counts its nodes
/// and slices.
async fn a_deleted_site_reports_what_went_with_it(backend: Backend) {
    let a = TestServer::start_named(backend, "a").await;
    let b = TestServer::start_named(backend, "b").await;
    let a_on_b = peer_one_way(&b, "b", &a, "a").await;
    let mut api = a.registry().await;
    let gone = crate::common::objects::site(&mut api, "gone").await;
    crate::common::objects::site(&mut api, "stays").await;
    for i in 0..2 {
        crate::common::objects::node(&mut api, gone, &format!("n{i}.gone.example.org")).await;
    }
    crate::common::objects::slice(&mut api, "gone_exp").await;
    refresh(&b, a_on_b).await;
    api.delete_site(pb::DeleteRequest { id: gone })
        .await
        .unwrap();
    let report = request_refresh(&b, a_on_b, true, false).await.unwrap();
    assert_eq!(class(&report, "sites").deleted, 1, "{report:#?}");
    assert_eq!(class(&report, "nodes").deleted, 2, "{report:#?}");
    assert_eq!(class(&report, "slices").deleted, 1, "{report:#?}");
    assert_eq!(writes(&refresh_full(&b, a_on_b).await), 0);
}

backend_tests!(
    a_new_site_takes_a_renamed_sites_login_base,
    an_invalid_site_takes_its_dependents_along,
    peer_data_passes_the_admin_validators,
    keys_belong_to_a_person,
    protocol_state_is_checked,
    a_peer_cannot_hold_or_flood_a_refresh,
    the_guard_counts_cascades,
    peer_nodes_claim_only_exported_nodes,
    a_site_rename_renames_its_slices,
    a_deleted_site_reports_what_went_with_it,
);
