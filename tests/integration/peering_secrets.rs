//! GetPeerData never lets a secret out: no person password (neither the
//! plain text nor its hash), verification key or expiry, no node key, boot
//! nonce or session, in any decoded message or its bytes; nodes with a
//! slice whitelist and system slices are left out. A peer token alone is
//! not enough when the peer record names a client identity: the call must
//! come with a TLS client certificate, verified against the server's
//! `client_ca`, that names it; the refreshing side presents its own. With
//! certificates made at test time (rcgen). On both backends.

use std::path::Path;

use crate::common::certs::{Ca, Issued, Usage};
use crate::common::federation::{Populate, get_peer, try_refresh};
use crate::common::objects::{node, site};
use crate::common::rows::Rows;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1::peering_service_client::PeeringServiceClient;
use fedreg::proto::v1::{self as pb, peer_data_chunk::Part};
use prost::Message;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const PASSWORD: &str = "correct-horse-battery-staple";
const VERIFICATION_KEY: &str = "verification-key-1f2e3d";
const VERIFICATION_EXPIRES: i64 = 4_102_444_813;
const BOOT_NONCE: &str = "boot-nonce-9a8b7c";
const NODE_KEY: &str = "node-key-6d5e4f";
const SESSION: &str = "session-3c2b1a";

/// The whole GetPeerData stream as `token` gets it.
async fn dump(server: &TestServer, token: &str) -> Vec<pb::PeerDataChunk> {
    let mut stream = server
        .peering_as(Some(token))
        .await
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .expect("GetPeerData")
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        chunks.push(chunk);
    }
    chunks
}

async fn secrets_never_leave(backend: Backend) {
    let server = TestServer::start_named(backend, "plc1").await;
    let mut api = server.registry().await;
    let site_id = site(&mut api, "inria").await;
    let ada = api
        .create_person(pb::CreatePersonRequest {
            email: "ada@inria.fr".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            enabled: Some(true),
            password: PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("create person")
        .into_inner();
    api.add_person_to_site(pb::PersonSiteRequest {
        person_id: ada.person_id,
        site_id,
        is_primary: true,
    })
    .await
    .unwrap();
    let open_node = node(&mut api, site_id, "n1.inria.fr").await;
    let reserved_node = node(&mut api, site_id, "n2.inria.fr").await;
    let experiment = api
        .create_slice(pb::CreateSliceRequest {
            name: "inria_exp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    api.create_slice(pb::CreateSliceRequest {
        name: "inria_sys".into(),
        is_system: true,
        ..Default::default()
    })
    .await
    .unwrap();
    api.add_slice_to_node_whitelist(pb::NodeWhitelistRequest {
        node_id: reserved_node,
        slice_id: experiment.slice_id,
    })
    .await
    .unwrap();
    api.add_nodes_to_slice(pb::SliceNodesRequest {
        slice_id: experiment.slice_id,
        node_ids: vec![open_node, reserved_node],
    })
    .await
    .unwrap();
    // The secrets that only the registry's own services set (the password
    // reset flow and the boot manager, outside the admin API).
    let rows = Rows::of(&server);
    rows.set_verification(ada.person_id, VERIFICATION_KEY, VERIFICATION_EXPIRES)
        .await;
    rows.set_node_secrets(BOOT_NONCE, NODE_KEY, SESSION).await;
    let hash = rows
        .person_row(ada.person_id)
        .await
        .password_hash
        .expect("password stored");

    // As a peer and as an admin calling by hand.
    let peer_id = crate::common::peers::insert_peer(&server, "plc2").await;
    let peer_token = server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "plc2".into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    for token in [peer_token.as_str(), server.admin_token.as_str()] {
        let chunks = dump(&server, token).await;
        let secrets = [
            PASSWORD.to_owned(),
            hash.clone(),
            VERIFICATION_KEY.to_owned(),
            VERIFICATION_EXPIRES.to_string(),
            BOOT_NONCE.to_owned(),
            NODE_KEY.to_owned(),
            SESSION.to_owned(),
        ];
        let (mut persons, mut nodes, mut slices) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in &chunks {
            let decoded = format!("{chunk:?}");
            let bytes = chunk.encode_to_vec();
            for secret in &secrets {
                assert!(!decoded.contains(secret.as_str()), "{secret} in {decoded}");
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in the bytes of {decoded}"
                );
            }
            if let Some(Part::Batch(batch)) = &chunk.part {
                persons.extend(batch.persons.iter().map(|p| p.email.clone()));
                nodes.extend(batch.nodes.iter().map(|n| n.hostname.clone()));
                slices.extend(batch.slices.iter().cloned());
            }
        }
        // The objects are there; the whitelisted node and the system slice
        // are not, and the exported slice does not list the left-out node.
        assert_eq!(persons, ["ada@inria.fr"]);
        assert_eq!(nodes, ["n1.inria.fr"]);
        let names: Vec<&str> = slices.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["inria_exp"]);
        assert_eq!(slices[0].node_ids, [open_node]);
    }
}

/// The identity plc2's record of plc1 requires of plc1's calls.
const PLC1_IDENTITY: &str = "plc1.example.org";

/// The certificates of a mutual-TLS test, all made now.
struct Pki {
    dir: tempfile::TempDir,
    /// The CA plc2 trusts for client certificates (and that signs its own).
    ca: Ca,
    /// plc2's server certificate, for 127.0.0.1 and localhost.
    server: Issued,
    /// plc1's client certificate: CN and DNS name plc1.example.org.
    plc1: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new(dir.path(), "federation-ca");
        let server = ca
            .cert(Usage::Server, "localhost")
            .sans(&["localhost", "127.0.0.1"])
            .issue(dir.path(), "plc2-server");
        let plc1 = ca
            .cert(Usage::Client, PLC1_IDENTITY)
            .issue(dir.path(), "plc1-client");
        Pki {
            dir,
            ca,
            server,
            plc1,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts plc2 serving TLS and asking for client certificates signed by
/// the test CA (required of every caller when `require_all`).
/// The test's own admin clients reach it over TLS without a client
/// certificate.
async fn start_plc2(backend: Backend, pki: &Pki, require_all: bool) -> TestServer {
    let mut plc2 = TestServer::start_with(backend, |config| {
        config.registry_name = "plc2".into();
        config.tls = Some(pki.server.pair());
        config.client_ca = Some(pki.ca.pem.clone());
        config.require_client_cert = require_all;
    })
    .await;
    let ca = std::fs::read(&pki.ca.pem).unwrap();
    plc2.client_tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)));
    plc2
}

/// A channel to `server` over TLS, trusting the test CA and presenting
/// `client` when given; an error with its causes when it cannot connect.
async fn tls_channel(
    server: &TestServer,
    pki: &Pki,
    client: Option<&Issued>,
) -> Result<Channel, String> {
    let read = |path: &Path| std::fs::read(path).expect("PEM file");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&pki.ca.pem)));
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(read(&client.cert), read(&client.key)));
    }
    Endpoint::from_shared(server.url())
        .unwrap()
        .tls_config(tls)
        .expect("TLS settings")
        .connect()
        .await
        .map_err(|e| with_causes(&e))
}

/// An error and the errors under it, as one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// Calls GetPeerData on `server` over TLS with `token`, presenting
/// `client`, and reads the first message.
async fn peer_call(
    server: &TestServer,
    pki: &Pki,
    client: Option<&Issued>,
    token: &str,
) -> Result<(), tonic::Status> {
    let channel = tls_channel(server, pki, client)
        .await
        .map_err(tonic::Status::unavailable)?;
    let authed = tonic::service::interceptor::InterceptedService::new(
        channel,
        crate::common::Bearer::new(Some(token)).unwrap(),
    );
    let mut stream = PeeringServiceClient::new(authed)
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await?
        .into_inner();
    stream.message().await?;
    Ok(())
}

/// The TLS alert with which `server` ends a handshake where `client` is
/// presented: read on a bare TLS connection, where the alert always
/// arrives (a gRPC client may see only the closed connection).
async fn handshake_alert(server: &TestServer, pki: &Pki, client: Option<&Issued>) -> String {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt;
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca.pem).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(client) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&client.cert).unwrap()],
                PrivateKeyDer::from_pem_file(&client.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let error = match connector.connect(name, tcp).await {
        Err(e) => e,
        Ok(mut tls) => tls
            .read(&mut [0; 64])
            .await
            .expect_err("the server ends the connection with an alert"),
    };
    let text = error.to_string();
    text.strip_prefix("received fatal alert: ")
        .unwrap_or_else(|| panic!("an alert: {text}"))
        .to_owned()
}

/// A status with the transport errors under it, as one line.
fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), with_causes(status))
}

/// A peer token that `server` issues to its peer record `peer_id`.
async fn peer_token(server: &TestServer, peer_id: i64) -> String {
    server
        .tokens()
        .await
        .create_token(pb::CreateTokenRequest {
            name: "peer".into(),
            role: "peer".into(),
            peer_id: Some(peer_id),
        })
        .await
        .expect("peer token")
        .into_inner()
        .token
}

/// Creates a peer record on `server` through an admin client over TLS
/// without a client certificate; returns its id.
async fn create_peer(
    server: &TestServer,
    pki: &Pki,
    name: &str,
    url: &str,
    client_identity: &str,
) -> Result<i64, String> {
    let channel = tls_channel(server, pki, None).await?;
    let authed = tonic::service::interceptor::InterceptedService::new(
        channel,
        crate::common::Bearer::new(Some(&server.admin_token)).unwrap(),
    );
    pb::peer_service_client::PeerServiceClient::new(authed)
        .create_peer(pb::CreatePeerRequest {
            peername: name.into(),
            peer_url: url.into(),
            client_identity: client_identity.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().peer_id)
        .map_err(|s| status_text(&s))
}

async fn client_certificate_proves_peer_identity(backend: Backend) {
    let pki = Pki::new();
    let plc2 = start_plc2(backend, &pki, false).await;
    // An admin without a client certificate still manages plc2 over TLS.
    let plc1_id = create_peer(&plc2, &pki, "plc1", "http://127.0.0.1:1", PLC1_IDENTITY)
        .await
        .expect("admin call without a client certificate");
    let plc1_token = peer_token(&plc2, plc1_id).await;
    let shown = get_peer(&plc2, plc1_id).await;
    assert_eq!(shown.client_identity, PLC1_IDENTITY);

    // The right certificate passes.
    peer_call(&plc2, &pki, Some(&pki.plc1), &plc1_token)
        .await
        .expect("plc1's token with plc1's certificate");

    // The token alone, over TLS without a certificate, is not enough.
    assert_status(
        peer_call(&plc2, &pki, None, &plc1_token).await,
        Code::Unauthenticated,
        &["plc1", PLC1_IDENTITY, "none was presented", "--client-ca"],
    );

    // A certificate from the right CA for someone else.
    let plc3 = pki
        .ca
        .cert(Usage::Client, "plc3.example.org")
        .issue(pki.path(), "plc3-client");
    assert_status(
        peer_call(&plc2, &pki, Some(&plc3), &plc1_token).await,
        Code::PermissionDenied,
        &[
            "plc1",
            PLC1_IDENTITY,
            "CN=plc3.example.org",
            "DNS:plc3.example.org",
        ],
    );

    // A certificate naming plc1 from another CA, and an expired one from
    // the right CA: the TLS handshake refuses them before any call.
    let rogue_ca = Ca::new(pki.path(), "rogue-ca");
    let rogue = rogue_ca
        .cert(Usage::Client, PLC1_IDENTITY)
        .issue(pki.path(), "rogue-client");
    let expired = pki
        .ca
        .cert(Usage::Client, PLC1_IDENTITY)
        .expired()
        .issue(pki.path(), "expired-client");
    for (client, alert) in [(&rogue, "UnknownCA"), (&expired, "CertificateExpired")] {
        assert!(
            peer_call(&plc2, &pki, Some(client), &plc1_token)
                .await
                .is_err()
        );
        assert_eq!(handshake_alert(&plc2, &pki, Some(client)).await, alert);
    }

    // The identity may also be an alternative name only: a certificate with
    // another CN and the DNS name passes.
    let san_only = pki
        .ca
        .cert(Usage::Client, "registry front end")
        .sans(&[PLC1_IDENTITY, "127.0.0.1"])
        .issue(pki.path(), "san-client");
    peer_call(&plc2, &pki, Some(&san_only), &plc1_token)
        .await
        .expect("a DNS alternative name is an identity");

    // A peer whose record names no identity keeps working with its token
    // alone.
    let plc9_id = create_peer(&plc2, &pki, "plc9", "http://127.0.0.1:1", "")
        .await
        .unwrap();
    let plc9_token = peer_token(&plc2, plc9_id).await;
    peer_call(&plc2, &pki, None, &plc9_token)
        .await
        .expect("no identity required of plc9");
}

async fn refresh_presents_client_certificate(backend: Backend) {
    let pki = Pki::new();
    let plc2 = start_plc2(backend, &pki, false).await;
    Populate::new("two")
        .sites(2)
        .persons(1)
        .keys_per_person(1)
        .on(&plc2)
        .await;
    let plc1 = TestServer::start_with(backend, |config| {
        config.registry_name = "plc1".into();
        config.client_cert = Some(pki.plc1.pair());
    })
    .await;
    let plc1_on_plc2 = create_peer(&plc2, &pki, "plc1", &plc1.url(), PLC1_IDENTITY)
        .await
        .unwrap();
    let token = peer_token(&plc2, plc1_on_plc2).await;
    let plc2_on_plc1 = plc1
        .peers()
        .await
        .create_peer(pb::CreatePeerRequest {
            peername: "plc2".into(),
            peer_url: plc2.url(),
            cacert: std::fs::read_to_string(&pki.ca.pem).unwrap(),
            outbound_token: token,
            ..Default::default()
        })
        .await
        .expect("create plc2 on plc1")
        .into_inner()
        .peer_id;

    let report = try_refresh(&plc1, plc2_on_plc1, false)
        .await
        .expect("refresh with plc1's client certificate");
    assert_eq!(report.outcome(), pb::RefreshOutcome::Applied, "{report:?}");
    assert_eq!(get_peer(&plc1, plc2_on_plc1).await.cached.unwrap().sites, 2);

    // plc2 now wants another identity of plc1's calls: the refresh fails
    // with plc2's reason, and the cache stays as it was.
    plc2.peers()
        .await
        .update_peer(pb::UpdatePeerRequest {
            peer_id: plc1_on_plc2,
            client_identity: Some("plc7.example.org".into()),
            ..Default::default()
        })
        .await
        .expect("change the required identity");
    let refused = try_refresh(&plc1, plc2_on_plc1, false).await;
    let text = match &refused {
        Ok(report) => format!("{report:?}"),
        Err(status) => status_text(status),
    };
    assert!(
        text.contains("plc7.example.org") && text.contains("CN=plc1.example.org"),
        "{text}"
    );
    assert_eq!(get_peer(&plc1, plc2_on_plc1).await.cached.unwrap().sites, 2);
}

async fn client_certificate_required_of_all(backend: Backend) {
    let pki = Pki::new();
    let plc2 = start_plc2(backend, &pki, true).await;
    // Without a certificate even an admin is turned away by the handshake.
    create_peer(&plc2, &pki, "plc1", "http://127.0.0.1:1", "")
        .await
        .expect_err("no certificate, no call");
    assert_eq!(
        handshake_alert(&plc2, &pki, None).await,
        "CertificateRequired"
    );
    // With one, the admin token works as usual.
    let channel = tls_channel(&plc2, &pki, Some(&pki.plc1)).await.unwrap();
    let authed = tonic::service::interceptor::InterceptedService::new(
        channel,
        crate::common::Bearer::new(Some(&plc2.admin_token)).unwrap(),
    );
    pb::peer_service_client::PeerServiceClient::new(authed)
        .list_peers(pb::ListPeersRequest::default())
        .await
        .expect("admin call with a client certificate");
}

backend_tests!(
    secrets_never_leave,
    client_certificate_proves_peer_identity,
    refresh_presents_client_certificate,
    client_certificate_required_of_all,
);
