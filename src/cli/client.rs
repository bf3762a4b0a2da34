//! Reaching a running server: its URL, the admin token, TLS.
//!
//! The token comes from `--token` (or `FEDREG_TOKEN`), else from the
//! `admin-token` file that `fedreg serve` writes in its data directory, so
//! that on the server's own machine `fedreg --data-dir DIR peer list` just
//! works. When the server refuses the token, the error says where the token
//! came from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::CliError;
use crate::error::Error;
use crate::proto::v1::peer_service_client::PeerServiceClient;
use crate::server::ADMIN_TOKEN_FILE;

/// Longest wait for the connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer accepted (peer listings carry their last reports).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach a running server (options of `peer` and `refresh`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options (peer, refresh)")]
pub struct ClientArgs {
    /// The server's gRPC URL: `http://host:port`, or `https://host:port`
    /// with --cacert.
    #[arg(
        long,
        global = true,
        env = "FEDREG_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// An admin token of the server [default: the `admin-token` file in
    /// --data-dir].
    #[arg(long, global = true, env = "FEDREG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate that verifies the server's TLS certificate (for
    /// an https:// --server).
    #[arg(long, global = true, env = "FEDREG_CACERT")]
    pub cacert: Option<PathBuf>,
}

/// A channel that sends `authorization: Bearer <token>` with every call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// Adds the bearer token, when there is one, to every request.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to a server's `PeerService`.
pub struct Server {
    /// The peer-management client.
    pub peers: PeerServiceClient<Authed>,
    /// Where the token came from, told when the server refuses it.
    token_origin: String,
}

impl Server {
    /// Connects to the server that `args` name; `data_dir` holds the
    /// default token.
    pub async fn connect(args: &ClientArgs, data_dir: &Path) -> Result<Server, CliError> {
        let (token, token_origin) = match &args.token {
            Some(token) => (
                Some(token.trim().to_owned()),
                "the token was given with --token or FEDREG_TOKEN".to_owned(),
            ),
            None => {
                let path = data_dir.join(ADMIN_TOKEN_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(token) => (
                        Some(token.trim().to_owned()),
                        format!(
                            "the token was read from {}; for another server pass --token or set FEDREG_TOKEN",
                            path.display()
                        ),
                    ),
                    Err(e) => (
                        None,
                        format!(
                            "no token was sent: reading {}: {e}; pass --token, set FEDREG_TOKEN or give the server's --data-dir",
                            path.display()
                        ),
                    ),
                }
            }
        };
        let bearer = token
            .map(|t| {
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::invalid("token", "(hidden)", "not a valid header value"))
            })
            .transpose()?;
        let channel = channel(args).await?;
        Ok(Server {
            peers: PeerServiceClient::new(InterceptedService::new(channel, Bearer(bearer)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            token_origin,
        })
    }

    /// The error for a failed call, with where the token came from when
    /// the server did not accept it.
    pub fn fail(&self, status: tonic::Status) -> CliError {
        let mut error = CliError::from(status);
        if let CliError::Rpc {
            code: tonic::Code::Unauthenticated | tonic::Code::PermissionDenied,
            message,
        } = &mut error
        {
            message.push_str(&format!(" ({})", self.token_origin));
        }
        error
    }
}

/// Opens a channel to `args.server`, verifying TLS with `args.cacert`.
async fn channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let url = args.server.trim();
    let bad = |reason: String| Error::invalid("server", url, reason);
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(format!("not a URL: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    match (
        url.split_once("://").map(|(scheme, _)| scheme),
        &args.cacert,
    ) {
        (Some("https"), Some(path)) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::invalid("cacert", path.display(), format!("cannot read it: {e}"))
            })?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| bad(format!("TLS: {}", chain(&e))))?;
        }
        (Some("https"), None) => {
            return Err(
                bad("an https:// server needs --cacert (its CA certificate)".into()).into(),
            );
        }
        (Some("http"), None) => {}
        (Some("http"), Some(_)) => {
            return Err(bad("--cacert is for https:// servers only".into()).into());
        }
        _ => return Err(bad("must be http://host:port or https://host:port".into()).into()),
    }
    endpoint.connect().await.map_err(|e| CliError::Rpc {
        code: tonic::Code::Unavailable,
        message: format!("cannot reach {url}: {}", chain(&e)),
    })
}

/// An error and its sources, joined with `: `.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
