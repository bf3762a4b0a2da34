//! Prometheus metrics: what a server counts as it works, and what it reads
//! at each scrape.
//!
//! [`Metrics`] is one server's registry. Events are recorded where they
//! happen: every call by the call layer ([`crate::api::logging`]), every
//! refresh by [`crate::peering::refresh`], every `GetPeerData` stream by
//! [`crate::peering::export`] through a [`StreamMeter`]. State (each
//! peer's freshness and follow lag, the connection pools, the change log)
//! is read when scraped ([`sampled`]), so it is never stale and a deleted
//! peer's series go with it. [`endpoint`] serves the lot as OpenMetrics
//! text when `serve --metrics-listen` is given; recording runs either way,
//! at the cost of a map lookup and an atomic add.
//!
//! Every label takes a bounded set of values: `method` one of the RPCs the
//! server serves (any other path is `unknown`), `code` a gRPC status name,
//! `peer` the name of a peer record, `outcome`, `class`, `relation` and
//! `change` fixed lists. The names follow Prometheus's conventions: the
//! `fedreg_` prefix, base units, `_total` on counters (the encoder adds
//! `_total` and the unit to the names registered here). docs/operations.md
//! lists every metric.

pub mod endpoint;
pub mod sampled;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;

use crate::class::Class;
use crate::proto::v1 as pb;
use sampled::{Sample, SampleCollector};

/// Upper bounds (seconds) of the call duration buckets.
const CALL_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Upper bounds (seconds) of the refresh duration buckets: from a delta
/// of a few objects to a large full refresh.
const REFRESH_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The `method` label of a call to a path the server does not serve.
const UNKNOWN_METHOD: &str = "unknown";

/// A histogram family whose histograms all have the same buckets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of a call: the RPC and the status it answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    code: &'static str,
}

/// Labels of a refresh: the peer and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    peer: String,
    outcome: &'static str,
}

/// Labels of objects a refresh wrote: the peer, the class and the change.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    peer: String,
    class: &'static str,
    change: &'static str,
}

/// Labels of objects a refresh skipped: the peer and the class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkippedLabels {
    peer: String,
    class: &'static str,
}

/// Labels of memberships a refresh wrote: the peer, the relation and the
/// change.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MembershipLabels {
    peer: String,
    relation: String,
    change: &'static str,
}

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The paths of the RPCs served (`/package.Service/Method`).
    methods: HashSet<String>,
    calls: Family<CallLabels, Counter>,
    call_seconds: HistogramFamily<CallLabels>,
    refreshes: Family<RefreshLabels, Counter>,
    refresh_seconds: HistogramFamily<RefreshLabels>,
    objects_written: Family<ObjectLabels, Counter>,
    objects_skipped: Family<SkippedLabels, Counter>,
    memberships_written: Family<MembershipLabels, Counter>,
    peer_data: StreamMetrics,
    follow: StreamMetrics,
    follow_reads: ReadCounter,
    /// The values read at the last scrape, encoded with the rest.
    sample: Arc<Mutex<Sample>>,
    /// Held while a scrape stores its sample and encodes it.
    rendering: Mutex<()>,
}

impl Metrics {
    /// A registry of every metric, at zero, for a server serving the RPCs
    /// of the encoded `FileDescriptorSet`s `services`.
    pub fn new(services: &[&[u8]]) -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "fedreg_rpc_calls",
            "Calls answered, by RPC and by the gRPC status of the response headers",
            calls.clone(),
        );
        let call_seconds: HistogramFamily<CallLabels> =
            Family::new_with_constructor(|| Histogram::new(CALL_BUCKETS));
        registry.register_with_unit(
            "fedreg_rpc_duration",
            "Time from a call's arrival to its response headers (for a stream, its start), by RPC and status",
            Unit::Seconds,
            call_seconds.clone(),
        );
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "fedreg_refreshes",
            "Refreshes run, by peer and outcome (applied, refused, failed)",
            refreshes.clone(),
        );
        let refresh_seconds: HistogramFamily<RefreshLabels> =
            Family::new_with_constructor(|| Histogram::new(REFRESH_BUCKETS));
        registry.register_with_unit(
            "fedreg_refresh_duration",
            "Wall time of refreshes, lock to commit, by peer and outcome",
            Unit::Seconds,
            refresh_seconds.clone(),
        );
        let objects_written = Family::<ObjectLabels, Counter>::default();
        registry.register(
            "fedreg_refresh_objects_written",
            "Objects applied refreshes added, updated or deleted in the cache, by peer, class and change",
            objects_written.clone(),
        );
        let objects_skipped = Family::<SkippedLabels, Counter>::default();
        registry.register(
            "fedreg_refresh_objects_skipped",
            "Objects of a peer that applied refreshes skipped (bad data, a natural key taken), by peer and class",
            objects_skipped.clone(),
        );
        let memberships_written = Family::<MembershipLabels, Counter>::default();
        registry.register(
            "fedreg_refresh_memberships_written",
            "Memberships applied refreshes added or removed in the cache, by peer, relation and change",
            memberships_written.clone(),
        );
        let peer_data = StreamMetrics::register(&mut registry, "peer_data", "GetPeerData");
        let follow = StreamMetrics::register(&mut registry, "follow", "Follow");
        let follow_reads = ReadCounter::default();
        registry.register(
            "fedreg_follow_database_reads",
            "Database reads made to serve Follow streams: the checkpoint read once per commit for every stream, and each stream's own (heartbeats, token checks, carried changes)",
            follow_reads.0.clone(),
        );
        let sample = Arc::new(Mutex::new(Sample::default()));
        registry.register_collector(Box::new(SampleCollector::new(sample.clone())));
        Metrics {
            registry,
            methods: rpc_paths(services),
            calls,
            call_seconds,
            refreshes,
            refresh_seconds,
            objects_written,
            objects_skipped,
            memberships_written,
            peer_data,
            follow,
            follow_reads,
            sample,
            rendering: Mutex::new(()),
        }
    }

    /// Records a call to `path` answered with `code` after `took`.
    pub fn call(&self, path: &str, code: tonic::Code, took: Duration) {
        let method = match self.methods.contains(path) {
            true => path.trim_start_matches('/'),
            false => UNKNOWN_METHOD,
        };
        let labels = CallLabels {
            method: method.to_owned(),
            code: code_name(code),
        };
        self.calls.get_or_create(&labels).inc();
        self.call_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Records a finished refresh from its report: its outcome and time,
    /// and when it applied, what it wrote and skipped per class and
    /// relation (a refresh that did not apply wrote nothing).
    pub fn refresh(&self, report: &pb::RefreshReport) {
        let outcome = report.outcome();
        let labels = RefreshLabels {
            peer: report.peername.clone(),
            outcome: outcome_name(outcome),
        };
        self.refreshes.get_or_create(&labels).inc();
        self.refresh_seconds
            .get_or_create(&labels)
            .observe(report.total_seconds);
        if outcome != pb::RefreshOutcome::Applied {
            return;
        }
        let peer = &report.peername;
        for counts in &report.classes {
            let Some(class) = Class::ALL.into_iter().find(|c| c.name() == counts.class) else {
                continue;
            };
            for (change, count) in [
                ("added", counts.added),
                ("updated", counts.updated),
                ("deleted", counts.deleted),
            ] {
                let labels = ObjectLabels {
                    peer: peer.clone(),
                    class: class.name(),
                    change,
                };
                add(&self.objects_written.get_or_create(&labels), count);
            }
            let labels = SkippedLabels {
                peer: peer.clone(),
                class: class.name(),
            };
            add(&self.objects_skipped.get_or_create(&labels), counts.skipped);
        }
        for counts in &report.relations {
            for (change, count) in [("added", counts.added), ("removed", counts.removed)] {
                let labels = MembershipLabels {
                    peer: peer.clone(),
                    relation: counts.relation.clone(),
                    change,
                };
                add(&self.memberships_written.get_or_create(&labels), count);
            }
        }
    }

    /// Counts a `GetPeerData` stream open until the meter is dropped.
    pub fn peer_data_stream(&self) -> StreamMeter {
        self.peer_data.meter()
    }

    /// Counts a `Follow` stream open until the meter is dropped.
    pub fn follow_stream(&self) -> StreamMeter {
        self.follow.meter()
    }

    /// The counter of the database reads made to serve `Follow` streams.
    pub fn follow_reads(&self) -> ReadCounter {
        self.follow_reads.clone()
    }

    /// Every metric as OpenMetrics text, with `sample` as the values read
    /// at this scrape.
    pub fn render(&self, sample: Sample) -> String {
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        *self.sample.lock().unwrap_or_else(|e| e.into_inner()) = sample;
        let mut text = String::new();
        // Writing to a String cannot fail; the collector's writes neither.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Adds a report's count (never negative) to a counter.
fn add(counter: &Counter, count: i64) {
    counter.inc_by(u64::try_from(count).unwrap_or(0));
}

/// Counts database reads (each a connection taken from the pool and used).
#[derive(Debug, Clone, Default)]
pub struct ReadCounter(Counter);

impl ReadCounter {
    /// Counts one read.
    pub fn read(&self) {
        self.0.inc();
    }
}

/// The streams of one server-streaming call: how many are open, and the
/// bytes they handed over.
#[derive(Debug)]
struct StreamMetrics {
    open: Gauge,
    bytes: Counter,
}

impl StreamMetrics {
    /// Registers `fedreg_<name>_streams_open` and `fedreg_<name>_sent_bytes`
    /// for the streams of `call`.
    fn register(registry: &mut Registry, name: &str, call: &str) -> StreamMetrics {
        let metrics = StreamMetrics {
            open: Gauge::default(),
            bytes: Counter::default(),
        };
        registry.register(
            format!("fedreg_{name}_streams_open"),
            format!("{call} streams open now"),
            metrics.open.clone(),
        );
        registry.register_with_unit(
            format!("fedreg_{name}_sent"),
            format!(
                "Bytes of {call} messages handed to callers (protobuf encoding, before gRPC framing and compression)"
            ),
            Unit::Bytes,
            metrics.bytes.clone(),
        );
        metrics
    }

    fn meter(&self) -> StreamMeter {
        self.open.inc();
        StreamMeter {
            open: self.open.clone(),
            bytes: self.bytes.clone(),
        }
    }
}

/// A stream's place in the metrics: counted open until dropped;
/// [`StreamMeter::sent`] counts the bytes it hands over.
#[derive(Debug)]
pub struct StreamMeter {
    open: Gauge,
    bytes: Counter,
}

impl StreamMeter {
    /// Counts a message handed to the caller.
    pub fn sent(&self, message: &impl Message) {
        self.bytes.inc_by(message.encoded_len() as u64);
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The paths (`/package.Service/Method`) of the RPCs the encoded
/// `FileDescriptorSet`s declare; a set that does not decode adds none.
fn rpc_paths(sets: &[&[u8]]) -> HashSet<String> {
    let mut paths = HashSet::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                for method in &service.method {
                    paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    paths
}

/// The name of an outcome in the `outcome` label.
fn outcome_name(outcome: pb::RefreshOutcome) -> &'static str {
    match outcome {
        pb::RefreshOutcome::Applied => "applied",
        pb::RefreshOutcome::Refused => "refused",
        pb::RefreshOutcome::Failed => "failed",
        pb::RefreshOutcome::Unspecified => "unspecified",
    }
}

/// The name of a status code as the gRPC specification spells it
/// (`OK`, `INVALID_ARGUMENT`, ...), for the `code` label.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(&[crate::proto::FILE_DESCRIPTOR_SET])
    }

    #[test]
    fn served_rpcs_keep_their_name_and_others_are_unknown() {
        let metrics = metrics();
        let took = Duration::from_millis(3);
        metrics.call(
            "/fedreg.v1.RegistryService/CreateSite",
            tonic::Code::Ok,
            took,
        );
        metrics.call(
            "/fedreg.v1.RegistryService/Nope",
            tonic::Code::Unimplemented,
            took,
        );
        metrics.call("/any/thing", tonic::Code::Unimplemented, took);
        let text = metrics.render(Sample::default());
        assert!(
            text.contains(
                r#"fedreg_rpc_calls_total{method="fedreg.v1.RegistryService/CreateSite",code="OK"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"fedreg_rpc_calls_total{method="unknown",code="UNIMPLEMENTED"} 2"#),
            "{text}"
        );
        assert!(
            !text.contains("Nope") && !text.contains("any/thing"),
            "{text}"
        );
    }

    #[test]
    fn only_applied_refreshes_count_writes() {
        let metrics = metrics();
        let mut report = pb::RefreshReport {
            peername: "plc2".into(),
            outcome: pb::RefreshOutcome::Failed as i32,
            total_seconds: 0.2,
            classes: vec![pb::ClassReport {
                class: "sites".into(),
                added: 3,
                skipped: 1,
                ..Default::default()
            }],
            relations: vec![pb::RelationReport {
                relation: "slice_nodes".into(),
                added: 2,
                removed: 1,
            }],
            ..Default::default()
        };
        metrics.refresh(&report);
        let text = metrics.render(Sample::default());
        assert!(
            !text.contains("fedreg_refresh_objects_written_total{"),
            "{text}"
        );
        report.outcome = pb::RefreshOutcome::Applied as i32;
        metrics.refresh(&report);
        let text = metrics.render(Sample::default());
        for line in [
            r#"fedreg_refreshes_total{peer="plc2",outcome="failed"} 1"#,
            r#"fedreg_refreshes_total{peer="plc2",outcome="applied"} 1"#,
            r#"fedreg_refresh_objects_written_total{peer="plc2",class="sites",change="added"} 3"#,
            r#"fedreg_refresh_objects_skipped_total{peer="plc2",class="sites"} 1"#,
            r#"fedreg_refresh_memberships_written_total{peer="plc2",relation="slice_nodes",change="removed"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn stream_meters_count_open_streams_and_bytes() {
        let metrics = metrics();
        let first = metrics.peer_data_stream();
        let second = metrics.peer_data_stream();
        let chunk = pb::PeerDataChunk {
            part: Some(pb::peer_data_chunk::Part::Header(pb::PeerDataHeader {
                registry_name: "plc1".into(),
                ..Default::default()
            })),
        };
        first.sent(&chunk);
        drop(second);
        let text = metrics.render(Sample::default());
        assert!(text.contains("fedreg_peer_data_streams_open 1\n"), "{text}");
        let bytes = format!(
            "fedreg_peer_data_sent_bytes_total {}\n",
            chunk.encoded_len()
        );
        assert!(text.contains(&bytes), "{text}");
    }
}
