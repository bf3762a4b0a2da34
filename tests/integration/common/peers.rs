//! A peer record for tests that need one (peer tokens).

use fedreg::proto::v1 as pb;

use super::TestServer;

/// Registers a peer named `peername` through the admin API; returns its id.
pub async fn insert_peer(server: &TestServer, peername: &str) -> i64 {
    server
        .peers()
        .await
        .create_peer(pb::CreatePeerRequest {
            peername: peername.into(),
            peer_url: format!("http://{peername}.example.org:50051"),
            ..Default::default()
        })
        .await
        .expect("create peer")
        .into_inner()
        .peer_id
}
