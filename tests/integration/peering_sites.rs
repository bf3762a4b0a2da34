//! Federation of sites between two registries: add, unchanged, update,
//! delete, the peer record's report and counts, deleting a peer; on both
//! backends.

use crate::common::federation::{class, peer_both_ways, refresh, writes};
use crate::common::{Backend, TestServer};
use fedreg::proto::v1 as pb;

fn site(login_base: &str) -> pb::CreateSiteRequest {
    pb::CreateSiteRequest {
        login_base: login_base.into(),
        name: format!("Site {login_base}"),
        ..Default::default()
    }
}

async fn sites_federate_both_ways(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let (plc2_on_1, plc1_on_2) = peer_both_ways(&plc1, "plc1", &plc2, "plc2").await;
    let mut api1 = plc1.registry().await;
    let mut api2 = plc2.registry().await;
    let mut ids1 = Vec::new();
    for lb in ["one", "two", "three"] {
        ids1.push(
            api1.create_site(site(lb))
                .await
                .unwrap()
                .into_inner()
                .site_id,
        );
    }
    api2.create_site(site("four")).await.unwrap();

    let first = refresh(&plc2, plc1_on_2).await;
    assert_eq!(first.outcome, pb::RefreshOutcome::Applied as i32);
    assert_eq!(class(&first, "sites").added, 3, "{first:?}");
    let back = refresh(&plc1, plc2_on_1).await;
    assert_eq!(class(&back, "sites").added, 1, "{back:?}");
    assert_eq!(
        counts!(plc2, list_sites, sites),
        crate::common::federation::Counts {
            local: 1,
            foreign: 3
        }
    );
    assert_eq!(
        counts!(plc1, list_sites, sites),
        crate::common::federation::Counts {
            local: 3,
            foreign: 1
        }
    );

    // A foreign site carries its origin and is read-only.
    let cached = api2
        .get_site(pb::GetSiteRequest {
            key: Some(pb::get_site_request::Key::LoginBase("two".into())),
        })
        .await
        .unwrap()
        .into_inner();
    let origin = cached.origin.expect("foreign site has an origin");
    assert_eq!(
        (origin.peer_id, origin.peer_object_id),
        (plc1_on_2, ids1[1])
    );
    crate::common::assert_status(
        api2.update_site(pb::UpdateSiteRequest {
            site_id: cached.site_id,
            name: Some("mine now".into()),
            ..Default::default()
        })
        .await,
        tonic::Code::FailedPrecondition,
        &["two", "read-only"],
    );

    // Nothing changed: nothing written.
    let again = refresh(&plc2, plc1_on_2).await;
    assert_eq!(writes(&again), 0, "{again:?}");

    // An update and a delete at the authority.
    api1.update_site(pb::UpdateSiteRequest {
        site_id: ids1[0],
        name: Some("Renamed".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    api1.delete_site(pb::DeleteRequest { id: ids1[2] })
        .await
        .unwrap();
    let report = refresh(&plc2, plc1_on_2).await;
    let sites = class(&report, "sites");
    assert_eq!(
        (sites.added, sites.updated, sites.deleted),
        (0, 1, 1),
        "{report:?}"
    );
    let renamed = api2
        .get_site(pb::GetSiteRequest {
            key: Some(pb::get_site_request::Key::LoginBase("one".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Renamed");

    // The peer record keeps the last report and the cached counts.
    let mut peers2 = plc2.peers().await;
    let peer = peers2
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(plc1_on_2)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        peer.last_refresh_outcome,
        pb::RefreshOutcome::Applied as i32
    );
    assert_eq!(peer.last_refresh_report.as_ref(), Some(&report));
    assert_eq!(peer.cached.unwrap().sites, 2);

    // Deleting the peer removes exactly what was cached from it.
    let removed = peers2
        .delete_peer(pb::DeletePeerRequest { peer_id: plc1_on_2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed.unwrap().sites, 2);
    assert_eq!(
        counts!(plc2, list_sites, sites),
        crate::common::federation::Counts {
            local: 1,
            foreign: 0
        }
    );
}

/// Enough sites for one refresh to write them as a batch (on PostgreSQL an
/// `UNNEST` statement from 16 rows on): added (half of them without a
/// latitude), updated (the latitude set where it was unset, changed where
/// it was set), then half of them deleted; each time the cache is what the
/// peer has.
async fn a_batch_of_sites_is_added_updated_and_deleted(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let (_, plc1_on_2) = peer_both_ways(&plc1, "plc1", &plc2, "plc2").await;
    let mut api1 = plc1.registry().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let mut request = site(&format!("batch{i}"));
        if i % 2 == 0 {
            request.latitude = Some(i as f64 / 2.0);
        }
        ids.push(
            api1.create_site(request)
                .await
                .unwrap()
                .into_inner()
                .site_id,
        );
    }
    let added = refresh(&plc2, plc1_on_2).await;
    assert_eq!(class(&added, "sites").added, 40, "{added:?}");

    for (i, &site_id) in ids.iter().enumerate() {
        api1.update_site(pb::UpdateSiteRequest {
            site_id,
            name: Some(format!("Renamed {i}")),
            // Set where it was unset, changed where it was set.
            latitude: Some(if i % 2 == 0 { -1.5 } else { i as f64 }),
            url: Some(format!("https://batch{i}.example.org")),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let updated = refresh(&plc2, plc1_on_2).await;
    assert_eq!(class(&updated, "sites").updated, 40, "{updated:?}");
    let mut api2 = plc2.registry().await;
    for i in [0, 17, 39] {
        let cached = api2
            .get_site(pb::GetSiteRequest {
                key: Some(pb::get_site_request::Key::LoginBase(format!("batch{i}"))),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cached.name, format!("Renamed {i}"));
        let latitude = if i % 2 == 0 { -1.5 } else { i as f64 };
        assert_eq!(cached.latitude, Some(latitude));
        assert_eq!(cached.url, format!("https://batch{i}.example.org"));
    }
    // The same data again: nothing to write, by delta or in full.
    assert_eq!(writes(&refresh(&plc2, plc1_on_2).await), 0);
    assert_eq!(
        writes(&crate::common::federation::refresh_full(&plc2, plc1_on_2).await),
        0
    );

    for &site_id in &ids[..20] {
        api1.delete_site(pb::DeleteRequest { id: site_id })
            .await
            .unwrap();
    }
    let deleted = refresh(&plc2, plc1_on_2).await;
    assert_eq!(class(&deleted, "sites").deleted, 20, "{deleted:?}");
    assert_eq!(counts!(plc2, list_sites, sites).foreign, 20);
}

backend_tests!(
    sites_federate_both_ways,
    a_batch_of_sites_is_added_updated_and_deleted
);
