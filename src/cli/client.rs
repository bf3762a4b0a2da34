//! Reaching a running server: its URL, the admin token, TLS.
//!
//! The token comes from `--token` (or `FEDREG_TOKEN`), else from the
//! `admin-token` file that `fedreg serve` writes in its data directory, so
//! that on the server's own machine `fedreg --data-dir DIR peer list` just
//! works. When the server refuses the token, the error says where the token
//! came from. The connection itself is [`crate::client::Client`]'s.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliError;
use crate::client::{Authed, Client};
use crate::error::Error;
use crate::proto::v1::peer_service_client::PeerServiceClient;
use crate::server::ADMIN_TOKEN_FILE;

/// How to reach a running server (options of `peer`, `refresh`, `status` and `call`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options (peer, refresh, status, call)")]
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

/// A connection to a server, for the client subcommands.
pub struct Server {
    /// The connection.
    pub client: Client,
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
        let ca_pem = args
            .cacert
            .as_ref()
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    Error::invalid("cacert", path.display(), format!("cannot read it: {e}"))
                })
            })
            .transpose()?;
        let client = Client::connect(&args.server, token.as_deref(), ca_pem.as_deref())
            .await
            .map_err(|e| match e {
                // As if the server had answered: the code says what failed.
                Error::Unavailable(message) => CliError::Rpc {
                    code: tonic::Code::Unavailable,
                    message,
                },
                e => e.into(),
            })?;
        Ok(Server {
            peers: client.peers(),
            client,
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
