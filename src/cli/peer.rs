//! `fedreg peer add|list|show|update|rm|invite|join`: the peers of a
//! running server, through `fedreg.v1.PeerService` (`invite` and `join`
//! are [`super::invite`]'s).
//!
//! A peer is named on the command line by its name or its id (a string of
//! digits is taken as an id).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};

use futures_util::TryStreamExt;

use super::client::{ClientArgs, Server};
use super::invite::{self, InviteArgs, JoinArgs};
use super::json;
use super::refresh::{counts_text, outcome_name, report_text, timestamp_text};
use super::table::{Align, Table};
use super::{CliError, StorageArgs};
use crate::config::peers::{read_cacert_file, read_token_file};
use crate::proto::v1 as pb;
use crate::registry::peers::PeerKey;
use crate::registry::validate::plaintext_warning;

/// `fedreg peer ...`
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Register a peer registry.
    Add(AddArgs),
    /// List the peers.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a peer and the summary of its last refresh.
    Show {
        /// The peer's name or id.
        peer: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a peer's settings.
    Update(UpdateArgs),
    /// Remove a peer and everything cached from it.
    Rm {
        /// The peer's name or id.
        peer: String,
    },
    /// Invite a registry to peer: print a single-use invitation code for
    /// its admin, who runs `fedreg peer join` with it.
    Invite(InviteArgs),
    /// Join the registry that issued an invitation code: each registry
    /// gets a peer record and a peer token for the other.
    Join(JoinArgs),
    /// List the invitations issued (their codes are not shown again).
    Invitations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an unused invitation: its code can no longer be used.
    Uninvite {
        /// The invitation's id, as `peer invite` and `peer invitations`
        /// show it.
        invitation_id: i64,
    },
}

/// Options of `fedreg peer add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Unique name of the peer (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The peer's gRPC URL: `http://host:port` or `https://host:port`.
    #[arg(long)]
    pub url: String,
    /// Settings of the peer.
    #[command(flatten)]
    pub settings: PeerSettings,
}

/// Options of `fedreg peer update`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("changes")
        .required(true)
        .multiple(true)
        .args([
            "name", "url", "outbound_token", "outbound_token_file", "peer_cacert",
            "client_identity", "shortname", "hrn_root", "refresh_interval",
            "max_delete_fraction", "follow",
        ])
))]
pub struct UpdateArgs {
    /// The peer's name or id.
    pub peer: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New gRPC URL.
    #[arg(long)]
    pub url: Option<String>,
    /// New settings.
    #[command(flatten)]
    pub settings: PeerSettings,
}

/// Settings of a peer, set by `add` and changed by `update`.
#[derive(Debug, Args)]
pub struct PeerSettings {
    /// Token the peer issued to this registry (`fedreg token create --role
    /// peer` on the peer), presented when calling it; "" removes it.
    #[arg(long, value_name = "TOKEN")]
    pub outbound_token: Option<String>,
    /// File holding the outbound token (its first line), so that the token
    /// does not appear on command lines.
    #[arg(long, value_name = "FILE", conflicts_with = "outbound_token")]
    pub outbound_token_file: Option<PathBuf>,
    /// Identity (certificate subject CN, or a DNS, IP or URI name) that the
    /// peer's calls to this registry must prove with a TLS client
    /// certificate (see `serve --client-ca`); "" removes it.
    #[arg(long, value_name = "NAME")]
    pub client_identity: Option<String>,
    /// PEM file with the CA certificate that verifies the peer's TLS
    /// certificate (https:// peers); "" removes it.
    #[arg(long, value_name = "FILE")]
    pub peer_cacert: Option<PathBuf>,
    /// Short name.
    #[arg(long)]
    pub shortname: Option<String>,
    /// Root of the peer's human-readable names.
    #[arg(long)]
    pub hrn_root: Option<String>,
    /// Seconds between refreshes run by the server itself; 0 for none.
    #[arg(long, value_name = "SECS")]
    pub refresh_interval: Option<i64>,
    /// Largest fraction of the peer's cache a refresh may delete without
    /// --force (default: the server's --max-delete-fraction).
    #[arg(long, value_name = "F")]
    pub max_delete_fraction: Option<f64>,
    /// Follow the peer (true): keep a stream open to it and apply its
    /// changes as they are committed, instead of the refresh interval.
    #[arg(long, value_name = "BOOL")]
    pub follow: Option<bool>,
}

impl PeerSettings {
    /// The outbound token given inline or in --outbound-token-file:
    /// `Some("")` to remove it.
    fn outbound_token(&self) -> Result<Option<String>, CliError> {
        match &self.outbound_token_file {
            Some(path) => Ok(Some(read_token_file(path)?)),
            None => Ok(self.outbound_token.clone()),
        }
    }

    /// The CA certificate's PEM text: `Some("")` to remove it.
    fn cacert(&self) -> Result<Option<String>, CliError> {
        Ok(self
            .peer_cacert
            .as_deref()
            .map(read_cacert_file)
            .transpose()?)
    }
}

/// Runs a `peer` subcommand.
pub async fn peer(
    storage: &StorageArgs,
    client: &ClientArgs,
    command: PeerCommand,
) -> Result<(), CliError> {
    let mut server = Server::connect(client, &storage.data_dir).await?;
    match command {
        PeerCommand::Add(add) => {
            let request = pb::CreatePeerRequest {
                cacert: add.settings.cacert()?.unwrap_or_default(),
                outbound_token: add.settings.outbound_token()?.unwrap_or_default(),
                client_identity: add.settings.client_identity.unwrap_or_default(),
                peername: add.name,
                peer_url: add.url,
                shortname: add.settings.shortname.unwrap_or_default(),
                hrn_root: add.settings.hrn_root.unwrap_or_default(),
                refresh_interval_seconds: add.settings.refresh_interval.unwrap_or(0),
                max_delete_fraction: add.settings.max_delete_fraction,
                follow: add.settings.follow.unwrap_or(false),
            };
            let peer = server
                .peers
                .create_peer(request)
                .await
                .map_err(|s| server.fail(s))?
                .into_inner();
            println!("peer {} added with id {}", peer.peername, peer.peer_id);
            warn_plaintext(&peer.peer_url);
            if !peer.has_outbound_token {
                eprintln!(
                    "note: {} has no outbound token yet, so it cannot be refreshed: ask its admin \
                     for a peer token issued to this registry and set it with \
                     `fedreg peer update {} --outbound-token TOKEN`",
                    peer.peername, peer.peername
                );
            }
        }
        PeerCommand::List { json: false } => print!("{}", list_table(&list(&server).await?)),
        PeerCommand::List { json: true } => {
            let peers = list(&server).await?;
            json::print(&serde_json::Value::from_iter(peers.iter().map(json::peer)));
        }
        PeerCommand::Show { peer, json } => {
            let peer = get(&mut server, PeerKey::parse(&peer)).await?;
            if json {
                json::print(&json::peer(&peer));
            } else {
                print!("{}", peer_text(&peer));
            }
        }
        PeerCommand::Update(update) => {
            let current = get(&mut server, PeerKey::parse(&update.peer)).await?;
            let url_changed = update.url.is_some();
            let request = pb::UpdatePeerRequest {
                peer_id: current.peer_id,
                peername: update.name,
                peer_url: update.url,
                cacert: update.settings.cacert()?,
                outbound_token: update.settings.outbound_token()?,
                client_identity: update.settings.client_identity,
                shortname: update.settings.shortname,
                hrn_root: update.settings.hrn_root,
                refresh_interval_seconds: update.settings.refresh_interval,
                max_delete_fraction: update.settings.max_delete_fraction,
                follow: update.settings.follow,
            };
            let peer = server
                .peers
                .update_peer(request)
                .await
                .map_err(|s| server.fail(s))?
                .into_inner();
            println!("peer {} (id {}) updated", peer.peername, peer.peer_id);
            if url_changed {
                warn_plaintext(&peer.peer_url);
            }
            print!("{}", peer_text(&peer));
        }
        PeerCommand::Invite(args) => invite::invite(&mut server, client, args).await?,
        PeerCommand::Join(args) => invite::join(&mut server, client, args).await?,
        PeerCommand::Invitations { json } => invite::list(&mut server, json).await?,
        PeerCommand::Uninvite { invitation_id } => {
            invite::uninvite(&mut server, invitation_id).await?
        }
        PeerCommand::Rm { peer } => {
            let current = get(&mut server, PeerKey::parse(&peer)).await?;
            let removed = server
                .peers
                .delete_peer(pb::DeletePeerRequest {
                    peer_id: current.peer_id,
                })
                .await
                .map_err(|s| server.fail(s))?
                .into_inner()
                .removed
                .unwrap_or_default();
            println!(
                "peer {} (id {}) removed, with its cached objects: {}",
                current.peername,
                current.peer_id,
                counts_text(&removed)
            );
        }
    }
    Ok(())
}

/// Prints a warning on stderr when `url` is plain http:// to another host.
fn warn_plaintext(url: &str) {
    if let Some(warning) = plaintext_warning(url) {
        eprintln!("warning: {warning}");
    }
}

/// The peer named by `key`.
async fn get(server: &mut Server, key: PeerKey) -> Result<pb::Peer, CliError> {
    let answer = server
        .peers
        .get_peer(pb::GetPeerRequest {
            key: Some(key.into()),
        })
        .await;
    Ok(answer.map_err(|s| server.fail(s))?.into_inner())
}

/// Every peer, in id order.
pub async fn list(server: &Server) -> Result<Vec<pb::Peer>, CliError> {
    let peers = server.client.list_peers().try_collect().await;
    peers.map_err(|s| server.fail(s))
}

/// `300 s`, or `manual` when the server does not schedule refreshes.
fn interval_text(seconds: i64) -> String {
    if seconds == 0 {
        "manual".into()
    } else {
        format!("{seconds} s")
    }
}

/// How the peer's cache is kept up to date: `follow`, the refresh
/// interval (`300 s`) or `manual`.
pub fn mode_text(peer: &pb::Peer) -> String {
    match peer.mode() {
        pb::SyncMode::Follow => "follow".into(),
        _ => interval_text(peer.refresh_interval_seconds),
    }
}

/// Where following stands: connection, revisions and lag.
fn follow_text(status: &pb::FollowStatus) -> String {
    if status.standby {
        return "standby: another fedreg process on this database follows the peer".into();
    }
    let connection = if status.connected {
        "connected"
    } else {
        "not connected"
    };
    format!(
        "{connection}; peer at revision {}, applied {}; lag {} revisions, {:.3} s; {} refreshes, {} connects",
        status.peer_revision,
        status.applied_revision,
        status.lag_revisions,
        status.lag_seconds,
        status.refreshes,
        status.connects
    )
}

/// The table of `fedreg peer list`.
fn list_table(peers: &[pb::Peer]) -> Table {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("NAME", Align::Left),
        ("URL", Align::Left),
        ("MODE", Align::Right),
        ("LAST REFRESH", Align::Left),
        ("OUTCOME", Align::Left),
        ("CACHED", Align::Right),
    ]);
    for peer in peers {
        let cached = peer.cached.unwrap_or_default();
        let total = cached.sites + cached.keys + cached.persons + cached.nodes + cached.slices;
        table.row([
            peer.peer_id.to_string(),
            peer.peername.clone(),
            peer.peer_url.clone(),
            mode_text(peer),
            timestamp_text(peer.last_refresh_time.as_ref()),
            outcome_name(peer.last_refresh_outcome).to_owned(),
            total.to_string(),
        ]);
    }
    table
}

/// The fields of a peer and the summary of its last refresh.
fn peer_text(peer: &pb::Peer) -> String {
    let set = |yes: bool| if yes { "set" } else { "none" };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let mut fields = vec![
        ("id", peer.peer_id.to_string()),
        ("name", peer.peername.clone()),
        ("url", peer.peer_url.clone()),
        ("shortname", or_dash(&peer.shortname)),
        ("hrn root", or_dash(&peer.hrn_root)),
        ("CA certificate", set(!peer.cacert.is_empty()).into()),
        ("outbound token", set(peer.has_outbound_token).into()),
        ("client identity", or_dash(&peer.client_identity)),
        ("mode", mode_text(peer)),
        (
            "refresh interval",
            interval_text(peer.refresh_interval_seconds),
        ),
        (
            "max delete fraction",
            peer.max_delete_fraction
                .map_or_else(|| "server default".into(), |f| f.to_string()),
        ),
        ("created", timestamp_text(peer.date_created.as_ref())),
        (
            "last refresh",
            timestamp_text(peer.last_refresh_time.as_ref()),
        ),
        (
            "last outcome",
            outcome_name(peer.last_refresh_outcome).to_owned(),
        ),
        ("cached", counts_text(&peer.cached.unwrap_or_default())),
        (
            "checkpoint",
            peer.checkpoint_revision.map_or_else(
                || "none (the next refresh is full)".into(),
                |r| format!("revision {r}"),
            ),
        ),
    ];
    if let Some(status) = &peer.follow_status {
        fields.push(("follow", follow_text(status)));
        if !status.last_error.is_empty() {
            fields.push((
                "follow error",
                format!(
                    "{} ({})",
                    status.last_error,
                    timestamp_text(status.last_error_time.as_ref())
                ),
            ));
        }
    }
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!("{:<21}{value}\n", format!("{label}:")));
    }
    if let Some(report) = &peer.last_refresh_report {
        out.push_str("\nLast refresh:\n");
        out.push_str(&report_text(report, false));
    }
    out
}
