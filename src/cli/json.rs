//! `--json`: what the read commands print, as JSON for scripts.
//!
//! Field names are those of the proto messages; enums are their short
//! lowercase names (`applied`, `follow`); times are RFC 3339 strings in
//! UTC, or `null` when unset. One object per line of a table, in a JSON
//! array for listings.

use serde_json::{Value, json};

use super::format_time;
use super::refresh::outcome_name;
use crate::proto::v1 as pb;
use crate::store::tokens::TokenRow;

/// Prints `value` on stdout, indented, with a final newline.
pub fn print(value: &Value) {
    // Serializing a `Value` to a string cannot fail.
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    println!("{text}");
}

/// Unix seconds as `2025-11-25T10:45:01Z`.
pub fn time(secs: i64) -> Value {
    Value::String(format!("{}Z", format_time(secs).replacen(' ', "T", 1)))
}

/// A timestamp as [`time`], or `null`.
fn timestamp(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| time(t.seconds))
}

/// `applied`, `refused`, `failed`, or `null` for a peer never refreshed.
fn outcome(outcome: i32) -> Value {
    match outcome_name(outcome) {
        "-" => Value::Null,
        name => Value::String(name.to_ascii_lowercase()),
    }
}

/// `follow`, `scheduled` or `manual`.
fn mode(mode: pb::SyncMode) -> Value {
    match mode {
        pb::SyncMode::Unspecified => Value::Null,
        m => Value::String(
            m.as_str_name()
                .trim_start_matches("SYNC_MODE_")
                .to_ascii_lowercase(),
        ),
    }
}

/// A new invitation: its code, the peer name it is for, when it expires
/// and the fingerprint of the certificate it pins (`null` without TLS).
pub fn invitation(created: &pb::CreateInvitationResponse) -> Value {
    let fingerprint = match created.certificate_sha256.is_empty() {
        true => Value::Null,
        false => Value::String(hex::encode(&created.certificate_sha256)),
    };
    json!({
        "invitation": created.invitation,
        "invitation_id": created.invitation_id,
        "peername": created.peername,
        "expires": timestamp(created.expires.as_ref()),
        "certificate_sha256": fingerprint,
    })
}

/// An invitation issued: its id, peer name, state and times.
pub fn issued_invitation(invitation: &pb::Invitation) -> Value {
    json!({
        "invitation_id": invitation.invitation_id,
        "peername": invitation.peername,
        "state": super::invite::state_text(invitation.state()),
        "created": timestamp(invitation.created.as_ref()),
        "expires": timestamp(invitation.expires.as_ref()),
        "used": timestamp(invitation.used.as_ref()),
    })
}

/// A joined peer, and the name this registry has there.
pub fn joined(joined: &pb::JoinPeerResponse) -> Value {
    json!({
        "peer": joined.peer.as_ref().map_or(Value::Null, peer),
        "remote_peername": joined.remote_peername,
    })
}

/// Numbers of objects per class.
fn counts(c: &pb::CachedCounts) -> Value {
    json!({
        "sites": c.sites, "keys": c.keys, "persons": c.persons,
        "nodes": c.nodes, "slices": c.slices,
    })
}

/// A peer, its last refresh and where following it stands.
pub fn peer(p: &pb::Peer) -> Value {
    json!({
        "peer_id": p.peer_id,
        "peername": p.peername,
        "peer_url": p.peer_url,
        "cacert": p.cacert,
        "has_outbound_token": p.has_outbound_token,
        "shortname": p.shortname,
        "hrn_root": p.hrn_root,
        "refresh_interval_seconds": p.refresh_interval_seconds,
        "max_delete_fraction": p.max_delete_fraction,
        "date_created": timestamp(p.date_created.as_ref()),
        "last_refresh_time": timestamp(p.last_refresh_time.as_ref()),
        "last_refresh_outcome": outcome(p.last_refresh_outcome),
        "last_refresh_report": p.last_refresh_report.as_ref().map_or(Value::Null, report),
        "cached": counts(&p.cached.unwrap_or_default()),
        "checkpoint_revision": p.checkpoint_revision,
        "follow": p.follow,
        "mode": mode(p.mode()),
        "follow_status": p.follow_status.as_ref().map_or(Value::Null, follow_status),
    })
}

/// Where following a peer stands.
fn follow_status(s: &pb::FollowStatus) -> Value {
    json!({
        "connected": s.connected,
        "peer_revision": s.peer_revision,
        "applied_revision": s.applied_revision,
        "lag_revisions": s.lag_revisions,
        "lag_seconds": s.lag_seconds,
        "last_error": s.last_error,
        "last_error_time": timestamp(s.last_error_time.as_ref()),
        "refreshes": s.refreshes,
        "connects": s.connects,
        "standby": s.standby,
    })
}

/// A refresh report.
pub fn report(r: &pb::RefreshReport) -> Value {
    let snapshot = match pb::SnapshotKind::try_from(r.snapshot) {
        Ok(pb::SnapshotKind::Full) => json!("full"),
        Ok(pb::SnapshotKind::Delta) => json!("delta"),
        _ => Value::Null,
    };
    json!({
        "peername": r.peername,
        "outcome": outcome(r.outcome),
        "reason": r.reason,
        "mode": mode(r.mode()),
        "started": timestamp(r.started.as_ref()),
        "total_seconds": r.total_seconds,
        "snapshot": snapshot,
        "full_reason": r.full_reason,
        "since_revision": r.since_revision,
        "revision": r.revision,
        "classes": r.classes.iter().map(|c| json!({
            "class": c.class, "received": c.received, "added": c.added,
            "updated": c.updated, "deleted": c.deleted, "skipped": c.skipped,
        })).collect::<Vec<_>>(),
        "relations": r.relations.iter().map(|x| json!({
            "relation": x.relation, "added": x.added, "removed": x.removed,
        })).collect::<Vec<_>>(),
        "warnings": r.warnings.iter().map(|w| json!({
            "class": w.class, "peer_object_id": w.peer_object_id,
            "natural_key": w.natural_key, "reason": w.reason,
        })).collect::<Vec<_>>(),
        "timers": r.timers.iter().map(|t| json!({
            "phase": t.phase, "seconds": t.seconds,
        })).collect::<Vec<_>>(),
        "verify": r.verify.as_ref().map(|v| json!({
            "revision": v.revision,
            "digest_calls": v.digest_calls,
            "digest_bytes": v.digest_bytes,
            "repair_bytes": v.repair_bytes,
            "compare_seconds": v.compare_seconds,
            "classes": v.classes.iter().map(|c| json!({
                "class": c.class, "peer_objects": c.peer_objects,
                "cached_objects": c.cached_objects, "differing": c.differing,
                "differing_ids": c.differing_ids,
            })).collect::<Vec<_>>(),
        })),
    })
}

/// A stored token (never its secret).
pub fn token(t: &TokenRow) -> Value {
    json!({
        "token_id": t.token_id,
        "name": t.name,
        "role": t.role,
        "peer_id": t.peer_id,
        "created": time(t.created),
        "last_used": t.last_used.map_or(Value::Null, time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outcomes_and_modes() {
        assert_eq!(time(1_764_067_501), json!("2025-11-25T10:45:01Z"));
        assert_eq!(timestamp(None), Value::Null);
        assert_eq!(outcome(0), Value::Null);
        assert_eq!(
            outcome(pb::RefreshOutcome::Refused as i32),
            json!("refused")
        );
        assert_eq!(mode(pb::SyncMode::Follow), json!("follow"));
        assert_eq!(mode(pb::SyncMode::Scheduled), json!("scheduled"));
    }
}
