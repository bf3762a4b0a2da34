//! The metrics read at scrape time: each peer's freshness and follow lag,
//! the connection pools, the change log.
//!
//! These are states, not events: [`Sampler::sample`] reads them when
//! Prometheus asks (from the database, the store's pools and the follow
//! tasks) into a [`Sample`], which [`SampleCollector`] encodes beside the
//! recorded metrics. A peer's series exist while its record does; the
//! follow series, for the followed peers this process follows or stands
//! by for. When the database does not answer within [`DATABASE_TIMEOUT`],
//! the peers' series and the change log's are left out and
//! `fedreg_database_up` is 0, while everything else is still served.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::peers::Following;
use crate::store::{PoolStats, Store, peers, revisions};

/// Longest a scrape waits for the database.
pub const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the sampled metrics of one server.
#[derive(Clone)]
pub struct Sampler {
    /// The database.
    pub store: Store,
    /// Where following each followed peer stands (the follow tasks).
    pub followers: Arc<dyn Following>,
}

/// The values read at one scrape.
#[derive(Debug, Default)]
pub struct Sample {
    /// What the database holds; `None` when it did not answer.
    pub database: Option<DatabaseSample>,
    /// The connection pools.
    pub pools: Vec<PoolStats>,
}

/// The values read from the database at one scrape.
#[derive(Debug, Default)]
pub struct DatabaseSample {
    /// Every peer, by id.
    pub peers: Vec<PeerSample>,
    /// Entries in the change log.
    pub change_log_entries: i64,
    /// The last revision of the change log.
    pub change_log_revision: i64,
}

/// One peer at one scrape.
#[derive(Debug)]
pub struct PeerSample {
    /// The peer record's name.
    pub peername: String,
    /// Unix seconds of its last applied refresh.
    pub last_success_time: Option<i64>,
    /// Where following it stands, when this process follows it (or stands
    /// by for it).
    pub follow: Option<pb::FollowStatus>,
}

impl Sampler {
    /// Reads the sampled values now.
    pub async fn sample(&self) -> Sample {
        let database = match tokio::time::timeout(DATABASE_TIMEOUT, self.read_database()).await {
            Ok(Ok(database)) => Some(database),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "metrics: reading the database");
                None
            }
            Err(_) => {
                tracing::warn!("metrics: the database did not answer within {DATABASE_TIMEOUT:?}");
                None
            }
        };
        Sample {
            database,
            pools: self.store.pool_stats(),
        }
    }

    async fn read_database(&self) -> Result<DatabaseSample> {
        let mut conn = self.store.read().await?;
        let (freshness, entries, history) = conn
            .snapshot(|c| {
                Box::pin(async move {
                    let freshness = peers::freshness(c).await?;
                    let entries = revisions::log_entries(c).await?;
                    let history = revisions::history(c).await?;
                    Ok::<_, Error>((freshness, entries, history))
                })
            })
            .await?;
        Ok(DatabaseSample {
            peers: freshness
                .into_iter()
                .map(|peer| PeerSample {
                    follow: self.followers.status(peer.peer_id),
                    peername: peer.peername,
                    last_success_time: peer.last_success_time,
                })
                .collect(),
            change_log_entries: entries,
            change_log_revision: history.revision,
        })
    }
}

/// Encodes the [`Sample`] of the last scrape.
#[derive(Debug)]
pub struct SampleCollector {
    sample: Arc<Mutex<Sample>>,
}

impl SampleCollector {
    /// A collector of the sample that scrapes store in `sample`.
    pub fn new(sample: Arc<Mutex<Sample>>) -> SampleCollector {
        SampleCollector { sample }
    }
}

/// The labels of a series without any (label sets are arrays of
/// (name, value) pairs here).
const NO_LABELS: [(&str, &str); 0] = [];

/// A metric family's name (as registered: the encoder adds the unit and
/// `_total`), help and unit.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
}

impl Descriptor {
    /// A family without a unit.
    const fn plain(name: &'static str, help: &'static str) -> Descriptor {
        Descriptor {
            name,
            help,
            unit: None,
        }
    }

    /// A family in `unit`.
    const fn in_unit(name: &'static str, help: &'static str, unit: Unit) -> Descriptor {
        Descriptor {
            name,
            help,
            unit: Some(unit),
        }
    }

    /// Encodes the family of `kind` with `series`, (labels, metric) pairs.
    fn encode<L: EncodeLabelSet, M: EncodeMetric>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        kind: MetricType,
        series: impl IntoIterator<Item = (L, M)>,
    ) -> fmt::Result {
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        for (labels, metric) in series {
            metric.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Encodes a family of gauges.
    fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let series = series.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.encode(encoder, MetricType::Gauge, series)
    }

    /// Encodes a family of counters.
    fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result {
        let series = series.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.encode(encoder, MetricType::Counter, series)
    }
}

impl Collector for SampleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let sample = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        Descriptor::plain(
            "fedreg_database_up",
            "1 when the database answered this scrape's reads in time, 0 otherwise (the peers' series and the change log's are then left out).",
        )
        .gauges(&mut encoder, [(NO_LABELS, i64::from(sample.database.is_some()))])?;
        if let Some(database) = &sample.database {
            encode_peers(&database.peers, &mut encoder)?;
            encode_change_log(database, &mut encoder)?;
        }
        encode_pools(&sample.pools, &mut encoder)
    }
}

/// The series of each peer: freshness, and following for followed peers.
fn encode_peers<'a>(peers: &'a [PeerSample], encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let label = |p: &'a PeerSample| [("peer", p.peername.as_str())];
    Descriptor::in_unit(
        "fedreg_peer_last_success_timestamp",
        "Unix time of the peer's last applied refresh; 0 until one applies.",
        Unit::Seconds,
    )
    .gauges(
        encoder,
        peers
            .iter()
            .map(|p| (label(p), p.last_success_time.unwrap_or(0))),
    )?;
    let followed = || {
        peers
            .iter()
            .filter_map(|p| p.follow.as_ref().map(|f| (label(p), f)))
    };
    // Standing by, this process knows nothing of the stream or the lag.
    let following = || followed().filter(|(_, f)| !f.standby);
    Descriptor::plain(
        "fedreg_peer_follow_standby",
        "1 while another process sharing the database follows the peer and this one stands by; followed peers only.",
    )
    .gauges(encoder, followed().map(|(l, f)| (l, i64::from(f.standby))))?;
    Descriptor::plain(
        "fedreg_peer_follow_connected",
        "1 while the Follow stream to the peer is open, 0 while it is reopened; peers this process follows.",
    )
    .gauges(encoder, following().map(|(l, f)| (l, i64::from(f.connected))))?;
    Descriptor::plain(
        "fedreg_peer_checkpoint_lag_revisions",
        "Revisions the followed peer announced that its cache does not reflect yet.",
    )
    .gauges(encoder, following().map(|(l, f)| (l, f.lag_revisions)))?;
    Descriptor::in_unit(
        "fedreg_peer_checkpoint_lag",
        "How long the followed peer's cache has been behind a revision it announced; 0 when caught up.",
        Unit::Seconds,
    )
    .gauges(encoder, following().map(|(l, f)| (l, f.lag_seconds)))
}

/// The series of the change log.
fn encode_change_log(
    database: &DatabaseSample,
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    Descriptor::plain(
        "fedreg_change_log_entries",
        "Entries in the change log that peers' delta refreshes read: one per local object changed since the compaction horizon.",
    )
    .gauges(encoder, [(NO_LABELS, database.change_log_entries)])?;
    Descriptor::plain(
        "fedreg_change_log_revision",
        "The last revision of the change log.",
    )
    .gauges(encoder, [(NO_LABELS, database.change_log_revision)])
}

/// The series of the connection pools.
fn encode_pools(pools: &[PoolStats], encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let label = |p: &PoolStats| [("pool", p.pool)];
    Descriptor::plain(
        "fedreg_db_pool_connections",
        "Database connections open, by pool and state (in_use, idle).",
    )
    .gauges(
        encoder,
        pools.iter().flat_map(|p| {
            [("in_use", p.in_use), ("idle", p.idle)]
                .map(|(state, n)| ([("pool", p.pool), ("state", state)], i64::from(n)))
        }),
    )?;
    Descriptor::plain(
        "fedreg_db_pool_max_connections",
        "The most connections the pool opens.",
    )
    .gauges(encoder, pools.iter().map(|p| (label(p), i64::from(p.max))))?;
    Descriptor::plain(
        "fedreg_db_pool_waits",
        "Checkouts that waited for a connection.",
    )
    .counters(encoder, pools.iter().map(|p| (label(p), p.waits)))?;
    Descriptor::in_unit(
        "fedreg_db_pool_wait",
        "Time checkouts spent waiting for a connection.",
        Unit::Seconds,
    )
    .counters(
        encoder,
        pools.iter().map(|p| (label(p), p.wait_time.as_secs_f64())),
    )?;
    Descriptor::plain(
        "fedreg_db_pool_timeouts",
        "Checkouts that gave up waiting for a connection.",
    )
    .counters(encoder, pools.iter().map(|p| (label(p), p.timeouts)))
}
