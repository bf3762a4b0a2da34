//! The follow-mode step: how long a change committed on the serving
//! registry takes to be in the refreshing registry's cache when the
//! refreshing registry follows it.
//!
//! The refreshing registry is set to follow the serving one and given time
//! to catch up. Then, one change at a time, a local site of the serving
//! registry is renamed through its API; the clock starts when the call
//! returns (the change is committed by then) and stops when a query on the
//! refreshing registry's database sees the new name in its cache. The
//! query polls every [`POLL`], so a latency is overstated by up to that
//! much, never understated. Changes are paced (the next one after the
//! previous arrived), so the figures are latencies, not queueing.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use fedreg::proto::v1 as pb;
use fedreg::store::Store;
use fedreg::store::schema::sites;
use fedreg::with_db;

use crate::replication::percentile;
use crate::servers::Registry;

/// Interval between two looks at the refreshing registry's cache.
const POLL: Duration = Duration::from_micros(200);
/// Longest wait for one change, or for following to start.
const PATIENCE: Duration = Duration::from_secs(60);

/// Commit-to-cache latencies of follow mode.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// Median, milliseconds.
    pub median_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Changes measured.
    pub changes: usize,
    /// The report of the last refresh the follow stream ran.
    pub last_report: Option<pb::RefreshReport>,
}

/// Makes `refreshing` follow its peer `peer_id` (the `serving` registry),
/// then times `changes` site renames on `serving` until each is in the
/// cache of `refreshing` (whose database is `refreshing_store`).
pub async fn measure(
    serving: &Registry,
    serving_store: &Store,
    refreshing: &Registry,
    refreshing_store: &Store,
    peer_id: i64,
    changes: usize,
) -> Result<Latencies, String> {
    refreshing
        .peers()
        .update_peer(pb::UpdatePeerRequest {
            peer_id,
            follow: Some(true),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("UpdatePeer follow: {e}"))?;
    wait_caught_up(refreshing, peer_id).await?;

    let site_ids: Vec<i64> = {
        let mut conn = serving_store.read().await.map_err(|e| e.to_string())?;
        with_db!(conn, |c| {
            sites::table
                .filter(sites::peer_id.is_null())
                .order(sites::site_id)
                .limit(changes as i64)
                .select(sites::site_id)
                .load(c)
                .await
        })
        .map_err(|e| e.to_string())?
    };
    if site_ids.is_empty() {
        return Err("the serving registry has no site to change".into());
    }
    let mut api = serving.registry();
    let mut cache = refreshing_store.read().await.map_err(|e| e.to_string())?;
    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let site_id = site_ids[i % site_ids.len()];
        let name = format!("Followed change {i}");
        api.update_site(pb::UpdateSiteRequest {
            site_id,
            name: Some(name.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("UpdateSite: {e}"))?;
        let committed = Instant::now();
        loop {
            let arrived: i64 = with_db!(cache, |c| {
                sites::table
                    .filter(sites::peer_id.eq(peer_id))
                    .filter(sites::peer_site_id.eq(site_id))
                    .filter(sites::name.eq(&name))
                    .count()
                    .get_result(c)
                    .await
            })
            .map_err(|e| e.to_string())?;
            if arrived > 0 {
                break;
            }
            if committed.elapsed() > PATIENCE {
                return Err(format!(
                    "change {i} (site {site_id}) did not reach the follower in {} s",
                    PATIENCE.as_secs()
                ));
            }
            // tokio's timer ticks in milliseconds: sleep on a blocking thread.
            tokio::task::spawn_blocking(|| std::thread::sleep(POLL))
                .await
                .map_err(|e| e.to_string())?;
        }
        latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Latencies {
        median_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        changes,
        last_report: get_peer(refreshing, peer_id).await?.last_refresh_report,
    })
}

/// Waits until `on` is connected to its followed peer and up to date.
async fn wait_caught_up(on: &Registry, peer_id: i64) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let peer = get_peer(on, peer_id).await?;
        let status = peer.follow_status.unwrap_or_default();
        if status.connected && status.lag_revisions == 0 && status.applied_revision > 0 {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            return Err(format!("following did not start: {status:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_peer(on: &Registry, peer_id: i64) -> Result<pb::Peer, String> {
    Ok(on
        .peers()
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::PeerId(peer_id)),
        })
        .await
        .map_err(|e| format!("GetPeer: {e}"))?
        .into_inner())
}
