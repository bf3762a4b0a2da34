//! `fedreg status [--json]`: one line per peer of a running server, to see
//! at a glance how each peer's cache is kept up to date and whether it is:
//! the mode, the last refresh and its outcome, the lag of a followed peer
//! and the last error.
//!
//! The lag is measured for followed peers only (revisions announced but not
//! applied, and for how long); for the others the time of the last refresh
//! tells how old the cache is. The last error is the Follow stream's for a
//! followed peer, and the reason of the last refresh when it failed or was
//! refused.

use clap::Args;
use serde_json::{Value, json};

use super::client::{ClientArgs, Server};
use super::json;
use super::peer::{list, mode_text};
use super::refresh::{outcome_name, timestamp_text};
use super::table::{Align, Table};
use super::{CliError, StorageArgs};
use crate::proto::v1 as pb;

/// Options of `fedreg status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the status of every peer.
pub async fn status(
    storage: &StorageArgs,
    client: &ClientArgs,
    args: StatusArgs,
) -> Result<(), CliError> {
    let server = Server::connect(client, &storage.data_dir).await?;
    let peers = list(&server).await?;
    if args.json {
        json::print(&Value::from_iter(peers.iter().map(status_json)));
    } else if peers.is_empty() {
        println!("no peers");
    } else {
        print!("{}", status_table(&peers));
    }
    Ok(())
}

/// The last error: the Follow stream's, else the last refresh's reason when
/// it did not apply; empty when there is none.
fn last_error(peer: &pb::Peer) -> String {
    if let Some(error) = peer
        .follow_status
        .as_ref()
        .map(|s| &s.last_error)
        .filter(|e| !e.is_empty())
    {
        return error.clone();
    }
    match peer.last_refresh_outcome() {
        pb::RefreshOutcome::Failed | pb::RefreshOutcome::Refused => peer
            .last_refresh_report
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// The lag of a followed peer: `2 rev, 0.4 s`, `standby` when another
/// process follows it; `-` for a peer not followed.
fn lag_text(peer: &pb::Peer) -> String {
    match &peer.follow_status {
        Some(s) if s.standby => "standby".into(),
        Some(s) => format!("{} rev, {:.1} s", s.lag_revisions, s.lag_seconds),
        None => "-".into(),
    }
}

/// The table of `fedreg status`.
fn status_table(peers: &[pb::Peer]) -> Table {
    let mut table = Table::new(&[
        ("PEER", Align::Left),
        ("MODE", Align::Right),
        ("LAST REFRESH", Align::Left),
        ("OUTCOME", Align::Left),
        ("LAG", Align::Right),
        ("LAST ERROR", Align::Left),
    ]);
    for peer in peers {
        let error = last_error(peer).replace('\n', " ");
        table.row([
            peer.peername.clone(),
            mode_text(peer),
            timestamp_text(peer.last_refresh_time.as_ref()),
            outcome_name(peer.last_refresh_outcome).to_owned(),
            lag_text(peer),
            if error.is_empty() { "-".into() } else { error },
        ]);
    }
    table
}

/// One peer's status as JSON: the table's columns, the lag in numbers.
fn status_json(peer: &pb::Peer) -> Value {
    let full = json::peer(peer);
    let follow = peer.follow_status.as_ref();
    let error = last_error(peer);
    json!({
        "peer_id": peer.peer_id,
        "peername": peer.peername,
        "mode": full["mode"],
        "refresh_interval_seconds": peer.refresh_interval_seconds,
        "last_refresh_time": full["last_refresh_time"],
        "last_refresh_outcome": full["last_refresh_outcome"],
        "connected": follow.map(|s| s.connected),
        "standby": follow.map(|s| s.standby),
        "lag_revisions": follow.map(|s| s.lag_revisions),
        "lag_seconds": follow.map(|s| s.lag_seconds),
        "last_error": (!error.is_empty()).then_some(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_lag() {
        let mut peer = pb::Peer {
            peername: "plc2".into(),
            last_refresh_outcome: pb::RefreshOutcome::Failed as i32,
            last_refresh_report: Some(pb::RefreshReport {
                reason: "cannot reach".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(last_error(&peer), "cannot reach");
        assert_eq!(lag_text(&peer), "-");
        peer.follow_status = Some(pb::FollowStatus {
            lag_revisions: 2,
            lag_seconds: 0.42,
            last_error: "stream broke".into(),
            ..Default::default()
        });
        assert_eq!(last_error(&peer), "stream broke");
        assert_eq!(lag_text(&peer), "2 rev, 0.4 s");
        peer.last_refresh_outcome = pb::RefreshOutcome::Applied as i32;
        peer.follow_status = None;
        assert_eq!(last_error(&peer), "");
    }
}
