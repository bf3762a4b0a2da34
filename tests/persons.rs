//! Persons through the admin API: create, get (by id and by e-mail), list
//! with pages and scopes, update, delete, every validation error, password
//! hashing, and the read-only rule for persons cached from peers; on both
//! backends.

mod common;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use common::foreign::Foreign;
use common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::{self as pb, get_person_request::Key};
use tonic::Code;

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
    let foreign = Foreign::of(&server);
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
    let row = foreign.person_row(with.person_id).await;
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
    assert_eq!(
        foreign.person_row(without.person_id).await.password_hash,
        None
    );

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
        foreign.person_row(twin.person_id).await.password_hash,
        Some(hash.clone())
    );

    let update = |password: &str| pb::UpdatePersonRequest {
        person_id: with.person_id,
        password: Some(password.into()),
        ..Default::default()
    };
    api.update_person(update("new password")).await.unwrap();
    let new_hash = foreign
        .person_row(with.person_id)
        .await
        .password_hash
        .unwrap();
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
        foreign.person_row(with.person_id).await.password_hash,
        Some(new_hash)
    );
    // An empty password removes it.
    api.update_person(update("")).await.unwrap();
    assert_eq!(foreign.person_row(with.person_id).await.password_hash, None);
}

async fn pagination_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let foreign = Foreign::of(&server);
    let mut api = server.registry().await;
    for i in 0..7 {
        api.create_person(person(&format!("p{i}@example.org")))
            .await
            .unwrap();
    }
    let plc = foreign.peer("plc").await;
    let ple = foreign.peer("ple").await;
    let f1 = foreign.person(plc, 101, "f1@plc.org").await;
    let f2 = foreign.person(ple, 201, "f2@ple.org").await;

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

async fn foreign_persons_are_read_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let foreign = Foreign::of(&server);
    let mut api = server.registry().await;
    let plc = foreign.peer("plc").await;
    let cached = foreign.person(plc, 7, "shared@example.org").await;
    let only_foreign = foreign.person(plc, 8, "remote@plc.org").await;

    // Uniqueness is per authority: a local person may use a peer's address.
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
    assert_eq!(got.person_id, only_foreign);
    assert_eq!(
        got.origin,
        Some(pb::Origin {
            peer_id: plc,
            peer_object_id: 8
        })
    );
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

backend_tests!(
    create_get_update_delete,
    validation_errors,
    password_is_stored_hashed,
    pagination_and_filters,
    foreign_persons_are_read_only,
);
