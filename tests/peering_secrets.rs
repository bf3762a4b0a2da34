//! GetPeerData never lets a secret out: no person password (neither the
//! plain text nor its hash), verification key or expiry, no node key, boot
//! nonce or session, in any decoded message or its bytes; nodes with a
//! slice whitelist and system slices are left out. On both backends.

mod common;

use common::objects::{node, site};
use common::rows::Rows;
use common::{Backend, TestServer};
use fedreg::proto::v1::{self as pb, peer_data_chunk::Part};
use prost::Message;

const PASSWORD: &str = "correct-horse-battery-staple";
const VERIFICATION_KEY: &str = "verification-key-1f2e3d";
const VERIFICATION_EXPIRES: i64 = 4_102_444_813;
const BOOT_NONCE: &str = "boot-nonce-9a8b7c";
const NODE_KEY: &str = "node-key-6d5e4f";
const SESSION: &str = "session-3c2b1a";

/// The whole GetPeerData stream as `token` gets it.
async fn dump(server: &TestServer, token: &str) -> Vec<pb::PeerDataChunk> {
    let mut stream = server
        .peering_as(Some(token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .expect("GetPeerData")
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        chunks.push(chunk);
    }
    chunks
}

async fn secrets_never_leave(backend: Backend) {
    let server = TestServer::start_named(backend, "plc1").await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let ada = api
        .create_person(pb::CreatePersonRequest {
            email: "ada@inria.fr".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            enabled: Some(true),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("create person")
        .into_inner();
    api.add_person_to_site(pb::PersonSiteRequest {
        person_id: ada.person_id,
        site_id,
        is_primary: true,
    })
    .await
    .unwrap();
    let open_node = node(&mut api, site_id, "n1.inria.fr").await;
    let reserved_node = node(&mut api, site_id, "n2.inria.fr").await;
    let experiment = api
        .create_slice(pb::CreateSliceRequest {
            name: "inria_exp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    api.create_slice(pb::CreateSliceRequest {
        name: "inria_sys".into(),
        is_system: true,
        ..Default::default()
    })
    .await
    .unwrap();
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: reserved_node,
        slice_id: experiment.slice_id,
    })
    .await
    .unwrap();
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: experiment.slice_id,
        node_ids: vec![open_node, reserved_node],
    })
    .await
    .unwrap();
    // The secrets that only the registry's own services set (the password
    // reset flow and the boot manager, outside the admin API).
    let rows = Rows::of(&server);
    rows.set_verification(ada.person_id, VERIFICATION_KEY, VERIFICATION_EXPIRES)
        .await;
    rows.set_node_secrets(BOOT_NONCE, NODE_KEY, SESSION).await;
    let hash = rows
        .person_row(ada.person_id)
        .await
        .password_hash
        .expect("password stored");

    // As a peer and as an admin calling by hand.
    let peer_id = common::peers::insert_peer(&server, "plc2").await;
    let peer_token = server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "plc2".into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    for token in [peer_token.as_str(), server.admin_token.as_str()] {
        let chunks = dump(&server, token).await;
        let secrets = [
            PASSWORD.to_owned(),
            hash.clone(),
            VERIFICATION_KEY.to_owned(),
            VERIFICATION_EXPIRES.to_string(),
            BOOT_NONCE.to_owned(),
            NODE_KEY.to_owned(),
            SESSION.to_owned(),
        ];
        let (mut persons, mut nodes, mut slices) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in &chunks {
            let decoded = format!("{chunk:?}");
            let bytes = chunk.encode_to_vec();
            for secret in &secrets {
                assert!(!decoded.contains(secret.as_str()), "{secret} in {decoded}");
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in the bytes of {decoded}"
                );
            }
            if let Some(Part::Batch(batch)) = &chunk.part {
                persons.extend(batch.persons.iter().map(|p| p.email.clone()));
                nodes.extend(batch.nodes.iter().map(|n| n.hostname.clone()));
                slices.extend(batch.slices.iter().cloned());
            }
        }
        // The objects are there; the whitelisted node and the system slice
        // are not, and the exported slice does not list the left-out node.
        assert_eq!(persons, ["ada@inria.fr"]);
        assert_eq!(nodes, ["n1.inria.fr"]);
        let names: Vec<&str> = slices.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["inria_exp"]);
        assert_eq!(slices[0].node_ids, [open_node]);
    }
}

backend_tests!(secrets_never_leave);
