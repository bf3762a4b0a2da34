//! TokenService: creating admin and peer tokens, listing them without their
//! secrets, revoking them, and every validation error; on both backends.

use std::time::Duration;

use crate::common::peers::insert_peer;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1 as pb;
use fedreg::store::tokens::hash_secret;
use prost::Message;
use tonic::Code;

fn token(name: &str, role: &str, peer_id: Option<i64>) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest {
        name: name.into(),
        role: role.into(),
        peer_id,
    }
}

async fn create_admin_and_peer_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.tokens().await;

    let admin = api
        .create_token(token("ops", "admin", None))
        .await
        .unwrap()
        .into_inner();
    assert!(admin.token.starts_with("fr_") && admin.token.len() == 67);
    let info = admin.info.unwrap();
    assert!(info.token_id > 0);
    assert_eq!((info.name.as_str(), info.role.as_str()), ("ops", "admin"));
    assert_eq!(info.peer_id, None);
    assert!(info.created.is_some() && info.last_used.is_none());
    // The new admin token is accepted for admin calls.
    server
        .registry_as(Some(&admin.token))
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .unwrap();

    let peer_id = insert_peer(&server, "ple").await;
    let peer = api
        .create_token(token("ple", "peer", Some(peer_id)))
        .await
        .unwrap()
        .into_inner();
    let info = peer.info.unwrap();
    assert_eq!(info.role, "peer");
    assert_eq!(info.peer_id, Some(peer_id));
    assert_ne!(peer.token, admin.token, "every token gets its own secret");
}

async fn list_never_shows_secrets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.tokens().await;
    let created = api
        .create_token(token("ci", "admin", None))
        .await
        .unwrap()
        .into_inner();

    let listed = api
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["initial admin", "ci"]);
    let bytes = listed.encode_to_vec();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for secret in [&server.admin_token, &created.token] {
        assert!(!contains(secret), "a secret is in ListTokens");
        assert!(!contains(&hash_secret(secret)), "a hash is in ListTokens");
    }
}

async fn last_used_is_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.tokens().await;
    // The admin client's own calls mark the initial admin token as used; the
    // write happens in the background, so wait for it a little.
    let mut last_used = None;
    for _ in 0..50 {
        let tokens = api
            .list_tokens(pb::ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens;
        last_used = tokens[0].last_used;
        if last_used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_used = last_used.expect("last_used set after a call");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - last_used.seconds).abs() < 60, "{last_used:?}");
}

async fn revoke(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.tokens().await;
    let id = api
        .create_token(token("temp", "admin", None))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .token_id;

    api.revoke_token(pb::RevokeTokenRequest { token_id: id })
        .await
        .unwrap();
    let listed = api
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tokens.iter().all(|t| t.token_id != id));
    assert_eq!(listed.tokens.len(), 1);

    assert_status(
        api.revoke_token(pb::RevokeTokenRequest { token_id: id })
            .await,
        Code::NotFound,
        &["token", "token_id", &id.to_string()],
    );
    assert_status(
        api.revoke_token(pb::RevokeTokenRequest { token_id: 9999 })
            .await,
        Code::NotFound,
        &["token_id", "9999"],
    );
}

async fn validation_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut api = server.tokens().await;
    let peer_id = insert_peer(&server, "plc").await;

    assert_status(
        api.create_token(token("x", "root", None)).await,
        Code::InvalidArgument,
        &["role", "root", "admin or peer"],
    );
    assert_status(
        api.create_token(token("x", "", None)).await,
        Code::InvalidArgument,
        &["role", "\"\""],
    );
    assert_status(
        api.create_token(token("x", "Admin", None)).await,
        Code::InvalidArgument,
        &["role", "Admin"],
    );
    // A peer token needs a peer, and an existing one.
    assert_status(
        api.create_token(token("x", "peer", None)).await,
        Code::InvalidArgument,
        &["peer_id", "needs a peer"],
    );
    assert_status(
        api.create_token(token("x", "peer", Some(peer_id + 1000)))
            .await,
        Code::NotFound,
        &["peer", "peer_id", &(peer_id + 1000).to_string()],
    );
    // An admin token is bound to no peer.
    assert_status(
        api.create_token(token("x", "admin", Some(peer_id))).await,
        Code::InvalidArgument,
        &["peer_id", &peer_id.to_string()],
    );

    // Free text is bounded: a token's name, a peer's outbound token.
    assert_status(
        api.create_token(token(&"n".repeat(129), "admin", None))
            .await,
        Code::InvalidArgument,
        &["name", "at most 128"],
    );
    let status = server
        .peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            outbound_token: Some("t".repeat(5000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("outbound_token"), "{status:?}");
    assert!(
        !status.message().contains("tttt"),
        "the secret is not quoted"
    );

    // None of the refused calls stored a token.
    let listed = api
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1, "only the initial admin token");
}

backend_tests!(
    create_admin_and_peer_tokens,
    list_never_shows_secrets,
    last_used_is_recorded,
    revoke,
    validation_errors,
);
