//! Scheduled refreshes: a peer with a refresh interval is refreshed by the
//! server itself, at once when it was never refreshed and again one
//! interval (give or take a tenth) later, picking up the peer's changes; a
//! peer that cannot be reached gets a failed refresh recorded on its
//! record, and the cache stays as it was. On both backends.
//!
//! These run in real time: the servers talk over loopback, and a paused
//! clock that advances by itself would fire their network timeouts. The
//! schedule's arithmetic (jitter, back-off, reset) is tested on a paused
//! clock beside it, in `src/peering/schedule.rs`.

use std::time::{Duration, Instant};

use crate::common::federation::{Counts, Populate, get_peer, peer_one_way};
use crate::common::objects::site;
use crate::common::{Backend, TestServer};
use fedreg::proto::v1::{self as pb, RefreshOutcome};

/// Shortest interval a peer may have.
const INTERVAL: i64 = 10;

/// Polls the peer record until `done` holds, for at most `limit`.
async fn wait_for(
    server: &TestServer,
    peer_id: i64,
    limit: Duration,
    done: impl Fn(&pb::Peer) -> bool,
) -> pb::Peer {
    let started = Instant::now();
    loop {
        let peer = get_peer(server, peer_id).await;
        if done(&peer) {
            return peer;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {peer:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scheduled_refreshes_follow_the_peer(backend: Backend) {
    let a = TestServer::start_named(backend, "a").await;
    let b = TestServer::start_named(backend, "b").await;
    Populate::new("b")
        .sites(2)
        .persons(2)
        .keys_per_person(1)
        .on(&b)
        .await;
    let b_on_a = peer_one_way(&a, "a", &b, "b").await;
    a.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id: b_on_a,
            refresh_interval_seconds: Some(INTERVAL),
            ..Default::default()
        })
        .await
        .expect("schedule refreshes");

    // Never refreshed: due at once (the schedule looks every second).
    let first = wait_for(&a, b_on_a, Duration::from_secs(8), |p| {
        p.last_refresh_time.is_some()
    })
    .await;
    assert_eq!(
        first.last_refresh_outcome,
        RefreshOutcome::Applied as i32,
        "{first:#?}"
    );
    assert_eq!(
        counts!(a, list_sites, sites),
        Counts {
            local: 0,
            foreign: 2
        }
    );
    let first_time = first.last_refresh_time.unwrap().seconds;

    // A change at the peer arrives with the next scheduled refresh.
    let mut b_api = b.registry().await;
    site(&mut b_api, "bnew").await;
    let second = wait_for(
        &a,
        b_on_a,
        Duration::from_secs((INTERVAL as u64) * 2 + 5),
        |p| p.last_refresh_time.as_ref().unwrap().seconds > first_time,
    )
    .await;
    let waited = second.last_refresh_time.unwrap().seconds - first_time;
    assert!(
        (INTERVAL - 2..=INTERVAL * 2).contains(&waited),
        "second refresh {waited} s after the first"
    );
    assert_eq!(
        counts!(a, list_sites, sites),
        Counts {
            local: 0,
            foreign: 3
        }
    );
}

async fn unreachable_peer_failure_is_recorded(backend: Backend) {
    let a = TestServer::start_named(backend, "a").await;
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let peer_id = a
        .peers()
        .await
        .create_peer(pb::CreatePeerRequest {
            peername: "gone".into(),
            peer_url: format!("http://{closed}"),
            outbound_token: "some-token".into(),
            refresh_interval_seconds: INTERVAL,
            ..Default::default()
        })
        .await
        .expect("create peer")
        .into_inner()
        .peer_id;
    let peer = wait_for(&a, peer_id, Duration::from_secs(8), |p| {
        p.last_refresh_time.is_some()
    })
    .await;
    assert_eq!(
        peer.last_refresh_outcome,
        RefreshOutcome::Failed as i32,
        "{peer:#?}"
    );
    let report = peer.last_refresh_report.expect("failure report");
    assert!(
        report.reason.contains(&closed.to_string()),
        "reason names the address: {report:#?}"
    );
    assert!(
        report.reason.contains("refused"),
        "reason gives the cause: {report:#?}"
    );
    assert_eq!(
        counts!(a, list_sites, sites),
        Counts {
            local: 0,
            foreign: 0
        }
    );
}

backend_tests!(
    scheduled_refreshes_follow_the_peer,
    unreachable_peer_failure_is_recorded
);
