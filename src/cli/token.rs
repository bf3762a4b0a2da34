//! `fedreg token create|list|revoke`: API tokens, managed directly in the
//! database (the server need not run).

use clap::Subcommand;

use super::StorageArgs;
use super::table::{Align, Table};
use crate::error::Result;
use crate::registry::peers;
use crate::store::tokens::{self, Role};

/// `fedreg token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown only once).
    Create {
        /// Label for operators.
        #[arg(long, default_value = "")]
        name: String,
        /// `admin` or `peer`.
        #[arg(long, default_value = "admin")]
        role: String,
        /// For a peer token: the id of the peer it authenticates.
        #[arg(long, conflicts_with = "peer")]
        peer_id: Option<i64>,
        /// For a peer token: the name of the peer it authenticates.
        #[arg(long)]
        peer: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id, as `token list` shows it.
        token_id: i64,
    },
}

/// Runs a `token` subcommand.
pub async fn token(storage: &StorageArgs, command: TokenCommand) -> Result<()> {
    let store = storage.open().await?;
    let mut conn = store.write().await?;
    match command {
        TokenCommand::Create {
            name,
            role,
            peer_id,
            peer,
        } => {
            let role = Role::parse(&role)?;
            let peer_id = match (peer_id, peer) {
                (Some(id), _) => Some(id),
                (None, Some(peername)) => {
                    Some(peers::require_named(&mut conn, &peername).await?.peer_id)
                }
                (None, None) => None,
            };
            let name = crate::registry::validate::token_name(&name)?;
            let (secret, row) = tokens::create(&mut conn, &name, role, peer_id).await?;
            eprintln!(
                "token {} created (role {}); its secret, shown only once:",
                row.token_id, row.role
            );
            println!("{secret}");
        }
        TokenCommand::List { json: true } => {
            let rows = tokens::list(&mut conn).await?;
            super::json::print(&serde_json::Value::from_iter(
                rows.iter().map(super::json::token),
            ));
        }
        TokenCommand::List { json: false } => {
            let mut table = Table::new(&[
                ("ID", Align::Right),
                ("ROLE", Align::Left),
                ("PEER", Align::Right),
                ("LAST USED", Align::Left),
                ("NAME", Align::Left),
            ]);
            for t in tokens::list(&mut conn).await? {
                let peer = t.peer_id.map_or_else(|| "-".into(), |p| p.to_string());
                let used = t
                    .last_used
                    .map_or_else(|| "never".into(), super::format_time);
                table.row([t.token_id.to_string(), t.role, peer, used, t.name]);
            }
            print!("{table}");
        }
        TokenCommand::Revoke { token_id } => {
            tokens::revoke(&mut conn, token_id).await?;
            println!("token {token_id} revoked");
        }
    }
    Ok(())
}
