//! Persons through the admin API: create, get (by id and by e-mail), list
//! with pages and scopes, update, delete, every validation error, password
//! hashing, site and role memberships (primary-site switching, idempotent
//! adds and removes), deletion cascades, and the read-only rule for persons
//! cached from peers (by real refreshes of a real or scripted peer); on
//! both backends.

use crate::common::fake_peer;
use crate::common::objects::{self, WithPeer};
use crate::common::rows::Rows;
use crate::common::{Backend, TestServer, assert_status};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use fedreg::proto::v1::{self as pb, get_person_request::Key};
use tonic::Code;

/// The admin API client.
type Client = RegistryServiceClient<crate::common::Authed>;

fn person(email: &str) -> pb::CreatePersonRequest {
    pb::CreatePersonRequest {
        email: email.into(),
        first_name: "Jane".into(),
        last_name: "Doe".into(),
        title: "Dr".into(),
        phone: "+33 1 23 45 67 89".into(),
        url: "https://jane.example.org".into(),
        bio: "Networks.".into(),
        ..Default::default()
    }
}

fn by_id(person_id: i64) -> pb::GetPersonRequest {
    pb::GetPersonRequest {
        key: Some(Key::PersonId(person_id)),
    }
}

fn by_email(email: &str) -> pb::GetPersonRequest {
    pb::GetPersonRequest {
        key: Some(Key::Email(email.into())),
    }
}

async fn create_get_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;

    let created = api
        .create_person(person("Jane.Doe@Example.org"))
        .await
        .unwrap()
        .into_inner();
    assert!(created.person_id > 0);
    assert_eq!(created.email, "jane.doe@example.org", "stored lowercase");
    assert_eq!(
        (created.first_name.as_str(), created.last_name.as_str()),
        ("Jane", "Doe")
    );
    assert_eq!(created.title, "Dr");
    assert_eq!(created.phone, "+33 1 23 45 67 89");
    assert_eq!(created.bio, "Networks.");
    assert!(!created.enabled, "a new account awaits approval");
    assert!(created.origin.is_none(), "a created person is local");
    assert!(created.date_created.is_some() && created.last_updated.is_some());
    assert!(created.role_ids.is_empty() && created.site_ids.is_empty());
    assert!(created.key_ids.is_empty() && created.slice_ids.is_empty());
    assert_eq!(created.primary_site_id, None);

    assert_eq!(
        api.get_person(by_id(created.person_id))
            .await
            .unwrap()
            .into_inner(),
        created
    );
    assert_eq!(
        api.get_person(by_email(" JANE.doe@example.org "))
            .await
            .unwrap()
            .into_inner(),
        created,
        "e-mail lookup ignores case and surrounding spaces"
    );

    let enabled = api
        .create_person(pb::CreatePersonRequest {
            enabled: Some(true),
            ..person("john@example.org")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(enabled.enabled);

    let updated = api
        .update_person(pb::UpdatePersonRequest {
            person_id: created.person_id,
            email: Some("jane@example.net".into()),
            first_name: Some("Janet".into()),
            title: Some(String::new()),
            enabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.email, "jane@example.net");
    assert_eq!(updated.first_name, "Janet");
    assert_eq!(updated.title, "");
    assert!(updated.enabled);
    assert_eq!(updated.last_name, "Doe", "unset fields stay");
    assert_eq!(updated.phone, created.phone);
    assert_eq!(updated.date_created, created.date_created);
    assert_status(
        api.get_person(by_email("jane.doe@example.org")).await,
        Code::NotFound,
        &["email", "jane.doe@example.org"],
    );
    // The old address is free again.
    api.create_person(person("jane.doe@example.org"))
        .await
        .unwrap();

    api.delete_person(pb::DeleteRequest {
        id: created.person_id,
    })
    .await
    .unwrap();
    assert_status(
        api.get_person(by_id(created.person_id)).await,
        Code::NotFound,
        &["person_id", &created.person_id.to_string()],
    );
    assert_status(
        api.delete_person(pb::DeleteRequest {
            id: created.person_id,
        })
        .await,
        Code::NotFound,
        &["person_id", &created.person_id.to_string()],
    );
    assert_eq!(
        api.get_person(by_id(enabled.person_id))
            .await
            .unwrap()
            .into_inner(),
        enabled,
        "other persons stay"
    );
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let taken = api
        .create_person(person("taken@example.org"))
        .await
        .unwrap()
        .into_inner();

    assert_status(
        api.create_person(person("not-an-address")).await,
        Code::InvalidArgument,
        &["email", "not-an-address"],
    );
    assert_status(
        api.create_person(person("")).await,
        Code::InvalidArgument,
        &["email"],
    );
    assert_status(
        api.create_person(person("Taken@Example.org")).await,
        Code::AlreadyExists,
        &["email", "taken@example.org"],
    );
    let cases: Vec<(pb::CreatePersonRequest, &str, &str)> = vec![
        (
            pb::CreatePersonRequest {
                first_name: " ".into(),
                ..person("a@example.org")
            },
            "first_name",
            "\" \"",
        ),
        (
            pb::CreatePersonRequest {
                last_name: String::new(),
                ..person("b@example.org")
            },
            "last_name",
            "\"\"",
        ),
        (
            pb::CreatePersonRequest {
                title: "t".repeat(129),
                ..person("c@example.org")
            },
            "title",
            "ttttt",
        ),
        (
            pb::CreatePersonRequest {
                phone: "9".repeat(65),
                ..person("d@example.org")
            },
            "phone",
            "99999",
        ),
        (
            pb::CreatePersonRequest {
                url: "u".repeat(255),
                ..person("e@example.org")
            },
            "url",
            "uuuuu",
        ),
        (
            pb::CreatePersonRequest {
                bio: "b".repeat(255),
                ..person("f@example.org")
            },
            "bio",
            "bbbbb",
        ),
        (
            pb::CreatePersonRequest {
                password: "p".repeat(255),
                ..person("g@example.org")
            },
            "password",
            "255 characters",
        ),
    ];
    for (req, field, value) in cases {
        assert_status(
            api.create_person(req).await,
            Code::InvalidArgument,
            &[field, value],
        );
    }

    let other = api
        .create_person(person("other@example.org"))
        .await
        .unwrap()
        .into_inner();
    let update = |changes: pb::UpdatePersonRequest| pb::UpdatePersonRequest {
        person_id: other.person_id,
        ..changes
    };
    assert_status(
        api.update_person(update(pb::UpdatePersonRequest {
            email: Some("TAKEN@example.org".into()),
            ..Default::default()
        }))
        .await,
        Code::AlreadyExists,
        &["email", "taken@example.org"],
    );
    assert_status(
        api.update_person(update(pb::UpdatePersonRequest {
            email: Some("bad@".into()),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        &["email", "bad@"],
    );
    assert_status(
        api.update_person(update(pb::UpdatePersonRequest {
            last_name: Some("  ".into()),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        &["last_name"],
    );
    assert_status(
        api.update_person(update(pb::UpdatePersonRequest {
            phone: Some("9".repeat(65)),
            ..Default::default()
        }))
        .await,
        Code::InvalidArgument,
        &["phone"],
    );
    assert_status(
        api.update_person(pb::UpdatePersonRequest {
            person_id: 9999,
            first_name: Some("Nobody".into()),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["person_id", "9999"],
    );
    assert_status(
        api.get_person(pb::GetPersonRequest { key: None }).await,
        Code::InvalidArgument,
        &["person_id or email"],
    );
    assert_status(
        api.get_person(by_email("nobody@example.org")).await,
        Code::NotFound,
        &["email", "nobody@example.org"],
    );
    assert_status(
        api.get_person(by_id(9999)).await,
        Code::NotFound,
        &["person_id", "9999"],
    );

    // Nothing of the failed calls was written.
    let all = api
        .list_persons(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.persons, vec![taken, other]);
}

async fn password_is_stored_hashed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let rows = Rows::of(&server);
    let mut api = server.registry().await;
    let verifies = |hash: &str, password: &str| {
        let parsed = PasswordHash::new(hash).expect("a PHC string");
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    };

    let with = api
        .create_person(pb::CreatePersonRequest {
            password: "correct horse battery".into(),
            ..person("pw@example.org")
        })
        .await
        .unwrap()
        .into_inner();
    let row = rows.person_row(with.person_id).await;
    let hash = row.password_hash.expect("a password hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
    assert!(verifies(&hash, "correct horse battery"));
    assert!(!verifies(&hash, "wrong"));

    let without = api
        .create_person(person("nopw@example.org"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rows.person_row(without.person_id).await.password_hash, None);

    // Same password, another person: another salt.
    let twin = api
        .create_person(pb::CreatePersonRequest {
            password: "correct horse battery".into(),
            ..person("twin@example.org")
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        rows.person_row(twin.person_id).await.password_hash,
        Some(hash.clone())
    );

    let update = |password: &str| pb::UpdatePersonRequest {
        person_id: with.person_id,
        password: Some(password.into()),
        ..Default::default()
    };
    api.update_person(update("new password")).await.unwrap();
    let new_hash = rows.person_row(with.person_id).await.password_hash.unwrap();
    assert!(verifies(&new_hash, "new password"));
    assert!(!verifies(&new_hash, "correct horse battery"));
    // Updating other fields keeps the password.
    api.update_person(pb::UpdatePersonRequest {
        person_id: with.person_id,
        bio: Some("changed".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rows.person_row(with.person_id).await.password_hash,
        Some(new_hash)
    );
    // An empty password removes it.
    api.update_person(update("")).await.unwrap();
    assert_eq!(rows.person_row(with.person_id).await.password_hash, None);
}

async fn pagination_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    for i in 0..7 {
        api.create_person(person(&format!("p{i}@example.org")))
            .await
            .unwrap();
    }
    // One person at each of two peers.
    let mut cached = Vec::new();
    for (peername, id_at_peer, email) in [("plc", 101, "f1@plc.org"), ("ple", 201, "f2@ple.org")] {
        let batch = pb::PeerDataBatch {
            persons: vec![fake_peer::person(id_at_peer, email)],
            ..Default::default()
        };
        let peer_id = fake_peer::cache(&server, peername, batch).await;
        let got = api.get_person(by_email(email)).await.unwrap().into_inner();
        cached.push((peer_id, got.person_id));
    }
    let [(plc, f1), (ple, f2)] = cached[..] else {
        unreachable!()
    };

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_persons(pb::ListRequest {
                page_size: 4,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.persons.len() <= 4);
        seen.extend(page.persons.into_iter().map(|p| p.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut expected: Vec<String> = (0..7).map(|i| format!("p{i}@example.org")).collect();
    expected.extend(["f1@plc.org".into(), "f2@ple.org".into()]);
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);

    let list = |scope: pb::Scope, peer_id: Option<i64>| pb::ListRequest {
        scope: scope as i32,
        peer_id,
        ..Default::default()
    };
    let local = api
        .list_persons(list(pb::Scope::Local, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.persons.len(), 7);
    assert!(local.persons.iter().all(|p| p.origin.is_none()));
    let cached = api
        .list_persons(list(pb::Scope::Foreign, None))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = cached.persons.iter().map(|p| p.person_id).collect();
    assert_eq!(ids, [f1, f2]);
    assert_eq!(
        cached.persons[0].origin,
        Some(pb::Origin {
            peer_id: plc,
            peer_object_id: 101
        })
    );
    let of_ple = api
        .list_persons(list(pb::Scope::Unspecified, Some(ple)))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = of_ple.persons.iter().map(|p| p.person_id).collect();
    assert_eq!(ids, [f2]);

    assert_status(
        api.list_persons(list(pb::Scope::Local, Some(ple))).await,
        Code::InvalidArgument,
        &["peer_id", &ple.to_string()],
    );
    assert_status(
        api.list_persons(pb::ListRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token", "garbage"],
    );
    assert_status(
        api.list_persons(pb::ListRequest {
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_size", "-1"],
    );
}

/// Makes enabled persons `emails` at `with`'s peer (first name "Foreign",
/// role user, primary site `plcsite`), refreshes, and returns them as the
/// registry caches them, in order.
async fn cache_remote_persons(with: &WithPeer, emails: &[&str]) -> Vec<pb::Person> {
    let mut at_peer = with.peer.registry().await;
    let site_id = objects::site(&mut at_peer, "plcsite").await;
    let mut ids_at_peer = Vec::new();
    for email in emails {
        let made = at_peer
            .create_person(pb::CreatePersonRequest {
                first_name: "Foreign".into(),
                enabled: Some(true),
                ..person(email)
            })
            .await
            .unwrap()
            .into_inner();
        at_peer
            .add_role_to_person(role(made.person_id, 30))
            .await
            .unwrap();
        at_peer
            .add_person_to_site(at_site(made.person_id, site_id, true))
            .await
            .unwrap();
        ids_at_peer.push(made.person_id);
    }
    with.refresh().await;
    let cached = with
        .local
        .registry()
        .await
        .list_persons(pb::ListRequest {
            peer_id: Some(with.peer_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .persons;
    ids_at_peer
        .iter()
        .map(|&id| {
            let origin = Some(pb::Origin {
                peer_id: with.peer_id,
                peer_object_id: id,
            });
            cached
                .iter()
                .find(|p| p.origin == origin)
                .unwrap_or_else(|| panic!("person {id} of the peer not cached: {cached:?}"))
                .clone()
        })
        .collect()
}

async fn foreign_persons_are_read_only(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    // Uniqueness is per authority: a refresh caches a person whose address
    // a local person uses...
    let early = api
        .create_person(person("early@example.org"))
        .await
        .unwrap()
        .into_inner();
    let remote = cache_remote_persons(
        &with,
        &["shared@example.org", "remote@plc.org", "early@example.org"],
    )
    .await;
    let [shared, only_foreign, early_twin] = &remote[..] else {
        unreachable!()
    };
    assert_ne!(early_twin.person_id, early.person_id);
    assert_eq!(early_twin.email, "early@example.org");
    let got = api
        .get_person(by_email("early@example.org"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, early, "the local person comes first");
    let cached = shared.person_id;

    // ...and a local person may use a peer's address.
    let local = api
        .create_person(person("shared@example.org"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(local.person_id, cached);
    let got = api
        .get_person(by_email("shared@example.org"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.person_id, local.person_id,
        "the local person comes first"
    );
    let got = api
        .get_person(by_email("remote@plc.org"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&got, only_foreign);
    // Moving a local person to a peer's address is fine too.
    api.update_person(pb::UpdatePersonRequest {
        person_id: local.person_id,
        email: Some("remote@plc.org".into()),
        ..Default::default()
    })
    .await
    .unwrap();

    assert_status(
        api.update_person(pb::UpdatePersonRequest {
            person_id: cached,
            first_name: Some("Changed".into()),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &["shared@example.org", "peer"],
    );
    assert_status(
        api.delete_person(pb::DeleteRequest { id: cached }).await,
        Code::FailedPrecondition,
        &["shared@example.org", "peer"],
    );
    let still = api.get_person(by_id(cached)).await.unwrap().into_inner();
    assert_eq!(still.first_name, "Foreign");
}

fn site(login_base: &str) -> pb::CreateSiteRequest {
    pb::CreateSiteRequest {
        login_base: login_base.into(),
        name: format!("Site {login_base}"),
        ..Default::default()
    }
}

fn at_site(person_id: i64, site_id: i64, is_primary: bool) -> pb::PersonSiteRequest {
    pb::PersonSiteRequest {
        person_id,
        site_id,
        is_primary,
    }
}

fn role(person_id: i64, role_id: i32) -> pb::PersonRoleRequest {
    pb::PersonRoleRequest { person_id, role_id }
}

/// Ids of the persons of a site and of those whose primary site it is.
async fn members(api: &mut Client, site_id: i64) -> (Vec<i64>, Vec<i64>) {
    let site = api
        .get_site(pb::GetSiteRequest {
            key: Some(pb::get_site_request::Key::SiteId(site_id)),
        })
        .await
        .unwrap()
        .into_inner();
    (site.person_ids, site.primary_person_ids)
}

async fn site_memberships_and_primary_switching(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    let p = api
        .create_person(person("p@example.org"))
        .await
        .unwrap()
        .into_inner();
    let q = api
        .create_person(person("q@example.org"))
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    for lb in ["a", "b", "c"] {
        ids.push(
            api.create_site(site(lb))
                .await
                .unwrap()
                .into_inner()
                .site_id,
        );
    }
    let [a, b, c] = ids[..] else { unreachable!() };
    let pid = p.person_id;

    let got = api
        .add_person_to_site(at_site(pid, a, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.site_ids.clone(), got.primary_site_id), (vec![a], None));
    let got = api
        .add_person_to_site(at_site(pid, b, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![a, b], Some(b))
    );
    // Another person's primary site is independent.
    api.add_person_to_site(at_site(q.person_id, b, true))
        .await
        .unwrap();
    assert_eq!(
        members(&mut api, b).await,
        (vec![pid, q.person_id], vec![pid, q.person_id])
    );

    // Switching the primary site demotes the previous one.
    let got = api
        .add_person_to_site(at_site(pid, a, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![a, b], Some(a))
    );
    assert_eq!(members(&mut api, a).await, (vec![pid], vec![pid]));
    assert_eq!(
        members(&mut api, b).await,
        (vec![pid, q.person_id], vec![q.person_id])
    );
    // Adding again without is_primary keeps the primary site; so does a new site.
    let got = api
        .add_person_to_site(at_site(pid, a, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![a, b], Some(a))
    );
    let got = api
        .add_person_to_site(at_site(pid, c, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![a, b, c], Some(a))
    );
    // Adding the primary site as primary again changes nothing.
    let got = api
        .add_person_to_site(at_site(pid, a, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![a, b, c], Some(a))
    );

    // Removing the primary site leaves the person without one.
    let got = api
        .remove_person_from_site(at_site(pid, a, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.site_ids.clone(), got.primary_site_id),
        (vec![b, c], None)
    );
    let again = api
        .remove_person_from_site(at_site(pid, a, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.site_ids, again.primary_site_id), (vec![b, c], None));
    assert_eq!(members(&mut api, a).await, (vec![], vec![]));
    let listed = api
        .list_persons(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.persons[0].site_ids, [b, c]);
    assert_eq!(listed.persons[1].site_ids, [b]);
    assert_eq!(listed.persons[1].primary_site_id, Some(b));

    // Deleting a site removes its memberships.
    api.delete_site(pb::DeleteRequest { id: b }).await.unwrap();
    let got = api
        .get_person(by_id(q.person_id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.site_ids, got.primary_site_id), (vec![], None));
}

async fn site_membership_errors(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let cached = cache_remote_persons(&with, &["remote@plc.org"]).await;
    let [remote] = &cached[..] else {
        unreachable!()
    };
    let mut api = with.local.registry().await;
    let local = api
        .create_person(person("p@example.org"))
        .await
        .unwrap()
        .into_inner();
    let site_id = api
        .create_site(site("local"))
        .await
        .unwrap()
        .into_inner()
        .site_id;
    let remote_person = remote.person_id;
    let remote_site = remote.primary_site_id.expect("the cached primary site");
    let pid = local.person_id;

    for primary in [false, true] {
        assert_status(
            api.add_person_to_site(at_site(9999, site_id, primary))
                .await,
            Code::NotFound,
            &["person_id", "9999"],
        );
        assert_status(
            api.add_person_to_site(at_site(pid, 8888, primary)).await,
            Code::NotFound,
            &["site_id", "8888"],
        );
        assert_status(
            api.add_person_to_site(at_site(remote_person, site_id, primary))
                .await,
            Code::FailedPrecondition,
            &["remote@plc.org", "peer"],
        );
        assert_status(
            api.add_person_to_site(at_site(pid, remote_site, primary))
                .await,
            Code::FailedPrecondition,
            &["plcsite", "peer"],
        );
    }
    assert_status(
        api.remove_person_from_site(at_site(9999, site_id, false))
            .await,
        Code::NotFound,
        &["person_id", "9999"],
    );
    assert_status(
        api.remove_person_from_site(at_site(pid, 8888, false)).await,
        Code::NotFound,
        &["site_id", "8888"],
    );
    assert_status(
        api.remove_person_from_site(at_site(remote_person, site_id, false))
            .await,
        Code::FailedPrecondition,
        &["remote@plc.org", "peer"],
    );
    assert_status(
        api.remove_person_from_site(at_site(pid, remote_site, false))
            .await,
        Code::FailedPrecondition,
        &["plcsite", "peer"],
    );
    assert_eq!(members(&mut api, site_id).await, (vec![], vec![]));
    assert_eq!(
        members(&mut api, remote_site).await,
        (vec![remote_person], vec![remote_person])
    );
    assert_eq!(
        api.get_person(by_id(pid))
            .await
            .unwrap()
            .into_inner()
            .site_ids,
        Vec::<i64>::new()
    );
    assert_eq!(
        &api.get_person(by_id(remote_person))
            .await
            .unwrap()
            .into_inner(),
        remote,
        "the cached person is unchanged"
    );
}

async fn role_memberships(backend: Backend) {
    let with = WithPeer::start(backend).await;
    let mut api = with.local.registry().await;
    let p = api
        .create_person(person("p@example.org"))
        .await
        .unwrap()
        .into_inner();
    let pid = p.person_id;

    let got = api
        .add_role_to_person(role(pid, 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [20]);
    let got = api
        .add_role_to_person(role(pid, 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [10, 20]);
    // Granting a role held is accepted and changes nothing.
    let got = api
        .add_role_to_person(role(pid, 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [10, 20]);
    let got = api
        .add_role_to_person(role(pid, 40))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [10, 20, 40]);
    let got = api
        .remove_role_from_person(role(pid, 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [20, 40]);
    // Revoking a role not held is accepted and changes nothing.
    let got = api
        .remove_role_from_person(role(pid, 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role_ids, [20, 40]);
    assert_eq!(
        api.get_person(by_id(pid))
            .await
            .unwrap()
            .into_inner()
            .role_ids,
        [20, 40]
    );

    for bad in [0, 15, 50] {
        assert_status(
            api.add_role_to_person(role(pid, bad)).await,
            Code::InvalidArgument,
            &["role_id", &bad.to_string()],
        );
        assert_status(
            api.remove_role_from_person(role(pid, bad)).await,
            Code::InvalidArgument,
            &["role_id", &bad.to_string()],
        );
    }
    assert_status(
        api.add_role_to_person(role(9999, 30)).await,
        Code::NotFound,
        &["person_id", "9999"],
    );
    assert_status(
        api.remove_role_from_person(role(9999, 30)).await,
        Code::NotFound,
        &["person_id", "9999"],
    );
    let remote_persons = cache_remote_persons(&with, &["remote@plc.org"]).await;
    let [cached] = &remote_persons[..] else {
        unreachable!()
    };
    assert_eq!(cached.role_ids, [30]);
    let remote = cached.person_id;
    assert_status(
        api.add_role_to_person(role(remote, 30)).await,
        Code::FailedPrecondition,
        &["remote@plc.org", "peer"],
    );
    assert_status(
        api.remove_role_from_person(role(remote, 30)).await,
        Code::FailedPrecondition,
        &["remote@plc.org", "peer"],
    );
    assert_eq!(
        api.get_person(by_id(pid))
            .await
            .unwrap()
            .into_inner()
            .role_ids,
        [20, 40]
    );
    assert_eq!(
        &api.get_person(by_id(remote)).await.unwrap().into_inner(),
        cached,
        "the cached person is unchanged"
    );
}

async fn delete_cascades(backend: Backend) {
    let server = TestServer::start(backend).await;
    let rows = Rows::of(&server);
    let mut api = server.registry().await;
    let p = api
        .create_person(person("p@example.org"))
        .await
        .unwrap()
        .into_inner()
        .person_id;
    let q = api
        .create_person(person("q@example.org"))
        .await
        .unwrap()
        .into_inner()
        .person_id;
    let a = api
        .create_site(site("a"))
        .await
        .unwrap()
        .into_inner()
        .site_id;
    let b = api
        .create_site(site("b"))
        .await
        .unwrap()
        .into_inner()
        .site_id;
    let mut p_keys = Vec::new();
    for n in 1..=2 {
        let key = api
            .create_key(pb::CreateKeyRequest {
                person_id: p,
                key_type: "ssh".into(),
                key: key_line(n),
            })
            .await
            .unwrap()
            .into_inner();
        p_keys.push(key.key_id);
    }
    let q_key = api
        .create_key(pb::CreateKeyRequest {
            person_id: q,
            key_type: "ssh".into(),
            key: key_line(3),
        })
        .await
        .unwrap()
        .into_inner();
    for (person_id, site_id, primary) in [(p, a, true), (p, b, false), (q, a, false)] {
        api.add_person_to_site(at_site(person_id, site_id, primary))
            .await
            .unwrap();
    }
    for (person_id, role_id) in [(p, 20), (p, 30), (q, 30)] {
        api.add_role_to_person(role(person_id, role_id))
            .await
            .unwrap();
    }
    let slice = api
        .create_slice(pb::CreateSliceRequest {
            name: "a_test".into(),
            creator_person_id: Some(p),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .slice_id;
    for person_id in [p, q] {
        api.add_person_to_slice(pb::SlicePersonRequest {
            slice_id: slice,
            person_id,
        })
        .await
        .unwrap();
    }

    let before = api.get_person(by_id(p)).await.unwrap().into_inner();
    assert_eq!(before.key_ids, p_keys);
    assert_eq!(before.slice_ids, [slice]);
    assert_eq!(
        (before.site_ids, before.primary_site_id),
        (vec![a, b], Some(a))
    );
    assert_eq!(before.role_ids, [20, 30]);
    assert_eq!(rows.links_of(p, &p_keys).await, [2, 2, 2, 1, 2]);

    api.delete_person(pb::DeleteRequest { id: p })
        .await
        .unwrap();

    assert_eq!(rows.links_of(p, &p_keys).await, [0, 0, 0, 0, 0]);
    for key_id in &p_keys {
        assert_status(
            api.get_key(pb::GetKeyRequest { key_id: *key_id }).await,
            Code::NotFound,
            &["key_id", &key_id.to_string()],
        );
    }
    let keys = api
        .list_keys(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        keys.keys,
        vec![q_key.clone()],
        "the other person's key stays"
    );
    assert_eq!(members(&mut api, a).await, (vec![q], vec![]));
    assert_eq!(members(&mut api, b).await, (vec![], vec![]));
    let kept = objects::get_slice(&mut api, slice).await.unwrap();
    assert_eq!(
        (kept.creator_person_id, kept.person_ids),
        (None, vec![q]),
        "the slice stays, without creator"
    );
    let other = api.get_person(by_id(q)).await.unwrap().into_inner();
    assert_eq!(other.key_ids, [q_key.key_id]);
    assert_eq!(other.site_ids, [a]);
    assert_eq!(other.role_ids, [30]);
    assert_eq!(other.slice_ids, [slice]);
}

/// A well-formed ed25519 public key line, distinct for each `n`.
fn key_line(n: u8) -> String {
    crate::common::federation::ssh_key(n.into(), "person@example.org")
}

backend_tests!(
    create_get_update_delete,
    validation_errors,
    password_is_stored_hashed,
    pagination_and_filters,
    foreign_persons_are_read_only,
    site_memberships_and_primary_switching,
    site_membership_errors,
    role_memberships,
    delete_cascades,
);
