//! A server stays reachable whatever its peers do: peers that open
//! `GetPeerData` streams and stop reading neither starve authentication nor
//! admin calls; a token's streams are capped (RESOURCE_EXHAUSTED beyond),
//! end when the caller reads nothing for the send timeout, and end with
//! their token, revoked here or by another process; health reports
//! NOT_SERVING while the database does not answer. Connections are bounded:
//! a silent one is closed after the handshake timeout, one that stops
//! answering keepalive pings soon after, while a live client's quiet stream
//! stays open; beyond the cap, new connections wait until one closes. On
//! both backends.

use std::time::Duration;

use crate::common::peers::insert_peer;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::{self as pb, peer_data_chunk::Part};
use fedreg::server::ServerConfig;
use tonic::Code;
use tonic::codec::Streaming;

/// Keys of the test registry, each with a long comment: a dump of several
/// MiB, more than a stream buffers, so that a stream whose caller stops
/// reading waits with its snapshot open.
const KEYS: usize = 400;
/// Length of each key's comment.
const COMMENT: usize = 12_000;
/// How soon a call must answer while streams hang.
const PROMPT: Duration = Duration::from_secs(1);
/// Longest wait for what must happen in the background.
const PATIENCE: Duration = Duration::from_secs(15);

/// An OpenSSH ed25519 key line with a comment of [`COMMENT`] characters.
fn big_key(i: usize) -> String {
    use base64::Engine as _;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend((0..32u8).map(|k| k ^ (i as u8)));
    let blob = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("ssh-ed25519 {blob} k{i}-{}", "x".repeat(COMMENT))
}

/// A server after `tune`, holding a dump of several MiB.
async fn loaded_server(backend: Backend, tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let server = TestServer::start_with(backend, tune).await;
    let mut api = server.registry().await;
    let person_id = api
        .create_person(pb::CreatePersonRequest {
            email: "owner@inria.fr".into(),
            first_name: "Key".into(),
            last_name: "Owner".into(),
            ..Default::default()
        })
        .await
        .expect("create person")
        .into_inner()
        .person_id;
    for i in 0..KEYS {
        api.create_key(pb::CreateKeyRequest {
            person_id,
            key_type: "ssh".into(),
            key: big_key(i),
        })
        .await
        .expect("create key");
    }
    server
}

/// A peer token for a new peer `peername`: its id and secret.
async fn peer_token(server: &TestServer, peername: &str) -> (i64, String) {
    let peer_id = insert_peer(server, peername).await;
    let created = server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: peername.into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .expect("create token")
        .into_inner();
    (created.info.expect("info").token_id, created.token)
}

/// Opens a `GetPeerData` stream on a connection of its own.
async fn open(
    server: &TestServer,
    token: &str,
) -> Result<Streaming<pb::PeerDataChunk>, tonic::Status> {
    server
        .peering_as(Some(token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

/// Opens a stream and reads its header, as a peer that then stops reading.
async fn stalled(server: &TestServer, token: &str) -> Streaming<pb::PeerDataChunk> {
    let mut stream = open(server, token).await.expect("GetPeerData");
    let first = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the header comes")
        .expect("a chunk")
        .expect("not the end");
    assert!(matches!(first.part, Some(Part::Header(_))), "{first:?}");
    stream
}

/// Reads a stream to its end: the status it ends with, or the trailer.
async fn read_to_end(
    stream: &mut Streaming<pb::PeerDataChunk>,
) -> Result<pb::PeerDataTrailer, tonic::Status> {
    loop {
        let chunk = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream moves")?;
        match chunk {
            Some(pb::PeerDataChunk {
                part: Some(Part::Trailer(trailer)),
            }) => return Ok(trailer),
            Some(_) => continue,
            None => panic!("the stream ended without a trailer or a status"),
        }
    }
}

/// Asserts that `call` answers (successfully) within [`PROMPT`].
async fn prompt<T, F>(what: &str, call: F) -> T
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    tokio::time::timeout(PROMPT, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {PROMPT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_inner()
}

/// The reported issue: one peer token, eight streams, each read up to its
/// header and then left unread. The token's limit refuses four; the four
/// others hold their snapshots, yet admin calls (a token never seen before
/// included) answer at once, and revoking the token ends its streams.
async fn stalled_streams_leave_admin_calls_answering(backend: Backend) {
    let server = loaded_server(backend, |c| c.send_timeout = Duration::from_secs(120)).await;
    let (token_id, token) = peer_token(&server, "plc").await;

    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(stalled(&server, &token).await);
    }
    for _ in 0..4 {
        assert_status(
            open(&server, &token).await,
            Code::ResourceExhausted,
            &[&format!("token {token_id}"), "4 GetPeerData/Follow streams"],
        );
    }

    let mut api = server.registry().await;
    prompt("ListPersons", api.list_persons(pb::ListRequest::default())).await;
    prompt(
        "CreateSite",
        api.create_site(pb::CreateSiteRequest {
            login_base: "inria".into(),
            name: "INRIA".into(),
            ..Default::default()
        }),
    )
    .await;
    let mut tokens = server.tokens().await;
    let fresh = prompt(
        "CreateToken",
        tokens.create_token(pb::CreateTokenRequest {
            name: "second admin".into(),
            role: "admin".into(),
            peer_id: None,
        }),
    )
    .await;
    // Authenticating a token not seen before reads the database.
    let listed = prompt(
        "ListTokens with a new token",
        server
            .tokens_as(Some(&fresh.token))
            .await
            .list_tokens(pb::ListTokensRequest {}),
    )
    .await;
    assert_eq!(listed.tokens.len(), 3);

    prompt(
        "RevokeToken",
        tokens.revoke_token(pb::RevokeTokenRequest { token_id }),
    )
    .await;
    // Each stream, read again, ends with the revocation (after what was
    // already on its way), well before its send timeout.
    for stream in &mut streams {
        assert_status(
            read_to_end(stream).await,
            Code::Unauthenticated,
            &["revoked", "GetPeerData"],
        );
    }
    assert_status(
        open(&server, &token).await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
}

/// A caller that reads nothing for the send timeout loses its stream, with
/// a status saying why; one that reads gets its whole dump.
async fn unread_stream_ends_after_send_timeout(backend: Backend) {
    let server = loaded_server(backend, |c| c.send_timeout = Duration::from_secs(1)).await;
    let (_, token) = peer_token(&server, "plc").await;

    let mut slow = stalled(&server, &token).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_status(
        read_to_end(&mut slow).await,
        Code::DeadlineExceeded,
        &["read nothing for 1 s", "GetPeerData"],
    );

    let trailer = read_to_end(&mut open(&server, &token).await.expect("GetPeerData"))
        .await
        .expect("a reader gets its dump");
    assert_eq!(trailer.keys, KEYS as i64);
}

/// GetPeerData and Follow streams share the token's limit; a stream the
/// caller drops frees its place; other tokens have their own.
async fn streams_per_token_are_capped(backend: Backend) {
    let server = loaded_server(backend, |c| c.streams_per_token = 3).await;
    let (token_id, token) = peer_token(&server, "plc").await;
    let (_, other) = peer_token(&server, "ple").await;

    let follow = || async {
        server
            .peering_as(Some(&token))
            .await
            .follow(pb::FollowRequest::default())
            .await
    };
    let _follow = follow().await.expect("Follow");
    let first = stalled(&server, &token).await;
    let _second = stalled(&server, &token).await;
    assert_status(
        follow().await,
        Code::ResourceExhausted,
        &[&format!("token {token_id}"), "Follow refused"],
    );
    assert_status(
        open(&server, &token).await,
        Code::ResourceExhausted,
        &["GetPeerData refused"],
    );
    let _elsewhere = stalled(&server, &other).await;

    drop(first);
    let reopened = tokio::time::timeout(PATIENCE, async {
        loop {
            match open(&server, &token).await {
                Ok(stream) => break stream,
                Err(e) if e.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("GetPeerData: {e}"),
            }
        }
    })
    .await
    .expect("the dropped stream frees its place");
    drop(reopened);
}

/// A token revoked by another process (here: straight in the database, as
/// `fedreg token revoke` does) ends its streams within the token cache's
/// time, and stops authenticating.
async fn token_revoked_elsewhere_ends_streams(backend: Backend) {
    let server = loaded_server(backend, |c| {
        c.send_timeout = Duration::from_secs(120);
        c.token_cache = Duration::from_millis(500);
    })
    .await;
    let (token_id, token) = peer_token(&server, "plc").await;
    let mut stream = stalled(&server, &token).await;

    let store = server.server.as_ref().expect("running").app().store.clone();
    let mut conn = store.write().await.expect("connection");
    fedreg::store::tokens::revoke(&mut conn, token_id)
        .await
        .expect("revoke");
    drop(conn);
    // The revocation is noticed within the cache's time: read after it,
    // or the rest of the dump may well go out first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_status(
        read_to_end(&mut stream).await,
        Code::Unauthenticated,
        &["revoked"],
    );
    assert_status(
        open(&server, &token).await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
}

/// Health follows the database: NOT_SERVING while it refuses connections,
/// SERVING again once it accepts them. PostgreSQL only: an embedded SQLite
/// file cannot be taken away from a running server.
async fn health_follows_the_database() {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let server = TestServer::start_with(Backend::Postgres, |c| {
        c.health_interval = Duration::from_millis(300);
    })
    .await;
    let mut health = HealthClient::new(server.channel().await);
    let mut wait_for = async |wanted: ServingStatus| {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let status = health
                    .check(HealthCheckRequest::default())
                    .await
                    .expect("health answers")
                    .into_inner()
                    .status();
                if status == wanted {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("health never reported {wanted:?}"));
    };
    wait_for(ServingStatus::Serving).await;

    let (base, name) = server
        .database_url
        .rsplit_once('/')
        .expect("a database URL");
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres"))
        .await
        .expect("connect to PostgreSQL");
    // Two statements, two transactions: the ban is committed before the
    // connections end, so that the server's pool cannot reconnect between
    // the two (one query string would run both in one transaction).
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .expect("bar new connections");
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .expect("end the open ones");
    wait_for(ServingStatus::NotServing).await;
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .expect("let the database in again");
    wait_for(ServingStatus::Serving).await;
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what a client
/// sends first, after which this one never answers anything.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Reads (and drops) what the server sends on `tcp` until it closes the
/// connection; how long that took.
async fn until_closed(tcp: &mut tokio::net::TcpStream) -> Duration {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the server closes the connection");
    started.elapsed()
}

/// A connection that sends nothing is closed after the handshake timeout;
/// one that sent the HTTP/2 preface but answers no keepalive ping is closed
/// after the ping's timeout; a live client's Follow stream, quiet for longer
/// than both, stays open and still carries events.
async fn silent_connections_are_closed(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.handshake_timeout = Duration::from_secs(1);
        c.keepalive_interval = Duration::from_secs(1);
        c.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    let mut follow = server
        .peering_as(Some(&server.admin_token))
        .await
        .follow(pb::FollowRequest {
            heartbeat_seconds: 3600,
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, follow.message()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "{first:?}");

    let mut mute = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let silence = until_closed(&mut mute).await;
    assert!(
        silence >= Duration::from_millis(900),
        "closed after {silence:?}"
    );

    let mut deaf = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut deaf, H2_PREFACE)
        .await
        .unwrap();
    until_closed(&mut deaf).await;

    // Both were closed after a silence longer than the keepalive's interval
    // and timeout together: the Follow stream saw none of that.
    server
        .registry()
        .await
        .create_site(pb::CreateSiteRequest {
            login_base: "inria".into(),
            name: "INRIA".into(),
            abbreviated_name: "inria".into(),
            ..Default::default()
        })
        .await
        .expect("create site");
    let event = tokio::time::timeout(PATIENCE, follow.message())
        .await
        .expect("an event in time")
        .expect("the Follow stream is still open")
        .expect("not the end");
    assert!(!event.heartbeat, "{event:?}");
}

/// At most `max_connections` connections are served at once: another one
/// is not served until one of them closes.
async fn connections_beyond_the_cap_wait(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, H2_PREFACE)
            .await
            .unwrap();
        held.push(tcp);
    }
    // Give the server the time to accept both.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let over = tokio::spawn({
        let url = server.url();
        let token = server.admin_token.clone();
        async move {
            let channel = tonic::transport::Channel::from_shared(url)
                .unwrap()
                .connect()
                .await
                .expect("the kernel accepts the connection");
            let mut api = pb::registry_service_client::RegistryServiceClient::new(
                tonic::service::interceptor::InterceptedService::new(
                    channel,
                    crate::common::Bearer::new(Some(&token)).unwrap(),
                ),
            );
            api.list_sites(pb::ListRequest::default()).await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!over.is_finished(), "a third connection was served");

    drop(held.pop());
    let answered = tokio::time::timeout(PATIENCE, over)
        .await
        .expect("served once a connection closed")
        .expect("the task");
    assert!(answered.is_ok(), "{answered:?}");
}

mod postgres_only {
    use super::health_follows_the_database;

    postgres_tests!(health_follows_the_database);
}

backend_tests!(
    stalled_streams_leave_admin_calls_answering,
    unread_stream_ends_after_send_timeout,
    streams_per_token_are_capped,
    token_revoked_elsewhere_ends_streams,
    silent_connections_are_closed,
    connections_beyond_the_cap_wait,
);
