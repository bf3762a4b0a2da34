//! GetPeerData over more rows than one export page (2,000): every object
//! leaves once, in order, with its memberships, whatever page it falls in;
//! callers that drop the stream half-read leave the server serving. On both
//! backends.

use crate::common::objects::site;
use crate::common::{Backend, TestServer};
use fedreg::proto::v1::{self as pb, peer_data_chunk::Part};

/// More than one export page of persons.
const PERSONS: usize = 2_100;
/// Every this many persons belongs to the site (some in each page).
const MEMBER_EVERY: usize = 50;

async fn every_object_leaves_once_across_pages(backend: Backend) {
    let server = TestServer::start_named(backend, "plc1").await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let mut created = Vec::with_capacity(PERSONS);
    for i in 0..PERSONS {
        let person_id = api
            .create_person(pb::CreatePersonRequest {
                email: format!("p{i:04}@inria.fr"),
                first_name: "P".into(),
                last_name: format!("{i}"),
                ..Default::default()
            })
            .await
            .expect("create person")
            .into_inner()
            .person_id;
        if i % MEMBER_EVERY == 0 {
            api.add_person_to_site(pb::PersonSiteRequest {
                person_id,
                site_id,
                is_primary: true,
            })
            .await
            .expect("add person to site");
        }
        created.push(person_id);
    }

    let open = || async {
        server
            .peering_as(Some(&server.admin_token))
            .await
            .get_peer_data(pb::GetPeerDataRequest::default())
            .await
            .expect("GetPeerData")
            .into_inner()
    };
    // Callers that go away after the header.
    for _ in 0..3 {
        let mut stream = open().await;
        let first = stream
            .message()
            .await
            .expect("first chunk")
            .expect("a chunk");
        assert!(matches!(first.part, Some(Part::Header(_))), "{first:?}");
        drop(stream);
    }

    let mut stream = open().await;
    let (mut persons, mut trailer) = (Vec::new(), None);
    while let Some(chunk) = stream.message().await.expect("chunk") {
        match chunk.part {
            Some(Part::Batch(batch)) => persons.extend(batch.persons),
            Some(Part::Trailer(t)) => trailer = Some(t),
            _ => {}
        }
    }
    let ids: Vec<i64> = persons.iter().map(|p| p.person_id).collect();
    assert_eq!(ids, created, "every person once, in id order");
    for (i, person) in persons.iter().enumerate() {
        let member = i % MEMBER_EVERY == 0;
        let sites: &[i64] = if member { &[site_id] } else { &[] };
        assert_eq!(person.site_ids, sites, "{person:?}");
        assert_eq!(
            person.primary_site_id,
            member.then_some(site_id),
            "{person:?}"
        );
    }
    let trailer = trailer.expect("a trailer");
    assert_eq!(trailer.persons, PERSONS as i64);
    assert_eq!(trailer.sites, 1);
}

backend_tests!(every_object_leaves_once_across_pages);
