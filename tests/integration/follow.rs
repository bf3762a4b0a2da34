//! Follow mode: a registry that follows a peer keeps a `Follow` stream open
//! to it and applies each change the peer commits, without a refresh call.
//! Checked on real servers, both backends, both directions:
//! - many checkpoint-only streams: every one gets every commit's event,
//!   once and in order, and they end when their token is revoked;
//! - streams of several callers that ask for the changes: each event
//!   carries what a delta `GetPeerData` gives that caller (its own nodes
//!   cached here, no other peer's), while the serving registry reads each
//!   change once for all of them; under commits from concurrent clients,
//!   each stream's carried changes (shared, or read for a stream held
//!   behind) chain from event to event and hold every change once;
//! - the stream itself: the first event, a commit's event (the heartbeat
//!   set to an hour, so only the commit notification can deliver it, also
//!   from another process sharing a PostgreSQL database), heartbeats, bad
//!   requests, and a server that stops with streams open;
//! - changes on both registries reach each other's cache, and the cache is
//!   what a full refresh makes of the peer's data;
//! - the followed peer restarting (changes made while it was away arrive
//!   once it is back) and the connection cut under the stream, several
//!   times: no change is lost or applied twice;
//! - of two processes sharing a database, one follows a peer and the
//!   other stands by, taking over when the first stops;
//! - a peer that does not serve `Follow` shows the error and is retried;
//! - a stream whose caller reads nothing is dropped after the send
//!   timeout, freeing its slot, without holding up the others, and its
//!   caller resumes from its checkpoint without missing a change.

use std::time::Duration;

use crate::common::fake_peer::{self, FakePeer, site};
use crate::common::federation::{get_peer, peer_both_ways, peer_one_way, refresh_full, writes};
use crate::common::proxy::Proxy;
use crate::common::scrape::scrape;
use crate::common::{Backend, PATIENCE, TestServer, assert_status, eventually};
use fedreg::proto::v1 as pb;
use tonic::Streaming;

backend_tests!(
    the_follow_stream_announces_commits_and_heartbeats,
    follow_events_carry_small_changes_while_their_token_lives,
    many_streams_get_every_commit_while_their_token_lives,
    carried_changes_are_read_once_and_cut_to_each_caller,
    carried_changes_chain_under_concurrent_commits,
    changes_reach_followers_both_ways,
    following_survives_the_peer_restarting,
    following_survives_cut_connections,
    one_of_several_processes_follows_a_peer,
    a_peer_without_follow_shows_the_error,
    an_unread_stream_is_dropped_and_resumes_from_its_checkpoint,
);

/// The next event of a Follow stream, within [`PATIENCE`].
async fn next_event(events: &mut Streaming<pb::FollowEvent>) -> pb::FollowEvent {
    tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("an event in time")
        .expect("the stream works")
        .expect("the stream is open")
}

async fn open_follow(
    on: &TestServer,
    since: Option<pb::Checkpoint>,
    heartbeat_seconds: u32,
) -> Streaming<pb::FollowEvent> {
    follow_as(
        on,
        &on.admin_token,
        pb::FollowRequest {
            since,
            heartbeat_seconds,
            include_changes: false,
        },
    )
    .await
}

/// Opens a Follow stream with `token` that asks for the changes.
async fn open_follow_with_changes(
    on: &TestServer,
    token: &str,
    since: Option<pb::Checkpoint>,
) -> Streaming<pb::FollowEvent> {
    let request = pb::FollowRequest {
        since,
        heartbeat_seconds: 3600,
        include_changes: true,
    };
    follow_as(on, token, request).await
}

async fn follow_as(
    on: &TestServer,
    token: &str,
    request: pb::FollowRequest,
) -> Streaming<pb::FollowEvent> {
    on.peering_as(Some(token))
        .await
        .follow(request)
        .await
        .expect("follow")
        .into_inner()
}

/// The login bases of the sites in the carried `changes`, after checking
/// that they are a whole delta from `since` to `to`.
fn carried_sites(
    changes: &pb::FollowChanges,
    since: &pb::Checkpoint,
    to: &pb::Checkpoint,
) -> Vec<String> {
    use pb::peer_data_chunk::Part;
    assert_eq!(changes.since.as_ref(), Some(since));
    let parts: Vec<&Part> = changes
        .chunks
        .iter()
        .map(|c| c.part.as_ref().expect("a part"))
        .collect();
    let Some(Part::Header(header)) = parts.first() else {
        panic!("the changes open with a header: {parts:?}");
    };
    assert_eq!(header.kind(), pb::SnapshotKind::Delta);
    assert_eq!(header.checkpoint.as_ref(), Some(to));
    assert!(
        matches!(parts.last(), Some(Part::Trailer(_))),
        "the changes close with a trailer: {parts:?}"
    );
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Batch(b) => Some(b.sites.iter().map(|s| s.login_base.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Opens a Follow stream asking for the changes with each of `tokens`;
/// returns them with the checkpoint of each one's first event.
async fn follow_with_changes_as(
    on: &TestServer,
    tokens: &[String],
) -> (Vec<Streaming<pb::FollowEvent>>, Vec<pb::Checkpoint>) {
    let (mut streams, mut since) = (Vec::new(), Vec::new());
    for token in tokens {
        let mut stream = open_follow_with_changes(on, token, None).await;
        let first = next_event(&mut stream).await;
        since.push(first.checkpoint.expect("checkpoint"));
        streams.push(stream);
    }
    (streams, since)
}

/// Opens a Follow stream with `token` that asks for the changes, on a
/// connection of its own whose HTTP/2 window is 1 KiB: a caller that stops
/// reading it holds back its events after a few.
async fn follow_through_narrow_window(on: &TestServer, token: &str) -> Streaming<pb::FollowEvent> {
    let narrow = tonic::transport::Channel::from_shared(on.url())
        .expect("url")
        .initial_stream_window_size(1024)
        .connect()
        .await
        .expect("connect");
    pb::peering_service_client::PeeringServiceClient::new(
        tonic::service::interceptor::InterceptedService::new(
            narrow,
            crate::common::Bearer::new(Some(token)).expect("ascii token"),
        ),
    )
    .follow(pb::FollowRequest {
        since: None,
        heartbeat_seconds: 3600,
        include_changes: true,
    })
    .await
    .expect("follow")
    .into_inner()
}

/// Makes `on` follow (or stop following) its peer `peer_id`.
async fn set_follow(on: &TestServer, peer_id: i64, follow: bool) -> pb::Peer {
    on.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            follow: Some(follow),
            ..Default::default()
        })
        .await
        .expect("set follow")
        .into_inner()
}

/// Renames site `site_id` through `api`.
async fn rename_site(
    api: &mut fedreg::proto::v1::registry_service_client::RegistryServiceClient<
        crate::common::Authed,
    >,
    site_id: i64,
    name: &str,
) {
    api.update_site(pb::UpdateSiteRequest {
        site_id,
        name: Some(name.into()),
        ..Default::default()
    })
    .await
    .expect("update site");
}

/// Sites cached on `on` from its peer `peer_id`.
async fn cached_sites(on: &TestServer, peer_id: i64) -> i64 {
    get_peer(on, peer_id).await.cached.unwrap_or_default().sites
}

/// Waits until `on` caches `sites` sites from `peer_id` and its follow
/// status says it is up to date; returns that status.
async fn caught_up(on: &TestServer, peer_id: i64, sites: i64) -> pb::FollowStatus {
    eventually(
        &format!("{sites} sites cached from peer {peer_id}"),
        || async {
            let peer = get_peer(on, peer_id).await;
            let status = peer.follow_status.unwrap_or_default();
            peer.cached.unwrap_or_default().sites == sites && status.lag_revisions == 0
        },
    )
    .await;
    get_peer(on, peer_id).await.follow_status.expect("status")
}

async fn the_follow_stream_announces_commits_and_heartbeats(backend: Backend) {
    let mut a = TestServer::start_named(backend, "plca").await;
    let mut api = a.registry().await;

    // Without a checkpoint, the first event announces the current one.
    let mut events = open_follow(&a, None, 3600).await;
    let first = next_event(&mut events).await;
    assert!(!first.heartbeat);
    let start = first.checkpoint.expect("checkpoint");

    // A commit is announced at once: with an hour's heartbeat, only the
    // commit's notification can bring this event.
    crate::common::objects::site(&mut api, "alpha").await;
    let changed = next_event(&mut events).await;
    assert!(!changed.heartbeat);
    let after = changed.checkpoint.expect("checkpoint");
    assert_eq!(after.epoch, start.epoch);
    assert!(after.revision > start.revision, "{after:?} after {start:?}");

    // A commit in another process on the same database: PostgreSQL
    // notifies every listening process; on SQLite one process owns the
    // database, so the heartbeat's read (the safety net) announces it.
    let mut quick = open_follow(&a, Some(after.clone()), 1).await;
    assert!(next_event(&mut quick).await.heartbeat, "nothing new yet");
    let mut other = TestServer::start_sharing(&a, |c| c.registry_name = "plca".into()).await;
    crate::common::objects::site(&mut other.registry().await, "beta").await;
    let stream = match backend {
        Backend::Postgres => &mut events,
        Backend::Sqlite => &mut quick,
    };
    let moved = next_event(stream).await;
    assert!(!moved.heartbeat);
    assert!(moved.checkpoint.expect("checkpoint").revision > after.revision);
    other.stop().await;

    // Nothing new: heartbeats, each with the current checkpoint.
    let now = pb::Checkpoint {
        epoch: start.epoch.clone(),
        revision: after.revision + 1,
    };
    let mut beats = open_follow(&a, Some(now.clone()), 1).await;
    for _ in 0..2 {
        let beat = next_event(&mut beats).await;
        assert!(beat.heartbeat);
        assert_eq!(beat.checkpoint, Some(now.clone()));
    }

    // A checkpoint of another epoch is behind whatever its revision.
    let mut foreign = open_follow(
        &a,
        Some(pb::Checkpoint {
            epoch: "elsewhere".into(),
            revision: 1_000_000,
        }),
        3600,
    )
    .await;
    assert!(!next_event(&mut foreign).await.heartbeat);

    let bad = a
        .peering_as(Some(&a.admin_token))
        .await
        .follow(pb::FollowRequest {
            since: None,
            heartbeat_seconds: 4000,
            include_changes: false,
        })
        .await;
    assert_status(
        bad,
        tonic::Code::InvalidArgument,
        &["heartbeat_seconds", "4000"],
    );
    let anonymous = a
        .peering_as(None)
        .await
        .follow(pb::FollowRequest::default())
        .await;
    assert_status(anonymous, tonic::Code::Unauthenticated, &[]);

    // Open streams do not hold the server up when it stops: they end.
    tokio::time::timeout(PATIENCE, a.stop())
        .await
        .expect("the server stops with follow streams open");
    let ended = tokio::time::timeout(PATIENCE, beats.message())
        .await
        .expect("the stream ends");
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
}

async fn follow_events_carry_small_changes_while_their_token_lives(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let mut api = a.registry().await;
    let mut tokens = a.tokens().await;
    let created = a.new_admin_token("follower").await;
    let token = created.token.clone();

    let mut events = open_follow_with_changes(&a, &token, None).await;
    let start = next_event(&mut events).await;
    assert!(start.changes.is_none(), "nothing to start from yet");
    let start = start.checkpoint.expect("checkpoint");
    let mut bare = open_follow(&a, Some(start.clone()), 3600).await;
    assert!(next_event(&mut bare).await.heartbeat, "nothing new yet");

    // A change's event carries it, from the previous event's checkpoint.
    crate::common::objects::site(&mut api, "alpha").await;
    let changed = next_event(&mut events).await;
    let after = changed.checkpoint.clone().expect("checkpoint");
    let changes = changed.changes.expect("the change is carried");
    assert_eq!(carried_sites(&changes, &start, &after), ["alpha"]);
    // A caller that did not ask for changes gets the checkpoint only.
    let plain = next_event(&mut bare).await;
    assert_eq!(plain.checkpoint.as_ref(), Some(&after));
    assert!(plain.changes.is_none());

    // A stream opened behind gets what it missed in its first event, if
    // it is small; beyond 256 revisions, the checkpoint only.
    crate::common::objects::site(&mut api, "beta").await;
    let mut behind = open_follow_with_changes(&a, &token, Some(after.clone())).await;
    let first = next_event(&mut behind).await;
    let now = first.checkpoint.clone().expect("checkpoint");
    let changes = first.changes.expect("a small gap is carried");
    assert_eq!(carried_sites(&changes, &after, &now), ["beta"]);
    for i in 0..260 {
        crate::common::objects::site(&mut api, &format!("many{i}")).await;
    }
    let mut far_behind = open_follow_with_changes(&a, &token, Some(now.clone())).await;
    let first = next_event(&mut far_behind).await;
    assert!(first.checkpoint.expect("checkpoint").revision >= now.revision + 260);
    assert!(
        first.changes.is_none(),
        "a large gap is left to GetPeerData"
    );

    // Revoking the token ends its streams at their next event.
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            token_id: created.info.expect("info").token_id,
        })
        .await
        .expect("revoke");
    crate::common::objects::site(&mut api, "gamma").await;
    let ended = loop {
        match tokio::time::timeout(PATIENCE, events.message())
            .await
            .expect("the stream moves")
        {
            // Events of the 260 sites, sent before the revocation.
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_status(ended, tonic::Code::Unauthenticated, &["token", "revoked"]);
}

async fn many_streams_get_every_commit_while_their_token_lives(backend: Backend) {
    const STREAMS: usize = 12;
    let a = TestServer::start_with(backend, |c| c.streams_per_token = STREAMS).await;
    let mut api = a.registry().await;
    let mut tokens = a.tokens().await;
    let created = a.new_admin_token("watchers").await;
    let request = pb::FollowRequest {
        since: None,
        heartbeat_seconds: 3600,
        include_changes: false,
    };
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(follow_as(&a, &created.token, request.clone()).await);
    }
    let mut last = Vec::new();
    for stream in &mut streams {
        last.push(next_event(stream).await.checkpoint.expect("checkpoint"));
    }

    // With an hour's heartbeat, each event is a commit's, and each stream
    // gets each commit's, in order.
    for i in 0..3 {
        crate::common::objects::site(&mut api, &format!("fan{i}")).await;
        for (stream, last) in streams.iter_mut().zip(&mut last) {
            let event = next_event(stream).await;
            assert!(!event.heartbeat);
            let checkpoint = event.checkpoint.expect("checkpoint");
            assert_eq!(checkpoint.epoch, last.epoch);
            assert!(
                checkpoint.revision > last.revision,
                "{checkpoint:?} after {last:?}"
            );
            *last = checkpoint;
        }
    }
    let latest = last[0].clone();
    assert!(last.iter().all(|c| *c == latest), "{last:?}");

    // Revoking the token ends every stream, though no event reads it.
    tokens
        .revoke_token(pb::RevokeTokenRequest {
            token_id: created.info.expect("info").token_id,
        })
        .await
        .expect("revoke");
    for stream in &mut streams {
        let ended = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream ends");
        assert_status(ended, tonic::Code::Unauthenticated, &["token", "revoked"]);
    }
}

/// A peer token on `on` for its peer `peer_id`.
async fn peer_token(on: &TestServer, peer_id: i64) -> String {
    on.tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: format!("peer{peer_id}"),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .expect("create token")
        .into_inner()
        .token
}

/// The chunks of a delta `GetPeerData` from `since`, called with `token`,
/// without what differs between two reads of the same changes (the
/// header's time, the trailer's database time).
async fn delta_as(on: &TestServer, token: &str, since: &pb::Checkpoint) -> Vec<pb::PeerDataChunk> {
    let mut stream = on
        .peering_as(Some(token))
        .await
        .get_peer_data(pb::GetPeerDataRequest {
            since: Some(since.clone()),
            ..Default::default()
        })
        .await
        .expect("get peer data")
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("the stream works") {
        chunks.push(chunk);
    }
    comparable(chunks)
}

/// `chunks` without the header's time and the trailer's database time.
fn comparable(mut chunks: Vec<pb::PeerDataChunk>) -> Vec<pb::PeerDataChunk> {
    use pb::peer_data_chunk::Part;
    for chunk in &mut chunks {
        match &mut chunk.part {
            Some(Part::Header(header)) => header.snapshot_time = None,
            Some(Part::Trailer(trailer)) => trailer.db_seconds = 0.0,
            _ => {}
        }
    }
    chunks
}

/// The slices and peer nodes of a delta's batches.
fn slices_and_peer_nodes(
    chunks: &[pb::PeerDataChunk],
) -> (Vec<pb::ExportedSlice>, Vec<pb::PeerNode>) {
    let (mut slices, mut peer_nodes) = (Vec::new(), Vec::new());
    for chunk in chunks {
        if let Some(pb::peer_data_chunk::Part::Batch(batch)) = &chunk.part {
            slices.extend(batch.slices.iter().cloned());
            peer_nodes.extend(batch.peer_nodes.iter().cloned());
        }
    }
    (slices, peer_nodes)
}

async fn carried_changes_are_read_once_and_cut_to_each_caller(backend: Backend) {
    const READS: &str = "fedreg_follow_database_reads_total";
    let a = TestServer::start_with(backend, |c| {
        c.registry_name = "plca".into();
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let mut api = a.registry().await;
    // A local node and slice, and a node cached from each of two peers.
    let home = crate::common::objects::site(&mut api, "home").await;
    let local_node = crate::common::objects::node(&mut api, home, "n1.home.org").await;
    let slice = crate::common::objects::slice(&mut api, "home_shared").await;
    let mut cached_nodes = Vec::new();
    for (peer, peer_node_id) in [("plcb", 11), ("plcc", 21)] {
        let batch = pb::PeerDataBatch {
            sites: vec![site(1, peer)],
            nodes: vec![fake_peer::node(peer_node_id, &format!("n.{peer}.org"), 1)],
            ..Default::default()
        };
        let peer_id = fake_peer::cache(&a, peer, batch).await;
        let node = crate::common::objects::node_named(&mut api, &format!("n.{peer}.org")).await;
        cached_nodes.push((peer_id, node.node_id, peer_node_id));
    }
    let [(b_on_a, b_node, b_peer_node), (c_on_a, c_node, c_peer_node)] = cached_nodes[..] else {
        unreachable!()
    };
    let mapped = |node_id, peer_node_id| pb::PeerNode {
        node_id,
        peer_node_id,
    };

    // Streams asking for the changes: two peers' and two admins'; the
    // slice's nodes each caller is shown, and the nodes mapped back to it.
    let shown = [
        (vec![local_node, b_node], vec![mapped(b_node, b_peer_node)]),
        (vec![local_node, c_node], vec![mapped(c_node, c_peer_node)]),
        (vec![local_node], vec![]),
        (vec![local_node], vec![]),
    ];
    let callers = [
        peer_token(&a, b_on_a).await,
        peer_token(&a, c_on_a).await,
        a.admin_token.clone(),
        a.admin_token.clone(),
    ];
    let (mut streams, mut since) = follow_with_changes_as(&a, &callers).await;
    assert!(since.iter().all(|c| *c == since[0]), "{since:?}");

    const COMMITS: usize = 3;
    let mut reads = 0.0;
    for commit in 0..COMMITS {
        let before = scrape(a.metrics_addr()).await.value(READS, &[]);
        match commit {
            0 => {
                api.add_nodes_to_slice(pb::SliceNodesRequest {
                    slice_id: slice,
                    node_ids: vec![local_node, b_node, c_node],
                })
                .await
                .expect("add nodes");
            }
            1 => {
                api.update_slice(pb::UpdateSliceRequest {
                    slice_id: slice,
                    description: Some("Shared by three registries".into()),
                    ..Default::default()
                })
                .await
                .expect("update slice");
            }
            _ => rename_site(&mut api, home, "Home again").await,
        }
        let mut events = Vec::new();
        for stream in &mut streams {
            events.push(next_event(stream).await);
        }
        reads += scrape(a.metrics_addr()).await.value(READS, &[]) - before;

        // Each event carries what a delta GetPeerData gives its caller.
        for (caller, event) in events.iter().enumerate() {
            let changes = event.changes.clone().expect("the change is carried");
            assert_eq!(changes.since.as_ref(), Some(&since[caller]));
            let chunks = comparable(changes.chunks);
            let fetched = delta_as(&a, &callers[caller], &since[caller]).await;
            assert_eq!(chunks, fetched, "commit {commit}, caller {caller}");
            let (slices, peer_nodes) = slices_and_peer_nodes(&chunks);
            if commit < 2 {
                let (nodes, mapped) = &shown[caller];
                assert_eq!(slices.len(), 1, "commit {commit}: {slices:?}");
                assert_eq!(
                    &slices[0].node_ids, nodes,
                    "commit {commit}, caller {caller}"
                );
                assert_eq!(&peer_nodes, mapped, "commit {commit}, caller {caller}");
            } else {
                assert!(slices.is_empty() && peer_nodes.is_empty(), "{chunks:?}");
            }
            since[caller] = event.checkpoint.clone().expect("checkpoint");
        }
    }
    // One checkpoint read and one read of the changes per commit, for the
    // four streams together (a read per stream would make 5); a stray
    // wake, such as a token's first use being recorded, costs one more
    // checkpoint read.
    assert!(
        reads <= (2 * COMMITS + 2) as f64,
        "{reads} reads for {COMMITS} commits"
    );
}

async fn carried_changes_chain_under_concurrent_commits(backend: Backend) {
    const CLIENTS: usize = 4;
    const SITES_EACH: usize = 10;
    // Four streams and a GetPeerData call on one token.
    let a = TestServer::start_with(backend, |c| c.streams_per_token = 8).await;
    let admins = [
        a.admin_token.clone(),
        a.admin_token.clone(),
        a.admin_token.clone(),
    ];
    let (mut streams, mut since) = follow_with_changes_as(&a, &admins).await;
    // A fourth stream that is not read while the commits are made: its
    // events wait behind its 1 KiB window, and once read again it is behind
    // the shared changes and reads its own.
    let mut held = follow_through_narrow_window(&a, &a.admin_token).await;
    since.push(next_event(&mut held).await.checkpoint.expect("checkpoint"));
    streams.push(held);

    // Commits close together: events see them one by one or several at a
    // time, from the shared changes or from a stream's own read.
    let mut writers = Vec::new();
    for client in 0..CLIENTS {
        let mut api = a.registry().await;
        writers.push(tokio::spawn(async move {
            for i in 0..SITES_EACH {
                crate::common::objects::site(&mut api, &format!("c{client}s{i}")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("the writer");
    }
    let last = a
        .peering_as(Some(&a.admin_token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .expect("get peer data")
        .into_inner()
        .message()
        .await
        .expect("the stream works")
        .and_then(|chunk| match chunk.part {
            Some(pb::peer_data_chunk::Part::Header(header)) => header.checkpoint,
            _ => None,
        })
        .expect("a header with the checkpoint");
    let mut expected: Vec<String> = (0..CLIENTS)
        .flat_map(|c| (0..SITES_EACH).map(move |i| format!("c{c}s{i}")))
        .collect();
    expected.sort();

    // Each stream's events carry every site once, each event's changes
    // starting where the previous event ended.
    for (stream, mut at) in streams.iter_mut().zip(since) {
        let mut sites = Vec::new();
        while at != last {
            let event = next_event(stream).await;
            let to = event.checkpoint.expect("checkpoint");
            let changes = event.changes.expect("small changes are carried");
            sites.extend(carried_sites(&changes, &at, &to));
            at = to;
        }
        sites.sort();
        assert_eq!(sites, expected);
    }
}

async fn changes_reach_followers_both_ways(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let (b_on_a, a_on_b) = peer_both_ways(&a, "plca", &b, "plcb").await;
    let followed = set_follow(&b, a_on_b, true).await;
    assert_eq!(followed.mode(), pb::SyncMode::Follow);
    set_follow(&a, b_on_a, true).await;

    let mut on_a = a.registry().await;
    let mut on_b = b.registry().await;
    let mut a_sites = Vec::new();
    for i in 0..4 {
        a_sites.push(crate::common::objects::site(&mut on_a, &format!("alpha{i}")).await);
    }
    crate::common::objects::site(&mut on_b, "beta0").await;
    rename_site(&mut on_a, a_sites[0], "Renamed").await;
    on_a.delete_site(pb::DeleteRequest { id: a_sites[1] })
        .await
        .expect("delete site");

    let status = caught_up(&b, a_on_b, 3).await;
    caught_up(&a, b_on_a, 1).await;
    assert!(status.connected);
    assert!(status.refreshes >= 1);
    assert_eq!(status.applied_revision, status.peer_revision);
    assert!(status.last_error.is_empty(), "{}", status.last_error);
    let peer = get_peer(&b, a_on_b).await;
    let report = peer.last_refresh_report.expect("a report");
    assert_eq!(report.mode(), pb::SyncMode::Follow);
    let renamed = on_b
        .get_site(pb::GetSiteRequest {
            key: Some(pb::get_site_request::Key::LoginBase("alpha0".into())),
        })
        .await
        .expect("the cached site")
        .into_inner();
    assert_eq!(renamed.name, "Renamed");

    // Once caught up, a change comes with its event: applied without a
    // GetPeerData call.
    rename_site(&mut on_a, a_sites[2], "Carried").await;
    let cached_on_b = b.registry().await;
    eventually("the second rename reaches b", || {
        let mut api = cached_on_b.clone();
        async move {
            api.get_site(pb::GetSiteRequest {
                key: Some(pb::get_site_request::Key::LoginBase("alpha2".into())),
            })
            .await
            .is_ok_and(|s| s.into_inner().name == "Carried")
        }
    })
    .await;
    let report = get_peer(&b, a_on_b)
        .await
        .last_refresh_report
        .expect("a report");
    let phases: Vec<&str> = report.timers.iter().map(|t| t.phase.as_str()).collect();
    assert!(phases.contains(&"carried"), "{phases:?}");

    // Each cache is what a full refresh makes of the peer's data.
    assert_eq!(writes(&refresh_full(&b, a_on_b).await), 0);
    assert_eq!(writes(&refresh_full(&a, b_on_a).await), 0);

    // Stopping to follow closes the stream; the peer is manual again.
    let manual = set_follow(&b, a_on_b, false).await;
    assert_eq!(manual.mode(), pb::SyncMode::Manual);
    assert!(manual.follow_status.is_none());
    crate::common::objects::site(&mut on_a, "alpha9").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cached_sites(&b, a_on_b).await, 3, "not followed any more");
}

async fn following_survives_the_peer_restarting(backend: Backend) {
    let mut a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
    let address = a.addr();
    let first = crate::common::objects::site(&mut a.registry().await, "alpha0").await;
    set_follow(&b, a_on_b, true).await;
    caught_up(&b, a_on_b, 1).await;

    // The peer stops; while it is away, its database changes (another
    // process on it, not known to the follower).
    a.stop().await;
    let mut away = TestServer::start_sharing(&a, |c| c.registry_name = "plca".into()).await;
    let mut api = away.registry().await;
    crate::common::objects::site(&mut api, "alpha1").await;
    crate::common::objects::site(&mut api, "alpha2").await;
    api.delete_site(pb::DeleteRequest { id: first })
        .await
        .expect("delete");
    away.stop().await;
    eventually("the follower notices", || async {
        !get_peer(&b, a_on_b)
            .await
            .follow_status
            .unwrap_or_default()
            .connected
    })
    .await;

    // Back at its address: the follower reconnects and resumes.
    let back = TestServer::start_sharing(&a, |c| {
        c.registry_name = "plca".into();
        c.listen = address;
    })
    .await;
    let status = caught_up(&b, a_on_b, 2).await;
    assert!(status.connects >= 2, "{status:?}");
    assert!(status.connected);
    crate::common::objects::site(&mut back.registry().await, "alpha3").await;
    caught_up(&b, a_on_b, 3).await;
    assert_eq!(writes(&refresh_full(&b, a_on_b).await), 0);
}

async fn following_survives_cut_connections(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b, "plcb", &a, "plca").await;
    let proxy = Proxy::start(a.addr()).await;
    b.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id: a_on_b,
            peer_url: Some(proxy.url()),
            follow: Some(true),
            ..Default::default()
        })
        .await
        .expect("follow through the proxy");
    let mut api = a.registry().await;
    let mut sites = 0;
    for round in 0..4 {
        crate::common::objects::site(&mut api, &format!("alpha{round}")).await;
        sites += 1;
        caught_up(&b, a_on_b, sites).await;
        assert!(proxy.cut() > 0, "a connection to cut");
        // A change made while the connection is down.
        crate::common::objects::site(&mut api, &format!("beta{round}")).await;
        sites += 1;
        caught_up(&b, a_on_b, sites).await;
    }
    let status = get_peer(&b, a_on_b).await.follow_status.expect("status");
    assert!(status.connects >= 4, "{status:?}");
    assert_eq!(writes(&refresh_full(&b, a_on_b).await), 0);
}

async fn a_peer_without_follow_shows_the_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let fake = FakePeer::start(pb::PeerDataBatch {
        sites: vec![site(1, "fake")],
        ..Default::default()
    })
    .await;
    let peer_id = fake.register(&server, "old").await;
    set_follow(&server, peer_id, true).await;
    eventually("the error shows", || async {
        let status = get_peer(&server, peer_id)
            .await
            .follow_status
            .unwrap_or_default();
        status.last_error.contains("does not serve Follow") && !status.connected
    })
    .await;
    // A refresh call still works.
    let report = crate::common::federation::refresh(&server, peer_id).await;
    assert_eq!(report.mode(), pb::SyncMode::Manual);
    assert_eq!(cached_sites(&server, peer_id).await, 1);
}

async fn one_of_several_processes_follows_a_peer(backend: Backend) {
    let a = TestServer::start_named(backend, "plca").await;
    let b1 = TestServer::start_named(backend, "plcb").await;
    let a_on_b = peer_one_way(&b1, "plcb", &a, "plca").await;
    // A second process of registry plcb on the same database.
    let b2 = TestServer::start_sharing(&b1, |c| c.registry_name = "plcb".into()).await;
    set_follow(&b1, a_on_b, true).await;
    let mut on_a = a.registry().await;
    crate::common::objects::site(&mut on_a, "alpha0").await;

    // One follows (b2's supervisor sees the record at its next rescan).
    eventually("one process follows, the other stands by", || async {
        let s1 = get_peer(&b1, a_on_b)
            .await
            .follow_status
            .unwrap_or_default();
        let s2 = get_peer(&b2, a_on_b)
            .await
            .follow_status
            .unwrap_or_default();
        (s1.connected && s2.standby) || (s2.connected && s1.standby)
    })
    .await;
    caught_up(&b1, a_on_b, 1).await;
    let s1 = get_peer(&b1, a_on_b)
        .await
        .follow_status
        .unwrap_or_default();
    let (follower, stand_by) = match s1.connected {
        true => (b1, b2),
        false => (b2, b1),
    };
    assert!(
        !get_peer(&stand_by, a_on_b)
            .await
            .follow_status
            .unwrap_or_default()
            .connected
    );

    // The follower stops: the other takes over and changes keep coming.
    let mut follower = follower;
    follower.stop().await;
    crate::common::objects::site(&mut on_a, "alpha1").await;
    let status = caught_up(&stand_by, a_on_b, 2).await;
    assert!(status.connected && !status.standby, "{status:?}");
    assert_eq!(writes(&refresh_full(&stand_by, a_on_b).await), 0);
}

async fn an_unread_stream_is_dropped_and_resumes_from_its_checkpoint(backend: Backend) {
    const SITES: usize = 40;
    let a = TestServer::start_with(backend, |c| {
        c.send_timeout = Duration::from_secs(1);
        c.streams_per_token = 2;
    })
    .await;
    let mut api = a.registry().await;
    let token = a.new_admin_token("follower").await.token;

    // A caller with a 1 KiB HTTP/2 window that reads the first event only:
    // a few carried changes fill its window and the server's buffer.
    let mut unread = follow_through_narrow_window(&a, &token).await;
    let start = next_event(&mut unread)
        .await
        .checkpoint
        .expect("checkpoint");
    let mut reader = open_follow_with_changes(&a, &token, Some(start.clone())).await;
    assert!(next_event(&mut reader).await.heartbeat, "nothing new yet");
    let third = a
        .peering_as(Some(&token))
        .await
        .follow(pb::FollowRequest::default())
        .await;
    assert_status(third, tonic::Code::ResourceExhausted, &["limit"]);

    // The reader gets every commit's change, in order, while the other
    // stream's events pile up unread.
    let names: Vec<String> = (0..SITES).map(|i| format!("unread{i}")).collect();
    let mut last = start.clone();
    for name in &names {
        crate::common::objects::site(&mut api, name).await;
        let event = next_event(&mut reader).await;
        let reached = event.checkpoint.expect("checkpoint");
        let changes = event.changes.expect("the change is carried");
        assert_eq!(
            carried_sites(&changes, &last, &reached),
            std::slice::from_ref(name)
        );
        last = reached;
    }

    // The unread stream is dropped: its slot takes a new stream.
    eventually("the unread stream's slot is freed", || async {
        // Accepted, the new stream is dropped at once.
        a.peering_as(Some(&token))
            .await
            .follow(pb::FollowRequest::default())
            .await
            .is_ok()
    })
    .await;

    // Its caller reads what was sent before the drop, then the reason.
    let mut received = Vec::new();
    let mut checkpoint = start;
    let ended = loop {
        match tokio::time::timeout(PATIENCE, unread.message())
            .await
            .expect("the stream moves")
        {
            Ok(Some(event)) => {
                let reached = event.checkpoint.expect("checkpoint");
                let changes = event.changes.expect("changes carried");
                received.extend(carried_sites(&changes, &checkpoint, &reached));
                checkpoint = reached;
            }
            other => break other,
        }
    };
    assert_status(
        ended,
        tonic::Code::DeadlineExceeded,
        &["read nothing", "Follow"],
    );
    assert!(
        received.len() < SITES,
        "the stream was dropped before it sent every change: {received:?}"
    );

    // Resumed from its checkpoint, it gets the rest, and nothing twice (once
    // the server has seen the probe above go away).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut resumed = loop {
        let request = pb::FollowRequest {
            since: Some(checkpoint.clone()),
            heartbeat_seconds: 3600,
            include_changes: true,
        };
        match a.peering_as(Some(&token)).await.follow(request).await {
            Ok(stream) => break stream.into_inner(),
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                assert!(tokio::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("follow: {e}"),
        }
    };
    let event = next_event(&mut resumed).await;
    let reached = event.checkpoint.expect("checkpoint");
    assert_eq!(reached, last);
    let changes = event.changes.expect("the rest is carried");
    received.extend(carried_sites(&changes, &checkpoint, &reached));
    assert_eq!(received, names);
}
