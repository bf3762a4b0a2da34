//! Invitations to peer: the inviting side of peering in one command per
//! side, and the invitation code both sides read.
//!
//! [`create`] (`CreateInvitation`, admin) stores the SHA-256 of a random
//! 256-bit secret with the name the joining registry will have here and an
//! expiry, and returns the invitation code: this registry's URL and name,
//! the secret, and the SHA-256 of its TLS certificate when it serves TLS
//! (see [`crate::pinning`]). [`enroll`] (`EnrollmentService.Enroll`, no
//! token: the secret is the credential) uses an invitation once: in one
//! transaction it claims the invitation, creates the joining registry's
//! peer record with the URL, CA certificate and outbound token it sent,
//! and issues it a peer token. The joining side is
//! [`crate::peering::join`].
//!
//! The secret is looked up by its hash, as API tokens are: a timing
//! difference could at most tell an attacker about the hashes of secrets
//! it does not know, and 256 random bits are not guessed, so neither
//! needs rate limiting.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::peers::{self as peer_ops, Following};
use super::validate::{self, cacert, peername};
use crate::error::{Error, Result};
use crate::pinning::{Chain, Fingerprint, PinError};
use crate::proto::v1 as pb;
use crate::store::invitations::{self, InvitationRow, NewInvitation};
use crate::store::peers::{self, NewPeer, PeerRow};
use crate::store::tokens::{self, Role};
use crate::store::{DbConn, Store, now};

/// What every invitation code starts with; the rest is the base64url
/// encoding (no padding) of a [`pb::InvitationCode`].
pub const CODE_PREFIX: &str = "fedreg-invite:v1:";
/// Bytes of an invitation's secret.
pub const SECRET_BYTES: usize = 32;
/// How long an invitation lasts unless asked otherwise: an hour.
pub const DEFAULT_EXPIRY_SECONDS: i64 = 3600;
/// The longest an invitation may last: a week.
pub const MAX_EXPIRY_SECONDS: i64 = 7 * 24 * 3600;
/// Invitations are forgotten this long after they expire (until then a
/// late join is told that its invitation expired, or was used).
const KEPT_AFTER_EXPIRY_SECONDS: i64 = 7 * 24 * 3600;
/// Longest invitation code read (a URL, a name and two 32-byte values
/// take a few hundred characters).
const MAX_CODE_CHARS: usize = 4096;

/// The invitation code of `code`.
pub fn encode(code: &pb::InvitationCode) -> String {
    format!(
        "{CODE_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(code.encode_to_vec())
    )
}

/// Reads an invitation code, checking what it carries: a URL, a registry
/// name, a secret of [`SECRET_BYTES`], and a certificate fingerprint
/// exactly when the URL is `https://`. Errors name the field
/// `invitation`. (Whether the registry name can name a peer record is for
/// the joining side to say: it may choose another name.)
pub fn decode(text: &str) -> Result<pb::InvitationCode> {
    let text = text.trim();
    let bad = |reason: &str| Error::invalid("invitation", text, reason);
    if text.len() > MAX_CODE_CHARS {
        return Err(bad("is too long to be an invitation code"));
    }
    let body = text
        .strip_prefix(CODE_PREFIX)
        .ok_or_else(|| bad(&format!("an invitation code starts with {CODE_PREFIX}")))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("is not base64url after its prefix: was it cut or changed?"))?;
    let code = pb::InvitationCode::decode(bytes.as_slice())
        .map_err(|_| bad("does not hold an invitation: was it cut or changed?"))?;
    let url =
        validate::url("url", &code.url).map_err(|e| bad(&format!("its URL is unusable: {e}")))?;
    validate::required_text("registry_name", &code.registry_name, 256)
        .map_err(|e| bad(&format!("its registry name is unusable: {e}")))?;
    if code.secret.len() != SECRET_BYTES {
        return Err(bad("its secret is not 32 bytes long"));
    }
    match (url.starts_with("https://"), code.certificate_sha256.len()) {
        (true, 32) | (false, 0) => Ok(pb::InvitationCode { url, ..code }),
        (true, _) => Err(bad(
            "its https:// URL comes without the 32-byte SHA-256 of the certificate",
        )),
        (false, _) => Err(bad("a certificate fingerprint is for an https:// URL only")),
    }
}

/// Hex SHA-256 of an invitation's secret: the form in which it is stored.
fn hash_secret(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// This registry as its peers reach it: its name, and the certificate
/// chain it serves when it serves TLS.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The registry's name (`serve --name`).
    pub name: String,
    /// The chain of `--tls-cert`; `None` for plain HTTP/2.
    pub chain: Option<Chain>,
}

/// What a peer needs to verify this registry over TLS.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The PEM certificate it keeps as the CA of its peer record.
    pub cacert: String,
    /// The SHA-256 of this server's certificate.
    pub fingerprint: Fingerprint,
}

impl Serving {
    /// The registry named `name`, serving TLS with the certificate chain
    /// in `tls_cert` when there is one.
    pub fn load(name: &str, tls_cert: Option<&Path>) -> Result<Serving> {
        Ok(Serving {
            name: name.to_owned(),
            chain: tls_cert.map(Chain::load).transpose()?,
        })
    }

    /// What peers reaching this registry at `url` (the value of `field`)
    /// need to verify it: nothing over `http://`. Fails when the scheme
    /// does not fit whether this server serves TLS, or when its
    /// certificate would not verify for that URL.
    pub fn trust(&self, field: &'static str, url: &str) -> Result<Option<Trust>> {
        match (&self.chain, url.starts_with("https://")) {
            (None, false) => Ok(None),
            (Some(chain), true) => {
                let cacert = chain
                    .anchor_for(url, "this server's certificate (--tls-cert)")
                    .map_err(|e| match e {
                        PinError::Untrusted(reason) => {
                            Error::FailedPrecondition(format!("{field} {url}: {reason}"))
                        }
                        e => e.into(),
                    })?;
                Ok(Some(Trust {
                    cacert,
                    fingerprint: chain.fingerprint(),
                }))
            }
            (None, true) => Err(Error::invalid(
                field,
                url,
                "this server does not serve TLS: its URL is http://",
            )),
            (Some(_), false) => Err(Error::invalid(
                field,
                url,
                "this server serves TLS only: its URL is https://",
            )),
        }
    }
}

/// A required URL field: set, and a registry URL.
fn required_url(field: &'static str, value: &str, what: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, value, format!("must be set: {what}")));
    }
    validate::url(field, value)
}

/// Seconds an invitation lasts: 0 for [`DEFAULT_EXPIRY_SECONDS`], else 1
/// to [`MAX_EXPIRY_SECONDS`].
fn expiry(seconds: i64) -> Result<i64> {
    match seconds {
        0 => Ok(DEFAULT_EXPIRY_SECONDS),
        1..=MAX_EXPIRY_SECONDS => Ok(seconds),
        _ => Err(Error::invalid(
            "expires_in_seconds",
            seconds,
            format!("must be between 1 and {MAX_EXPIRY_SECONDS} (a week); 0 for an hour"),
        )),
    }
}

/// Creates an invitation for the registry that will be the peer
/// `peername` here; the response holds its code, shown only there.
pub async fn create(
    store: &Store,
    serving: &Serving,
    req: pb::CreateInvitationRequest,
) -> Result<pb::CreateInvitationResponse> {
    let peername = peername(&req.peername)?;
    let url = required_url(
        "url",
        &req.url,
        "this registry's URL, as the joining registry will reach it",
    )?;
    let seconds = expiry(req.expires_in_seconds)?;
    let trust = serving.trust("url", &url)?;
    let mut secret = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    let created = now();
    let invitation = NewInvitation {
        peername: peername.clone(),
        secret_hash: hash_secret(&secret),
        created,
        expires: created + seconds,
    };
    let mut conn = store.write().await?;
    let stored = conn
        .transaction(|c| {
            Box::pin(async move {
                peer_ops::ensure_name_free(c, &invitation.peername).await?;
                invitations::purge_expired(c, created - KEPT_AFTER_EXPIRY_SECONDS).await?;
                invitations::insert(c, &invitation).await
            })
        })
        .await?;
    let certificate_sha256 = trust.map(|t| t.fingerprint.to_vec()).unwrap_or_default();
    let code = pb::InvitationCode {
        url,
        registry_name: serving.name.clone(),
        secret: secret.to_vec(),
        certificate_sha256: certificate_sha256.clone(),
    };
    Ok(pb::CreateInvitationResponse {
        invitation: encode(&code),
        peername,
        expires: super::timestamp(stored.expires),
        certificate_sha256,
        invitation_id: stored.invitation_id,
    })
}

/// The invitations issued, newest first, without their codes.
pub async fn list(store: &Store) -> Result<pb::ListInvitationsResponse> {
    let rows = invitations::list(&mut store.read().await?).await?;
    let now = now();
    Ok(pb::ListInvitationsResponse {
        invitations: rows.into_iter().map(|row| to_message(row, now)).collect(),
    })
}

/// Withdraws an unused invitation; returns it as it was.
pub async fn revoke(
    store: &Store,
    req: pb::RevokeInvitationRequest,
) -> Result<pb::RevokeInvitationResponse> {
    let id = req.invitation_id;
    let mut conn = store.write().await?;
    let removed = conn
        .transaction(|c| {
            Box::pin(async move {
                if let Some(row) = invitations::delete_unused(c, id).await? {
                    return Ok(row);
                }
                Err(match invitations::by_id(c, id).await? {
                    None => Error::not_found("invitation", "invitation_id", id),
                    Some(row) => Error::FailedPrecondition(format!(
                        "invitation_id {id}: already used by peer {}; remove the peer instead",
                        row.peername
                    )),
                })
            })
        })
        .await?;
    Ok(pb::RevokeInvitationResponse {
        invitation: Some(to_message(removed, now())),
    })
}

/// The admin API's message for a stored invitation, at time `now`.
fn to_message(row: InvitationRow, now: i64) -> pb::Invitation {
    let state = match row.used {
        Some(_) => pb::InvitationState::Used,
        None if row.expires <= now => pb::InvitationState::Expired,
        None => pb::InvitationState::Pending,
    };
    pb::Invitation {
        invitation_id: row.invitation_id,
        peername: row.peername,
        created: super::timestamp(row.created),
        expires: super::timestamp(row.expires),
        used: row.used.and_then(super::timestamp),
        state: state as i32,
    }
}

/// Why no invitation was claimed with a secret: unknown, used or expired.
fn refusal(found: Option<InvitationRow>) -> Error {
    let time = |secs: i64| {
        jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
    };
    match found {
        None => Error::Unauthenticated(
            "unknown invitation: no invitation of this registry has this secret".into(),
        ),
        Some(row) => match row.used {
            Some(used) => Error::FailedPrecondition(format!(
                "invitation {} (for peer {}) was already used, at {}; an invitation is good \
                 for one join: ask for a new one",
                row.invitation_id,
                row.peername,
                time(used)
            )),
            None => Error::FailedPrecondition(format!(
                "invitation {} (for peer {}) expired at {}: ask for a new one",
                row.invitation_id,
                row.peername,
                time(row.expires)
            )),
        },
    }
}

/// Uses an invitation: creates the joining registry's peer record and
/// returns a peer token issued to it. Nothing is written, and the
/// invitation stays unused, when anything fails.
pub async fn enroll(
    store: &Store,
    followers: &dyn Following,
    serving: &Serving,
    req: pb::EnrollRequest,
) -> Result<pb::EnrollResponse> {
    if req.secret.len() != SECRET_BYTES {
        return Err(Error::invalid(
            "secret",
            format!("<{} bytes>", req.secret.len()),
            "must be the 32 bytes of an invitation's secret",
        ));
    }
    let url = required_url(
        "url",
        &req.url,
        "the joining registry's URL, as this registry will reach it",
    )?;
    let outbound_token = validate::token("token", &req.token)?.ok_or_else(|| {
        Error::invalid(
            "token",
            "",
            "must be set: a peer token the joining registry issued",
        )
    })?;
    let cacert = cacert(&req.cacert)?;
    match (url.starts_with("https://"), &cacert) {
        (true, None) => {
            return Err(Error::invalid(
                "cacert",
                "",
                "an https:// url needs the PEM certificate that verifies it",
            ));
        }
        (false, Some(_)) => {
            return Err(Error::invalid(
                "cacert",
                &req.cacert,
                "is for an https:// url only",
            ));
        }
        _ => {}
    }
    let registry_name = validate::optional_text("registry_name", &req.registry_name, 256)?;
    let hash = hash_secret(&req.secret);
    // An unknown, used or expired secret is refused on a read connection:
    // calls that need no token never queue for the writer in vain.
    {
        let mut conn = store.read().await?;
        match invitations::by_hash(&mut conn, &hash).await? {
            Some(row) if row.used.is_none() && row.expires > now() => {}
            found => return Err(refusal(found)),
        }
    }
    let issued = tokens::new_secret();
    let token = issued.clone();
    let mut conn = store.write().await?;
    let peername = conn
        .transaction(|c| {
            Box::pin(async move {
                let Some(invitation) = invitations::claim(c, &hash, now()).await? else {
                    return Err(refusal(invitations::by_hash(c, &hash).await?));
                };
                let peer = joined_peer(invitation.peername, url, cacert, outbound_token);
                store_peer(c, &peer, &issued).await?;
                Ok::<_, Error>(peer.peername)
            })
        })
        .await?;
    drop(conn);
    followers.peers_changed();
    tracing::info!(
        peer = %peername,
        registry = %registry_name,
        "a registry joined with an invitation"
    );
    Ok(pb::EnrollResponse {
        token,
        registry_name: serving.name.clone(),
        peername,
    })
}

/// The record of a peer that peering by invitation sets up: where it
/// serves, its CA certificate and outbound token, default settings.
pub fn joined_peer(
    peername: String,
    peer_url: String,
    cacert: Option<String>,
    outbound_token: String,
) -> NewPeer {
    NewPeer {
        peername,
        peer_url,
        cacert,
        outbound_token: Some(outbound_token),
        shortname: String::new(),
        hrn_root: String::new(),
        refresh_interval_seconds: 0,
        max_delete_fraction: None,
        date_created: now(),
        last_refresh_outcome: pb::RefreshOutcome::Unspecified as i32,
        follow: false,
        client_identity: None,
    }
}

/// Stores `peer`, its name free, with the peer token whose secret
/// `issued` was handed to it; returns the stored peer. Call it in a
/// transaction.
pub async fn store_peer(conn: &mut DbConn, peer: &NewPeer, issued: &str) -> Result<PeerRow> {
    peer_ops::ensure_name_free(conn, &peer.peername).await?;
    let row = peers::insert(conn, peer).await?;
    let name = format!("{} (joined by invitation)", row.peername);
    tokens::insert(conn, &name, Role::Peer, Some(row.peer_id), issued).await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(url: &str, sha: usize) -> pb::InvitationCode {
        pb::InvitationCode {
            url: url.into(),
            registry_name: "plc1".into(),
            secret: vec![7; SECRET_BYTES],
            certificate_sha256: vec![9; sha],
        }
    }

    #[test]
    fn codes_read_back() {
        for c in [
            code("http://127.0.0.1:1", 0),
            code("https://plc1.org:443", 32),
        ] {
            let text = encode(&c);
            assert!(text.starts_with(CODE_PREFIX));
            assert!(
                text[CODE_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(decode(&format!(" {text}\n")).unwrap(), c);
        }
    }

    #[test]
    fn bad_codes_name_the_field() {
        let good = encode(&code("http://127.0.0.1:1", 0));
        let cut = &good[..good.len() - 5];
        let bad = [
            "".to_owned(),
            "fedreg-invite:v2:AAAA".to_owned(),
            format!("{CODE_PREFIX}!!!"),
            cut.to_owned(),
            encode(&code("https://plc1.org:443", 0)),
            encode(&code("http://127.0.0.1:1", 32)),
            encode(&pb::InvitationCode {
                secret: vec![1; 16],
                ..code("http://127.0.0.1:1", 0)
            }),
            encode(&code("ftp://x", 0)),
        ];
        for text in bad {
            let err = decode(&text).unwrap_err().to_string();
            assert!(err.starts_with("invalid invitation"), "{text}: {err}");
        }
    }

    #[test]
    fn expiries() {
        assert_eq!(expiry(0).unwrap(), DEFAULT_EXPIRY_SECONDS);
        assert_eq!(expiry(1).unwrap(), 1);
        assert_eq!(expiry(MAX_EXPIRY_SECONDS).unwrap(), MAX_EXPIRY_SECONDS);
        for bad in [-1, MAX_EXPIRY_SECONDS + 1] {
            assert!(
                expiry(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("expires_in_seconds")
            );
        }
    }

    #[test]
    fn refusals() {
        let row = InvitationRow {
            invitation_id: 3,
            peername: "plc2".into(),
            secret_hash: String::new(),
            created: 0,
            expires: 1_764_067_501,
            used: None,
        };
        let expired = refusal(Some(row.clone())).to_string();
        assert!(
            expired.contains("expired at 2025-11-25T10:45:01Z"),
            "{expired}"
        );
        let used = refusal(Some(InvitationRow {
            used: Some(1_764_067_500),
            ..row
        }))
        .to_string();
        assert!(used.contains("already used"), "{used}");
        assert!(matches!(refusal(None), Error::Unauthenticated(_)));
    }
}
