//! The agent's Prometheus metrics (contract: `docs/metrics.md`). One [`Registry`] is created by
//! the binary and passed down; [`Metrics`] holds handles to every series (atomics, cheap to
//! clone) for the loop to update.

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
pub struct SubsystemLabel {
    pub subsystem: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    pub verb: String,
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

/// A counter exported under its exact name (no `_total`), as Calico's Felix names them, so the
/// module's alerts and dashboards keep working. Typed `unknown` in OpenMetrics (a counter
/// sample must end in `_total` there); PromQL does not look at the type.
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

const APPLY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SLOW_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn hist(buckets: &'static [f64]) -> impl Fn() -> Histogram + Clone {
    move || Histogram::new(buckets.iter().copied())
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn apply_hist() -> Histogram {
    hist(&APPLY_BUCKETS)()
}

fn slow_hist() -> Histogram {
    hist(&SLOW_BUCKETS)()
}

/// Every series the agent exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub apply_duration: HistFamily<SubsystemLabel>,
    pub applies: Family<SubsystemLabel, Counter>,
    pub failures: Family<SubsystemLabel, Counter>,
    pub resyncs: Family<ReasonLabel, Counter>,
    pub calc_duration: Histogram,
    pub endpoints: Gauge,
    pub policies: Gauge,
    pub sets: Gauge,
    pub set_members: Gauge,
    pub watch_events: Counter,
    pub datastore_errors: Counter,
    pub in_sync: Gauge,
    pub last_sync: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub programming: Histogram,
    pub ipam_blocks: Family<PoolLabel, Gauge>,
    pub ipam_addresses: Family<PoolLabel, Gauge>,
    pub ipam_capacity: Family<PoolLabel, Gauge>,
    pub ipam_leaks: Gauge,
    pub cni_operations: Family<CniLabels, Counter>,
    pub cni_duration: HistFamily<VerbLabel>,
    pub felix_int_dataplane_failures: CompatCounter,
    pub felix_iptables_restore_errors: CompatCounter,
    pub felix_iptables_save_errors: CompatCounter,
    pub felix_ipset_errors: CompatCounter,
    pub felix_log_errors: CompatCounter,
}

impl Metrics {
    /// Creates every series and registers it in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            apply_duration: Family::new_with_constructor(apply_hist),
            applies: Family::default(),
            failures: Family::default(),
            resyncs: Family::default(),
            calc_duration: apply_hist(),
            endpoints: Gauge::default(),
            policies: Gauge::default(),
            sets: Gauge::default(),
            set_members: Gauge::default(),
            watch_events: Counter::default(),
            datastore_errors: Counter::default(),
            in_sync: Gauge::default(),
            last_sync: Gauge::default(),
            programming: slow_hist(),
            ipam_blocks: Family::default(),
            ipam_addresses: Family::default(),
            ipam_capacity: Family::default(),
            ipam_leaks: Gauge::default(),
            cni_operations: Family::default(),
            cni_duration: Family::new_with_constructor(slow_hist),
            felix_int_dataplane_failures: CompatCounter::default(),
            felix_iptables_restore_errors: CompatCounter::default(),
            felix_iptables_save_errors: CompatCounter::default(),
            felix_ipset_errors: CompatCounter::default(),
            felix_log_errors: CompatCounter::default(),
        };
        let r = registry;
        r.register(
            "furynet_dataplane_apply_duration_seconds",
            "Wall time of one dataplane apply (route reconcile or nftables transaction)",
            m.apply_duration.clone(),
        );
        r.register(
            "furynet_dataplane_applies",
            "Dataplane applies attempted, by subsystem",
            m.applies.clone(),
        );
        r.register(
            "furynet_dataplane_failures",
            "Dataplane applies that failed, by subsystem",
            m.failures.clone(),
        );
        r.register(
            "furynet_dataplane_resyncs",
            "Full resyncs of our nftables table, by reason",
            m.resyncs.clone(),
        );
        r.register(
            "furynet_calc_duration_seconds",
            "Time to compute the node's desired state",
            m.calc_duration.clone(),
        );
        r.register(
            "furynet_endpoints_active",
            "Local pod endpoints programmed",
            m.endpoints.clone(),
        );
        r.register(
            "furynet_policies_active",
            "NetworkPolicies selecting a local endpoint",
            m.policies.clone(),
        );
        r.register(
            "furynet_sets_active",
            "nftables sets in our table",
            m.sets.clone(),
        );
        r.register(
            "furynet_set_members_active",
            "Elements across our nftables sets",
            m.set_members.clone(),
        );
        r.register(
            "furynet_datastore_watch_events",
            "Datastore watch events received",
            m.watch_events.clone(),
        );
        r.register(
            "furynet_datastore_errors",
            "Failed datastore calls and broken watches",
            m.datastore_errors.clone(),
        );
        r.register(
            "furynet_agent_in_sync",
            "1 when the dataplane is programmed from a complete, current view",
            m.in_sync.clone(),
        );
        r.register(
            "furynet_agent_last_sync_timestamp_seconds",
            "When the agent last completed a sync",
            m.last_sync.clone(),
        );
        r.register(
            "furynet_policy_programming_seconds",
            "From a datastore change reaching the agent to its dataplane commit",
            m.programming.clone(),
        );
        r.register(
            "furynet_ipam_blocks_in_use",
            "IPAM blocks affine to this node, per pool",
            m.ipam_blocks.clone(),
        );
        r.register(
            "furynet_ipam_addresses_in_use",
            "Addresses allocated in this node's blocks, per pool",
            m.ipam_addresses.clone(),
        );
        r.register(
            "furynet_ipam_addresses_capacity",
            "Size of the pool",
            m.ipam_capacity.clone(),
        );
        r.register(
            "furynet_ipam_leaks",
            "Allocations in this node's blocks with no pod interface on the node (seen twice)",
            m.ipam_leaks.clone(),
        );
        r.register(
            "furynet_cni_operations",
            "CNI plugin calls on this node, by verb and result",
            m.cni_operations.clone(),
        );
        r.register(
            "furynet_cni_duration_seconds",
            "Wall time of CNI plugin calls on this node",
            m.cni_duration.clone(),
        );
        r.register(
            "felix_int_dataplane_failures",
            "Dataplane apply failures (Calico-compatible name)",
            m.felix_int_dataplane_failures.clone(),
        );
        r.register(
            "felix_iptables_restore_errors",
            "Failed nftables transactions (Calico-compatible name)",
            m.felix_iptables_restore_errors.clone(),
        );
        r.register(
            "felix_iptables_save_errors",
            "Failed nftables read-backs (Calico-compatible name)",
            m.felix_iptables_save_errors.clone(),
        );
        r.register(
            "felix_ipset_errors",
            "Failed nftables set updates (Calico-compatible name)",
            m.felix_ipset_errors.clone(),
        );
        r.register(
            "felix_log_errors",
            "Failed writes of our own log (Calico-compatible name)",
            m.felix_log_errors.clone(),
        );
        register_build_info(r);
        m
    }

    pub fn subsystem(s: &str) -> SubsystemLabel {
        SubsystemLabel {
            subsystem: s.to_string(),
        }
    }

    pub fn reason(s: &str) -> ReasonLabel {
        ReasonLabel {
            reason: s.to_string(),
        }
    }
}

/// The registry in the Prometheus text / OpenMetrics exposition.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// `furynet_build_info{version}` = 1, for every furynet process (agent, fan-out).
pub fn register_build_info(r: &mut Registry) {
    let build: Family<VersionLabel, Gauge> = Family::default();
    build
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
    r.register(
        "furynet_build_info",
        "Always 1; the version label says which build",
        build,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_in_the_exposition() {
        let mut r = Registry::default();
        let m = Metrics::register(&mut r);
        m.felix_ipset_errors.inc();
        m.felix_ipset_errors.inc();
        m.applies
            .get_or_create(&Metrics::subsystem("nftables"))
            .inc();
        m.apply_duration
            .get_or_create(&Metrics::subsystem("routes"))
            .observe(0.002);
        let text = encode(&r);
        assert!(text.lines().any(|l| l == "felix_ipset_errors 2"), "{text}");
        assert!(!text.contains("felix_ipset_errors_total"));
        assert!(
            text.contains("furynet_dataplane_applies_total{subsystem=\"nftables\"} 1"),
            "{text}"
        );
        assert!(text.contains("furynet_dataplane_apply_duration_seconds_bucket{le=\"0.0025\",subsystem=\"routes\"} 1"), "{text}");
        assert!(text.contains("furynet_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
