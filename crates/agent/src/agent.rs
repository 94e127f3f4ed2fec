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
}

impl Config {
    pub fn new(node: NodeSetup) -> Self {
        Config {
            node,
            resync_interval: Duration::from_secs(30),
            debounce: Duration::from_millis(20),
            status_ttl: Duration::from_secs(10),
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
    last: Option<Programmed>,
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
    stop: &AtomicBool,
) -> Result<(), AgentError> {
    register(ds, cfg)?;
    let mut l = Loop {
        cfg,
        ds,
        dp,
        health,
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
    put(ds, &node_key(&rec.name), &value, None).map_err(|source| AgentError::Register {
        node: rec.name.clone(),
        source,
    })
}

/// Create or overwrite `key` (retrying compare-and-swap conflicts).
fn put(ds: &dyn Datastore, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), DsError> {
    for _ in 0..10 {
        let r = match ds.get(key)? {
            Some(kv) if kv.value == value && kv.lease == lease => return Ok(()),
            Some(kv) if kv.lease == lease => ds.update(key, value, kv.mod_revision),
            // A different lease: recreate the key under ours.
            Some(kv) => ds
                .delete(key, Some(kv.mod_revision))
                .and_then(|_| ds.create(key, value, lease)),
            None => ds.create(key, value, lease),
        };
        match r {
            Ok(_) => return Ok(()),
            Err(
                DsError::Conflict { .. } | DsError::AlreadyExists { .. } | DsError::NotFound { .. },
            ) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(DsError::Unavailable {
        backend: ds.backend(),
        op: "put",
        reason: format!("{key}: too many concurrent writers"),
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
            if let Some(ev) = watch.recv_timeout(wait)? {
                dirty |= snap.apply(&ev);
                // Batch a burst: take what arrives within the debounce window.
                while let Some(ev) = watch.recv_timeout(self.cfg.debounce)? {
                    dirty |= snap.apply(&ev);
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
        let want = desired(&decoded, &self.cfg.node, &local);
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
            match self.dp.program_routes(&want.routing) {
                Ok(n) => n,
                Err(e) => return Err(self.fail(snap.revision, format!("routes: {e}"))),
            }
        } else {
            0
        };
        let resync = render_resync(&want.nft);
        // A change is one delta transaction (atomic: it applies entirely or not at all); the
        // kernel is read back and compared on the first pass, after a failed delta, and on
        // every periodic pass, which is when drift is found and repaired. Reading a large
        // table back costs more than the delta itself, so it is kept off the change path.
        let applied = match (&self.nft_applied, periodic) {
            (Some((old, _)), false) => {
                let delta = render_delta(old, &want.nft);
                if delta.trim().is_empty() {
                    Ok(Applied::Unchanged)
                } else {
                    match self.dp.apply_nft(&delta) {
                        Ok(()) => Ok(Applied::Delta),
                        Err(e) => {
                            tracing::warn!(error = %e, "delta failed; rebuilding our table");
                            self.dp.sync_nft(None, "", &resync, &want.view)
                        }
                    }
                }
            }
            (Some((old, view)), true) => {
                let delta = render_delta(old, &want.nft);
                self.dp.sync_nft(Some(view), &delta, &resync, &want.view)
            }
            (None, _) => self.dp.sync_nft(None, "", &resync, &want.view),
        };
        match applied {
            Ok(a) => {
                if a == Applied::Resync {
                    self.health.count_resync();
                }
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
        Ok(complete)
    }

    fn finish(&mut self, revision: i64, want: &Desired) {
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
        tracing::error!(error = %why, "programming failed; will retry");
        self.health.count_failure();
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
        match put(self.ds, &agent_key(&status.node), &value, Some(lease)) {
            Ok(()) => self.reported = Some(unstamped),
            Err(e) => tracing::warn!(error = %e, "cannot write the agent status"),
        }
    }
}

/// Convenience for binaries: runs with the real kernel in the current namespace.
pub fn run_linux(
    cfg: &Config,
    ds: Arc<dyn Datastore>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) -> Result<(), AgentError> {
    run(cfg, ds.as_ref(), &LinuxDataplane::default(), &health, &stop)
}
