//! Bearer-token authentication and role checks, as a tower layer.
//!
//! Every call but health checks, reflection and enrolment (whose
//! credential is an invitation's secret) needs
//! `authorization: Bearer <token>`. The token's hash is looked up in the
//! store; the caller's [`Principal`] is put in the request extensions for
//! the services that need to know who calls (GetPeerData). Peer tokens may
//! call only the peering service; everything else needs an admin token.
//! Every call looks its token up, so that a revocation takes effect at
//! once; but when the database does not answer within `CACHE_PATIENCE`,
//! a token that authenticated recently ([`Sessions`]) is trusted without
//! it, so that an admin reaches the server (and `RevokeToken`) even when
//! every connection is busy.
//!
//! A peer record may name a client identity: then a call with one of that
//! peer's tokens must also come over TLS with a client certificate that the
//! server verified against its `--client-ca` and that names the identity
//! ([`client_cert`]), so that a stolen token alone is not enough. Without a
//! certificate the call is UNAUTHENTICATED; with one naming someone else,
//! PERMISSION_DENIED.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::client_cert;
use super::sessions::Sessions;
use crate::error::Error;
use crate::store::tokens::{self, Role};
use crate::store::{DbConn, Store, peers};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's id.
    pub token_id: i64,
    /// The token's role.
    pub role: Role,
    /// For a peer token: the peer.
    pub peer_id: Option<i64>,
}

/// Paths open without a token: health, reflection, and enrolment, whose
/// credential is an invitation's secret.
const OPEN_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/fedreg.v1.EnrollmentService/",
];
/// Paths a peer token may call.
const PEER_PREFIXES: &[&str] = &["/fedreg.v1.PeeringService/"];
/// How long a call waits for the database to look its token up before a
/// recently authenticated token is trusted without it.
const CACHE_PATIENCE: Duration = Duration::from_millis(250);
/// How often a token's last-used time is written, at most.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Layer adding [`AuthService`] around a service.
#[derive(Clone)]
pub struct AuthLayer {
    store: Store,
    sessions: Arc<Sessions>,
    touched: Arc<Mutex<HashMap<i64, Instant>>>,
}

impl AuthLayer {
    /// Authenticates against the tokens in `store`, remembered in `sessions`.
    pub fn new(store: Store, sessions: Arc<Sessions>) -> AuthLayer {
        AuthLayer {
            store,
            sessions,
            touched: Arc::default(),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// Checks the caller's token before passing the call on.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S> Service<Request<Body>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone is the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
                return inner.call(request).await;
            }
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
            // The certificate chain the TLS layer verified, on a TLS connection.
            let certs = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs);
            match layer
                .authorize(header, &path, certs.as_deref().map(Vec::as_slice))
                .await
            {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(e) => Ok(Status::from(e).into_http()),
            }
        })
    }
}

impl AuthLayer {
    async fn authorize(
        &self,
        header: Option<String>,
        path: &str,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Principal, Error> {
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(
                "missing authorization header: send `authorization: Bearer <token>`".into(),
            )
        })?;
        let secret = Some(header.as_str())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated("authorization header must be `Bearer <token>`".into())
            })?;
        let principal = self.principal(secret).await?;
        let allowed = match principal.role {
            Role::Admin => true,
            Role::Peer => PEER_PREFIXES.iter().any(|p| path.starts_with(p)),
        };
        if !allowed {
            return Err(Error::PermissionDenied(format!(
                "token {} has role {}, which may not call {path}",
                principal.token_id,
                principal.role.as_str()
            )));
        }
        if let Some(peer_id) = principal.peer_id {
            let mut conn = self.store.read().await?;
            check_client_certificate(&mut conn, peer_id, certs).await?;
        }
        self.touch(principal.token_id).await;
        Ok(principal)
    }

    /// The token whose secret is `secret`: looked up, or remembered when
    /// the lookup takes too long or the database fails.
    async fn principal(&self, secret: &str) -> Result<Principal, Error> {
        let hash = tokens::hash_secret(secret);
        let lookup = self.lookup(secret, hash.clone());
        let Some(remembered) = self.sessions.cached(&hash) else {
            return lookup.await;
        };
        match tokio::time::timeout(CACHE_PATIENCE, lookup).await {
            Ok(Ok(principal)) => Ok(principal),
            Ok(Err(e @ Error::Unauthenticated(_))) => Err(e),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "token lookup failed: trusting the cached token");
                Ok(remembered)
            }
            Err(_) => Ok(remembered),
        }
    }

    /// Looks the token up in the database, and remembers it.
    async fn lookup(&self, secret: &str, hash: String) -> Result<Principal, Error> {
        let mut conn = self.store.read().await?;
        let token = tokens::find_by_secret(&mut conn, secret)
            .await?
            .ok_or_else(|| Error::Unauthenticated("unknown or revoked token".into()))?;
        drop(conn);
        let principal = Principal {
            token_id: token.token_id,
            role: Role::parse(&token.role)?,
            peer_id: token.peer_id,
        };
        self.sessions.remember(hash, principal.clone());
        Ok(principal)
    }

    /// Records the token's use, at most once per [`TOUCH_INTERVAL`].
    async fn touch(&self, token_id: i64) {
        let due = {
            let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match touched.get(&token_id) {
                Some(last) if now.duration_since(*last) < TOUCH_INTERVAL => false,
                _ => {
                    touched.insert(token_id, now);
                    true
                }
            }
        };
        if due {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Ok(mut conn) = store.write().await
                    && let Err(e) = tokens::touch(&mut conn, token_id).await
                {
                    tracing::debug!(error = %e, token_id, "recording token use");
                }
            });
        }
    }
}

/// Checks that the client certificate of a call with a token of peer
/// `peer_id` names the identity the peer record requires, if it requires
/// one.
async fn check_client_certificate(
    conn: &mut DbConn,
    peer_id: i64,
    certs: Option<&[CertificateDer<'static>]>,
) -> Result<(), Error> {
    let Some((peername, Some(required))) = peers::client_requirement(conn, peer_id).await? else {
        return Ok(());
    };
    let Some(cert) = certs.and_then(<[_]>::first) else {
        return Err(Error::Unauthenticated(format!(
            "tokens of peer {peername} are accepted only with a TLS client certificate for \
             {required} (verified against this server's --client-ca); none was presented"
        )));
    };
    if client_cert::names(cert, &required) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "tokens of peer {peername} need a client certificate for {required}; the one \
             presented names {}",
            client_cert::describe(cert)
        )))
    }
}
