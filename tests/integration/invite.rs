//! Peering by invitation: `CreateInvitation` on one registry, `JoinPeer`
//! on the other, and the `Enroll` call between them; then refreshes both
//! ways, which prove that the exchanged tokens work. Invitations used
//! twice, expired or garbled, fingerprints that do not match, and
//! certificates that cannot be pinned are refused, and the joining
//! registry writes nothing then. Over TLS the joined records keep the CA
//! certificate that later refreshes verify against. `fedreg peer invite`
//! and `peer join` through the real binary. On both backends.

use std::path::Path;
use std::process::Stdio;

use fedreg::pinning::fingerprint;
use fedreg::proto::v1 as pb;
use fedreg::proto::v1::enrollment_service_client::EnrollmentServiceClient;
use fedreg::registry::invitations;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::common::certs::{self, Ca, Issued, Usage};
use crate::common::cli::{failure_with, fedreg, run, success};
use crate::common::federation::{class, refresh};
use crate::common::objects::site;
use crate::common::rows::Rows;
use crate::common::{Backend, TestServer, assert_status};

/// Asks `on` for an invitation for the peer `peername`, valid `seconds`
/// (0: the default), naming `on`'s own URL.
async fn invite(on: &TestServer, peername: &str, seconds: i64) -> pb::CreateInvitationResponse {
    try_invite(on, peername, &on.url(), seconds)
        .await
        .expect("create invitation")
}

/// `CreateInvitation` on `on`.
async fn try_invite(
    on: &TestServer,
    peername: &str,
    url: &str,
    seconds: i64,
) -> Result<pb::CreateInvitationResponse, tonic::Status> {
    on.peers()
        .await
        .create_invitation(pb::CreateInvitationRequest {
            peername: peername.into(),
            url: url.into(),
            expires_in_seconds: seconds,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// `JoinPeer` on `on` with `code`, naming the inviter `peername` (empty:
/// its own name) and `on` by its own URL.
async fn try_join(
    on: &TestServer,
    code: &str,
    peername: &str,
) -> Result<pb::JoinPeerResponse, tonic::Status> {
    on.peers()
        .await
        .join_peer(pb::JoinPeerRequest {
            invitation: code.into(),
            peername: peername.into(),
            url: on.url(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The invitations `on` issued, as `ListInvitations` shows them.
async fn invitations_of(on: &TestServer) -> Vec<pb::Invitation> {
    on.peers()
        .await
        .list_invitations(pb::ListInvitationsRequest {})
        .await
        .expect("list invitations")
        .into_inner()
        .invitations
}

/// `RevokeInvitation` of `invitation_id` on `on`.
async fn try_uninvite(
    on: &TestServer,
    invitation_id: i64,
) -> Result<pb::RevokeInvitationResponse, tonic::Status> {
    on.peers()
        .await
        .revoke_invitation(pb::RevokeInvitationRequest { invitation_id })
        .await
        .map(tonic::Response::into_inner)
}

/// Every peer of `server`.
async fn peers_of(server: &TestServer) -> Vec<pb::Peer> {
    server
        .peers()
        .await
        .list_peers(pb::ListPeersRequest::default())
        .await
        .expect("list peers")
        .into_inner()
        .peers
}

/// The peer tokens of `server`.
async fn peer_tokens(server: &TestServer) -> Vec<pb::TokenInfo> {
    let tokens = server
        .tokens()
        .await
        .list_tokens(pb::ListTokensRequest {})
        .await
        .expect("list tokens")
        .into_inner()
        .tokens;
    tokens.into_iter().filter(|t| t.role == "peer").collect()
}

/// Asserts that `server` holds no peer record and no peer token.
async fn assert_no_peers(server: &TestServer) {
    assert_eq!(peers_of(server).await, []);
    assert_eq!(peer_tokens(server).await, []);
}

/// Creates the local site `login_base` on `server`.
async fn add_site(server: &TestServer, login_base: &str) {
    site(&mut server.registry().await, login_base).await;
}

/// Refreshes `peer` on `on` and asserts that it brought one new site.
async fn refresh_brings_one_site(on: &TestServer, peer: &pb::Peer) {
    let report = refresh(on, peer.peer_id).await;
    assert_eq!(report.outcome(), pb::RefreshOutcome::Applied);
    assert_eq!(class(&report, "sites").added, 1, "{report:?}");
}

/// The certificates of a PEM text, as DER.
fn ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM certificate").to_vec())
        .collect()
}

/// The DER of the first certificate of a PEM file.
fn der_of(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .expect("PEM certificate")
        .to_vec()
}

/// Starts a registry named `name` serving TLS with `identity`, its test
/// clients trusting `trusted` (a PEM file).
async fn start_tls(backend: Backend, name: &str, identity: &Issued, trusted: &Path) -> TestServer {
    let mut server = TestServer::start_with(backend, |config| {
        config.registry_name = name.into();
        config.tls = Some(identity.pair());
    })
    .await;
    let pem = std::fs::read(trusted).expect("trusted certificate");
    server.client_tls = Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
    server
}

async fn invite_then_join_peers_both_ways(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    add_site(&plc1, "mit").await;
    add_site(&plc2, "ucb").await;

    let invitation = invite(&plc1, "plc2", 0).await;
    assert!(invitation.invitation.starts_with(invitations::CODE_PREFIX));
    assert_eq!(invitation.peername, "plc2");
    assert!(invitation.certificate_sha256.is_empty(), "plain HTTP/2");
    let stored = Rows::of(&plc1).invitations().await;
    assert_eq!(stored.len(), 1);
    let expires = invitation.expires.expect("expiry").seconds;
    assert_eq!(expires - stored[0].created, 3600, "an hour by default");
    assert_eq!(stored[0].used, None);
    // Only the secret's hash is kept.
    let code = invitations::decode(&invitation.invitation).unwrap();
    assert!(!stored[0].secret_hash.contains(&hex::encode(&code.secret)));
    // The inviting side has no record yet: the joining side makes both.
    assert_no_peers(&plc1).await;

    let joined = try_join(&plc2, &invitation.invitation, "")
        .await
        .expect("join");
    assert_eq!(joined.remote_peername, "plc2");
    let on_plc2 = joined.peer.expect("the new peer");
    assert_eq!(on_plc2.peername, "plc1", "the inviter's own name");
    assert_eq!(on_plc2.peer_url, plc1.url());
    assert!(on_plc2.has_outbound_token);
    assert_eq!(on_plc2.cacert, "");
    assert_eq!(peers_of(&plc2).await, std::slice::from_ref(&on_plc2));

    let on_plc1 = peers_of(&plc1).await;
    let [on_plc1] = on_plc1.as_slice() else {
        panic!("one peer on plc1: {on_plc1:?}");
    };
    assert_eq!(on_plc1.peername, "plc2");
    assert_eq!(on_plc1.peer_url, plc2.url());
    assert!(on_plc1.has_outbound_token);
    assert!(Rows::of(&plc1).invitations().await[0].used.is_some());

    // Each side issued one peer token, bound to its record of the other.
    for (server, peer) in [(&plc1, on_plc1), (&plc2, &on_plc2)] {
        let tokens = peer_tokens(server).await;
        let [token] = tokens.as_slice() else {
            panic!("one peer token: {tokens:?}");
        };
        assert_eq!(token.peer_id, Some(peer.peer_id));
    }

    // The tokens work both ways.
    refresh_brings_one_site(&plc1, on_plc1).await;
    refresh_brings_one_site(&plc2, &on_plc2).await;
}

async fn used_invitations_are_refused(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let plc3 = TestServer::start_named(backend, "plc3").await;
    let code = invite(&plc1, "plc2", 600).await.invitation;

    // A local name already taken is refused before anything is sent: the
    // invitation stays good.
    plc2.peers()
        .await
        .create_peer(pb::CreatePeerRequest {
            peername: "taken".into(),
            peer_url: "http://127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_status(
        try_join(&plc2, &code, "taken").await,
        Code::AlreadyExists,
        &["peername", "taken"],
    );
    assert_eq!(Rows::of(&plc1).invitations().await[0].used, None);
    try_join(&plc2, &code, "").await.expect("first join");

    // The second use is refused by the inviter, and writes nothing on
    // the joining side, be it another registry or the same one under
    // another name.
    for (joiner, name) in [(&plc3, ""), (&plc2, "plc1-again")] {
        let peers_before = peers_of(joiner).await;
        let tokens_before = peer_tokens(joiner).await;
        assert_status(
            try_join(joiner, &code, name).await,
            Code::FailedPrecondition,
            &["plc1", "refused the invitation", "already used"],
        );
        assert_eq!(peers_of(joiner).await, peers_before);
        assert_eq!(peer_tokens(joiner).await, tokens_before);
    }
    assert_no_peers(&plc3).await;
    assert_eq!(peers_of(&plc1).await.len(), 1);
    assert_eq!(peer_tokens(&plc1).await.len(), 1);

    // The inviter refuses an invitation for a name it already has.
    assert_status(
        try_invite(&plc1, "plc2", &plc1.url(), 0).await,
        Code::AlreadyExists,
        &["peername", "plc2"],
    );
}

async fn expired_invitations_are_refused(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let invitation = invite(&plc1, "plc2", 1).await;
    let expires = invitation.expires.expect("expiry").seconds;
    // Good strictly before its expiry, in whole seconds: wait until the
    // clock has passed it.
    while fedreg::store::now() <= expires {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_status(
        try_join(&plc2, &invitation.invitation, "").await,
        Code::FailedPrecondition,
        &["plc1", "refused the invitation", "expired at"],
    );
    assert_no_peers(&plc2).await;
    assert_no_peers(&plc1).await;
    assert_eq!(Rows::of(&plc1).invitations().await[0].used, None);
}

async fn bad_requests_name_their_field(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let url = plc1.url();
    for (peername, url, seconds, field) in [
        ("bad name", url.as_str(), 0, "peername"),
        ("plc2", "", 0, "url"),
        ("plc2", "ftp://x", 0, "url"),
        ("plc2", "https://127.0.0.1:1", 0, "url"),
        (
            "plc2",
            url.as_str(),
            7 * 24 * 3600 + 1,
            "expires_in_seconds",
        ),
        ("plc2", url.as_str(), -1, "expires_in_seconds"),
    ] {
        assert_status(
            try_invite(&plc1, peername, url, seconds).await,
            Code::InvalidArgument,
            &[field],
        );
    }
    assert_eq!(Rows::of(&plc1).invitations().await.len(), 0);

    // Garbled codes and a missing URL on the joining side.
    let code = invite(&plc1, "plc2", 0).await.invitation;
    for garbled in [
        "nonsense".to_owned(),
        code.replace("fedreg-invite:v1:", "fedreg-invite:v9:"),
        code[..code.len() - 4].to_owned(),
    ] {
        assert_status(
            try_join(&plc2, &garbled, "").await,
            Code::InvalidArgument,
            &["invitation"],
        );
    }
    let no_url = plc2
        .peers()
        .await
        .join_peer(pb::JoinPeerRequest {
            invitation: code.clone(),
            ..Default::default()
        })
        .await;
    assert_status(no_url, Code::InvalidArgument, &["url", "must be set"]);
    assert_no_peers(&plc2).await;

    // Enroll, called directly without a token: an unknown secret, and
    // fields that fail their checks.
    let secret = invitations::decode(&code).unwrap().secret;
    let mut enroll = EnrollmentServiceClient::new(plc1.channel().await);
    let good = pb::EnrollRequest {
        secret: secret.clone(),
        registry_name: "plc2".into(),
        url: plc2.url(),
        token: "fr_token".into(),
        cacert: String::new(),
    };
    for (request, code, needle) in [
        (
            pb::EnrollRequest {
                secret: vec![0; 32],
                ..good.clone()
            },
            Code::Unauthenticated,
            "unknown invitation",
        ),
        (
            pb::EnrollRequest {
                secret: vec![0; 4],
                ..good.clone()
            },
            Code::InvalidArgument,
            "secret",
        ),
        (
            pb::EnrollRequest {
                url: "nope".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "url",
        ),
        (
            pb::EnrollRequest {
                token: String::new(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "token",
        ),
        (
            pb::EnrollRequest {
                url: "https://127.0.0.1:1".into(),
                ..good.clone()
            },
            Code::InvalidArgument,
            "cacert",
        ),
    ] {
        assert_status(enroll.enroll(request).await, code, &[needle]);
    }
    // None of them used the invitation: it still serves.
    assert_no_peers(&plc1).await;
    try_join(&plc2, &code, "").await.expect("join");

    // An inviter whose name cannot name a peer record is named by the
    // joining side.
    let odd = TestServer::start_named(backend, "PlanetLab Europe").await;
    let code = invite(&odd, "plc2", 0).await.invitation;
    assert_status(
        try_join(&plc2, &code, "").await,
        Code::InvalidArgument,
        &["peername", "PlanetLab Europe", "choose a name"],
    );
    let joined = try_join(&plc2, &code, "ple").await.expect("join as ple");
    assert_eq!(joined.peer.unwrap().peername, "ple");
}

async fn unreachable_inviter_writes_nothing(backend: Backend) {
    let mut plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let code = invite(&plc1, "plc2", 0).await.invitation;
    plc1.stop().await;
    assert_status(
        try_join(&plc2, &code, "").await,
        Code::Unavailable,
        &["cannot reach plc1"],
    );
    assert_no_peers(&plc2).await;
}

/// Certificates for the TLS tests: plc1's signed by a CA, served with
/// the CA's certificate after its own; plc2's self-signed.
struct Pki {
    _dir: tempfile::TempDir,
    ca: Ca,
    plc1_alone: Issued,
    plc1_chain: Issued,
    plc2: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new(dir.path(), "plc1-ca");
        let names = ["localhost", "127.0.0.1"];
        let plc1_alone = ca
            .cert(Usage::Server, "plc1")
            .sans(&names)
            .issue(dir.path(), "plc1");
        let plc1_chain = plc1_alone.with_chain(&ca);
        let plc2 = certs::self_signed(dir.path(), "plc2", "plc2", &names);
        Pki {
            _dir: dir,
            ca,
            plc1_alone,
            plc1_chain,
            plc2,
        }
    }
}

async fn tls_join_pins_the_certificate(backend: Backend) {
    let pki = Pki::new();
    let plc1 = start_tls(backend, "plc1", &pki.plc1_chain, &pki.ca.pem).await;
    let plc2 = start_tls(backend, "plc2", &pki.plc2, &pki.plc2.cert).await;
    add_site(&plc1, "mit").await;
    add_site(&plc2, "ucb").await;

    let invitation = invite(&plc1, "plc2", 0).await;
    assert_eq!(
        invitation.certificate_sha256,
        fingerprint(&CertificateDer::from(der_of(&pki.plc1_alone.cert))),
        "the fingerprint of plc1's own certificate"
    );
    let joined = try_join(&plc2, &invitation.invitation, "")
        .await
        .expect("join over TLS");
    let on_plc2 = joined.peer.expect("the new peer");
    assert_eq!(on_plc2.peer_url, plc1.url());
    // plc2 keeps the CA plc1's chain ends with; plc1 keeps plc2's own
    // (self-signed) certificate.
    assert_eq!(ders(&on_plc2.cacert), [der_of(&pki.ca.pem)]);
    let on_plc1 = peers_of(&plc1).await.remove(0);
    assert_eq!(on_plc1.peer_url, plc2.url());
    assert_eq!(ders(&on_plc1.cacert), [der_of(&pki.plc2.cert)]);

    // Later calls verify against them, both ways.
    refresh_brings_one_site(&plc2, &on_plc2).await;
    refresh_brings_one_site(&plc1, &on_plc1).await;
}

async fn tampered_fingerprints_are_refused(backend: Backend) {
    let pki = Pki::new();
    let plc1 = start_tls(backend, "plc1", &pki.plc1_chain, &pki.ca.pem).await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let code = invite(&plc1, "plc2", 0).await.invitation;
    let mut tampered = invitations::decode(&code).unwrap();
    tampered.certificate_sha256[0] ^= 1;
    assert_status(
        try_join(&plc2, &invitations::encode(&tampered), "").await,
        Code::FailedPrecondition,
        &["does not match the invitation", &plc1.url()],
    );
    assert_no_peers(&plc2).await;
    // Nothing reached plc1: the genuine code still serves.
    assert_eq!(Rows::of(&plc1).invitations().await[0].used, None);
    try_join(&plc2, &code, "").await.expect("the genuine code");
}

async fn certificates_that_cannot_be_pinned(backend: Backend) {
    let pki = Pki::new();
    // A server that does not send its CA's certificate names no anchor a
    // peer could keep: no invitation, and the error says what to do.
    let alone = start_tls(backend, "plc1", &pki.plc1_alone, &pki.ca.pem).await;
    assert_status(
        try_invite(&alone, "plc2", &alone.url(), 0).await,
        Code::FailedPrecondition,
        &["--tls-cert", "append the CA certificate"],
    );
    // A TLS server is reached at https:// only, at a name its
    // certificate holds.
    let plc1 = start_tls(backend, "plc1", &pki.plc1_chain, &pki.ca.pem).await;
    let port = plc1.addr().port();
    assert_status(
        try_invite(&plc1, "plc2", &format!("http://127.0.0.1:{port}"), 0).await,
        Code::InvalidArgument,
        &["url", "https://"],
    );
    assert_status(
        try_invite(&plc1, "plc2", &format!("https://127.0.0.2:{port}"), 0).await,
        Code::FailedPrecondition,
        &["url", "does not verify for"],
    );
    for server in [&alone, &plc1] {
        assert_eq!(Rows::of(server).invitations().await.len(), 0);
    }
    // A joining registry in that case fails before it sends anything.
    let inviter = TestServer::start_named(backend, "plc3").await;
    let code = invite(&inviter, "plc1", 0).await.invitation;
    assert_status(
        try_join(&alone, &code, "").await,
        Code::FailedPrecondition,
        &["url", "--tls-cert", "append the CA certificate"],
    );
    assert_no_peers(&alone).await;
    assert_eq!(Rows::of(&inviter).invitations().await[0].used, None);
}

/// `fedreg --data-dir DIR ARGS --server URL` for `server`.
fn client(server: &TestServer, args: &[&str]) -> tokio::process::Command {
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(args).args(["--server", &server.url()]);
    command
}

async fn cli_invite_then_join(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    add_site(&plc1, "mit").await;
    add_site(&plc2, "ucb").await;

    let invited = run(client(
        &plc1,
        &["peer", "invite", "plc2", "--expires", "10m"],
    ))
    .await;
    let code = success(&invited);
    let code = code.trim();
    assert!(code.starts_with(invitations::CODE_PREFIX), "{code}");
    assert_eq!(code.lines().count(), 1, "the code alone on stdout");
    let note = String::from_utf8_lossy(&invited.stderr);
    assert!(
        note.contains("invitation 1 for peer plc2") && note.contains("fedreg peer join"),
        "{note}"
    );
    let stored = Rows::of(&plc1).invitations().await;
    assert_eq!(stored[0].expires - stored[0].created, 600);
    // --url defaults to the server the command calls.
    assert_eq!(invitations::decode(code).unwrap().url, plc1.url());

    // The code read from stdin, so that it is on no command line.
    let file = plc2.data_dir.path().join("invitation");
    std::fs::write(&file, code).unwrap();
    let mut join = client(&plc2, &["peer", "join", "-"]);
    join.stdin(Stdio::from(std::fs::File::open(&file).unwrap()));
    let joined = success(&run(join).await);
    assert!(
        joined.starts_with(&format!(
            "joined plc1 at {}: peer plc1 added with id 1, and this registry is peer plc2 there",
            plc1.url()
        )),
        "{joined}"
    );
    for (server, peer) in [(&plc1, "plc2"), (&plc2, "plc1")] {
        let report = success(&run(client(server, &["refresh", peer])).await);
        assert!(report.starts_with(&format!("{peer}: APPLIED")), "{report}");
    }

    // Used again, and a duration the command does not read.
    failure_with(
        &run(client(&plc2, &["peer", "join", code, "--name", "again"])).await,
        1,
        &["FAILED_PRECONDITION", "already used"],
    );
    failure_with(
        &run(client(
            &plc1,
            &["peer", "invite", "plc3", "--expires", "1w"],
        ))
        .await,
        2,
        &["--expires", "not a duration"],
    );
}

backend_tests!(
    invite_then_join_peers_both_ways,
    used_invitations_are_refused,
    expired_invitations_are_refused,
    bad_requests_name_their_field,
    unreachable_inviter_writes_nothing,
    tls_join_pins_the_certificate,
    tampered_fingerprints_are_refused,
    certificates_that_cannot_be_pinned,
    cli_invite_then_join,
    invitations_are_listed_and_withdrawn,
);

/// `ListInvitations` shows each invitation issued, newest first, with its
/// state and without its code; `RevokeInvitation` withdraws an unused one
/// (its code is then unknown to the inviter), and refuses a used one and an
/// unknown id, naming them.
async fn invitations_are_listed_and_withdrawn(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let plc3 = TestServer::start_named(backend, "plc3").await;
    let for_plc2 = invite(&plc1, "plc2", 600).await;
    let for_plc3 = invite(&plc1, "plc3", 600).await;
    let for_plc4 = invite(&plc1, "plc4", 1).await;
    try_join(&plc2, &for_plc2.invitation, "")
        .await
        .expect("join");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let listed = invitations_of(&plc1).await;
    let seen: Vec<(i64, &str, pb::InvitationState, bool)> = listed
        .iter()
        .map(|i| {
            (
                i.invitation_id,
                i.peername.as_str(),
                i.state(),
                i.used.is_some(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                for_plc4.invitation_id,
                "plc4",
                pb::InvitationState::Expired,
                false
            ),
            (
                for_plc3.invitation_id,
                "plc3",
                pb::InvitationState::Pending,
                false
            ),
            (
                for_plc2.invitation_id,
                "plc2",
                pb::InvitationState::Used,
                true
            ),
        ]
    );
    assert_eq!(listed[1].expires, for_plc3.expires);

    // Withdrawn, plc3's invitation is unknown to plc1, and plc3 writes
    // nothing.
    let withdrawn = try_uninvite(&plc1, for_plc3.invitation_id)
        .await
        .expect("revoke");
    assert_eq!(
        withdrawn.invitation.map(|i| (i.state(), i.peername)),
        Some((pb::InvitationState::Pending, "plc3".into()))
    );
    assert_status(
        try_join(&plc3, &for_plc3.invitation, "").await,
        Code::FailedPrecondition,
        &["plc1", "refused the invitation", "unknown invitation"],
    );
    assert_no_peers(&plc3).await;

    // A used invitation stays; an unknown id is named; an expired one goes.
    assert_status(
        try_uninvite(&plc1, for_plc2.invitation_id).await,
        Code::FailedPrecondition,
        &["invitation_id", "already used", "plc2"],
    );
    assert_status(
        try_uninvite(&plc1, 999_999).await,
        Code::NotFound,
        &["invitation_id", "999999"],
    );
    try_uninvite(&plc1, for_plc4.invitation_id)
        .await
        .expect("revoke the expired one");
    let left: Vec<i64> = invitations_of(&plc1)
        .await
        .iter()
        .map(|i| i.invitation_id)
        .collect();
    assert_eq!(left, [for_plc2.invitation_id]);
}
