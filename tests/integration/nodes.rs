//! Nodes through the admin API: create, get, list with pages and scopes,
//! update, delete, every validation error, the read-only rule for nodes
//! cached from peers, the slice whitelist and the cascades; on both backends.

use crate::common::objects::{
    Api, WithPeer, get_node as get, get_site, new_node as node, node_named, site, slice,
};
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::{self as pb, get_node_request::Key};
use tonic::Code;

/// Local and foreign nodes on `with.local`: `local` hostnames at site
/// "inria", `foreign` hostnames made at the peer's site "princeton" and
/// refreshed. Returns the ids of the foreign ones here.
async fn foreign_nodes(with: &WithPeer, api: &mut Api, hostnames: &[&str]) -> Vec<i64> {
    let mut peer_api = with.peer.registry().await;
    let peer_site = site(&mut peer_api, "princeton").await;
    for hostname in hostnames {
        crate::common::objects::node(&mut peer_api, peer_site, hostname).await;
    }
    with.refresh().await;
    let mut ids = Vec::new();
    for hostname in hostnames {
        ids.push(node_named(api, hostname).await.node_id);
    }
    ids
}

async fn create_get_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;

    let created = api
        .create_node(pb::CreateNodeRequest {
            model: "Dell R610".into(),
            version: "5.0".into(),
            ssh_rsa_key: "ssh-rsa AAAA host".into(),
            ..node(site_id, "Node1.Inria.FR")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.node_id > 0);
    assert_eq!(created.hostname, "node1.inria.fr", "stored lowercase");
    assert_eq!(created.site_id, site_id);
    assert_eq!(created.node_type, "regular", "default node type");
    assert_eq!(created.boot_state, "boot", "default boot state");
    assert_eq!(
        (created.model.as_str(), created.version.as_str()),
        ("Dell R610", "5.0")
    );
    assert_eq!(created.ssh_rsa_key, "ssh-rsa AAAA host");
    assert!(!created.verified);
    assert!(created.origin.is_none(), "a created node is local");
    assert!(created.date_created.is_some() && created.last_contact.is_none());
    assert!(created.slice_ids.is_empty() && created.slice_ids_whitelist.is_empty());

    let explicit = api
        .create_node(pb::CreateNodeRequest {
            node_type: "reservable".into(),
            boot_state: "safeboot".into(),
            ..node(site_id, "node2.inria.fr")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (explicit.node_type.as_str(), explicit.boot_state.as_str()),
        ("reservable", "safeboot")
    );

    assert_eq!(get(&mut api, created.node_id).await.unwrap(), created);
    let by_name = api
        .get_node(pb::GetNodeRequest {
            key: Some(Key::Hostname("NODE1.inria.fr".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name, created, "hostname lookup ignores case");
    let site_msg = get_site(&mut api, site_id).await.unwrap();
    assert_eq!(site_msg.node_ids, [created.node_id, explicit.node_id]);

    let updated = api
        .update_node(pb::UpdateNodeRequest {
            node_id: created.node_id,
            hostname: Some("Node1b.inria.fr".into()),
            boot_state: Some("reinstall".into()),
            node_type: Some("reservable".into()),
            run_level: Some("3".into()),
            verified: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.hostname, "node1b.inria.fr");
    assert_eq!(updated.boot_state, "reinstall");
    assert_eq!(updated.node_type, "reservable");
    assert_eq!(updated.run_level, "3");
    assert!(updated.verified);
    assert_eq!(updated.model, "Dell R610", "unset fields stay");
    assert_eq!(updated.ssh_rsa_key, created.ssh_rsa_key);
    assert_eq!(updated.date_created, created.date_created);
    assert_eq!(get(&mut api, created.node_id).await.unwrap(), updated);
    // Same hostname again is not a conflict with itself.
    api.update_node(pb::UpdateNodeRequest {
        node_id: created.node_id,
        hostname: Some("node1b.inria.fr".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    api.delete_node(pb::DeleteRequest {
        id: created.node_id,
    })
    .await
    .unwrap();
    assert_status(
        get(&mut api, created.node_id).await,
        Code::NotFound,
        &["node_id", &created.node_id.to_string()],
    );
    assert_status(
        api.delete_node(pb::DeleteRequest {
            id: created.node_id,
        })
        .await,
        Code::NotFound,
        &["node_id", &created.node_id.to_string()],
    );
    assert_status(
        api.get_node(pb::GetNodeRequest {
            key: Some(Key::Hostname("node1b.inria.fr".into())),
        })
        .await,
        Code::NotFound,
        &["hostname", "node1b.inria.fr"],
    );
    assert_status(
        api.get_node(pb::GetNodeRequest { key: None }).await,
        Code::InvalidArgument,
        &["node_id or hostname"],
    );
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let taken = api
        .create_node(node(site_id, "taken.inria.fr"))
        .await
        .unwrap()
        .into_inner();

    for bad in ["nodot", "bad_host.inria.fr", "-a.inria.fr", "a..b.fr", ""] {
        assert_status(
            api.create_node(node(site_id, bad)).await,
            Code::InvalidArgument,
            &["hostname", bad],
        );
    }
    assert_status(
        api.create_node(node(site_id, "TAKEN.inria.fr")).await,
        Code::AlreadyExists,
        &["hostname", "taken.inria.fr"],
    );
    assert_status(
        api.create_node(node(9999, "new.inria.fr")).await,
        Code::NotFound,
        &["site_id", "9999"],
    );
    assert_status(
        api.create_node(pb::CreateNodeRequest {
            node_type: "virtual".into(),
            ..node(site_id, "new.inria.fr")
        })
        .await,
        Code::InvalidArgument,
        &["node_type", "virtual", "regular", "reservable"],
    );
    assert_status(
        api.create_node(pb::CreateNodeRequest {
            boot_state: "dbg".into(),
            ..node(site_id, "new.inria.fr")
        })
        .await,
        Code::InvalidArgument,
        &["boot_state", "dbg", "safeboot"],
    );
    assert_status(
        api.create_node(pb::CreateNodeRequest {
            model: "m".repeat(300),
            ..node(site_id, "new.inria.fr")
        })
        .await,
        Code::InvalidArgument,
        &["model", "255"],
    );
    assert_status(
        api.create_node(pb::CreateNodeRequest {
            version: "v".repeat(65),
            ..node(site_id, "new.inria.fr")
        })
        .await,
        Code::InvalidArgument,
        &["version", "64"],
    );
    assert_status(
        api.create_node(pb::CreateNodeRequest {
            ssh_rsa_key: "k".repeat(1025),
            ..node(site_id, "new.inria.fr")
        })
        .await,
        Code::InvalidArgument,
        &["ssh_rsa_key", "1024"],
    );

    let other = api
        .create_node(node(site_id, "other.inria.fr"))
        .await
        .unwrap()
        .into_inner();
    let change = |f: fn(&mut pb::UpdateNodeRequest)| {
        let mut req = pb::UpdateNodeRequest {
            node_id: other.node_id,
            ..Default::default()
        };
        f(&mut req);
        req
    };
    assert_status(
        api.update_node(change(|r| r.hostname = Some("Taken.inria.fr".into())))
            .await,
        Code::AlreadyExists,
        &["hostname", "taken.inria.fr"],
    );
    assert_status(
        api.update_node(change(|r| r.hostname = Some("no_way".into())))
            .await,
        Code::InvalidArgument,
        &["hostname", "no_way"],
    );
    assert_status(
        api.update_node(change(|r| r.boot_state = Some("rins".into())))
            .await,
        Code::InvalidArgument,
        &["boot_state", "rins"],
    );
    assert_status(
        api.update_node(change(|r| r.node_type = Some("virtual".into())))
            .await,
        Code::InvalidArgument,
        &["node_type", "virtual"],
    );
    assert_status(
        api.update_node(change(|r| r.run_level = Some("r".repeat(33))))
            .await,
        Code::InvalidArgument,
        &["run_level", "32"],
    );
    assert_status(
        api.update_node(pb::UpdateNodeRequest {
            node_id: 9999,
            model: Some("x".into()),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["node_id", "9999"],
    );

    // Nothing of the failed calls was written.
    let all = api
        .list_nodes(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.nodes, [taken, other]);
}

async fn pagination_and_filters(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let site_id = site(&mut api, "inria").await;
    for i in 0..6 {
        api.create_node(node(site_id, &format!("n{i}.inria.fr")))
            .await
            .unwrap();
    }
    let foreign = foreign_nodes(&with, &mut api, &["f1.princeton.edu", "f2.princeton.edu"]).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_nodes(pb::ListRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.nodes.into_iter().map(|n| n.hostname));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..6).map(|i| format!("n{i}.inria.fr")).collect();
    expected.extend(["f1.princeton.edu".into(), "f2.princeton.edu".into()]);
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    let list = |scope: pb::Scope, peer_id: Option<i64>| pb::ListRequest {
        scope: scope as i32,
        peer_id,
        ..Default::default()
    };
    let local = api
        .list_nodes(list(pb::Scope::Local, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.nodes.len(), 6);
    assert!(local.nodes.iter().all(|n| n.origin.is_none()));
    let cached = api
        .list_nodes(list(pb::Scope::Foreign, None))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = cached.nodes.iter().map(|n| n.node_id).collect();
    assert_eq!(ids, foreign);
    assert!(
        cached
            .nodes
            .iter()
            .all(|n| n.origin.is_some_and(|o| o.peer_id == with.peer_id))
    );
    let of_peer = api
        .list_nodes(list(pb::Scope::Unspecified, Some(with.peer_id)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_peer.nodes, cached.nodes);
    let of_other = api
        .list_nodes(list(pb::Scope::Foreign, Some(with.peer_id + 100)))
        .await
        .unwrap()
        .into_inner();
    assert!(of_other.nodes.is_empty());

    assert_status(
        api.list_nodes(pb::ListRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token", "garbage"],
    );
    assert_status(
        api.list_nodes(pb::ListRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_size", "-1"],
    );
    assert_status(
        api.list_nodes(list(pb::Scope::Local, Some(with.peer_id)))
            .await,
        Code::InvalidArgument,
        &["peer_id", &with.peer_id.to_string()],
    );
}

async fn foreign_nodes_are_read_only(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let foreign = foreign_nodes(&with, &mut api, &["f1.princeton.edu"]).await[0];

    let before = get(&mut api, foreign).await.unwrap();
    assert_eq!(before.origin.unwrap().peer_id, with.peer_id);
    assert_status(
        api.update_node(pb::UpdateNodeRequest {
            node_id: foreign,
            boot_state: Some("disabled".into()),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &["f1.princeton.edu", "read-only"],
    );
    assert_status(
        api.delete_node(pb::DeleteRequest { id: foreign }).await,
        Code::FailedPrecondition,
        &["f1.princeton.edu", "read-only"],
    );
    assert_eq!(get(&mut api, foreign).await.unwrap(), before);

    // Nodes are created at local sites only.
    let foreign_site = before.site_id;
    assert_status(
        api.create_node(node(foreign_site, "new.princeton.edu"))
            .await,
        Code::FailedPrecondition,
        &["site_id", &foreign_site.to_string(), "princeton"],
    );
    // A hostname cached from a peer is taken.
    let site_id = site(&mut api, "inria").await;
    assert_status(
        api.create_node(node(site_id, "f1.princeton.edu")).await,
        Code::AlreadyExists,
        &["hostname", "f1.princeton.edu"],
    );
}

async fn slice_whitelist(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let site_id = site(&mut api, "inria").await;
    let n = crate::common::objects::node(&mut api, site_id, "n1.inria.fr").await;
    let a = slice(&mut api, "inria_a").await;
    let b = slice(&mut api, "inria_b").await;
    let pair = |node_id, slice_id| pb::NodeWhitelistRequest { node_id, slice_id };

    let with_b = api
        .add_slice_to_node_whitelist(pair(n, b))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_b.slice_ids_whitelist, [b]);
    api.add_slice_to_node_whitelist(pair(n, a)).await.unwrap();
    let again = api
        .add_slice_to_node_whitelist(pair(n, a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.slice_ids_whitelist,
        [a, b],
        "adding twice is no error"
    );
    assert_eq!(get(&mut api, n).await.unwrap().slice_ids_whitelist, [a, b]);

    let without_a = api
        .remove_slice_from_node_whitelist(pair(n, a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(without_a.slice_ids_whitelist, [b]);
    let again = api
        .remove_slice_from_node_whitelist(pair(n, a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.slice_ids_whitelist, [b], "removing twice is no error");

    assert_status(
        api.add_slice_to_node_whitelist(pair(9999, a)).await,
        Code::NotFound,
        &["node_id", "9999"],
    );
    assert_status(
        api.add_slice_to_node_whitelist(pair(n, 9998)).await,
        Code::NotFound,
        &["slice_id", "9998"],
    );
    assert_status(
        api.remove_slice_from_node_whitelist(pair(9999, a)).await,
        Code::NotFound,
        &["node_id", "9999"],
    );
    assert_status(
        api.remove_slice_from_node_whitelist(pair(n, 9998)).await,
        Code::NotFound,
        &["slice_id", "9998"],
    );

    // Foreign nodes and slices cannot be whitelisted, nor taken off.
    let mut peer_api = with.peer.registry().await;
    let peer_site = site(&mut peer_api, "princeton").await;
    crate::common::objects::node(&mut peer_api, peer_site, "f1.princeton.edu").await;
    slice(&mut peer_api, "princeton_x").await;
    with.refresh().await;
    let foreign_node = node_named(&mut api, "f1.princeton.edu").await.node_id;
    let foreign_slice = crate::common::objects::slice_named(&mut api, "princeton_x")
        .await
        .slice_id;
    assert_status(
        api.add_slice_to_node_whitelist(pair(foreign_node, a)).await,
        Code::FailedPrecondition,
        &["f1.princeton.edu", "read-only"],
    );
    assert_status(
        api.remove_slice_from_node_whitelist(pair(foreign_node, a))
            .await,
        Code::FailedPrecondition,
        &["f1.princeton.edu", "read-only"],
    );
    assert_status(
        api.add_slice_to_node_whitelist(pair(n, foreign_slice))
            .await,
        Code::FailedPrecondition,
        &["princeton_x", "read-only"],
    );
    assert_status(
        api.remove_slice_from_node_whitelist(pair(n, foreign_slice))
            .await,
        Code::FailedPrecondition,
        &["princeton_x", "read-only"],
    );
    assert_eq!(get(&mut api, n).await.unwrap().slice_ids_whitelist, [b]);
    assert!(
        get(&mut api, foreign_node)
            .await
            .unwrap()
            .slice_ids_whitelist
            .is_empty()
    );
}

async fn deleting_a_node_drops_its_memberships(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let n1 = api
        .create_node(node(site_id, "n1.inria.fr"))
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let n2 = api
        .create_node(node(site_id, "n2.inria.fr"))
        .await
        .unwrap()
        .into_inner()
        .node_id;
    let s = slice(&mut api, "inria_a").await;
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: n1,
        slice_id: s,
    })
    .await
    .unwrap();
    let with_nodes = api
        .add_nodes_to_slice(pb::SliceNodesRequest {
            slice_id: s,
            node_ids: vec![n1, n2],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_nodes.node_ids, [n1, n2]);
    assert_eq!(get(&mut api, n1).await.unwrap().slice_ids, [s]);

    api.delete_node(pb::DeleteRequest { id: n1 }).await.unwrap();
    let after = api
        .get_slice(pb::GetSliceRequest {
            key: Some(pb::get_slice_request::Key::SliceId(s)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.node_ids, [n2]);
    let site_msg = get_site(&mut api, site_id).await.unwrap();
    assert_eq!(site_msg.node_ids, [n2]);
}

backend_tests!(
    create_get_update_delete,
    validation_errors,
    pagination_and_filters,
    foreign_nodes_are_read_only,
    slice_whitelist,
    deleting_a_node_drops_its_memberships,
);
