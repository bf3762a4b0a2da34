//! Server reflection (v1 and v1alpha) and the standard health service, as a
//! generic gRPC client sees them; on both backends.

use std::time::Duration;

use crate::common::{Backend, TestServer};
use prost::Message;
use prost_types::FileDescriptorProto;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::{v1, v1alpha};

/// Every service fedreg serves, with the health service; each reflection
/// service adds itself.
const SERVICES: &[&str] = &[
    "fedreg.v1.EnrollmentService",
    "fedreg.v1.PeerService",
    "fedreg.v1.PeeringService",
    "fedreg.v1.RegistryService",
    "fedreg.v1.TokenService",
    "grpc.health.v1.Health",
];

/// Asks the v1 reflection service one question and returns its answer
/// (or the status the stream ended with).
async fn ask_v1(
    server: &TestServer,
    request: v1::server_reflection_request::MessageRequest,
) -> Result<v1::server_reflection_response::MessageResponse, tonic::Status> {
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream")
        .into_inner();
    let answer = answers.message().await?.expect("one answer");
    Ok(answer.message_response.expect("an answer with a response"))
}

/// The same with the v1alpha reflection service.
async fn ask_v1alpha(
    server: &TestServer,
    request: v1alpha::server_reflection_request::MessageRequest,
) -> Result<v1alpha::server_reflection_response::MessageResponse, tonic::Status> {
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection stream")
        .into_inner();
    let answer = answers.message().await?.expect("one answer");
    Ok(answer.message_response.expect("an answer with a response"))
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// `names` and `extra`, sorted.
fn with(names: &[&str], extra: &str) -> Vec<String> {
    sorted(
        names
            .iter()
            .chain([&extra])
            .map(|s| s.to_string())
            .collect(),
    )
}

/// Decodes the file descriptors of a reflection answer.
fn decode_files(raw: Vec<Vec<u8>>) -> Vec<FileDescriptorProto> {
    raw.iter()
        .map(|bytes| FileDescriptorProto::decode(bytes.as_slice()).expect("file descriptor"))
        .collect()
}

async fn reflection_v1(backend: Backend) {
    use v1::server_reflection_request::MessageRequest;
    use v1::server_reflection_response::MessageResponse;
    let server = TestServer::start(backend).await;

    let MessageResponse::ListServicesResponse(list) =
        ask_v1(&server, MessageRequest::ListServices(String::new()))
            .await
            .unwrap()
    else {
        panic!("expected a service list");
    };
    let names = sorted(list.service.into_iter().map(|s| s.name).collect());
    assert_eq!(names, with(SERVICES, "grpc.reflection.v1.ServerReflection"));

    // A client finds the file that declares a service from its name.
    let MessageResponse::FileDescriptorResponse(found) = ask_v1(
        &server,
        MessageRequest::FileContainingSymbol("fedreg.v1.RegistryService".into()),
    )
    .await
    .unwrap() else {
        panic!("expected file descriptors");
    };
    let files = decode_files(found.file_descriptor_proto);
    let registry = files
        .iter()
        .find(|f| f.name() == "fedreg/v1/registry.proto")
        .expect("registry.proto");
    let service = &registry.service[0];
    assert_eq!(service.name(), "RegistryService");
    assert!(service.method.iter().any(|m| m.name() == "CreateSite"));
    // Its dependencies can be fetched by file name, as clients do.
    assert!(
        registry
            .dependency
            .iter()
            .any(|d| d == "fedreg/v1/objects.proto")
    );
    let MessageResponse::FileDescriptorResponse(found) = ask_v1(
        &server,
        MessageRequest::FileByFilename("fedreg/v1/objects.proto".into()),
    )
    .await
    .unwrap() else {
        panic!("expected file descriptors");
    };
    let objects = decode_files(found.file_descriptor_proto);
    assert!(objects[0].message_type.iter().any(|m| m.name() == "Site"));

    let unknown = ask_v1(
        &server,
        MessageRequest::FileContainingSymbol("fedreg.v1.NoSuchService".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("fedreg.v1.NoSuchService"));
}

async fn reflection_v1alpha(backend: Backend) {
    use v1alpha::server_reflection_request::MessageRequest;
    use v1alpha::server_reflection_response::MessageResponse;
    let server = TestServer::start(backend).await;

    let MessageResponse::ListServicesResponse(list) =
        ask_v1alpha(&server, MessageRequest::ListServices(String::new()))
            .await
            .unwrap()
    else {
        panic!("expected a service list");
    };
    let names = sorted(list.service.into_iter().map(|s| s.name).collect());
    assert_eq!(
        names,
        with(SERVICES, "grpc.reflection.v1alpha.ServerReflection")
    );

    let MessageResponse::FileDescriptorResponse(found) = ask_v1alpha(
        &server,
        MessageRequest::FileContainingSymbol("fedreg.v1.CreateTokenRequest".into()),
    )
    .await
    .unwrap() else {
        panic!("expected file descriptors");
    };
    let files = decode_files(found.file_descriptor_proto);
    let peering = files
        .iter()
        .find(|f| f.name() == "fedreg/v1/peering.proto")
        .expect("peering.proto");
    let request = peering
        .message_type
        .iter()
        .find(|m| m.name() == "CreateTokenRequest")
        .expect("CreateTokenRequest");
    let fields: Vec<_> = request.field.iter().map(|f| f.name()).collect();
    assert_eq!(fields, ["name", "role", "peer_id"]);
}

async fn health(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let mut client = HealthClient::new(server.channel().await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    for service in ["", "fedreg.v1.RegistryService", "fedreg.v1.TokenService"] {
        let status = client
            .check(check(service))
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = client.check(check("fedreg.v1.NoSuchService")).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);

    // A watcher learns that the server stops serving when it shuts down.
    let mut watch = client.watch(check("")).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().expect("first status");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    let update = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a status update while shutting down")
        .expect("watch stream")
        .expect("an update");
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    drop((watch, client));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
}

backend_tests!(reflection_v1, reflection_v1alpha, health);
