//! Sites through the admin API: create, get, list with pages, update,
//! delete, and every validation error; on both backends.

use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::{self as pb, get_site_request::Key};
use tonic::Code;

fn site(login_base: &str) -> pb::CreateSiteRequest {
    pb::CreateSiteRequest {
        login_base: login_base.into(),
        name: format!("Site {login_base}"),
        abbreviated_name: login_base.to_uppercase(),
        latitude: Some(48.85),
        longitude: Some(2.35),
        url: format!("https://{login_base}.example.org"),
        ..Default::default()
    }
}

async fn create_get_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;

    let created = api.create_site(site("inria")).await.unwrap().into_inner();
    assert!(created.site_id > 0);
    assert_eq!(created.login_base, "inria");
    assert!(created.enabled && created.is_public);
    assert_eq!((created.max_slices, created.max_slivers), (10, 1000));
    assert!(created.origin.is_none(), "a created site is local");

    let by_id = api
        .get_site(pb::GetSiteRequest {
            key: Some(Key::SiteId(created.site_id)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id, created);
    let by_name = api
        .get_site(pb::GetSiteRequest {
            key: Some(Key::LoginBase("inria".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_name, created);

    let updated = api
        .update_site(pb::UpdateSiteRequest {
            site_id: created.site_id,
            name: Some("INRIA Sophia".into()),
            enabled: Some(false),
            max_slices: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "INRIA Sophia");
    assert!(!updated.enabled);
    assert_eq!(updated.max_slices, 3);
    assert_eq!(updated.login_base, "inria", "unset fields stay");
    assert_eq!(updated.url, created.url);

    api.delete_site(pb::DeleteRequest {
        id: created.site_id,
    })
    .await
    .unwrap();
    assert_status(
        api.get_site(pb::GetSiteRequest {
            key: Some(Key::SiteId(created.site_id)),
        })
        .await,
        Code::NotFound,
        &["site_id", &created.site_id.to_string()],
    );
    assert_status(
        api.delete_site(pb::DeleteRequest {
            id: created.site_id,
        })
        .await,
        Code::NotFound,
        &["site"],
    );
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    api.create_site(site("taken")).await.unwrap();

    assert_status(
        api.create_site(site("Bad_Base")).await,
        Code::InvalidArgument,
        &["login_base", "Bad_Base"],
    );
    assert_status(
        api.create_site(site("")).await,
        Code::InvalidArgument,
        &["login_base"],
    );
    assert_status(
        api.create_site(site("taken")).await,
        Code::AlreadyExists,
        &["login_base", "taken"],
    );
    let mut no_name = site("noname");
    no_name.name = "  ".into();
    assert_status(
        api.create_site(no_name).await,
        Code::InvalidArgument,
        &["name"],
    );
    let mut bad_lat = site("badlat");
    bad_lat.latitude = Some(91.0);
    assert_status(
        api.create_site(bad_lat).await,
        Code::InvalidArgument,
        &["latitude", "91"],
    );
    let mut bad_max = site("badmax");
    bad_max.max_slices = Some(-1);
    assert_status(
        api.create_site(bad_max).await,
        Code::InvalidArgument,
        &["max_slices", "-1"],
    );

    let other = api.create_site(site("other")).await.unwrap().into_inner();
    assert_status(
        api.update_site(pb::UpdateSiteRequest {
            site_id: other.site_id,
            login_base: Some("taken".into()),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        &["login_base", "taken"],
    );
    assert_status(
        api.update_site(pb::UpdateSiteRequest {
            site_id: 9999,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["site_id", "9999"],
    );
    // Nothing of the failed calls was written.
    let all = api
        .list_sites(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = all.sites.iter().map(|s| s.login_base.as_str()).collect();
    assert_eq!(names, ["taken", "other"]);
}

async fn pagination_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.registry().await;
    for i in 0..7 {
        api.create_site(site(&format!("s{i}"))).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = api
            .list_sites(pb::ListRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        seen.extend(page.sites.into_iter().map(|s| s.login_base));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);
    assert_eq!(pages, 3);

    let local = api
        .list_sites(pb::ListRequest {
            scope: pb::Scope::Local as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local.sites.len(), 7);
    let foreign = api
        .list_sites(pb::ListRequest {
            scope: pb::Scope::Foreign as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(foreign.sites.is_empty());

    assert_status(
        api.list_sites(pb::ListRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token", "garbage"],
    );
    assert_status(
        api.list_sites(pb::ListRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_size", "5000"],
    );
}

backend_tests!(
    create_get_update_delete,
    validation_errors,
    pagination_and_filters
);
