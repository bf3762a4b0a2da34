//! Prometheus metrics: two registries serving their metrics on loopback
//! ports, scraped over HTTP/1.1 and parsed as Prometheus would, after
//! admin calls, a refresh of one from the other (applied, and failed for
//! an unreachable peer), a `GetPeerData` stream and a follow. Each value
//! is checked against what the test did: the calls made, the refresh
//! report, the bytes received, the changes committed. On both backends.

use prost::Message;

use crate::common::federation::{Populate, class, peer_one_way, refresh, try_refresh};
use crate::common::objects::site;
use crate::common::scrape::{Exposition, http, scrape};
use crate::common::{Backend, TestServer, assert_status, eventually};
use fedreg::proto::v1 as pb;

backend_tests!(metrics_follow_calls_refreshes_streams_and_storage);

const CREATE_SITE: &str = "fedreg.v1.RegistryService/CreateSite";
const GET_PEER_DATA: &str = "fedreg.v1.PeeringService/GetPeerData";

/// Starts a registry named `name` serving its metrics on a loopback port.
async fn start(backend: Backend, name: &str) -> TestServer {
    TestServer::start_with(backend, |config| {
        config.registry_name = name.into();
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// Unix seconds now.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn metrics_follow_calls_refreshes_streams_and_storage(backend: Backend) {
    let local = start(backend, "plc1").await;
    let peer = start(backend, "plc2").await;
    let (local_metrics, peer_metrics) = (local.metrics_addr(), peer.metrics_addr());

    // Calls: two sites created, one refused; each counted under its status,
    // with a histogram of durations.
    let mut api = local.registry().await;
    site(&mut api, "here1").await;
    site(&mut api, "here2").await;
    let refused = api
        .create_site(pb::CreateSiteRequest {
            login_base: "bad base".into(),
            name: "Bad".into(),
            ..Default::default()
        })
        .await;
    assert_status(refused, tonic::Code::InvalidArgument, &["login_base"]);
    let m = scrape(local_metrics).await;
    let ok = [("method", CREATE_SITE), ("code", "OK")];
    let invalid = [("method", CREATE_SITE), ("code", "INVALID_ARGUMENT")];
    assert_eq!(m.value("fedreg_rpc_calls_total", &ok), 2.0);
    assert_eq!(m.value("fedreg_rpc_calls_total", &invalid), 1.0);
    check_histogram(&m, "fedreg_rpc_duration_seconds", &ok, 2.0);
    check_histogram(&m, "fedreg_rpc_duration_seconds", &invalid, 1.0);
    assert_eq!(m.types["fedreg_rpc_calls"], "counter");
    assert_eq!(m.value("fedreg_database_up", &[]), 1.0);
    // The refused call wrote nothing: two entries, two revisions.
    assert_eq!(m.value("fedreg_change_log_entries", &[]), 2.0);
    assert_eq!(m.value("fedreg_change_log_revision", &[]), 2.0);

    // The peer's objects: 3 sites, 2 persons with a role, a site and a key
    // each. The log holds one entry per object, whatever the number of
    // its changes; 11 calls took at least as many revisions.
    Populate::new("far")
        .sites(3)
        .persons(2)
        .keys_per_person(1)
        .on(&peer)
        .await;
    let m = scrape(peer_metrics).await;
    assert_eq!(m.value("fedreg_change_log_entries", &[]), 7.0);
    assert!(m.value("fedreg_change_log_revision", &[]) >= 11.0);

    // A refresh: counted with its outcome and time; what it wrote per
    // class and relation is what its report says; the peer's last success
    // is the time it applied.
    let peer_id = peer_one_way(&local, "plc1", &peer, "plc2").await;
    let before = now().floor();
    let report = refresh(&local, peer_id).await;
    let after = now().ceil();
    assert_eq!(class(&report, "sites").added, 3);
    let m = scrape(local_metrics).await;
    let applied = [("peer", "plc2"), ("outcome", "applied")];
    assert_eq!(m.value("fedreg_refreshes_total", &applied), 1.0);
    check_histogram(&m, "fedreg_refresh_duration_seconds", &applied, 1.0);
    assert_eq!(
        m.value("fedreg_refresh_duration_seconds_sum", &applied),
        report.total_seconds
    );
    check_writes(&m, &report);
    let last_success = m.value(
        "fedreg_peer_last_success_timestamp_seconds",
        &[("peer", "plc2")],
    );
    assert!(
        (before..=after).contains(&last_success),
        "last success {last_success} not within the refresh ({before}..{after})"
    );
    // At the peer: the refresh's GetPeerData, its bytes, and no stream
    // left open once it is over.
    let m = scrape(peer_metrics).await;
    let served = [("method", GET_PEER_DATA), ("code", "OK")];
    assert_eq!(m.value("fedreg_rpc_calls_total", &served), 1.0);
    assert!(m.value("fedreg_peer_data_sent_bytes_total", &[]) > 0.0);
    let sent_for_refresh = m.value("fedreg_peer_data_sent_bytes_total", &[]);

    // A GetPeerData stream read to its end: the peer counts exactly the
    // bytes of the messages received, and the stream closed.
    let mut stream = peer
        .peering_as(Some(&peer.admin_token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .expect("GetPeerData")
        .into_inner();
    let mut received = 0;
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        received += chunk.encoded_len();
    }
    assert!(received > 0);
    eventually("the stream is counted and closed", || async {
        let m = scrape(peer_metrics).await;
        m.value("fedreg_peer_data_sent_bytes_total", &[]) == sent_for_refresh + received as f64
            && m.value("fedreg_peer_data_streams_open", &[]) == 0.0
    })
    .await;

    // A Follow stream: open while it lives, with the bytes of its events.
    let mut follow = peer
        .peering_as(Some(&peer.admin_token))
        .await
        .follow(pb::FollowRequest {
            heartbeat_seconds: 3600,
            ..Default::default()
        })
        .await
        .expect("Follow")
        .into_inner();
    let first = follow.message().await.expect("an event").expect("open");
    let m = scrape(peer_metrics).await;
    assert_eq!(m.value("fedreg_follow_streams_open", &[]), 1.0);
    // At least the first event's own read (the shared one may not have
    // run yet).
    assert!(m.value("fedreg_follow_database_reads_total", &[]) >= 1.0);
    assert_eq!(
        m.value("fedreg_follow_sent_bytes_total", &[]),
        first.encoded_len() as f64
    );
    drop(follow);
    eventually("the Follow stream is closed", || async {
        scrape(peer_metrics)
            .await
            .value("fedreg_follow_streams_open", &[])
            == 0.0
    })
    .await;

    // A peer that cannot be reached: a failed refresh, no success yet.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let ghost_id = local
        .peers()
        .await
        .create_peer(pb::CreatePeerRequest {
            peername: "ghost".into(),
            peer_url: closed_url,
            ..Default::default()
        })
        .await
        .expect("create peer")
        .into_inner()
        .peer_id;
    try_refresh(&local, ghost_id, false)
        .await
        .expect_err("the ghost does not answer");
    let m = scrape(local_metrics).await;
    let ghost = [("peer", "ghost")];
    let failed = [("peer", "ghost"), ("outcome", "failed")];
    assert_eq!(m.value("fedreg_refreshes_total", &failed), 1.0);
    assert_eq!(m.value("fedreg_refreshes_total", &applied), 1.0);
    assert_eq!(
        m.value("fedreg_peer_last_success_timestamp_seconds", &ghost),
        0.0
    );
    assert!(
        m.named("fedreg_refresh_objects_written_total")
            .all(|s| s.labels["peer"] != "ghost"),
        "a failed refresh writes nothing"
    );
    // Nobody follows a peer yet.
    assert_eq!(m.named("fedreg_peer_follow_connected").count(), 0);

    check_pools(&m, backend);

    // Following plc2: the stream connects, and a change at plc2 is applied
    // with no lag left.
    local
        .peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            follow: Some(true),
            ..Default::default()
        })
        .await
        .expect("follow plc2");
    let plc2 = [("peer", "plc2")];
    let caught_up = |m: &Exposition| {
        m.get("fedreg_peer_follow_connected", &plc2) == Some(1.0)
            && m.get("fedreg_peer_follow_standby", &plc2) == Some(0.0)
            && m.get("fedreg_peer_checkpoint_lag_revisions", &plc2) == Some(0.0)
            && m.get("fedreg_peer_checkpoint_lag_seconds", &plc2) == Some(0.0)
    };
    eventually("plc2 followed", || async {
        caught_up(&scrape(local_metrics).await)
    })
    .await;
    site(&mut peer.registry().await, "far9").await;
    let sites_added = [("peer", "plc2"), ("class", "sites"), ("change", "added")];
    eventually("the new site applied, the lag gone", || async {
        let m = scrape(local_metrics).await;
        m.get("fedreg_refresh_objects_written_total", &sites_added) == Some(4.0) && caught_up(&m)
    })
    .await;
    let m = scrape(local_metrics).await;
    assert!(m.value("fedreg_refreshes_total", &applied) >= 2.0);
    assert_eq!(m.get("fedreg_peer_follow_connected", &ghost), None);

    // Only GET or HEAD /metrics.
    assert_eq!(http(local_metrics, "GET", "/").await.status, 404);
    assert_eq!(http(local_metrics, "POST", "/metrics").await.status, 405);
}

/// Checks the histogram `name` with `labels`: typed histogram, buckets
/// rising to `+Inf`, which holds `count` observations, as `_count` does;
/// `_sum` positive.
#[track_caller]
fn check_histogram(m: &Exposition, name: &str, labels: &[(&str, &str)], count: f64) {
    assert_eq!(m.types[name], "histogram");
    let mut buckets: Vec<(f64, f64)> = m
        .named(&format!("{name}_bucket"))
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| {
            let le = &s.labels["le"];
            let bound = match le.as_str() {
                "+Inf" => f64::INFINITY,
                finite => finite.parse().expect("a numeric bound"),
            };
            (bound, s.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 2, "{name} {labels:?} has buckets");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative buckets: {buckets:?}"
    );
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    assert_eq!(m.value(&format!("{name}_count"), labels), count);
    assert!(m.value(&format!("{name}_sum"), labels) > 0.0);
}

/// Checks that the objects and memberships written for plc2 are the
/// counts of `report`, per class and relation, change by change.
#[track_caller]
fn check_writes(m: &Exposition, report: &pb::RefreshReport) {
    let mut objects = 0.0;
    for c in &report.classes {
        for (change, count) in [
            ("added", c.added),
            ("updated", c.updated),
            ("deleted", c.deleted),
        ] {
            let labels = [("peer", "plc2"), ("class", &c.class), ("change", change)];
            let written = m.value("fedreg_refresh_objects_written_total", &labels);
            assert_eq!(written, count as f64, "{labels:?}");
            objects += written;
        }
        let labels = [("peer", "plc2"), ("class", &c.class)];
        let skipped = m.value("fedreg_refresh_objects_skipped_total", &labels);
        assert_eq!(skipped, c.skipped as f64, "{labels:?}");
    }
    // 3 sites, 2 persons, 2 keys.
    assert_eq!(objects, 7.0);
    let mut memberships = 0.0;
    for r in &report.relations {
        for (change, count) in [("added", r.added), ("removed", r.removed)] {
            let labels = [
                ("peer", "plc2"),
                ("relation", &r.relation),
                ("change", change),
            ];
            let written = m.value("fedreg_refresh_memberships_written_total", &labels);
            assert_eq!(written, count as f64, "{labels:?}");
            memberships += written;
        }
    }
    // Each person's key and role.
    assert!(memberships >= 4.0, "memberships written: {memberships}");
}

/// Checks the pool gauges and counters: the backend's pools, their
/// connections within their size, no checkout timed out.
#[track_caller]
fn check_pools(m: &Exposition, backend: Backend) {
    let expected: &[(&str, f64)] = match backend {
        Backend::Sqlite => &[("sqlite_readers", 8.0), ("sqlite_writer", 1.0)],
        Backend::Postgres => &[("postgres", 16.0)],
    };
    let mut pools: Vec<&str> = m
        .named("fedreg_db_pool_max_connections")
        .map(|s| s.labels["pool"].as_str())
        .collect();
    pools.sort_unstable();
    assert_eq!(pools, expected.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    for (pool, max) in expected {
        let one = [("pool", *pool)];
        assert_eq!(m.value("fedreg_db_pool_max_connections", &one), *max);
        let in_use = m.value(
            "fedreg_db_pool_connections",
            &[("pool", pool), ("state", "in_use")],
        );
        let idle = m.value(
            "fedreg_db_pool_connections",
            &[("pool", pool), ("state", "idle")],
        );
        assert!(
            (1.0..=*max).contains(&(in_use + idle)),
            "{pool}: {in_use} in use, {idle} idle, of {max}"
        );
        assert!(m.value("fedreg_db_pool_waits_total", &one) >= 0.0);
        assert!(m.value("fedreg_db_pool_wait_seconds_total", &one) >= 0.0);
        assert_eq!(m.value("fedreg_db_pool_timeouts_total", &one), 0.0);
    }
}
