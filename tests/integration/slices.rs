//! Slices through the admin API: create, get, list with pages and scopes,
//! update, delete, every validation error, the read-only rule for slices
//! cached from peers, the nodes of a slice (all or nothing), its persons
//! (local users in a peer's slice too), the node
//! whitelist and the cascades; on both backends.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::objects::{
    Api, WithPeer, get_node, get_site, get_slice, node, node_named, site, slice, slice_named,
};
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::{self as pb, get_slice_request::Key};
use prost_types::Timestamp;
use tonic::Code;

const WEEK: i64 = 7 * 24 * 3600;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn new_slice(name: &str) -> pb::CreateSliceRequest {
    pb::CreateSliceRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn nodes_req(slice_id: i64, node_ids: &[i64]) -> pb::SliceNodesRequest {
    pb::SliceNodesRequest {
        slice_id,
        node_ids: node_ids.to_vec(),
    }
}

async fn add_nodes(api: &mut Api, slice_id: i64, node_ids: &[i64]) -> pb::Slice {
    api.add_nodes_to_slice(nodes_req(slice_id, node_ids))
        .await
        .unwrap()
        .into_inner()
}

async fn create_get_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    site(&mut api, "inria.sophia").await;

    let before = now();
    let created = api
        .create_slice(new_slice("inria_exp.one_2"))
        .await
        .unwrap()
        .into_inner();
    assert!(created.slice_id > 0);
    assert_eq!(created.name, "inria_exp.one_2");
    assert_eq!(created.site_id, site_id, "owned by the site of its prefix");
    assert_eq!(created.instantiation, "plc-instantiated", "default");
    assert_eq!(created.max_nodes, 100, "default");
    assert!(!created.is_system);
    assert_eq!(created.creator_person_id, None);
    assert!(created.origin.is_none(), "a created slice is local");
    let created_at = created.created.unwrap().seconds;
    assert!((before..=now()).contains(&created_at));
    let expires = created.expires.unwrap().seconds;
    assert_eq!(expires - created_at, 4 * WEEK, "default lifetime");
    assert!(created.node_ids.is_empty() && created.person_ids.is_empty());

    let dotted = api
        .create_slice(pb::CreateSliceRequest {
            instantiation: "delegated".into(),
            url: "https://exp.example.org".into(),
            description: "An experiment".into(),
            max_nodes: Some(0),
            is_system: true,
            expires: at(now() + WEEK),
            ..new_slice("inria.sophia_exp")
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(dotted.site_id, site_id, "owned by inria.sophia");
    assert_eq!(dotted.instantiation, "delegated");
    assert_eq!(dotted.url, "https://exp.example.org");
    assert_eq!(dotted.description, "An experiment");
    assert_eq!(dotted.max_nodes, 0);
    assert!(dotted.is_system);

    assert_eq!(
        get_slice(&mut api, created.slice_id).await.unwrap(),
        created
    );
    assert_eq!(slice_named(&mut api, "inria_exp.one_2").await, created);
    assert_eq!(
        get_site(&mut api, site_id).await.unwrap().slice_ids,
        [created.slice_id]
    );

    let new_expiry = now() + 6 * WEEK;
    let updated = api
        .update_slice(pb::UpdateSliceRequest {
            slice_id: created.slice_id,
            instantiation: Some("nm-controller".into()),
            description: Some("Changed".into()),
            max_nodes: Some(7),
            expires: at(new_expiry),
            is_system: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.instantiation, "nm-controller");
    assert_eq!(updated.description, "Changed");
    assert_eq!(updated.max_nodes, 7);
    assert_eq!(updated.expires.unwrap().seconds, new_expiry);
    assert!(updated.is_system);
    assert_eq!(updated.name, created.name, "unset fields stay");
    assert_eq!(updated.url, created.url);
    assert_eq!(updated.created, created.created);
    assert_eq!(
        get_slice(&mut api, created.slice_id).await.unwrap(),
        updated
    );

    api.delete_slice(pb::DeleteRequest {
        id: created.slice_id,
    })
    .await
    .unwrap();
    let id = created.slice_id.to_string();
    assert_status(
        get_slice(&mut api, created.slice_id).await,
        Code::NotFound,
        &["slice_id", &id],
    );
    assert_status(
        api.delete_slice(pb::DeleteRequest {
            id: created.slice_id,
        })
        .await,
        Code::NotFound,
        &["slice_id", &id],
    );
    assert_status(
        api.get_slice(pb::GetSliceRequest {
            key: Some(Key::Name("inria_exp.one_2".into())),
        })
        .await,
        Code::NotFound,
        &["name", "inria_exp.one_2"],
    );
    assert_status(
        api.get_slice(pb::GetSliceRequest { key: None }).await,
        Code::InvalidArgument,
        &["slice_id or name"],
    );
    // The name is free again.
    slice(&mut api, "inria_exp.one_2").await;
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    site(&mut api, "inria").await;
    let taken = api
        .create_slice(new_slice("inria_taken"))
        .await
        .unwrap()
        .into_inner();

    for bad in [
        "inria",
        "inria_",
        "_exp",
        "Inria_exp",
        "inria_Exp",
        "inria_ex-p",
        "inria_ex p",
    ] {
        assert_status(
            api.create_slice(new_slice(bad)).await,
            Code::InvalidArgument,
            &["name", bad],
        );
    }
    let long = format!("inria_{}", "x".repeat(60));
    assert_status(
        api.create_slice(new_slice(&long)).await,
        Code::InvalidArgument,
        // The start of the value only: an error never quotes a long one whole.
        &["name", &long[..30], "64"],
    );
    assert_status(
        api.create_slice(new_slice("nosuchsite_exp")).await,
        Code::InvalidArgument,
        &["name", "nosuchsite_exp", "login_base"],
    );
    assert_status(
        api.create_slice(new_slice("inria_taken")).await,
        Code::AlreadyExists,
        &["name", "inria_taken"],
    );
    assert_status(
        api.create_slice(pb::CreateSliceRequest {
            instantiation: "instantiated".into(),
            ..new_slice("inria_new")
        })
        .await,
        Code::InvalidArgument,
        &["instantiation", "instantiated", "plc-instantiated"],
    );
    assert_status(
        api.create_slice(pb::CreateSliceRequest {
            max_nodes: Some(-1),
            ..new_slice("inria_new")
        })
        .await,
        Code::InvalidArgument,
        &["max_nodes", "-1"],
    );
    let past = now() - 60;
    assert_status(
        api.create_slice(pb::CreateSliceRequest {
            expires: at(past),
            ..new_slice("inria_new")
        })
        .await,
        Code::InvalidArgument,
        &["expires", &past.to_string()],
    );
    assert_status(
        api.create_slice(pb::CreateSliceRequest {
            url: "u".repeat(255),
            ..new_slice("inria_new")
        })
        .await,
        Code::InvalidArgument,
        &["url", "254"],
    );
    assert_status(
        api.create_slice(pb::CreateSliceRequest {
            description: "d".repeat(2049),
            ..new_slice("inria_new")
        })
        .await,
        Code::InvalidArgument,
        &["description", "2048"],
    );

    let change = |f: fn(&mut pb::UpdateSliceRequest)| {
        let mut req = pb::UpdateSliceRequest {
            slice_id: taken.slice_id,
            ..Default::default()
        };
        f(&mut req);
        req
    };
    assert_status(
        api.update_slice(change(|r| r.instantiation = Some("sometimes".into())))
            .await,
        Code::InvalidArgument,
        &["instantiation", "sometimes"],
    );
    assert_status(
        api.update_slice(change(|r| r.max_nodes = Some(-5))).await,
        Code::InvalidArgument,
        &["max_nodes", "-5"],
    );
    assert_status(
        api.update_slice(change(|r| r.expires = at(1000))).await,
        Code::InvalidArgument,
        &["expires", "1000"],
    );
    assert_status(
        api.update_slice(pb::UpdateSliceRequest {
            slice_id: 9999,
            max_nodes: Some(1),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["slice_id", "9999"],
    );

    // Nothing of the failed calls was written.
    let all = api
        .list_slices(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.slices, [taken]);
}

/// Makes `names` at the peer's site "princeton" and refreshes; returns
/// their ids on the local registry.
async fn foreign_slices(with: &WithPeer, api: &mut Api, names: &[&str]) -> Vec<i64> {
    let mut peer_api = with.peer.registry().await;
    site(&mut peer_api, "princeton").await;
    for name in names {
        slice(&mut peer_api, name).await;
    }
    with.refresh().await;
    let mut ids = Vec::new();
    for name in names {
        ids.push(slice_named(api, name).await.slice_id);
    }
    ids
}

async fn pagination_and_filters(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    site(&mut api, "inria").await;
    for i in 0..5 {
        slice(&mut api, &format!("inria_s{i}")).await;
    }
    let foreign = foreign_slices(&with, &mut api, &["princeton_a", "princeton_b"]).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_slices(pb::ListRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.slices.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        seen,
        [
            "inria_s0",
            "inria_s1",
            "inria_s2",
            "inria_s3",
            "inria_s4",
            "princeton_a",
            "princeton_b"
        ]
    );
    assert_eq!(pages, 4);

    let list = |scope: pb::Scope, peer_id: Option<i64>| pb::ListRequest {
        scope: scope as i32,
        peer_id,
        ..Default::default()
    };
    let local = api
        .list_slices(list(pb::Scope::Local, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.slices.len(), 5);
    assert!(local.slices.iter().all(|s| s.origin.is_none()));
    let cached = api
        .list_slices(list(pb::Scope::Foreign, None))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = cached.slices.iter().map(|s| s.slice_id).collect();
    assert_eq!(ids, foreign);
    assert!(
        cached
            .slices
            .iter()
            .all(|s| s.origin.is_some_and(|o| o.peer_id == with.peer_id))
    );
    let of_peer = api
        .list_slices(list(pb::Scope::Unspecified, Some(with.peer_id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_peer.slices, cached.slices);
    let of_other = api
        .list_slices(list(pb::Scope::Foreign, Some(with.peer_id + 100)))
        .await
        .unwrap()
        .into_inner();
    assert!(of_other.slices.is_empty());

    assert_status(
        api.list_slices(pb::ListRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token", "garbage"],
    );
    assert_status(
        api.list_slices(pb::ListRequest {
            scope: 7,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["scope", "7"],
    );
}

async fn foreign_slices_are_read_only(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let mut peer_api = with.peer.registry().await;
    let peer_site = site(&mut peer_api, "princeton").await;
    node(&mut peer_api, peer_site, "f1.princeton.edu").await;
    slice(&mut peer_api, "princeton_x").await;
    with.refresh().await;
    let foreign = slice_named(&mut api, "princeton_x").await.slice_id;
    let foreign_node = node_named(&mut api, "f1.princeton.edu").await.node_id;
    let site_id = site(&mut api, "inria").await;
    let local_node = node(&mut api, site_id, "n1.inria.fr").await;

    let before = get_slice(&mut api, foreign).await.unwrap();
    assert_eq!(before.origin.unwrap().peer_id, with.peer_id);
    assert_status(
        api.update_slice(pb::UpdateSliceRequest {
            slice_id: foreign,
            max_nodes: Some(1),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &["princeton_x", "read-only"],
    );
    assert_status(
        api.delete_slice(pb::DeleteRequest { id: foreign }).await,
        Code::FailedPrecondition,
        &["princeton_x", "read-only"],
    );
    // Neither local nor foreign nodes join a foreign slice, nor leave it.
    for node_id in [local_node, foreign_node] {
        assert_status(
            api.add_nodes_to_slice(nodes_req(foreign, &[node_id])).await,
            Code::FailedPrecondition,
            &["princeton_x", "read-only"],
        );
        assert_status(
            api.remove_nodes_from_slice(nodes_req(foreign, &[node_id]))
                .await,
            Code::FailedPrecondition,
            &["princeton_x", "read-only"],
        );
    }
    assert_eq!(get_slice(&mut api, foreign).await.unwrap(), before);

    // Slices are created at local sites only.
    assert_status(
        api.create_slice(new_slice("princeton_new")).await,
        Code::FailedPrecondition,
        &["name", "princeton_new", "princeton"],
    );
}

async fn nodes_of_a_slice(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let mut peer_api = with.peer.registry().await;
    let peer_site = site(&mut peer_api, "princeton").await;
    node(&mut peer_api, peer_site, "f1.princeton.edu").await;
    with.refresh().await;
    let foreign = node_named(&mut api, "f1.princeton.edu").await.node_id;
    let site_id = site(&mut api, "inria").await;
    let n1 = node(&mut api, site_id, "n1.inria.fr").await;
    let n2 = node(&mut api, site_id, "n2.inria.fr").await;
    let n3 = node(&mut api, site_id, "n3.inria.fr").await;
    let s = slice(&mut api, "inria_exp").await;
    let other = slice(&mut api, "inria_other").await;

    // Several nodes at once, a foreign one among them, duplicates folded.
    let added = add_nodes(&mut api, s, &[n2, foreign, n1, n2]).await;
    let mut expected = vec![n1, n2, foreign];
    expected.sort();
    assert_eq!(added.node_ids, expected);
    assert_eq!(get_node(&mut api, foreign).await.unwrap().slice_ids, [s]);
    assert_eq!(get_node(&mut api, n1).await.unwrap().slice_ids, [s]);
    // Adding nodes already there is no error.
    let again = add_nodes(&mut api, s, &[n1, n3]).await;
    let mut expected = vec![n1, n2, n3, foreign];
    expected.sort();
    assert_eq!(again.node_ids, expected);
    add_nodes(&mut api, other, &[n1]).await;
    assert_eq!(get_node(&mut api, n1).await.unwrap().slice_ids, [s, other]);

    // An unknown node fails the whole call, naming it; nothing is written.
    let fresh = slice(&mut api, "inria_fresh").await;
    assert_status(
        api.add_nodes_to_slice(nodes_req(fresh, &[n1, 9999, n2, 9998]))
            .await,
        Code::NotFound,
        &["node_id", "9999", "9998"],
    );
    assert!(
        get_slice(&mut api, fresh)
            .await
            .unwrap()
            .node_ids
            .is_empty()
    );
    assert_status(
        api.add_nodes_to_slice(nodes_req(fresh, &[])).await,
        Code::InvalidArgument,
        &["node_ids"],
    );
    assert_status(
        api.add_nodes_to_slice(nodes_req(9997, &[n1])).await,
        Code::NotFound,
        &["slice_id", "9997"],
    );

    // Removing: several at once; unknown ids fail the whole call.
    assert_status(
        api.remove_nodes_from_slice(nodes_req(s, &[n1, 9999])).await,
        Code::NotFound,
        &["node_id", "9999"],
    );
    assert_eq!(get_slice(&mut api, s).await.unwrap().node_ids.len(), 4);
    let removed = api
        .remove_nodes_from_slice(nodes_req(s, &[n1, foreign]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.node_ids, [n2, n3]);
    assert!(
        get_node(&mut api, foreign)
            .await
            .unwrap()
            .slice_ids
            .is_empty()
    );
    assert_eq!(get_node(&mut api, n1).await.unwrap().slice_ids, [other]);
    // Removing nodes not in the slice is no error.
    let again = api
        .remove_nodes_from_slice(nodes_req(s, &[n1, n2]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.node_ids, [n3]);
    assert_status(
        api.remove_nodes_from_slice(nodes_req(s, &[])).await,
        Code::InvalidArgument,
        &["node_ids"],
    );
    assert_status(
        api.remove_nodes_from_slice(nodes_req(9997, &[n1])).await,
        Code::NotFound,
        &["slice_id", "9997"],
    );
}

fn person_req(slice_id: i64, person_id: i64) -> pb::SlicePersonRequest {
    pb::SlicePersonRequest {
        slice_id,
        person_id,
    }
}

async fn person(api: &mut Api, email: &str) -> i64 {
    api.create_person(pb::CreatePersonRequest {
        email: email.into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        enabled: Some(true),
        ..Default::default()
    })
    .await
    .expect("create person")
    .into_inner()
    .person_id
}

async fn persons_of_a_slice(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let mut peer_api = with.peer.registry().await;
    site(&mut peer_api, "princeton").await;
    person(&mut peer_api, "bob@princeton.edu").await;
    slice(&mut peer_api, "princeton_exp").await;
    with.refresh().await;
    let foreign_slice = slice_named(&mut api, "princeton_exp").await.slice_id;
    let foreign_person = api
        .get_person(pb::GetPersonRequest {
            key: Some(pb::get_person_request::Key::Email(
                "bob@princeton.edu".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .person_id;
    site(&mut api, "inria").await;
    let local_person = person(&mut api, "ada@inria.fr").await;
    let local_slice = slice(&mut api, "inria_exp").await;

    // A local person in a local slice; adding a member again is no error.
    let joined = api
        .add_person_to_slice(person_req(local_slice, local_person))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.person_ids, [local_person]);
    let again = api
        .add_person_to_slice(person_req(local_slice, local_person))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.person_ids, [local_person]);
    // A peer's user in a local slice, a local user in a peer's slice.
    let joined = api
        .add_person_to_slice(person_req(local_slice, foreign_person))
        .await
        .unwrap()
        .into_inner();
    let mut expected = vec![local_person, foreign_person];
    expected.sort();
    assert_eq!(joined.person_ids, expected);
    let joined = api
        .add_person_to_slice(person_req(foreign_slice, local_person))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(joined.person_ids, [local_person]);
    let ada = api
        .get_person(pb::GetPersonRequest {
            key: Some(pb::get_person_request::Key::PersonId(local_person)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut expected = vec![local_slice, foreign_slice];
    expected.sort();
    assert_eq!(ada.slice_ids, expected);

    // A peer's person in a peer's slice is that peer's business.
    assert_status(
        api.add_person_to_slice(person_req(foreign_slice, foreign_person))
            .await,
        Code::FailedPrecondition,
        &["princeton_exp", "bob@princeton.edu"],
    );
    assert_status(
        api.remove_person_from_slice(person_req(foreign_slice, foreign_person))
            .await,
        Code::FailedPrecondition,
        &["princeton_exp", "bob@princeton.edu"],
    );
    assert_status(
        api.add_person_to_slice(person_req(9997, local_person))
            .await,
        Code::NotFound,
        &["slice_id", "9997"],
    );
    assert_status(
        api.add_person_to_slice(person_req(local_slice, 9998)).await,
        Code::NotFound,
        &["person_id", "9998"],
    );

    // A refresh leaves the memberships made here alone.
    with.refresh().await;
    assert_eq!(
        get_slice(&mut api, foreign_slice).await.unwrap().person_ids,
        [local_person]
    );
    assert_eq!(
        get_slice(&mut api, local_slice)
            .await
            .unwrap()
            .person_ids
            .len(),
        2
    );

    // Removing: a member, then a non-member (no error).
    let left = api
        .remove_person_from_slice(person_req(foreign_slice, local_person))
        .await
        .unwrap()
        .into_inner();
    assert!(left.person_ids.is_empty());
    let left = api
        .remove_person_from_slice(person_req(foreign_slice, local_person))
        .await
        .unwrap()
        .into_inner();
    assert!(left.person_ids.is_empty());
    let left = api
        .remove_person_from_slice(person_req(local_slice, foreign_person))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.person_ids, [local_person]);
    assert_status(
        api.remove_person_from_slice(person_req(local_slice, 9998))
            .await,
        Code::NotFound,
        &["person_id", "9998"],
    );
}

async fn whitelist_restricts_slices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let open = node(&mut api, site_id, "open.inria.fr").await;
    let closed = node(&mut api, site_id, "closed.inria.fr").await;
    let allowed = slice(&mut api, "inria_allowed").await;
    let refused = slice(&mut api, "inria_refused").await;
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: closed,
        slice_id: allowed,
    })
    .await
    .unwrap();

    let closed_id = closed.to_string();
    assert_status(
        api.add_nodes_to_slice(nodes_req(refused, &[open, closed]))
            .await,
        Code::FailedPrecondition,
        &["node_id", &closed_id, "whitelist", "inria_refused"],
    );
    assert!(
        get_slice(&mut api, refused)
            .await
            .unwrap()
            .node_ids
            .is_empty(),
        "all or nothing"
    );
    let ok = add_nodes(&mut api, allowed, &[open, closed]).await;
    assert_eq!(ok.node_ids, [open, closed]);
    add_nodes(&mut api, refused, &[open]).await;
}

async fn deleting_a_slice_drops_its_memberships(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let n = node(&mut api, site_id, "n1.inria.fr").await;
    let s = slice(&mut api, "inria_gone").await;
    let kept = slice(&mut api, "inria_kept").await;
    add_nodes(&mut api, s, &[n]).await;
    add_nodes(&mut api, kept, &[n]).await;
    for slice_id in [s, kept] {
        api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
            node_id: n,
            slice_id,
        })
        .await
        .unwrap();
    }

    api.delete_slice(pb::DeleteRequest { id: s }).await.unwrap();
    let after = get_node(&mut api, n).await.unwrap();
    assert_eq!(after.slice_ids, [kept]);
    assert_eq!(after.slice_ids_whitelist, [kept]);
    assert_eq!(get_site(&mut api, site_id).await.unwrap().slice_ids, [kept]);
}

async fn deleting_a_site_deletes_its_nodes_and_slices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let gone = site(&mut api, "gone").await;
    let kept = site(&mut api, "kept").await;
    let gone_node = node(&mut api, gone, "n.gone.org").await;
    let kept_node = node(&mut api, kept, "n.kept.org").await;
    let gone_slice = slice(&mut api, "gone_exp").await;
    let kept_slice = slice(&mut api, "kept_exp").await;
    // Memberships across the two sites, both ways.
    add_nodes(&mut api, gone_slice, &[gone_node, kept_node]).await;
    add_nodes(&mut api, kept_slice, &[gone_node, kept_node]).await;
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: kept_node,
        slice_id: gone_slice,
    })
    .await
    .unwrap();

    api.delete_site(pb::DeleteRequest { id: gone })
        .await
        .unwrap();
    assert_status(
        get_node(&mut api, gone_node).await,
        Code::NotFound,
        &["node_id", &gone_node.to_string()],
    );
    assert_status(
        get_slice(&mut api, gone_slice).await,
        Code::NotFound,
        &["slice_id", &gone_slice.to_string()],
    );
    let node_after = get_node(&mut api, kept_node).await.unwrap();
    assert_eq!(node_after.slice_ids, [kept_slice]);
    assert!(node_after.slice_ids_whitelist.is_empty());
    assert_eq!(
        get_slice(&mut api, kept_slice).await.unwrap().node_ids,
        [kept_node]
    );
    let nodes = api
        .list_nodes(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let slices = api
        .list_slices(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner()
        .slices;
    assert_eq!(slices.len(), 1);
}

backend_tests!(
    create_get_update_delete,
    validation_errors,
    pagination_and_filters,
    foreign_slices_are_read_only,
    nodes_of_a_slice,
    persons_of_a_slice,
    whitelist_restricts_slices,
    deleting_a_slice_drops_its_memberships,
    deleting_a_site_deletes_its_nodes_and_slices,
);
