//! Joining a registry that issued an invitation (`JoinPeer`): the client
//! side of `EnrollmentService.Enroll`; the inviting side is
//! [`crate::registry::invitations`].
//!
//! [`join`] reads the invitation code, checks this registry's own name
//! and URL, and, for an `https://` inviter, connects once pinned to the
//! certificate the code names ([`crate::pinning::pinned_chain`]) and takes
//! the CA certificate its record will keep. Then it enrols: it hands the
//! inviter the secret, this registry's URL and CA certificate, and a peer
//! token issued to it (made here, not stored yet), over a connection
//! verified against that CA certificate; the inviter answers with a peer
//! token of its own. Only then is anything written here: the inviter's
//! peer record with that token, and the token issued to it, in one
//! transaction. A refused or failed enrolment writes nothing on either
//! side. The one failure that leaves something behind is this registry's
//! own write failing after the inviter accepted: the error then says which
//! peer record to remove there.

use std::time::Duration;

use tonic::transport::Identity;

use crate::channel;
use crate::error::{self, Error, Result};
use crate::pinning::{self, Fingerprint};
use crate::proto::v1 as pb;
use crate::proto::v1::enrollment_service_client::EnrollmentServiceClient;
use crate::registry::invitations::{self, Serving};
use crate::registry::peers::{self, Following};
use crate::registry::validate;
use crate::store::{Store, tokens};

/// Longest wait for a connection to the inviting registry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the inviting registry to answer the enrolment.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Joins the registry whose invitation code `req` holds, presenting
/// `identity` as TLS client certificate when it asks for one.
pub async fn join(
    store: &Store,
    followers: &dyn Following,
    serving: &Serving,
    identity: Option<&Identity>,
    req: pb::JoinPeerRequest,
) -> Result<pb::JoinPeerResponse> {
    let code = invitations::decode(&req.invitation)?;
    let peername = match req.peername.trim() {
        "" => validate::peername(&code.registry_name).map_err(|_| {
            Error::invalid(
                "peername",
                &code.registry_name,
                "the inviting registry's name cannot name a peer here (letters, digits, '-', \
                 '_' and '.'): choose a name",
            )
        })?,
        name => validate::peername(name)?,
    };
    if req.url.trim().is_empty() {
        return Err(Error::invalid(
            "url",
            &req.url,
            "must be set: this registry's URL, as the inviting registry will reach it",
        ));
    }
    let own_url = validate::url("url", &req.url)?;
    let own_trust = serving.trust("url", &own_url)?;
    {
        let mut conn = store.read().await?;
        peers::ensure_name_free(&mut conn, &peername).await?;
    }
    let inviter_cacert = match <Fingerprint>::try_from(code.certificate_sha256.as_slice()) {
        Ok(pin) => Some(
            pinning::pinned_chain(&code.url, &pin, CONNECT_TIMEOUT)
                .await?
                .anchor_for(&code.url, &format!("the certificate of {}", code.url))?,
        ),
        Err(_) => None,
    };
    let issued = tokens::new_secret();
    let request = pb::EnrollRequest {
        secret: code.secret.clone(),
        registry_name: serving.name.clone(),
        url: own_url,
        token: issued.clone(),
        cacert: own_trust.map(|t| t.cacert).unwrap_or_default(),
    };
    let accepted = enroll(&code, inviter_cacert.as_deref(), identity, request).await?;
    let inviter_token = validate::token("token", &accepted.token)
        .ok()
        .flatten()
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "{} ({}) answered the enrolment without a usable token",
                code.registry_name, code.url
            ))
        })?;
    let peer = invitations::joined_peer(peername, code.url.clone(), inviter_cacert, inviter_token);
    let mut conn = store.write().await?;
    let stored = conn
        .transaction(|c| {
            Box::pin(async move {
                let row = invitations::store_peer(c, &peer, &issued).await?;
                peers::load(c, followers, row).await
            })
        })
        .await
        .map_err(|e: Error| {
            Error::Aborted(format!(
                "{} accepted the invitation (it now has this registry as its peer {}), but \
                 storing the peer here failed: {e}; remove peer {} there and ask for a new \
                 invitation",
                code.registry_name, accepted.peername, accepted.peername
            ))
        })?;
    drop(conn);
    followers.peers_changed();
    Ok(pb::JoinPeerResponse {
        peer: Some(stored),
        remote_peername: accepted.peername,
    })
}

/// Calls `Enroll` on the inviting registry, over TLS verified with
/// `cacert` for an `https://` URL.
async fn enroll(
    code: &pb::InvitationCode,
    cacert: Option<&str>,
    identity: Option<&Identity>,
    request: pb::EnrollRequest,
) -> Result<pb::EnrollResponse> {
    let inviter = format!("{} ({})", code.registry_name, code.url);
    let unreachable =
        |e: &dyn std::fmt::Display| Error::Unavailable(format!("cannot reach {inviter}: {e}"));
    let channel = channel::endpoint(
        &code.url,
        cacert.map(str::as_bytes),
        identity,
        CONNECT_TIMEOUT,
    )
    .map_err(|e| unreachable(&e))?
    .connect()
    .await
    .map_err(|e| unreachable(&error::chain(&e)))?;
    let mut client = EnrollmentServiceClient::new(channel);
    match tokio::time::timeout(ENROLL_TIMEOUT, client.enroll(request)).await {
        Err(_) => Err(unreachable(&format!(
            "no answer to the enrolment within {} s",
            ENROLL_TIMEOUT.as_secs()
        ))),
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                unreachable(&status.message())
            }
            _ => Error::FailedPrecondition(format!(
                "{inviter} refused the invitation: {}",
                status.message()
            )),
        }),
    }
}
