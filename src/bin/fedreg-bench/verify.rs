//! The verification steps of the refresh benchmark: `RefreshPeer` with
//! `verify` on a cache that matches its peer (the first time, when the
//! serving registry computes all its digests; then as it runs from then
//! on), and after a thousandth of the cached rows were corrupted directly
//! in the refreshing registry's database, when it must find and repair
//! exactly those.

use std::time::Instant;

use anyhow::{Context as _, bail};
use fedreg::peering::report::writes;
use fedreg::proto::v1 as pb;
use fedreg::store::Store;

use crate::data;
use crate::results::StepFigures;
use crate::servers::{Backend, Registry};
use crate::shapes::Shape;
use crate::stats::median;

/// What the verification steps share.
pub struct Verifying<'a> {
    /// The data set.
    pub shape: Shape,
    /// The registries' database.
    pub backend: Backend,
    /// The refreshing registry.
    pub refreshing: &'a Registry,
    /// Its database, for the corruption.
    pub refreshing_store: &'a Store,
    /// Its peer id for the serving registry.
    pub peer_id: i64,
    /// Bytes of a full GetPeerData stream, which the bytes a verification
    /// moves are compared with.
    pub dump_bytes: u64,
}

/// One class's corruption: the table, its id column, and the change made
/// to every thousandth of the peer's cached rows (in the order of their
/// ids).
const CORRUPTIONS: [(&str, &str, &str); 5] = [
    ("sites", "site_id", "name = name || ' (corrupted)'"),
    ("keys", "key_id", "is_blacklisted = NOT is_blacklisted"),
    (
        "persons",
        "person_id",
        "first_name = first_name || ' (corrupted)'",
    ),
    ("nodes", "node_id", "model = model || ' (corrupted)'"),
    (
        "slices",
        "slice_id",
        "description = description || ' (corrupted)'",
    ),
];

/// Runs a verification; its time, report and the objects it found
/// differing.
async fn verify(v: &Verifying<'_>) -> anyhow::Result<(f64, pb::RefreshReport, i64)> {
    let started = Instant::now();
    let report = v
        .refreshing
        .peers()
        .refresh_peer(pb::RefreshPeerRequest {
            peer: Some(pb::refresh_peer_request::Peer::PeerId(v.peer_id)),
            verify: true,
            ..Default::default()
        })
        .await
        .context("RefreshPeer verify")?
        .into_inner();
    let seconds = started.elapsed().as_secs_f64();
    if report.outcome != pb::RefreshOutcome::Applied as i32 {
        bail!("verification not applied: {}", report.reason);
    }
    let differing = fedreg::peering::report::differing(&report);
    Ok((seconds, report, differing))
}

/// The figures of a verification: its time, the objects it compared, the
/// bytes it moved and their share of a full dump's, what differed, its
/// calls and phases.
fn figures(
    v: &Verifying<'_>,
    step: &'static str,
    times: Vec<f64>,
    report: &pb::RefreshReport,
    differing: i64,
) -> StepFigures {
    let verified = report.verify.clone().unwrap_or_default();
    let compared: i64 = verified.classes.iter().map(|c| c.peer_objects).sum();
    let bytes = (verified.digest_bytes + verified.repair_bytes) as u64;
    let share = 100.0 * bytes as f64 / v.dump_bytes.max(1) as f64;
    StepFigures {
        rows_written: Some(writes(report)),
        run_seconds: times.clone(),
        phases: format!(
            "{differing} differing · {} GetDigest calls · {bytes} B moved = {share:.3}% of a full dump · {}",
            verified.digest_calls,
            crate::refresh::phases(report)
        ),
        dump_share: Some(share / 100.0),
        ..StepFigures::timed(v.shape, v.backend, step, median(times), compared as usize)
            .with_bytes(bytes)
    }
}

/// The verification steps, `runs` times each (after the first one).
pub async fn steps(v: &Verifying<'_>, runs: usize) -> anyhow::Result<Vec<StepFigures>> {
    let mut out = Vec::new();
    let (t, report, differing) = verify(v).await?;
    if differing != 0 {
        bail!("the first verification found {differing} objects differing in a matching cache");
    }
    out.push(figures(
        v,
        "verify, nothing changed (first: the peer digests everything)",
        vec![t],
        &report,
        differing,
    ));

    let mut times = Vec::new();
    let mut last = report;
    for _ in 0..runs {
        let (t, report, differing) = verify(v).await?;
        if differing != 0 || writes(&report) != 0 {
            bail!("a verification of a matching cache found {differing} objects differing");
        }
        times.push(t);
        last = report;
    }
    out.push(figures(v, "verify, nothing changed", times, &last, 0));

    let mut times = Vec::new();
    for run in 0..runs {
        let corrupted = corrupt(v, run).await?;
        let (t, report, differing) = verify(v).await?;
        if differing != corrupted as i64 {
            bail!("after {corrupted} cached rows were corrupted, a verification found {differing}");
        }
        let (_, again, left) = verify(v).await?;
        if left != 0 {
            bail!(
                "{left} objects still differ after the repair: {:?}",
                again.verify
            );
        }
        times.push(t);
        last = report;
    }
    let found = fedreg::peering::report::differing(&last);
    out.push(figures(
        v,
        "verify after 0.1% of cached rows corrupted",
        times,
        &last,
        found,
    ));
    Ok(out)
}

/// Corrupts a thousandth of each class's cached rows (another thousandth
/// each round) by hand in the refreshing database; returns how many.
async fn corrupt(v: &Verifying<'_>, round: usize) -> anyhow::Result<usize> {
    let mut conn = v.refreshing_store.write().await?;
    let mut corrupted = 0;
    for (table, id, change) in CORRUPTIONS {
        let sql = format!(
            "UPDATE {table} SET {change} WHERE {id} IN (\
             SELECT {id} FROM (SELECT {id}, ROW_NUMBER() OVER (ORDER BY {id}) AS n \
             FROM {table} WHERE peer_id = {peer}) numbered WHERE n % 1000 = {k})",
            peer = v.peer_id,
            k = (round * 7 + 3) % 1000
        );
        corrupted += data::execute(&mut conn, &sql).await?;
    }
    Ok(corrupted)
}
