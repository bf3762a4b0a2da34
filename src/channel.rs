//! The client side of a gRPC connection, shared by the typed client of a
//! server ([`crate::client`]) and the peer fetcher ([`crate::peering::fetch`]):
//! the endpoint (plain `http://`, or `https://` verified against a CA
//! certificate, optionally presenting a client certificate) and the
//! interceptor that sends `authorization: Bearer <token>` with every call.

use std::time::Duration;

use tonic::Status;
use tonic::metadata::errors::InvalidMetadataValue;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel that sends `authorization: Bearer <token>` with every call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Adds the bearer token, when there is one, to every request that does not
/// carry an `authorization` header of its own.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// The interceptor sending `token` (trimmed), or nothing when `None`;
    /// fails when the token cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Bearer, InvalidMetadataValue> {
        token
            .map(|t| format!("Bearer {}", t.trim()).parse())
            .transpose()
            .map(Bearer)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0
            && !request.metadata().contains_key("authorization")
        {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An endpoint for `url` that connects within `connect_timeout`, with
/// `TCP_NODELAY`, and with TLS when `ca_pem` (the PEM certificate of the
/// CA that signed the server's) is given, presenting `identity` as client
/// certificate when there is one. Whether the URL's scheme fits `ca_pem`
/// is for the caller to decide.
pub fn endpoint(
    url: &str,
    ca_pem: Option<&[u8]>,
    identity: Option<&Identity>,
    connect_timeout: Duration,
) -> Result<Endpoint, EndpointError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(EndpointError::Url)?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let Some(pem) = ca_pem else {
        return Ok(endpoint);
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    if let Some(identity) = identity {
        tls = tls.identity(identity.clone());
    }
    endpoint.tls_config(tls).map_err(EndpointError::Tls)
}

/// Why [`endpoint`] could not make an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL does not parse.
    #[error("not a URL: {}", crate::error::chain(.0))]
    Url(tonic::transport::Error),
    /// The TLS settings were refused.
    #[error("TLS: {}", crate::error::chain(.0))]
    Tls(tonic::transport::Error),
}
