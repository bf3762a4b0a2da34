//! Three registries: A peers with B and with C, both ways; B and C do not
//! peer. A caches B's and C's objects and never serves them back; deleting
//! a peer removes exactly what was cached from it. On each backend, and
//! with the backends mixed.

use crate::common::federation::{Counts, Populate, peer_both_ways, refresh, writes};
use crate::common::{Backend, TestServer};
use fedreg::proto::v1 as pb;

async fn three_registries(a_backend: Backend, b_backend: Backend, c_backend: Backend) {
    let a = TestServer::start_named(a_backend, "a").await;
    let b = TestServer::start_named(b_backend, "b").await;
    let c = TestServer::start_named(c_backend, "c").await;
    Populate::new("a")
        .sites(2)
        .persons(3)
        .keys_per_person(1)
        .on(&a)
        .await;
    Populate::new("b")
        .sites(3)
        .persons(4)
        .keys_per_person(2)
        .on(&b)
        .await;
    Populate::new("c")
        .sites(1)
        .persons(2)
        .keys_per_person(1)
        .on(&c)
        .await;
    let (b_on_a, a_on_b) = peer_both_ways(&a, "a", &b, "b").await;
    let (c_on_a, a_on_c) = peer_both_ways(&a, "a", &c, "c").await;

    // A first, so that A's cache holds B's and C's objects when B and C pull.
    refresh(&a, b_on_a).await;
    refresh(&a, c_on_a).await;
    refresh(&b, a_on_b).await;
    refresh(&c, a_on_c).await;

    assert_eq!(
        counts!(a, list_sites, sites),
        Counts {
            local: 2,
            foreign: 4
        }
    );
    assert_eq!(
        counts!(a, list_persons, persons),
        Counts {
            local: 3,
            foreign: 6
        }
    );
    assert_eq!(
        counts!(a, list_keys, keys),
        Counts {
            local: 3,
            foreign: 10
        }
    );
    // B and C see A's own objects only.
    assert_eq!(
        counts!(b, list_sites, sites),
        Counts {
            local: 3,
            foreign: 2
        }
    );
    assert_eq!(
        counts!(b, list_persons, persons),
        Counts {
            local: 4,
            foreign: 3
        }
    );
    assert_eq!(
        counts!(b, list_keys, keys),
        Counts {
            local: 8,
            foreign: 3
        }
    );
    assert_eq!(
        counts!(c, list_sites, sites),
        Counts {
            local: 1,
            foreign: 2
        }
    );
    assert_eq!(
        counts!(c, list_persons, persons),
        Counts {
            local: 2,
            foreign: 3
        }
    );

    // A cached person carries its memberships, in A's ids.
    let mut api_a = a.registry().await;
    let cached = api_a
        .get_person(pb::GetPersonRequest {
            key: Some(pb::get_person_request::Key::Email(
                "user1@b.example.org".into(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cached.origin.as_ref().unwrap().peer_id, b_on_a);
    assert_eq!(cached.role_ids, vec![30]);
    assert_eq!(cached.key_ids.len(), 2);
    let site = api_a
        .get_site(pb::GetSiteRequest {
            key: Some(pb::get_site_request::Key::SiteId(
                cached.primary_site_id.unwrap(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(site.login_base, "b1");
    assert_eq!(site.origin.unwrap().peer_id, b_on_a);
    assert_eq!(cached.site_ids, vec![site.site_id]);

    // Nothing changed anywhere: nothing written anywhere.
    for (server, peer) in [(&a, b_on_a), (&a, c_on_a), (&b, a_on_b), (&c, a_on_c)] {
        let report = refresh(server, peer).await;
        assert_eq!(writes(&report), 0, "{report:?}");
    }

    // Deleting B on A removes B's objects and nothing else.
    let removed = a
        .peers()
        .await
        .delete_peer(pb::DeletePeerRequest { peer_id: b_on_a })
        .await
        .unwrap()
        .into_inner()
        .removed
        .unwrap();
    assert_eq!((removed.sites, removed.persons, removed.keys), (3, 4, 8));
    assert_eq!(
        counts!(a, list_sites, sites),
        Counts {
            local: 2,
            foreign: 1
        }
    );
    assert_eq!(
        counts!(a, list_persons, persons),
        Counts {
            local: 3,
            foreign: 2
        }
    );
    assert_eq!(
        counts!(a, list_keys, keys),
        Counts {
            local: 3,
            foreign: 2
        }
    );
}

async fn three_registries_one_backend(backend: Backend) {
    three_registries(backend, backend, backend).await;
}

backend_tests!(three_registries_one_backend);

/// Mixed backends: the hub A on one backend, B and C on the other.
mod mixed {
    use super::*;

    async fn sqlite_hub_postgres_peers() {
        three_registries(Backend::Sqlite, Backend::Postgres, Backend::Postgres).await;
    }

    async fn postgres_hub_sqlite_peers() {
        three_registries(Backend::Postgres, Backend::Sqlite, Backend::Sqlite).await;
    }

    postgres_tests!(sqlite_hub_postgres_peers, postgres_hub_sqlite_peers);
}
