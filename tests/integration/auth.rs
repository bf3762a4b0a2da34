//! Who may call what: bearer tokens, roles and the calls open without a
//! token (health, reflection); on both backends.

use crate::common::peers::insert_peer;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::registry_service_client::RegistryServiceClient;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// A ListSites request carrying `authorization: <value>` verbatim.
fn list_with_header(value: &str) -> tonic::Request<pb::ListRequest> {
    let mut request = tonic::Request::new(pb::ListRequest::default());
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii header"));
    request
}

async fn missing_or_malformed_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut anonymous = server.registry_as(None).await;
    assert_status(
        anonymous.list_sites(pb::ListRequest::default()).await,
        Code::Unauthenticated,
        &["authorization", "Bearer"],
    );
    assert_status(
        anonymous
            .create_site(pb::CreateSiteRequest {
                login_base: "nope".into(),
                name: "Nope".into(),
                ..Default::default()
            })
            .await,
        Code::Unauthenticated,
        &["authorization"],
    );
    let mut raw = RegistryServiceClient::new(server.channel().await);
    assert_status(
        raw.list_sites(list_with_header(&format!("Basic {}", server.admin_token)))
            .await,
        Code::Unauthenticated,
        &["Bearer <token>"],
    );
    // Nothing was created by the refused call.
    let sites = server
        .registry()
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(sites.sites.is_empty());
}

async fn unknown_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let forged = format!("fr_{}", "0".repeat(64));
    assert_status(
        server
            .registry_as(Some(&forged))
            .await
            .list_sites(pb::ListRequest::default())
            .await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
    // A token of another server is unknown here.
    let other = TestServer::start(Backend::Sqlite).await;
    assert_status(
        server
            .tokens_as(Some(&other.admin_token))
            .await
            .list_tokens(pb::ListTokensRequest {})
            .await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
    // The right token works on the same server, so the refusals were about
    // the token.
    server
        .registry()
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .unwrap();
}

async fn peer_token_is_denied_admin_calls(backend: Backend) {
    let server = TestServer::start(backend).await;
    let peer_id = insert_peer(&server, "plc").await;
    let peer_token = server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "plc".into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .unwrap()
        .into_inner()
        .token;

    assert_status(
        server
            .registry_as(Some(&peer_token))
            .await
            .list_sites(pb::ListRequest::default())
            .await,
        Code::PermissionDenied,
        &["peer", "/fedreg.v1.RegistryService/ListSites"],
    );
    assert_status(
        server
            .tokens_as(Some(&peer_token))
            .await
            .create_token(pb::CreateTokenRequest {
                name: "escalate".into(),
                role: "admin".into(),
                peer_id: None,
            })
            .await,
        Code::PermissionDenied,
        &["peer", "/fedreg.v1.TokenService/CreateToken"],
    );
    // The peering service is the one a peer token may call: whatever it
    // answers, it is not an authentication or role refusal.
    let answer = server
        .peering_as(Some(&peer_token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await;
    if let Err(status) = answer {
        assert!(
            !matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "peer token refused on the peering service: {status:?}"
        );
    }
    // The refused CreateToken created nothing.
    let tokens = server
        .tokens()
        .await
        .list_tokens(pb::ListTokensRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 2, "initial admin and the peer token only");
}

async fn revoked_token_is_unauthenticated(backend: Backend) {
    let server = TestServer::start(backend).await;
    let created = server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "short-lived".into(),
            role: "admin".into(),
            peer_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut client = server.registry_as(Some(&created.token)).await;
    client.list_sites(pb::ListRequest::default()).await.unwrap();

    server
        .tokens()
        .await
        .revoke_token(pb::RevokeTokenRequest {
            token_id: created.info.unwrap().token_id,
        })
        .await
        .unwrap();
    // The same client, on the same connection, is refused from now on.
    assert_status(
        client.list_sites(pb::ListRequest::default()).await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
}

async fn health_and_reflection_need_no_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut health = HealthClient::new(server.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {:?}", answer.message_response);
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "fedreg.v1.RegistryService")
    );
}

backend_tests!(
    missing_or_malformed_token_is_unauthenticated,
    unknown_token_is_unauthenticated,
    peer_token_is_denied_admin_calls,
    revoked_token_is_unauthenticated,
    health_and_reflection_need_no_token,
);
