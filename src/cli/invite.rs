//! `fedreg peer invite` and `fedreg peer join`: peering in one command per
//! side, through `CreateInvitation` on the inviting registry and
//! `JoinPeer` on the joining one; `fedreg peer invitations` and `fedreg
//! peer uninvite` list and withdraw the invitations issued.
//!
//! `invite` prints the invitation code alone on stdout (so that it can go
//! to a file or a variable) and what it is for on stderr; `join` takes the
//! code as its argument, or `-` to read it from stdin, so that it need not
//! appear on a command line. Each side's own URL, as the other registry
//! reaches it, is `--url`, by default the `--server` the command calls.

use std::io::Read;

use clap::Args;

use super::CliError;
use super::client::{ClientArgs, Server};
use super::json;
use super::refresh::timestamp_text;
use super::table::{Align, Table};
use crate::error::Error;
use crate::proto::v1 as pb;

/// Options of `fedreg peer invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Name the invited registry's peer record will have here (letters,
    /// digits, `-`, `_`, `.`).
    pub name: String,
    /// How long the invitation is good for: seconds, or a number followed
    /// by s, m, h or d; at most 7d.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration_seconds)]
    pub expires: i64,
    /// This registry's URL, as the invited registry will reach it
    /// [default: --server].
    #[arg(long)]
    pub url: Option<String>,
    /// Print JSON instead of the code alone.
    #[arg(long)]
    pub json: bool,
}

/// Options of `fedreg peer join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The invitation code (`fedreg-invite:v1:...`), or `-` to read it
    /// from stdin.
    pub invitation: String,
    /// Name of the inviting registry's peer record here [default: the
    /// inviting registry's name].
    #[arg(long)]
    pub name: Option<String>,
    /// This registry's URL, as the inviting registry will reach it
    /// [default: --server].
    #[arg(long)]
    pub url: Option<String>,
    /// Print the new peer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `1h` as 3600: seconds, or a number with the unit s, m, h or d.
fn duration_seconds(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((at, unit @ ('s' | 'm' | 'h' | 'd'))) => (&text[..at], unit),
        _ => (text, 's'),
    };
    let scale = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 1,
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| {
            format!("{text:?} is not a duration: give seconds, or a number with s, m, h or d")
        })
}

/// Runs `fedreg peer invite`.
pub async fn invite(
    server: &mut Server,
    client: &ClientArgs,
    args: InviteArgs,
) -> Result<(), CliError> {
    let request = pb::CreateInvitationRequest {
        peername: args.name,
        url: args.url.unwrap_or_else(|| client.server.clone()),
        expires_in_seconds: args.expires,
    };
    let created = server
        .peers
        .create_invitation(request)
        .await
        .map_err(|s| server.fail(s))?
        .into_inner();
    if args.json {
        json::print(&json::invitation(&created));
        return Ok(());
    }
    println!("{}", created.invitation);
    eprintln!(
        "invitation {} for peer {}, good for one join until {}: on the other registry, run \
         `fedreg peer join INVITATION`",
        created.invitation_id,
        created.peername,
        timestamp_text(created.expires.as_ref())
    );
    Ok(())
}

/// Runs `fedreg peer invitations`: a table, or JSON with `json`.
pub async fn list(server: &mut Server, json: bool) -> Result<(), CliError> {
    let invitations = server
        .peers
        .list_invitations(pb::ListInvitationsRequest {})
        .await
        .map_err(|s| server.fail(s))?
        .into_inner()
        .invitations;
    if json {
        json::print(&serde_json::Value::from_iter(
            invitations.iter().map(json::issued_invitation),
        ));
        return Ok(());
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("PEER", Align::Left),
        ("STATE", Align::Left),
        ("EXPIRES", Align::Left),
        ("USED", Align::Left),
    ]);
    for i in &invitations {
        table.row([
            i.invitation_id.to_string(),
            i.peername.clone(),
            state_text(i.state()).into(),
            timestamp_text(i.expires.as_ref()),
            timestamp_text(i.used.as_ref()),
        ]);
    }
    print!("{table}");
    Ok(())
}

/// Runs `fedreg peer uninvite`.
pub async fn uninvite(server: &mut Server, invitation_id: i64) -> Result<(), CliError> {
    let withdrawn = server
        .peers
        .revoke_invitation(pb::RevokeInvitationRequest { invitation_id })
        .await
        .map_err(|s| server.fail(s))?
        .into_inner()
        .invitation
        .unwrap_or_default();
    println!(
        "invitation {} for peer {} withdrawn: its code can no longer be used",
        withdrawn.invitation_id, withdrawn.peername
    );
    Ok(())
}

/// `pending`, `used`, `expired`.
pub fn state_text(state: pb::InvitationState) -> &'static str {
    match state {
        pb::InvitationState::Pending => "pending",
        pb::InvitationState::Used => "used",
        pb::InvitationState::Expired => "expired",
        pb::InvitationState::Unspecified => "-",
    }
}

/// Runs `fedreg peer join`.
pub async fn join(
    server: &mut Server,
    client: &ClientArgs,
    args: JoinArgs,
) -> Result<(), CliError> {
    let invitation = match args.invitation.as_str() {
        "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| {
                Error::invalid("invitation", "-", format!("cannot read stdin: {e}"))
            })?;
            text
        }
        code => code.to_owned(),
    };
    let request = pb::JoinPeerRequest {
        invitation,
        peername: args.name.unwrap_or_default(),
        url: args.url.unwrap_or_else(|| client.server.clone()),
    };
    let joined = server
        .peers
        .join_peer(request)
        .await
        .map_err(|s| server.fail(s))?
        .into_inner();
    if args.json {
        json::print(&json::joined(&joined));
        return Ok(());
    }
    let peer = joined.peer.unwrap_or_default();
    println!(
        "joined {} at {}: peer {} added with id {}, and this registry is peer {} there; each \
         holds a peer token of the other",
        peer.peername, peer.peer_url, peer.peername, peer.peer_id, joined.remote_peername
    );
    if !peer.cacert.is_empty() {
        println!(
            "its TLS certificate matched the invitation; the CA certificate that verifies it is \
             on the peer record"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_seconds("90"), Ok(90));
        assert_eq!(duration_seconds("90s"), Ok(90));
        assert_eq!(duration_seconds("30m"), Ok(1800));
        assert_eq!(duration_seconds("1h"), Ok(3600));
        assert_eq!(duration_seconds("7d"), Ok(604_800));
        for bad in ["", "h", "0", "-1h", "1w", "1.5h", "99999999999999999d"] {
            assert!(duration_seconds(bad).is_err(), "{bad}");
        }
    }
}
