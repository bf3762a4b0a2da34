//! `fedreg refresh <peer> [--force] [--full | --verify]`: runs `RefreshPeer`
//! on a server and prints its report: a table per class, one per relation,
//! the phase timers and the warnings; with `--verify`, first what the
//! comparison of digests found (the tables then count the repairs).
//!
//! With `--json`, the report is printed as JSON instead.
//!
//! A refresh the mass-delete guard refused prints its report, then fails
//! with exit code 3 and the `--force` hint.

use clap::Args;

use super::client::{ClientArgs, Server};
use super::json;
use super::progress::Spinner;
use super::table::{Align, Table};
use super::{CliError, StorageArgs, format_time};
use crate::proto::v1 as pb;
use crate::registry::peers::PeerKey;

/// Options of `fedreg refresh`.
#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The peer's name or id.
    pub peer: String,
    /// Apply even when the refresh deletes more of the cache than the
    /// peer's mass-delete limit allows.
    #[arg(long)]
    pub force: bool,
    /// Fetch everything from the peer, not only what changed since the
    /// last refresh.
    #[arg(long)]
    pub full: bool,
    /// Then compare the cache with the peer's digests, and fetch again the
    /// objects that differ.
    #[arg(long, conflicts_with = "full")]
    pub verify: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Refreshes a peer and prints the report.
pub async fn refresh(
    storage: &StorageArgs,
    client: &ClientArgs,
    args: RefreshArgs,
) -> Result<(), CliError> {
    let server = Server::connect(client, &storage.data_dir).await?;
    let peer = PeerKey::parse(&args.peer);
    let answer = if args.verify {
        let spinner = Spinner::start(format!("verifying {}", args.peer));
        let answer = server.client.verify_peer(peer, args.force).await;
        spinner.stop();
        answer
    } else {
        let spinner = Spinner::start(format!("refreshing {}", args.peer));
        let answer = server
            .client
            .refresh_peer(peer, args.force, args.full)
            .await;
        spinner.stop();
        answer
    };
    let report = answer.map_err(|s| server.fail(s))?;
    if args.json {
        json::print(&json::report(&report));
    } else {
        print!("{}", report_text(&report, true));
    }
    if report.outcome == pb::RefreshOutcome::Refused as i32 {
        return Err(CliError::Refused(format!(
            "refresh of {} refused by the mass-delete guard; nothing was applied.\n\
             hint: if {} really removed these objects, run `fedreg refresh {} --force`",
            report.peername, report.peername, args.peer
        )));
    }
    Ok(())
}

/// `APPLIED`, `REFUSED`, `FAILED`, or `-` for a peer never refreshed.
pub fn outcome_name(outcome: i32) -> &'static str {
    match pb::RefreshOutcome::try_from(outcome) {
        Ok(pb::RefreshOutcome::Unspecified) | Err(_) => "-",
        Ok(o) => o.as_str_name().trim_start_matches("REFRESH_OUTCOME_"),
    }
}

/// A timestamp as `YYYY-MM-DD HH:MM:SS UTC`, or `never`.
pub fn timestamp_text(time: Option<&prost_types::Timestamp>) -> String {
    time.map_or_else(
        || "never".into(),
        |t| format!("{} UTC", format_time(t.seconds)),
    )
}

/// `3 sites, 4 keys, 2 persons, 0 nodes, 0 slices`.
pub fn counts_text(counts: &pb::CachedCounts) -> String {
    format!(
        "{} sites, {} keys, {} persons, {} nodes, {} slices",
        counts.sites, counts.keys, counts.persons, counts.nodes, counts.slices
    )
}

/// What the peer sent, as a line: `delta since revision 41, now at 57`,
/// `full snapshot at revision 57` (with the reason when a delta was asked
/// for); `None` for a peer that does not number its changes.
fn snapshot_text(report: &pb::RefreshReport) -> Option<String> {
    let line = match pb::SnapshotKind::try_from(report.snapshot).ok()? {
        pb::SnapshotKind::Unspecified => return None,
        pb::SnapshotKind::Delta => format!(
            "delta since revision {}, now at {}\n",
            report.since_revision, report.revision
        ),
        pb::SnapshotKind::Full if report.full_reason.is_empty() => {
            format!("full snapshot at revision {}\n", report.revision)
        }
        pb::SnapshotKind::Full => format!(
            "full snapshot at revision {}: {}\n",
            report.revision, report.full_reason
        ),
    };
    Some(line)
}

/// What a verification found: a line, then the differing classes with
/// their first ids.
fn verify_text(v: &pb::VerifyReport) -> String {
    let differing: i64 = v.classes.iter().map(|c| c.differing).sum();
    let mut out = format!(
        "verified against revision {}: {differing} object(s) differed ({} GetDigest calls, {} bytes of digests, {} bytes fetched again)\n",
        v.revision, v.digest_calls, v.digest_bytes, v.repair_bytes
    );
    for c in v.classes.iter().filter(|c| c.differing > 0) {
        let ids: Vec<String> = c.differing_ids.iter().map(i64::to_string).collect();
        let more = match c.differing as usize > ids.len() {
            true => ", ...",
            false => "",
        };
        out.push_str(&format!(
            "  {}: {} of {} (cached {}): {}{more}\n",
            c.class,
            c.differing,
            c.peer_objects,
            c.cached_objects,
            ids.join(", ")
        ));
    }
    out
}

/// The report as text: a headline, the reason of a refusal or failure, the
/// class and relation tables and the warnings; with `timers`, the phase
/// timers too.
pub fn report_text(report: &pb::RefreshReport, timers: bool) -> String {
    let trigger = match report.mode() {
        pb::SyncMode::Follow => ", on a change announced by the followed peer",
        pb::SyncMode::Scheduled => ", by the schedule",
        pb::SyncMode::Manual | pb::SyncMode::Unspecified => "",
    };
    let mut out = format!(
        "{}: {} in {:.3} s (started {}{trigger})\n",
        report.peername,
        outcome_name(report.outcome),
        report.total_seconds,
        timestamp_text(report.started.as_ref())
    );
    if !report.reason.is_empty() {
        out.push_str(&format!("reason: {}\n", report.reason));
    }
    if let Some(line) = snapshot_text(report) {
        out.push_str(&line);
    }
    if let Some(verify) = &report.verify {
        out.push_str(&verify_text(verify));
    }

    let mut classes = Table::new(&[
        ("CLASS", Align::Left),
        ("RECEIVED", Align::Right),
        ("ADDED", Align::Right),
        ("UPDATED", Align::Right),
        ("DELETED", Align::Right),
        ("SKIPPED", Align::Right),
    ]);
    let mut total = [0i64; 5];
    for c in &report.classes {
        let counts = [c.received, c.added, c.updated, c.deleted, c.skipped];
        for (sum, n) in total.iter_mut().zip(counts) {
            *sum += n;
        }
        classes.row(std::iter::once(c.class.clone()).chain(counts.map(|n| n.to_string())));
    }
    if !classes.is_empty() {
        classes.row(std::iter::once("total".to_owned()).chain(total.map(|n| n.to_string())));
        out.push('\n');
        out.push_str(&classes.render());
    }

    let mut relations = Table::new(&[
        ("RELATION", Align::Left),
        ("ADDED", Align::Right),
        ("REMOVED", Align::Right),
    ]);
    for r in &report.relations {
        relations.row([
            r.relation.clone(),
            r.added.to_string(),
            r.removed.to_string(),
        ]);
    }
    if !relations.is_empty() {
        out.push('\n');
        out.push_str(&relations.render());
    }

    if timers && !report.timers.is_empty() {
        let mut phases = Table::new(&[("PHASE", Align::Left), ("SECONDS", Align::Right)]);
        for t in &report.timers {
            phases.row([t.phase.clone(), format!("{:.3}", t.seconds)]);
        }
        phases.row(["total".to_owned(), format!("{:.3}", report.total_seconds)]);
        out.push('\n');
        out.push_str(&phases.render());
    }

    out.push('\n');
    if report.warnings.is_empty() {
        out.push_str("no warnings\n");
    } else {
        out.push_str(&format!("{} warning(s):\n", report.warnings.len()));
        let mut warnings = Table::new(&[
            ("CLASS", Align::Left),
            ("PEER ID", Align::Right),
            ("OBJECT", Align::Left),
            ("REASON", Align::Left),
        ]);
        for w in &report.warnings {
            let id = if w.peer_object_id == 0 {
                String::new()
            } else {
                w.peer_object_id.to_string()
            };
            warnings.row([w.class.clone(), id, w.natural_key.clone(), w.reason.clone()]);
        }
        out.push_str(&warnings.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_report() {
        let report = pb::RefreshReport {
            peername: "plc2".into(),
            outcome: pb::RefreshOutcome::Refused as i32,
            reason: "would delete 9 of the 10 objects".into(),
            timers: vec![pb::PhaseTimer {
                phase: "transport".into(),
                seconds: 0.25,
            }],
            started: Some(prost_types::Timestamp {
                seconds: 1_764_067_501,
                nanos: 0,
            }),
            total_seconds: 0.5,
            ..Default::default()
        };
        assert_eq!(
            report_text(&report, true),
            "plc2: REFUSED in 0.500 s (started 2025-11-25 10:45:01 UTC)\n\
             reason: would delete 9 of the 10 objects\n\
             \n\
             PHASE      SECONDS\n\
             transport    0.250\n\
             total        0.500\n\
             \n\
             no warnings\n"
        );
    }

    #[test]
    fn classes_relations_and_warnings() {
        let report = pb::RefreshReport {
            peername: "plc1".into(),
            outcome: pb::RefreshOutcome::Applied as i32,
            classes: vec![
                pb::ClassReport {
                    class: "sites".into(),
                    received: 3,
                    added: 2,
                    updated: 1,
                    deleted: 0,
                    skipped: 0,
                    cascaded: 0,
                    unchanged: 0,
                },
                pb::ClassReport {
                    class: "nodes".into(),
                    received: 2,
                    added: 1,
                    skipped: 1,
                    ..Default::default()
                },
            ],
            relations: vec![pb::RelationReport {
                relation: "slice-nodes".into(),
                added: 4,
                removed: 1,
            }],
            warnings: vec![pb::SyncWarning {
                class: "nodes".into(),
                peer_object_id: 7,
                natural_key: "n7.example.org".into(),
                reason: "unknown boot_state \"weird\"".into(),
            }],
            ..Default::default()
        };
        let text = report_text(&report, false);
        assert_eq!(
            text,
            "plc1: APPLIED in 0.000 s (started never)\n\
             \n\
             CLASS  RECEIVED  ADDED  UPDATED  DELETED  SKIPPED\n\
             sites         3      2        1        0        0\n\
             nodes         2      1        0        0        1\n\
             total         5      3        1        0        1\n\
             \n\
             RELATION     ADDED  REMOVED\n\
             slice-nodes      4        1\n\
             \n\
             1 warning(s):\n\
             CLASS  PEER ID  OBJECT          REASON\n\
             nodes        7  n7.example.org  unknown boot_state \"weird\"\n"
        );
        assert_eq!(outcome_name(0), "-");
        assert_eq!(outcome_name(3), "FAILED");
    }
}
