//! Keys through the admin API: create for a local person, get, list with
//! pages and scopes, update, delete, every validation error, and the
//! read-only rule for keys and persons cached from peers (by real
//! refreshes of a real or scripted peer); on both backends.

use crate::common::fake_peer;
use crate::common::objects::WithPeer;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::{self as pb, get_person_request};
use tonic::Code;

const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDMXwBs0ZIW1Q1d4beWmcCa8WNFRQFj71ocCCukvWbN8scCRp2sVEKwH4gRmt/MSrq9PS9SH1Kxrc5tJTCtoobmyHMsuB9wG502Sh3yAmyIypEY62o8qFdnwa/XMmHKMyYn9aRGGabtkOWYZMP5oH6ZWVhs4lKEvaV8z60MbpUpWw== rsa@host";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBP3qcUK5iASIHF/sZ9lBGUzwpgQkZiaz3m3OvQRfSbYVXcXnwsCw6g3gmKA9mKuwJtc2iB+yEsCN+d2avWX0ErE=";

/// The admin API client.
type Client = RegistryServiceClient<crate::common::Authed>;

/// A well-formed ed25519 public key line, distinct for each `n`.
fn ed25519(n: u8) -> String {
    crate::common::federation::ssh_key(n.into(), &format!("key{n}@example.org"))
}

/// Creates an enabled person (peers serve only those); returns its id.
async fn create_person(api: &mut Client, email: &str) -> i64 {
    api.create_person(pb::CreatePersonRequest {
        email: email.into(),
        first_name: "Key".into(),
        last_name: "Owner".into(),
        enabled: Some(true),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .person_id
}

async fn key_ids_of(api: &mut Client, person_id: i64) -> Vec<i64> {
    api.get_person(pb::GetPersonRequest {
        key: Some(get_person_request::Key::PersonId(person_id)),
    })
    .await
    .unwrap()
    .into_inner()
    .key_ids
}

/// The person with e-mail `email` (the local one when there are several).
async fn person_by_email(api: &mut Client, email: &str) -> pb::Person {
    api.get_person(pb::GetPersonRequest {
        key: Some(get_person_request::Key::Email(email.into())),
    })
    .await
    .unwrap_or_else(|s| panic!("person {email}: {s:?}"))
    .into_inner()
}

/// Caches on `server`, from a scripted peer `peername`, a person `f@<peername>.org`
/// (id `person_id` at the peer) owning key `key` (id `key_id` there);
/// returns the peer's id and the local ids of the person and the key.
async fn cache_person_with_key(
    server: &TestServer,
    peername: &str,
    (person_id, key_id): (i64, i64),
    key: &str,
) -> (i64, i64, i64) {
    let email = format!("f@{peername}.org");
    let peer_id = fake_peer::cache(
        server,
        peername,
        pb::PeerDataBatch {
            keys: vec![fake_peer::key(key_id, key)],
            persons: vec![pb::ExportedPerson {
                key_ids: vec![key_id],
                ..fake_peer::person(person_id, &email)
            }],
            ..Default::default()
        },
    )
    .await;
    let cached = person_by_email(&mut server.registry().await, &email).await;
    (peer_id, cached.person_id, cached.key_ids[0])
}

fn new_key(person_id: i64, key: &str) -> pb::CreateKeyRequest {
    pb::CreateKeyRequest {
        person_id,
        key_type: String::new(),
        key: key.into(),
    }
}

async fn create_get_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let owner = create_person(&mut api, "owner@example.org").await;

    let created = api
        .create_key(new_key(owner, &format!("  {RSA}\n")))
        .await
        .unwrap()
        .into_inner();
    assert!(created.key_id > 0);
    assert_eq!(created.key_type, "ssh", "the default key type");
    assert_eq!(created.key, RSA, "stored trimmed");
    assert!(!created.is_blacklisted);
    assert_eq!(created.person_id, owner);
    assert!(created.origin.is_none());
    let second = api
        .create_key(pb::CreateKeyRequest {
            key_type: "ssh".into(),
            ..new_key(owner, ECDSA)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        key_ids_of(&mut api, owner).await,
        [created.key_id, second.key_id]
    );

    let get = |key_id| pb::GetKeyRequest { key_id };
    assert_eq!(
        api.get_key(get(created.key_id)).await.unwrap().into_inner(),
        created
    );

    let blacklisted = api
        .update_key(pb::UpdateKeyRequest {
            key_id: created.key_id,
            is_blacklisted: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(blacklisted.is_blacklisted);
    assert_eq!(blacklisted.key, RSA, "unset fields stay");
    let rekeyed = api
        .update_key(pb::UpdateKeyRequest {
            key_id: created.key_id,
            key: Some(ed25519(1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rekeyed.key, ed25519(1));
    assert!(rekeyed.is_blacklisted);
    assert_eq!(rekeyed.person_id, owner);
    let unchanged = api
        .update_key(pb::UpdateKeyRequest {
            key_id: created.key_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged, rekeyed, "an empty update changes nothing");
    assert_eq!(
        api.get_key(get(created.key_id)).await.unwrap().into_inner(),
        rekeyed
    );

    api.delete_key(pb::DeleteRequest { id: created.key_id })
        .await
        .unwrap();
    assert_status(
        api.get_key(get(created.key_id)).await,
        Code::NotFound,
        &["key_id", &created.key_id.to_string()],
    );
    assert_status(
        api.delete_key(pb::DeleteRequest { id: created.key_id })
            .await,
        Code::NotFound,
        &["key_id", &created.key_id.to_string()],
    );
    assert_eq!(key_ids_of(&mut api, owner).await, [second.key_id]);
    assert_eq!(
        api.get_key(get(second.key_id)).await.unwrap().into_inner(),
        second
    );
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let owner = create_person(&mut api, "owner@example.org").await;
    let good = api
        .create_key(new_key(owner, &ed25519(1)))
        .await
        .unwrap()
        .into_inner();

    assert_status(
        api.create_key(pb::CreateKeyRequest {
            key_type: "x509".into(),
            ..new_key(owner, &ed25519(2))
        })
        .await,
        Code::InvalidArgument,
        &["key_type", "x509"],
    );
    assert_status(
        api.create_key(new_key(owner, "ssh-rsa not-base64!")).await,
        Code::InvalidArgument,
        &["key", "ssh-rsa not-base64!", "base64"],
    );
    assert_status(
        api.create_key(new_key(owner, "")).await,
        Code::InvalidArgument,
        &["key", "<algorithm> <base64>"],
    );
    assert_status(
        api.create_key(new_key(owner, "ssh-foo AAAA")).await,
        Code::InvalidArgument,
        &["key", "ssh-foo"],
    );
    let blob = ed25519(3).split(' ').nth(1).unwrap().to_owned();
    assert_status(
        api.create_key(new_key(owner, &format!("ssh-rsa {blob}")))
            .await,
        Code::InvalidArgument,
        &["key", "ssh-rsa", "ssh-ed25519"],
    );
    assert_status(
        api.create_key(new_key(9999, &ed25519(4))).await,
        Code::NotFound,
        &["person_id", "9999"],
    );

    let update = |changes: pb::UpdateKeyRequest| pb::UpdateKeyRequest {
        key_id: good.key_id,
        ..changes
    };
    assert_status(
        api.update_key(update(pb::UpdateKeyRequest {
            key: Some("ssh-ed25519".into()),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        &["key", "ssh-ed25519"],
    );
    assert_status(
        api.update_key(update(pb::UpdateKeyRequest {
            key_type: Some("pgp".into()),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        &["key_type", "pgp"],
    );
    assert_status(
        api.update_key(pb::UpdateKeyRequest {
            key_id: 9999,
            is_blacklisted: Some(true),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["key_id", "9999"],
    );
    assert_status(
        api.get_key(pb::GetKeyRequest { key_id: 9999 }).await,
        Code::NotFound,
        &["key_id", "9999"],
    );

    // Nothing of the failed calls was written.
    let all = api
        .list_keys(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.keys, vec![good]);
    assert_eq!(key_ids_of(&mut api, owner).await.len(), 1);
}

async fn pagination_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let owner = create_person(&mut api, "owner@example.org").await;
    let mut local_ids = Vec::new();
    for n in 0..5 {
        let key = api
            .create_key(new_key(owner, &ed25519(n)))
            .await
            .unwrap()
            .into_inner();
        local_ids.push(key.key_id);
    }
    // A person with a key at each of two peers.
    let (plc, plc_person, k1) = cache_person_with_key(&server, "plc", (10, 11), &ed25519(50)).await;
    let (ple, ple_person, k2) = cache_person_with_key(&server, "ple", (20, 21), &ed25519(60)).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_keys(pb::ListRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.keys.len() <= 2);
        seen.extend(page.keys.into_iter().map(|k| (k.key_id, k.person_id)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<(i64, i64)> = local_ids.iter().map(|&k| (k, owner)).collect();
    expected.extend([(k1, plc_person), (k2, ple_person)]);
    assert_eq!(
        seen, expected,
        "every key once, in id order, with its owner"
    );
    assert_eq!(pages, 4);

    let list = |scope: pb::Scope, peer_id: Option<i64>| pb::ListRequest {
        scope: scope as i32,
        peer_id,
        ..Default::default()
    };
    let ids = |keys: Vec<pb::Key>| keys.into_iter().map(|k| k.key_id).collect::<Vec<_>>();
    let local = api
        .list_keys(list(pb::Scope::Local, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(local.keys), local_ids);
    let cached = api
        .list_keys(list(pb::Scope::Foreign, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cached.keys[1].origin,
        Some(pb::Origin {
            peer_id: ple,
            peer_object_id: 21
        })
    );
    assert_eq!(ids(cached.keys), [k1, k2]);
    let of_plc = api
        .list_keys(list(pb::Scope::Foreign, Some(plc)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(of_plc.keys), [k1]);
    assert_status(
        api.list_keys(pb::ListRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_size", "1001"],
    );
}

async fn foreign_keys_are_read_only(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut at_peer = with.peer.registry().await;
    let owner_at_peer = create_person(&mut at_peer, "remote@plc.org").await;
    let key_at_peer = at_peer
        .create_key(new_key(owner_at_peer, &ed25519(9)))
        .await
        .unwrap()
        .into_inner();
    with.refresh().await;
    let mut api = with.local.registry().await;
    let cached = person_by_email(&mut api, "remote@plc.org").await;
    assert!(cached.origin.is_some(), "cached from the peer");
    let (person, key) = (cached.person_id, cached.key_ids[0]);

    assert_status(
        api.create_key(new_key(person, &ed25519(1))).await,
        Code::FailedPrecondition,
        &["remote@plc.org", "peer"],
    );
    assert_status(
        api.update_key(pb::UpdateKeyRequest {
            key_id: key,
            is_blacklisted: Some(true),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &[&format!("key {key}"), "peer"],
    );
    assert_status(
        api.delete_key(pb::DeleteRequest { id: key }).await,
        Code::FailedPrecondition,
        &[&format!("key {key}"), "peer"],
    );
    let still = api
        .get_key(pb::GetKeyRequest { key_id: key })
        .await
        .unwrap()
        .into_inner();
    assert!(!still.is_blacklisted);
    assert_eq!(still.person_id, person);
    assert_eq!(
        still.origin,
        Some(pb::Origin {
            peer_id: with.peer_id,
            peer_object_id: key_at_peer.key_id
        })
    );
    assert_eq!(
        key_ids_of(&mut api, person).await,
        [key],
        "no key was added"
    );
}

backend_tests!(
    create_get_update_delete,
    validation_errors,
    pagination_and_filters,
    foreign_keys_are_read_only,
);
