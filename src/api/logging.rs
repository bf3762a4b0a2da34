//! One log line per call: method, status and duration, as a tower layer.
//!
//! The status is the one in the response headers (a call that failed before
//! its first message); a stream that fails later is logged by its service.
//! The duration runs until the response headers, which for a server stream
//! is the time to its start.

use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

/// Layer adding [`LoggingService`].
#[derive(Debug, Clone, Default)]
pub struct LoggingLayer;

impl<S> Layer<S> for LoggingLayer {
    type Service = LoggingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoggingService { inner }
    }
}

/// Logs each call at info level.
#[derive(Debug, Clone)]
pub struct LoggingService<S> {
    inner: S,
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
        Box::pin(async move {
            let result = future.await;
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(response) => {
                    // The message travels percent-encoded; the status
                    // read from the headers is decoded.
                    let (code, message) = match tonic::Status::from_header_map(response.headers()) {
                        Some(status) => (status.code(), status.message().to_owned()),
                        None => (tonic::Code::Ok, String::new()),
                    };
                    tracing::info!(%method, status = ?code, ms = format_args!("{millis:.1}"), "{message}");
                }
                Err(e) => {
                    tracing::warn!(%method, ms = format_args!("{millis:.1}"), error = %e, "transport error")
                }
            }
            result
        })
    }
}
