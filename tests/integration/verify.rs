//! Verification: `RefreshPeer` with `verify` compares the cache with the
//! peer's digests (`GetDigest`) and fetches again exactly the objects that
//! differ (`GetPeerData` with `only`). Checked on real servers, both
//! backends:
//! - an unchanged cache matches, class by class, with one `GetDigest` call
//!   per class, also after changes at the peer (its digests follow its
//!   change log) and with the caller's own nodes in the peer's slices;
//! - hand edits of the cache in the database (a changed column, a deleted
//!   row, a deleted membership, a forged digest) are found, exactly those,
//!   and repaired: a full refresh afterwards writes nothing, and the
//!   checkpoint stays;
//! - a full refresh compares and writes only the objects whose stored
//!   digest differs from what the peer sent (hand edits clear it), so the
//!   same edits are repaired by a full refresh, after which it finds
//!   every object unchanged;
//! - a server verifies the peers it refreshes on a schedule every
//!   `--verify-interval`, which repairs a hand edit on its own;
//! - `GetDigest` and `GetPeerData` `only` answer what they document, and
//!   refuse bad requests by naming the field.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::federation::{
    Populate, Population, get_peer, peer_both_ways, refresh, refresh_full, writes,
};
use crate::common::objects;
use crate::common::rows::Rows;
use crate::common::{Backend, TestServer, assert_status, eventually};
use fedreg::proto::v1 as pb;

backend_tests!(
    an_unchanged_cache_matches_the_peers_digests,
    hand_edits_of_the_cache_are_found_and_repaired,
    a_full_refresh_compares_only_objects_whose_digest_differs,
    a_scheduled_verification_repairs_the_cache,
    get_digest_and_listed_objects_answer_as_documented,
    several_ranges_in_one_call_answer_as_each_alone,
    a_class_too_large_to_list_is_compared_in_levels,
);

/// Two registries: `a` with sites, persons with keys, nodes and a slice
/// holding nodes and persons (and `b`'s own node); `b` caching `a`.
struct World {
    a: TestServer,
    b: TestServer,
    /// `a` as a peer of `b`.
    a_on_b: i64,
    made: Population,
    /// `a`'s nodes.
    nodes: Vec<i64>,
    /// `a`'s slice.
    slice: i64,
}

async fn world(backend: Backend) -> World {
    world_verified_every(backend, None).await
}

/// The [`World`], `b` verifying its scheduled peers every `interval` when
/// given (its default otherwise).
async fn world_verified_every(backend: Backend, interval: Option<Duration>) -> World {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_with(backend, |c| {
        c.registry_name = "plcb".into();
        if let Some(interval) = interval {
            c.verify_interval = interval;
        }
    })
    .await;
    let (a_on_b, b_on_a) = peer_both_ways(&b, "plcb", &a, "plca").await;
    let made = Populate::new("alpha")
        .sites(3)
        .persons(5)
        .keys_per_person(1)
        .on(&a)
        .await;
    let mut api = a.registry().await;
    let mut nodes = Vec::new();
    for (i, site_id) in made.sites.iter().enumerate() {
        let hostname = format!("n{i}.alpha.example.org");
        nodes.push(objects::node(&mut api, *site_id, &hostname).await);
    }
    let slice = objects::slice(&mut api, "alpha0_web").await;
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: slice,
        node_ids: nodes.clone(),
    })
    .await
    .expect("add nodes");
    for person_id in &made.persons[..3] {
        api.add_person_to_slice(pb::SlicePersonRequest {
            slice_id: slice,
            person_id: *person_id,
        })
        .await
        .expect("add person");
    }
    // b's own node in a's slice: a sends it to b as b's own, and neither
    // side digests it.
    let mut api_b = b.registry().await;
    let b_site = objects::site(&mut api_b, "beta").await;
    objects::node(&mut api_b, b_site, "n.beta.example.org").await;
    refresh(&a, b_on_a).await;
    let cached = objects::node_named(&mut api, "n.beta.example.org").await;
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: slice,
        node_ids: vec![cached.node_id],
    })
    .await
    .expect("add b's node");
    refresh(&b, a_on_b).await;
    World {
        a,
        b,
        a_on_b,
        made,
        nodes,
        slice,
    }
}

async fn verify(on: &TestServer, peer_id: i64) -> pb::RefreshReport {
    let report = on
        .peers()
        .await
        .refresh_peer(pb::RefreshPeerRequest {
            peer: Some(pb::refresh_peer_request::Peer::PeerId(peer_id)),
            verify: true,
            ..Default::default()
        })
        .await
        .expect("RefreshPeer verify")
        .into_inner();
    assert_eq!(
        report.outcome,
        pb::RefreshOutcome::Applied as i32,
        "{report:?}"
    );
    report
}

/// The differing ids per class of a verification (classes without any
/// left out).
fn differing(report: &pb::RefreshReport) -> BTreeMap<String, Vec<i64>> {
    let verify = report.verify.as_ref().expect("a verify report");
    verify
        .classes
        .iter()
        .filter(|c| c.differing > 0)
        .map(|c| (c.class.clone(), c.differing_ids.clone()))
        .collect()
}

async fn an_unchanged_cache_matches_the_peers_digests(backend: Backend) {
    let w = world(backend).await;
    let report = verify(&w.b, w.a_on_b).await;
    assert_eq!(differing(&report), BTreeMap::new(), "{report:?}");
    let v = report.verify.as_ref().unwrap();
    let counts: Vec<(&str, i64, i64)> = v
        .classes
        .iter()
        .map(|c| (c.class.as_str(), c.peer_objects, c.cached_objects))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("sites", 3, 3),
            ("keys", 5, 5),
            ("persons", 5, 5),
            ("nodes", 3, 3),
            ("slices", 1, 1)
        ]
    );
    assert_eq!(v.digest_calls, 5, "one call per class when all match");
    assert_eq!(writes(&report), 0);

    // Changes at the peer, one through the API and one by hand in its
    // database: the refresh before the comparison brings them, and the
    // peer's digests follow its change log.
    let mut api = w.a.registry().await;
    api.update_node(pb::UpdateNodeRequest {
        node_id: w.nodes[0],
        model: Some("new model".into()),
        ..Default::default()
    })
    .await
    .expect("update node");
    api.remove_person_from_slice(pb::SlicePersonRequest {
        slice_id: w.slice,
        person_id: w.made.persons[0],
    })
    .await
    .expect("remove person");
    Rows::of(&w.a)
        .execute(&format!(
            "UPDATE sites SET name = 'Edited by hand' WHERE site_id = {}",
            w.made.sites[1]
        ))
        .await;
    let report = verify(&w.b, w.a_on_b).await;
    assert_eq!(differing(&report), BTreeMap::new(), "{report:?}");
    let site = objects::get_site(
        &mut w.b.registry().await,
        cached_id(&w, "sites", w.made.sites[1]).await,
    )
    .await
    .expect("cached site");
    assert_eq!(site.name, "Edited by hand");
}

/// The local id on `b` of `a`'s object `peer_object_id` of `class`.
async fn cached_id(w: &World, class: &str, peer_object_id: i64) -> i64 {
    let (table, id, peer_column) = match class {
        "sites" => ("sites", "site_id", "peer_site_id"),
        "persons" => ("persons", "person_id", "peer_person_id"),
        "nodes" => ("nodes", "node_id", "peer_node_id"),
        "slices" => ("slices", "slice_id", "peer_slice_id"),
        other => panic!("no class {other}"),
    };
    Rows::of(&w.b)
        .value(&format!(
            "SELECT {id} AS value FROM {table} WHERE peer_id = {} AND {peer_column} = {peer_object_id}",
            w.a_on_b
        ))
        .await
}

/// Edits `b`'s cache of `a` by hand in the database: a changed column, a
/// forged digest, a deleted person and a deleted membership of the slice.
/// Returns the peer's ids of the objects that differ from `a`'s since, per
/// class.
async fn edit_the_cache_by_hand(w: &World) -> BTreeMap<String, Vec<i64>> {
    let peer = w.a_on_b;
    let node1 = cached_id(w, "nodes", w.nodes[1]).await;
    let slice = cached_id(w, "slices", w.slice).await;
    let rows = Rows::of(&w.b);
    // A changed column.
    rows.execute(&format!(
        "UPDATE nodes SET model = 'tampered' WHERE peer_id = {peer} AND peer_node_id = {}",
        w.nodes[0]
    ))
    .await;
    // A forged digest: a hand write of the column clears it as well.
    rows.execute(&format!(
        "UPDATE sites SET sync_digest = 12345 WHERE peer_id = {peer} AND peer_site_id = {}",
        w.made.sites[2]
    ))
    .await;
    // A deleted person (not in the slice): its memberships go with it.
    rows.execute(&format!(
        "DELETE FROM persons WHERE peer_id = {peer} AND peer_person_id = {}",
        w.made.persons[4]
    ))
    .await;
    // A deleted membership of the slice.
    let removed = rows
        .execute(&format!(
            "DELETE FROM slice_node WHERE slice_id = {slice} AND node_id = {node1}"
        ))
        .await;
    assert_eq!(removed, 1);
    BTreeMap::from([
        ("nodes".to_owned(), vec![w.nodes[0]]),
        ("persons".to_owned(), vec![w.made.persons[4]]),
        ("sites".to_owned(), vec![w.made.sites[2]]),
        ("slices".to_owned(), vec![w.slice]),
    ])
}

async fn hand_edits_of_the_cache_are_found_and_repaired(backend: Backend) {
    let w = world(backend).await;
    let checkpoint = get_peer(&w.b, w.a_on_b).await.checkpoint_revision;
    let peer = w.a_on_b;
    let expected = edit_the_cache_by_hand(&w).await;

    let report = verify(&w.b, peer).await;
    assert_eq!(differing(&report), expected, "{report:?}");
    let v = report.verify.as_ref().unwrap();
    assert!(v.repair_bytes > 0, "{v:?}");
    assert!(writes(&report) > 0, "the repair wrote: {report:?}");
    assert_eq!(
        get_peer(&w.b, peer).await.checkpoint_revision,
        checkpoint,
        "a verification keeps the checkpoint"
    );

    // Repaired: a full refresh finds nothing to write, a second
    // verification nothing that differs.
    let full = refresh_full(&w.b, peer).await;
    assert_eq!(writes(&full), 0, "{:?} {:?}", full.classes, full.relations);
    let again = verify(&w.b, peer).await;
    assert_eq!(differing(&again), BTreeMap::new(), "{again:?}");
    let cached = objects::get_node(
        &mut w.b.registry().await,
        cached_id(&w, "nodes", w.nodes[0]).await,
    )
    .await
    .expect("cached node");
    assert_ne!(cached.model, "tampered");
}

/// Whether a full refresh found every object it received unchanged.
fn all_unchanged(report: &pb::RefreshReport) -> bool {
    report.classes.iter().all(|c| c.unchanged == c.received)
}

async fn a_full_refresh_compares_only_objects_whose_digest_differs(backend: Backend) {
    let w = world(backend).await;
    let peer = w.a_on_b;
    let node0 = cached_id(&w, "nodes", w.nodes[0]).await;
    let before = refresh_full(&w.b, peer).await;
    assert_eq!(writes(&before), 0, "{before:?}");
    assert!(all_unchanged(&before), "{:?}", before.classes);

    // Hand edits clear the digests of what they touch: a full refresh
    // compares those objects (and the nodes of the site whose digest was
    // forged) and repairs them.
    let edited = edit_the_cache_by_hand(&w).await;
    let full = refresh_full(&w.b, peer).await;
    for c in &full.classes {
        assert_eq!(
            c.unchanged < c.received,
            edited.contains_key(&c.class),
            "{:?}",
            full.classes
        );
    }
    let class = |name: &str| full.classes.iter().find(|c| c.class == name).unwrap();
    assert_eq!((class("persons").added, class("nodes").updated), (1, 1));
    let slice_nodes = full.relations.iter().find(|r| r.relation == "slice_nodes");
    assert_eq!(slice_nodes.map(|r| (r.added, r.removed)), Some((1, 0)));
    let node = objects::get_node(&mut w.b.registry().await, node0)
        .await
        .expect("cached node");
    assert_ne!(node.model, "tampered");

    // Repaired: every digest is back, nothing is compared or written.
    let again = refresh_full(&w.b, peer).await;
    assert_eq!(writes(&again), 0, "{again:?}");
    assert!(all_unchanged(&again), "{:?}", again.classes);
    assert_eq!(differing(&verify(&w.b, peer).await), BTreeMap::new());
}

async fn a_scheduled_verification_repairs_the_cache(backend: Backend) {
    let w = world_verified_every(backend, Some(Duration::from_secs(1))).await;
    // Refreshed on a schedule (hourly: no scheduled refresh happens during
    // the test, and a refresh from the checkpoint would not see the edit).
    w.b.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id: w.a_on_b,
            refresh_interval_seconds: Some(3600),
            ..Default::default()
        })
        .await
        .expect("schedule the peer");
    let node = cached_id(&w, "nodes", w.nodes[0]).await;
    Rows::of(&w.b)
        .execute(&format!(
            "UPDATE nodes SET model = 'tampered' WHERE node_id = {node}"
        ))
        .await;
    eventually("the scheduled verification repairs the node", || async {
        let cached = objects::get_node(&mut w.b.registry().await, node).await;
        cached.is_ok_and(|n| n.model != "tampered")
    })
    .await;
    let peer = get_peer(&w.b, w.a_on_b).await;
    let report = peer.last_refresh_report.expect("a report");
    assert_eq!(report.mode(), pb::SyncMode::Scheduled);
    assert!(report.verify.is_some(), "{report:?}");
}

async fn get_digest_and_listed_objects_answer_as_documented(backend: Backend) {
    let w = world(backend).await;
    let mut peering = w.a.peering_as(Some(&w.a.admin_token)).await;
    let whole = |buckets| pb::DigestRange {
        first_id: i64::MIN,
        last_id: i64::MAX,
        buckets,
        list: false,
    };
    let answer = peering
        .get_digest(pb::GetDigestRequest {
            class: "nodes".into(),
            ranges: vec![
                whole(1),
                pb::DigestRange {
                    first_id: w.nodes[0],
                    last_id: w.nodes[2],
                    buckets: 0,
                    list: true,
                },
                pb::DigestRange {
                    first_id: w.nodes[0],
                    last_id: w.nodes[2],
                    buckets: 3,
                    list: false,
                },
            ],
        })
        .await
        .expect("GetDigest")
        .into_inner();
    assert_eq!(answer.algorithm, fedreg::peering::digest::ALGORITHM);
    assert!(answer.checkpoint.as_ref().is_some_and(|c| c.revision > 0));
    let [all, listed, split] = &answer.ranges[..] else {
        panic!("three ranges: {answer:?}");
    };
    assert_eq!(all.buckets.len(), 1);
    assert_eq!(all.buckets[0].count, 3);
    let ids: Vec<i64> = listed.objects.iter().map(|o| o.id).collect();
    assert_eq!(ids, w.nodes);
    let sum: i64 = listed.objects.iter().map(|o| o.digest).sum();
    assert_eq!(all.buckets[0].sum, sum);
    assert_eq!(split.buckets.iter().map(|b| b.count).sum::<i64>(), 3);
    assert_eq!(split.buckets.iter().map(|b| b.sum).sum::<i64>(), sum);

    let bad_class = peering
        .get_digest(pb::GetDigestRequest {
            class: "planets".into(),
            ranges: vec![whole(1)],
        })
        .await;
    assert_status(
        bad_class,
        tonic::Code::InvalidArgument,
        &["class", "planets"],
    );
    let reversed = peering
        .get_digest(pb::GetDigestRequest {
            class: "nodes".into(),
            ranges: vec![pb::DigestRange {
                first_id: 5,
                last_id: 4,
                ..Default::default()
            }],
        })
        .await;
    assert_status(reversed, tonic::Code::InvalidArgument, &["ranges", "5..=4"]);
    let too_wide = peering
        .get_digest(pb::GetDigestRequest {
            class: "nodes".into(),
            ranges: vec![whole(64)],
        })
        .await;
    assert_status(
        too_wide,
        tonic::Code::InvalidArgument,
        &["ranges", "64 buckets"],
    );

    // GetPeerData with `only`: the listed objects, the missing one as a
    // deletion, in a delta.
    let mut stream = peering
        .get_peer_data(pb::GetPeerDataRequest {
            since: None,
            only: Some(pb::DeletedObjects {
                node_ids: vec![w.nodes[1], 999_999],
                ..Default::default()
            }),
        })
        .await
        .expect("GetPeerData only")
        .into_inner();
    let (mut kind, mut nodes, mut deleted) = (None, Vec::new(), Vec::new());
    while let Some(chunk) = stream.message().await.expect("stream") {
        match chunk.part {
            Some(pb::peer_data_chunk::Part::Header(h)) => kind = Some(h.kind()),
            Some(pb::peer_data_chunk::Part::Batch(b)) => {
                nodes.extend(b.nodes.iter().map(|n| n.node_id));
                deleted.extend(b.deleted.unwrap_or_default().node_ids);
            }
            _ => {}
        }
    }
    assert_eq!(kind, Some(pb::SnapshotKind::Delta));
    assert_eq!(nodes, vec![w.nodes[1]]);
    assert_eq!(deleted, vec![999_999]);
}

/// The digests of `ranges` of `class` at `on`, in one `GetDigest` call.
async fn get_digest(
    on: &TestServer,
    class: &str,
    ranges: Vec<pb::DigestRange>,
) -> Vec<pb::RangeDigest> {
    let token = on.admin_token.clone();
    on.peering_as(Some(&token))
        .await
        .get_digest(pb::GetDigestRequest {
            class: class.into(),
            ranges,
        })
        .await
        .expect("GetDigest")
        .into_inner()
        .ranges
}

async fn several_ranges_in_one_call_answer_as_each_alone(backend: Backend) {
    let w = world(backend).await;
    let (first, last) = (w.made.keys[0], *w.made.keys.last().unwrap());
    let range = |first_id, last_id, buckets, list| pb::DigestRange {
        first_id,
        last_id,
        buckets,
        list,
    };
    // Split and listed ranges, overlapping, one of them the whole 64-bit
    // range, one empty, and the last split into more buckets than ids.
    let ranges = vec![
        range(i64::MIN, i64::MAX, 1, false),
        range(first, last, 2, false),
        range(first + 1, last, 0, true),
        range(i64::MIN, first, 0, true),
        range(last + 1, last + 1000, 4, false),
        range(first, last, 0, true),
        range(first, first + 2, 16, false),
    ];
    let together = get_digest(&w.a, "keys", ranges.clone()).await;
    assert_eq!(together.len(), ranges.len());
    for (range, answer) in ranges.into_iter().zip(&together) {
        let alone = get_digest(&w.a, "keys", vec![range]).await;
        assert_eq!(alone, vec![answer.clone()], "{range:?}");
    }
    let listed: Vec<i64> = together[5].objects.iter().map(|o| o.id).collect();
    assert_eq!(listed, w.made.keys);
    let split = &together[1].buckets;
    assert_eq!(split.len(), 2, "{split:?}");
    assert_eq!(
        split.iter().map(|b| b.count).sum::<i64>(),
        w.made.keys.len() as i64
    );
    assert_eq!(
        split.iter().map(|b| b.sum).sum::<i64>(),
        together[5].objects.iter().map(|o| o.digest).sum::<i64>()
    );
    assert!(together[4].buckets.is_empty(), "{:?}", together[4]);
}

async fn a_class_too_large_to_list_is_compared_in_levels(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let (a_on_b, _) = peer_both_ways(&b, "plcb", &a, "plca").await;
    let made = Populate::new("many")
        .persons(150)
        .keys_per_person(4)
        .on(&a)
        .await;
    refresh(&b, a_on_b).await;
    let keys = &made.keys;
    let edited = [keys[0], keys[keys.len() / 2], keys[keys.len() - 1]];
    let rows = Rows::of(&b);
    for key in edited {
        rows.execute(&format!(
            "UPDATE keys SET is_blacklisted = NOT is_blacklisted \
             WHERE peer_id = {a_on_b} AND peer_key_id = {key}"
        ))
        .await;
    }

    let report = verify(&b, a_on_b).await;
    assert_eq!(
        differing(&report),
        BTreeMap::from([("keys".to_owned(), edited.to_vec())]),
        "{report:?}"
    );
    // The whole range, its buckets, then the differing buckets' objects:
    // a call each for the keys, one for each other class.
    let v = report.verify.as_ref().unwrap();
    assert_eq!(v.digest_calls, 3 + 4, "{v:?}");
    let again = verify(&b, a_on_b).await;
    assert_eq!(differing(&again), BTreeMap::new(), "{again:?}");
}
