//! The metrics listener: `GET /metrics` over HTTP/1.1, on its own address
//! (`serve --metrics-listen`), apart from the gRPC API and without a
//! token, so that it can be bound to an address only Prometheus reaches.
//!
//! Each scrape reads the sampled values ([`super::sampled`]) and answers
//! every metric as OpenMetrics text. Connections go through the same
//! [`crate::listener`] as gRPC's, with small limits: a handful at a time,
//! each closed when silent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use super::sampled::Sampler;
use crate::error::{Error, Result};
use crate::listener;

/// The path metrics are served at.
pub const PATH: &str = "/metrics";

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds on the connections of the metrics listener: a few scrapers,
/// each sending its request soon and never idle for long.
const LIMITS: listener::Limits = listener::Limits {
    max_connections: 8,
    handshake_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(120),
};

/// Binds the metrics listener to `addr`; returns it and the address it
/// listens on (the port chosen for port 0).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("metrics: listening on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("metrics listener address: {e}")))?;
    Ok((listener, bound))
}

/// Serves `metrics` on `listener` until `stop` is cancelled; the
/// connections still open then are closed.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    sampler: Sampler,
    stop: CancellationToken,
) {
    let mut incoming = std::pin::pin!(listener::incoming(listener, LIMITS));
    let mut connections = JoinSet::new();
    loop {
        let connection = tokio::select! {
            () = stop.cancelled() => return,
            Some(connection) = incoming.next() => connection,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            else => return,
        };
        let Ok(connection) = connection else { continue };
        let (metrics, sampler) = (metrics.clone(), sampler.clone());
        let service = service_fn(move |request| answer(request, metrics.clone(), sampler.clone()));
        connections.spawn(async move {
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(connection), service)
                .await
            {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

/// Answers one request: the metrics at [`PATH`], 404 elsewhere.
async fn answer(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
    sampler: Sampler,
) -> std::result::Result<Response<String>, Infallible> {
    if request.uri().path() != PATH {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!("not found: the metrics are at {PATH}\n"),
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n".into(),
        ));
    }
    let text = metrics.render(sampler.sample().await);
    let mut response = Response::new(text);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(response)
}

/// A plain-text response with `status`.
fn plain(status: StatusCode, text: String) -> Response<String> {
    let mut response = Response::new(text);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
