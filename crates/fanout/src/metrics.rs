//! The fan-out server's metrics (names in docs/metrics.md): `furynet_fanout_*` and the Typha
//! names the module's alerts and dashboards read.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncerLabel {
    pub syncer: String,
}

/// A counter exported under a Calico name without the `_total` suffix (typed `unknown`,
/// as the agent's Felix-compatible counters are).
#[derive(Debug, Clone, Default)]
pub struct CompatCounter(Arc<AtomicI64>);

impl CompatCounter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl EncodeMetric for CompatCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// Round trips and writes are milliseconds when healthy; the alerts fire above 100 ms.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

type Latency = Family<SyncerLabel, Histogram, fn() -> Histogram>;

/// Every series the fan-out server exports.
#[derive(Debug, Clone)]
pub struct FanoutMetrics {
    pub connections: Gauge,
    pub snapshot_bytes: Gauge,
    pub deltas: Counter,
    pub snapshots_sent: Counter,
    /// Writes an agent's socket did not take at once (finished when it drained).
    pub blocked_writes: Counter,
    pub resumes: Counter,
    pub cutoffs: Family<ReasonLabel, Counter>,
    pub refused: Family<ReasonLabel, Counter>,
    pub history_entries: Gauge,
    pub history_bytes: Gauge,
    pub revision: Gauge,
    pub objects: Gauge,
    pub datastore_errors: Counter,
    /// Read from the datastore → written to an agent's socket, for the oldest change of each
    /// write (the server's own share of propagation latency).
    pub propagation: Histogram,
    /// `typha_ping_latency` (histogram: `_sum` and `_count` are what the alert reads).
    pub ping_latency: Latency,
    /// `typha_client_write_latency_secs`.
    pub client_write_latency: Latency,
    /// `typha_log_errors`.
    pub log_errors: CompatCounter,
}

/// The one syncer furynet serves (Typha's Felix syncer).
pub fn syncer() -> SyncerLabel {
    SyncerLabel {
        syncer: "felix".into(),
    }
}

impl FanoutMetrics {
    /// Creates every series and registers it in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let m = FanoutMetrics {
            connections: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            deltas: Counter::default(),
            snapshots_sent: Counter::default(),
            blocked_writes: Counter::default(),
            resumes: Counter::default(),
            cutoffs: Family::default(),
            refused: Family::default(),
            history_entries: Gauge::default(),
            history_bytes: Gauge::default(),
            revision: Gauge::default(),
            objects: Gauge::default(),
            datastore_errors: Counter::default(),
            propagation: latency(),
            ping_latency: Family::new_with_constructor(latency),
            client_write_latency: Family::new_with_constructor(latency),
            log_errors: CompatCounter::default(),
        };
        // Series exist from the start, so `rate()` and `increase()` see the first event.
        let _ = m.ping_latency.get_or_create(&syncer());
        let _ = m.client_write_latency.get_or_create(&syncer());
        for reason in [Cutoff::Behind, Cutoff::WriteTimeout, Cutoff::PingTimeout] {
            let _ = m.cutoffs.get_or_create(&reason.label());
        }
        for reason in ["capacity", "protocol", "tls"] {
            let _ = m.refused.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        r.register(
            "furynet_fanout_connections",
            "Agents currently connected and streaming",
            m.connections.clone(),
        );
        r.register(
            "furynet_fanout_snapshot_bytes",
            "Encoded size of the current snapshot (what a new agent receives)",
            m.snapshot_bytes.clone(),
        );
        r.register(
            "furynet_fanout_deltas",
            "Delta frames broadcast (one per datastore change batch, not per client)",
            m.deltas.clone(),
        );
        r.register(
            "furynet_fanout_snapshots_sent",
            "Snapshots sent to agents",
            m.snapshots_sent.clone(),
        );
        r.register(
            "furynet_fanout_blocked_writes",
            "Delta writes an agent's socket did not take at once (finished when it drained; a write blocked past the write timeout cuts the agent off)",
            m.blocked_writes.clone(),
        );
        r.register(
            "furynet_fanout_resumes",
            "Agents that reconnected and resumed from their revision without a snapshot",
            m.resumes.clone(),
        );
        r.register(
            "furynet_fanout_cutoffs",
            "Agents disconnected by the server, by reason (behind, write_timeout, ping_timeout)",
            m.cutoffs.clone(),
        );
        r.register(
            "furynet_fanout_refused",
            "Connections refused, by reason (capacity, protocol, tls)",
            m.refused.clone(),
        );
        r.register(
            "furynet_fanout_history_entries",
            "Delta frames held for agents to catch up or resume from",
            m.history_entries.clone(),
        );
        r.register(
            "furynet_fanout_history_bytes",
            "Bytes held in the delta history",
            m.history_bytes.clone(),
        );
        r.register(
            "furynet_fanout_revision",
            "Datastore revision of the served state",
            m.revision.clone(),
        );
        r.register(
            "furynet_fanout_objects",
            "Entries in the served state",
            m.objects.clone(),
        );
        r.register(
            "furynet_fanout_datastore_errors",
            "Datastore list/watch failures (each followed by a re-list)",
            m.datastore_errors.clone(),
        );
        r.register(
            "furynet_fanout_propagation_seconds",
            "From reading a change from the datastore to writing it to an agent's socket (oldest change of each write)",
            m.propagation.clone(),
        );
        r.register(
            "typha_ping_latency",
            "Round trip of a ping to an agent until its pong, in seconds",
            m.ping_latency.clone(),
        );
        r.register(
            "typha_client_write_latency_secs",
            "Time to write one batch of frames to one agent, in seconds",
            m.client_write_latency.clone(),
        );
        r.register(
            "typha_log_errors",
            "Log records the fan-out server failed to write",
            m.log_errors.clone(),
        );
        m
    }

    pub fn cutoff(&self, why: Cutoff) {
        self.cutoffs.get_or_create(&why.label()).inc();
    }

    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Why the server disconnected an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Its cursor fell off the delta history.
    Behind,
    /// A write to it blocked longer than the write timeout.
    WriteTimeout,
    /// It did not answer a ping in time.
    PingTimeout,
}

impl Cutoff {
    pub fn as_str(self) -> &'static str {
        match self {
            Cutoff::Behind => "behind",
            Cutoff::WriteTimeout => "write_timeout",
            Cutoff::PingTimeout => "ping_timeout",
        }
    }

    fn label(self) -> ReasonLabel {
        ReasonLabel {
            reason: self.as_str().into(),
        }
    }
}
