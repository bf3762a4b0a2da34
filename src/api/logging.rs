//! One log line per call, and the call's metrics: method, status and
//! duration, as a tower layer.
//!
//! The status is the one in the response headers (a call that failed before
//! its first message); a stream that fails later is logged by its service.
//! The duration runs until the response headers, which for a server stream
//! is the time to its start. The same method, status and duration are
//! recorded in [`Metrics`] (`fedreg_rpc_calls_total`,
//! `fedreg_rpc_duration_seconds`).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Layer adding [`LoggingService`].
#[derive(Debug, Clone)]
pub struct LoggingLayer {
    metrics: Arc<Metrics>,
}

impl LoggingLayer {
    /// A layer that records each call in `metrics` too.
    pub fn new(metrics: Arc<Metrics>) -> LoggingLayer {
        LoggingLayer { metrics }
    }
}

impl<S> Layer<S> for LoggingLayer {
    type Service = LoggingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoggingService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Logs each call at info level and records it in the metrics.
#[derive(Debug, Clone)]
pub struct LoggingService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for LoggingService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        tracing::debug!(%method, headers = ?request.headers().keys().collect::<Vec<_>>(), "call");
        let future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.await;
            let took = started.elapsed();
            let millis = took.as_secs_f64() * 1000.0;
            let code = match &result {
                Ok(response) => {
                    // The message travels percent-encoded; the status
                    // read from the headers is decoded.
                    match tonic::Status::from_header_map(response.headers()) {
                        Some(status) => {
                            let code = status.code();
                            tracing::info!(%method, status = ?code, ms = format_args!("{millis:.1}"), "{}", status.message());
                            code
                        }
                        None => {
                            tracing::info!(%method, status = ?tonic::Code::Ok, ms = format_args!("{millis:.1}"), "answered");
                            tonic::Code::Ok
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%method, ms = format_args!("{millis:.1}"), error = %e, "transport error");
                    tonic::Code::Unknown
                }
            };
            metrics.call(&method, code, took);
            result
        })
    }
}
