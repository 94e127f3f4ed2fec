//! The agent loop: list, watch, compute, program, report.
//!
//! Invariants (see `docs/agent.md`):
//! - nothing is programmed before the first complete list (a half-known policy set is never
//!   applied);
//! - the first pass after start rebuilds our nftables table in one transaction (established
//!   connections survive: conntrack keeps them and the first rule accepts them); later passes
//!   apply only the delta (one atomic transaction); a failed delta triggers a rebuild;
//! - a periodic pass re-reads the kernel and repairs drift (someone flushing our table,
//!   deleting our routes or VXLAN device) even when the datastore is quiet;
//! - on failure the previous rules stay (transactions are atomic: an isolated pod stays
//!   isolated) and the pass is retried with backoff; the status says why;
//! - the agent touches only what it owns: table `inet furynet`, routes with protocol 154,
//!   links named `fny*`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_calc::{render_delta, render_resync, NftState};
use furynet_dataplane::nft::{Applied, Nft, TableView};
use furynet_dataplane::routing::netlink::NetlinkRouting;
use furynet_dataplane::routing::plan::RoutingPlan;
use furynet_dataplane::routing::reconcile::reconcile;
use furynet_datastore::{Datastore, Error as DsError};

use crate::health::{now_ms, Health};
use crate::keys::{agent_key, node_key, AgentStatus, NodeRecord};
use crate::metrics::Metrics;
use crate::state::{desired, Desired, NodeSetup, Snapshot};

/// The kernel seam: everything the loop does to the node goes through this.
pub trait Dataplane {
    /// Local pod routes: pod address → host interface.
    fn local_endpoints(&self) -> Result<HashMap<IpAddr, String>, String>;
    /// Brings routes and the VXLAN device to `plan`; returns the number of changes made.
    fn program_routes(&self, plan: &RoutingPlan) -> Result<usize, String>;
    /// Applies one `nft -f` transaction (all or nothing).
    fn apply_nft(&self, script: &str) -> Result<(), String>;
    /// [`Nft::sync`]: read back, compare with `previous`, delta or rebuild, verify.
    fn sync_nft(
        &self,
        previous: Option<&TableView>,
        delta: &str,
        resync: &str,
        expected: &TableView,
    ) -> Result<Applied, String>;
}

/// The real kernel, in the agent's own network namespace.
#[derive(Debug, Default)]
pub struct LinuxDataplane {
    routing: NetlinkRouting,
    nft: Nft,
}

impl Dataplane for LinuxDataplane {
    fn local_endpoints(&self) -> Result<HashMap<IpAddr, String>, String> {
        Ok(self
            .routing
            .pod_routes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect())
    }

    fn program_routes(&self, plan: &RoutingPlan) -> Result<usize, String> {
        reconcile(&self.routing, plan)
            .map(|c| c.len())
            .map_err(|e| e.to_string())
    }

    fn apply_nft(&self, script: &str) -> Result<(), String> {
        self.nft.apply(script).map_err(|e| e.to_string())
    }

    fn sync_nft(
        &self,
        previous: Option<&TableView>,
        delta: &str,
        resync: &str,
        expected: &TableView,
    ) -> Result<Applied, String> {
        self.nft
            .sync(previous, delta, resync, expected)
            .map_err(|e| e.to_string())
    }
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeSetup,
    /// How often the kernel is re-read and drift repaired when nothing changes.
    pub resync_interval: Duration,
    /// After an event, wait this long for more before computing (batches bursts).
    pub debounce: Duration,
    /// TTL of the lease the status record is attached to.
    pub status_ttl: Duration,
    /// The CNI plugin's `metricsFile`, folded into `furynet_cni_*` metrics.
    pub cni_calls_file: Option<std::path::PathBuf>,
}

impl Config {
    pub fn new(node: NodeSetup) -> Self {
        Config {
            node,
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(20),
            status_ttl: Duration::from_secs(10),
            cni_calls_file: None,
        }
    }
}

/// Errors that end [`run`] (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registering node {node} in the datastore: {source}")]
    Register {
        node: String,
        source: furynet_datastore::Error,
    },
}

/// A programming pass failed (already logged and reported).
struct Failed;

/// What was last programmed successfully.
struct Programmed {
    desired: Desired,
    revision: i64,
}

struct Loop<'a> {
    cfg: &'a Config,
    ds: &'a dyn Datastore,
    dp: &'a dyn Dataplane,
    health: &'a Health,
    metrics: &'a Metrics,
    last: Option<Programmed>,
    /// When the oldest change not yet programmed reached the agent.
    pending_since: Option<Instant>,
    /// Allocations seen without a local pod at the previous periodic pass (leak candidates).
    leak_candidates: std::collections::BTreeSet<IpAddr>,
    cni_calls: CniCalls,
    nft_applied: Option<(NftState, TableView)>,
    lease: Option<i64>,
    reported: Option<AgentStatus>,
}

/// Runs the agent until `stop` is set. Kernel state is left in place on exit (a restart
/// picks up where this one left off); the status record is withdrawn.
pub fn run(
    cfg: &Config,
    ds: &dyn Datastore,
    dp: &dyn Dataplane,
    health: &Health,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Result<(), AgentError> {
    register(ds, cfg)?;
    let mut l = Loop {
        cfg,
        ds,
        dp,
        health,
        metrics,
        pending_since: None,
        leak_candidates: Default::default(),
        cni_calls: CniCalls::new(cfg.cni_calls_file.clone(), &cfg.node.name),
        last: None,
        nft_applied: None,
        lease: None,
        reported: None,
    };
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::Relaxed) {
        health.tick();
        match l.follow(stop) {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) => {
                metrics.datastore_errors.inc();
                metrics.in_sync.set(0);
                tracing::warn!(error = %e, "datastore; re-listing");
                health.set_not_in_sync(format!("datastore: {e}"));
                sleep_unless(stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    if let Some(lease) = l.lease {
        let _ = ds.revoke_lease(lease);
    }
    Ok(())
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn register(ds: &dyn Datastore, cfg: &Config) -> Result<(), AgentError> {
    let rec = NodeRecord {
        name: cfg.node.name.clone(),
        underlay: cfg.node.underlay,
    };
    let value = serde_json::to_vec(&rec).unwrap_or_default();
    furynet_datastore::put(ds, &node_key(&rec.name), &value, None)
        .map(|_| ())
        .map_err(|source| AgentError::Register {
            node: rec.name.clone(),
            source,
        })
}

impl Loop<'_> {
    /// One list + watch session; returns `Ok` when stopped, `Err` to re-list.
    fn follow(&mut self, stop: &AtomicBool) -> Result<(), DsError> {
        let (kvs, rev) = self.ds.list("")?;
        let mut snap = Snapshot::from_list(kvs, rev);
        let mut watch = self.ds.watch("", rev + 1)?;
        tracing::info!(revision = rev, keys = snap.len(), "listed the datastore");
        let mut dirty = true;
        let mut next_resync = Instant::now() + self.cfg.resync_interval;
        let mut retry_at: Option<Instant> = None;
        let mut next_keepalive = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.health.tick();
            let now = Instant::now();
            let periodic = now >= next_resync;
            if dirty || periodic || retry_at.is_some_and(|t| now >= t) {
                retry_at = match self.program(&snap, periodic && !dirty) {
                    Ok(true) => None,
                    Ok(false) => Some(Instant::now() + Duration::from_millis(250)),
                    Err(Failed) => Some(Instant::now() + Duration::from_secs(2)),
                };
                dirty = false;
                if periodic {
                    next_resync = Instant::now() + self.cfg.resync_interval;
                }
            }
            if Instant::now() >= next_keepalive {
                self.keep_alive();
                next_keepalive = Instant::now() + self.cfg.status_ttl / 3;
            }
            let deadline = [Some(next_resync), retry_at, Some(next_keepalive)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_resync);
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500));
            self.cni_calls.fold(self.metrics);
            if let Some(ev) = watch.recv_timeout(wait)? {
                let arrived = Instant::now();
                self.metrics.watch_events.inc();
                dirty |= snap.apply(&ev);
                // Batch a burst: take what arrives within the debounce window.
                while let Some(ev) = watch.recv_timeout(self.cfg.debounce)? {
                    self.metrics.watch_events.inc();
                    dirty |= snap.apply(&ev);
                }
                if dirty && self.pending_since.is_none() {
                    self.pending_since = Some(arrived);
                }
            }
        }
        Ok(())
    }

    /// Computes and programs. `Ok(true)`: in sync; `Ok(false)`: programmed but some local
    /// pod has no interface yet; `Err`: failed (reported).
    fn program(&mut self, snap: &Snapshot, periodic: bool) -> Result<bool, Failed> {
        let started = Instant::now();
        let decoded = snap.decode();
        for e in &decoded.errors {
            tracing::warn!(record = %e, "skipping an undecodable record");
        }
        let local = match self.dp.local_endpoints() {
            Ok(l) => l,
            Err(e) => return Err(self.fail(snap.revision, format!("reading pod routes: {e}"))),
        };
        let calc_started = Instant::now();
        let want = desired(&decoded, &self.cfg.node, &local);
        self.metrics
            .calc_duration
            .observe(calc_started.elapsed().as_secs_f64());
        self.observe_ipam(&decoded, &local, periodic);
        let unchanged = self.last.as_ref().is_some_and(|l| l.desired == want);
        if unchanged && !periodic {
            let complete = want.missing_endpoints.is_empty();
            if let Some(l) = self.last.as_mut() {
                l.revision = snap.revision;
            }
            self.finish(snap.revision, &want);
            return Ok(complete);
        }
        // Routes first: they do not depend on policy, and a new pod's peers become reachable
        // only when both are in place.
        let route_changes = if periodic
            || self
                .last
                .as_ref()
                .is_none_or(|l| l.desired.routing != want.routing)
        {
            let m = self.metrics;
            let routes = Metrics::subsystem("routes");
            m.applies.get_or_create(&routes).inc();
            let t = Instant::now();
            let r = self.dp.program_routes(&want.routing);
            m.apply_duration
                .get_or_create(&routes)
                .observe(t.elapsed().as_secs_f64());
            match r {
                Ok(n) => n,
                Err(e) => {
                    m.failures.get_or_create(&routes).inc();
                    m.felix_int_dataplane_failures.inc();
                    return Err(self.fail(snap.revision, format!("routes: {e}")));
                }
            }
        } else {
            0
        };
        // The whole-table script, rendered only when a rebuild is needed.
        let resync = || render_resync(&want.nft);
        // A change is one delta transaction (atomic: it applies entirely or not at all); the
        // kernel is read back and compared on the first pass, after a failed delta, and on
        // every periodic pass, which is when drift is found and repaired. Reading a large
        // table back costs more than the delta itself, so it is kept off the change path.
        let m = self.metrics;
        let nft_label = Metrics::subsystem("nftables");
        let sets_label = Metrics::subsystem("sets");
        let t = Instant::now();
        let mut set_updates = 0;
        let applied = match (&self.nft_applied, periodic) {
            (Some((old, _)), false) => {
                let delta = render_delta(old, &want.nft);
                set_updates = sets_touched(&delta);
                if delta.trim().is_empty() {
                    Ok(Applied::Unchanged)
                } else {
                    m.applies.get_or_create(&nft_label).inc();
                    match self.dp.apply_nft(&delta) {
                        Ok(()) => Ok(Applied::Delta),
                        Err(e) => {
                            self.count_nft_failure(&e, set_updates);
                            tracing::warn!(error = %e, "delta failed; rebuilding our table");
                            m.resyncs.get_or_create(&Metrics::reason("drift")).inc();
                            m.applies.get_or_create(&nft_label).inc();
                            self.dp.sync_nft(None, "", &resync(), &want.view)
                        }
                    }
                }
            }
            (Some((old, view)), true) => {
                let delta = render_delta(old, &want.nft);
                set_updates = sets_touched(&delta);
                m.resyncs.get_or_create(&Metrics::reason("periodic")).inc();
                m.applies.get_or_create(&nft_label).inc();
                let r = self.dp.sync_nft(Some(view), &delta, &resync(), &want.view);
                if r == Ok(Applied::Resync) {
                    m.resyncs.get_or_create(&Metrics::reason("drift")).inc();
                }
                r
            }
            (None, _) => {
                // The first pass, or a rebuild after a failure left the kernel state unknown.
                let reason = if self.last.is_none() {
                    "startup"
                } else {
                    "drift"
                };
                m.resyncs.get_or_create(&Metrics::reason(reason)).inc();
                m.applies.get_or_create(&nft_label).inc();
                self.dp.sync_nft(None, "", &resync(), &want.view)
            }
        };
        m.apply_duration
            .get_or_create(&nft_label)
            .observe(t.elapsed().as_secs_f64());
        if set_updates > 0 {
            m.applies
                .get_or_create(&sets_label)
                .inc_by(set_updates as u64);
        }
        match applied {
            Ok(a) => {
                tracing::info!(
                    revision = snap.revision,
                    nft = ?a,
                    route_changes,
                    endpoints = want.endpoints,
                    policies = want.policies,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "programmed"
                );
            }
            Err(e) => {
                self.count_nft_failure(&e, set_updates);
                // The kernel state is unknown now: rebuild next time.
                self.nft_applied = None;
                return Err(self.fail(snap.revision, format!("nftables: {e}")));
            }
        }
        self.nft_applied = Some((want.nft.clone(), want.view.clone()));
        let complete = want.missing_endpoints.is_empty();
        self.last = Some(Programmed {
            desired: want.clone(),
            revision: snap.revision,
        });
        self.finish(snap.revision, &want);
        if let Some(since) = self.pending_since.take() {
            m.programming.observe(since.elapsed().as_secs_f64());
        }
        Ok(complete)
    }

    /// A failed nftables operation, in our metrics and Felix's: a failed read-back is a
    /// "save" error, anything else a "restore" error; set updates in it are set errors.
    fn count_nft_failure(&self, e: &str, set_updates: usize) {
        let m = self.metrics;
        m.failures
            .get_or_create(&Metrics::subsystem("nftables"))
            .inc();
        m.felix_int_dataplane_failures.inc();
        if e.contains("read back") || e.contains("unexpected JSON") {
            m.felix_iptables_save_errors.inc();
        } else {
            m.felix_iptables_restore_errors.inc();
        }
        if set_updates > 0 {
            m.failures
                .get_or_create(&Metrics::subsystem("sets"))
                .inc_by(set_updates as u64);
            m.felix_ipset_errors.inc();
        }
    }

    /// IPAM gauges for the blocks affine to this node, and leak detection: an address
    /// allocated in one of our blocks with no pod route on this node at two periodic passes
    /// in a row (so an ADD in progress is never counted).
    fn observe_ipam(
        &mut self,
        d: &crate::state::Decoded,
        local: &HashMap<IpAddr, String>,
        periodic: bool,
    ) {
        let m = self.metrics;
        let mut blocks: std::collections::BTreeMap<String, (i64, i64, i64)> = Default::default();
        let mut unattached = std::collections::BTreeSet::new();
        for b in &d.ipam {
            let pool = b.pool.to_string();
            let cap = pool_size(&b.pool);
            let e = blocks.entry(pool).or_insert((0, 0, cap));
            if b.affinity.as_deref() == Some(self.cfg.node.name.as_str()) {
                e.0 += 1;
                e.1 += b.allocations.len() as i64;
                for offset in b.allocations.keys() {
                    if let Some(ip) = nth(&b.cidr, *offset) {
                        if !local.contains_key(&ip) {
                            unattached.insert(ip);
                        }
                    }
                }
            }
        }
        for (pool, (n, used, cap)) in blocks {
            let l = crate::metrics::PoolLabel { pool };
            m.ipam_blocks.get_or_create(&l).set(n);
            m.ipam_addresses.get_or_create(&l).set(used);
            m.ipam_capacity.get_or_create(&l).set(cap);
        }
        if periodic {
            let leaks = unattached.intersection(&self.leak_candidates).count();
            m.ipam_leaks.set(leaks as i64);
            self.leak_candidates = unattached;
        }
    }

    fn finish(&mut self, revision: i64, want: &Desired) {
        let m = self.metrics;
        m.endpoints.set(want.endpoints as i64);
        m.policies.set(want.policies as i64);
        m.sets.set(want.nft.sets.len() as i64);
        m.set_members.set(
            want.nft
                .sets
                .values()
                .map(|s| s.elements.len() as i64)
                .sum(),
        );
        let ok = want.missing_endpoints.is_empty();
        m.in_sync.set(i64::from(ok));
        if ok {
            m.last_sync.set(crate::health::now_ms() as f64 / 1e3);
        }
        if want.missing_endpoints.is_empty() {
            self.health.set_in_sync(revision);
            self.report(revision, true, None);
        } else {
            let why = format!(
                "waiting for the interface of local pod(s) {}",
                want.missing_endpoints.join(", ")
            );
            self.health.set_not_in_sync(why.clone());
            self.report(revision, false, Some(why));
        }
    }

    fn fail(&mut self, revision: i64, why: String) -> Failed {
        self.metrics.in_sync.set(0);
        tracing::error!(error = %why, "programming failed; will retry");
        self.health.set_not_in_sync(why.clone());
        self.report(revision, false, Some(why));
        Failed
    }

    fn keep_alive(&mut self) {
        if let Some(lease) = self.lease {
            if self.ds.keep_alive(lease).is_ok() {
                return;
            }
            // The lease ended (e.g. the datastore was unreachable for longer than its TTL):
            // take a new one and write the status again.
            self.lease = None;
            self.reported = None;
        }
        match self.ds.grant_lease(self.cfg.status_ttl) {
            Ok(l) => self.lease = Some(l),
            Err(e) => tracing::warn!(error = %e, "cannot grant the status lease"),
        }
        if let Some(last) = &self.last {
            let (rev, ok) = (last.revision, self.health.in_sync());
            self.report(rev, ok, None);
        }
    }

    /// Writes `agents/<node>` when something in it changed.
    fn report(&mut self, revision: i64, in_sync: bool, error: Option<String>) {
        let Some(lease) = self.lease else { return };
        let (endpoints, policies) = self
            .last
            .as_ref()
            .map_or((0, 0), |l| (l.desired.endpoints, l.desired.policies));
        let mut status = AgentStatus {
            node: self.cfg.node.name.clone(),
            revision,
            in_sync,
            error,
            pid: std::process::id(),
            endpoints,
            policies,
            updated_ms: 0,
        };
        if self.reported.as_ref() == Some(&status) {
            return;
        }
        let unstamped = status.clone();
        status.updated_ms = now_ms();
        let value = serde_json::to_vec(&status).unwrap_or_default();
        match furynet_datastore::put(self.ds, &agent_key(&status.node), &value, Some(lease)) {
            Ok(_) => self.reported = Some(unstamped),
            Err(e) => tracing::warn!(error = %e, "cannot write the agent status"),
        }
    }
}

/// Convenience for binaries: runs with the real kernel in the current namespace.
pub fn run_linux(
    cfg: &Config,
    ds: Arc<dyn Datastore>,
    health: Arc<Health>,
    metrics: &Metrics,
    stop: Arc<AtomicBool>,
) -> Result<(), AgentError> {
    run(
        cfg,
        ds.as_ref(),
        &LinuxDataplane::default(),
        &health,
        metrics,
        &stop,
    )
}

/// Distinct sets (not the verdict maps) a delta adds, deletes or changes elements of.
pub fn sets_touched(delta: &str) -> usize {
    let mut names = std::collections::BTreeSet::new();
    for line in delta.lines() {
        let mut w = line.split_whitespace();
        let (Some(verb), Some(kind)) = (w.next(), w.next()) else {
            continue;
        };
        if !matches!(verb, "add" | "delete" | "flush") || !matches!(kind, "set" | "element") {
            continue;
        }
        // `VERB KIND inet furynet NAME ...`
        if let Some(name) = w.nth(2) {
            if name != "from_pod" && name != "to_pod" {
                names.insert(name);
            }
        }
    }
    names.len()
}

fn pool_size(pool: &ipnet::IpNet) -> i64 {
    let host_bits = u32::from(pool.max_prefix_len() - pool.prefix_len());
    if host_bits >= 62 {
        i64::MAX
    } else {
        1i64 << host_bits
    }
}

/// The address at `offset` in `cidr`.
fn nth(cidr: &ipnet::IpNet, offset: u32) -> Option<IpAddr> {
    match cidr {
        ipnet::IpNet::V4(n) => u32::from(n.network())
            .checked_add(offset)
            .map(|v| IpAddr::V4(v.into())),
        ipnet::IpNet::V6(n) => u128::from(n.network())
            .checked_add(u128::from(offset))
            .map(|v| IpAddr::V6(v.into())),
    }
}

/// Folds the CNI plugin's call records (`metricsFile`, one JSON line per call) for this node
/// into the `furynet_cni_*` metrics, reading only what was appended since the last look.
#[derive(Debug)]
struct CniCalls {
    path: Option<std::path::PathBuf>,
    node: String,
    offset: u64,
    partial: String,
}

impl CniCalls {
    fn new(path: Option<std::path::PathBuf>, node: &str) -> Self {
        CniCalls {
            path,
            node: node.to_string(),
            offset: 0,
            partial: String::new(),
        }
    }

    fn fold(&mut self, m: &Metrics) {
        use std::io::{Read, Seek, SeekFrom};
        let Some(path) = &self.path else { return };
        let Ok(mut f) = std::fs::File::open(path) else {
            return;
        };
        let len = f.metadata().map_or(0, |md| md.len());
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        let Ok(n) = f.take(len - self.offset).read_to_string(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let complete = match self.partial.rfind('\n') {
            Some(i) => {
                let rest = self.partial.split_off(i + 1);
                std::mem::replace(&mut self.partial, rest)
            }
            None => return,
        };
        for rec in complete
            .lines()
            .filter_map(furynet_cni::calls::CallRecord::parse)
        {
            if rec.node != self.node {
                continue;
            }
            let result = if rec.ok { "ok" } else { "error" };
            m.cni_operations
                .get_or_create(&crate::metrics::CniLabels {
                    verb: rec.verb.clone(),
                    result: result.into(),
                })
                .inc();
            m.cni_duration
                .get_or_create(&crate::metrics::VerbLabel { verb: rec.verb })
                .observe(rec.seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sets_touched_counts_distinct_sets_not_maps() {
        let delta = "add set inet furynet p4-a { type ipv4_addr; }\n\
                     add element inet furynet p4-a { 10.0.0.1 }\n\
                     delete element inet furynet p4-b { 10.0.0.2 }\n\
                     add element inet furynet to_pod { \"fny1\" : jump c }\n\
                     add chain inet furynet pod-x-ingress\n\
                     delete set inet furynet p6-c\n";
        assert_eq!(sets_touched(delta), 3);
        assert_eq!(sets_touched(""), 0);
    }

    #[test]
    fn nth_address_and_pool_size() {
        let v4: ipnet::IpNet = "10.244.1.64/26".parse().unwrap();
        assert_eq!(nth(&v4, 5), Some("10.244.1.69".parse().unwrap()));
        let v6: ipnet::IpNet = "fd00::/122".parse().unwrap();
        assert_eq!(nth(&v6, 1), Some("fd00::1".parse().unwrap()));
        assert_eq!(pool_size(&"10.244.0.0/16".parse().unwrap()), 65536);
        assert_eq!(pool_size(&"fd00::/56".parse().unwrap()), i64::MAX);
    }

    #[test]
    fn cni_call_records_are_folded_once_and_per_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        let mut registry = prometheus_client::registry::Registry::default();
        let m = Metrics::register(&mut registry);
        let mut calls = CniCalls::new(Some(path.clone()), "n1");
        calls.fold(&m); // no file yet: nothing, no error
        let rec = |node: &str, verb: &str, ok: bool| {
            furynet_cni::calls::CallRecord {
                node: node.into(),
                verb: verb.into(),
                ok,
                seconds: 0.01,
            }
            .to_line()
        };
        let torn = rec("n1", "DEL", true);
        let (first, second) = torn.split_at(10);
        std::fs::write(
            &path,
            format!(
                "{}{}{}{first}",
                rec("n1", "ADD", true),
                rec("n2", "ADD", true),
                rec("n1", "ADD", false)
            ),
        )
        .unwrap();
        calls.fold(&m);
        let ops = |verb: &str, result: &str| {
            m.cni_operations
                .get_or_create(&crate::metrics::CniLabels {
                    verb: verb.into(),
                    result: result.into(),
                })
                .get()
        };
        assert_eq!(
            (ops("ADD", "ok"), ops("ADD", "error"), ops("DEL", "ok")),
            (1, 1, 0)
        );
        // The torn line completes later; nothing is counted twice.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(second.as_bytes())
            .unwrap();
        calls.fold(&m);
        calls.fold(&m);
        assert_eq!((ops("ADD", "ok"), ops("DEL", "ok")), (1, 1));
    }
}
