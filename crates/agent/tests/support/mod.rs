//! A recording fake dataplane shared by the agent loop tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use furynet_agent::state::NodeSetup;
use furynet_agent::{Config, Health};
use furynet_dataplane::routing::plan::Encapsulation;
use furynet_datastore::Datastore;

use furynet_agent::Dataplane;
use furynet_dataplane::nft::{Applied, TableView};
use furynet_dataplane::routing::plan::RoutingPlan;

/// Records every nftables call; `local` plays the node's pod interfaces; `fail_nft` injects
/// failures.
#[derive(Default)]
pub struct Fake {
    pub local: Mutex<HashMap<IpAddr, String>>,
    /// (delta, resync) of every nft sync call.
    pub syncs: Mutex<Vec<(String, bool)>>,
    pub fail_nft: AtomicBool,
    pub routes: AtomicUsize,
}

impl Dataplane for Fake {
    fn local_endpoints(&self) -> Result<HashMap<IpAddr, String>, String> {
        Ok(self.local.lock().unwrap().clone())
    }
    fn program_routes(&self, _: &RoutingPlan) -> Result<usize, String> {
        self.routes.fetch_add(1, Ordering::SeqCst);
        Ok(0)
    }
    fn apply_nft(&self, script: &str) -> Result<(), String> {
        if self.fail_nft.load(Ordering::SeqCst) {
            return Err("nft: Operation not permitted (injected)".into());
        }
        self.syncs.lock().unwrap().push((script.to_string(), false));
        Ok(())
    }
    fn sync_nft(
        &self,
        previous: Option<&TableView>,
        delta: &str,
        _: &str,
        _: &TableView,
    ) -> Result<Applied, String> {
        if self.fail_nft.load(Ordering::SeqCst) {
            return Err("nft: Operation not permitted (injected)".into());
        }
        self.syncs
            .lock()
            .unwrap()
            .push((delta.to_string(), previous.is_none()));
        Ok(if previous.is_none() {
            Applied::Resync
        } else {
            Applied::Delta
        })
    }
}

/// An agent loop for node `node-a` (underlay 172.31.0.1) running on its own thread.
pub struct Running {
    pub handle: JoinHandle<Result<(), furynet_agent::agent::AgentError>>,
    pub stop: Arc<AtomicBool>,
    pub health: Arc<Health>,
    pub registry: prometheus_client::registry::Registry,
    pub metrics: Arc<furynet_agent::metrics::Metrics>,
}

/// Start the agent loop on `ds` with the `fake` dataplane (no periodic resync; the status
/// record on a lease of `status_ttl`).
pub fn start(ds: Arc<dyn Datastore>, fake: Arc<Fake>, status_ttl: Duration) -> Running {
    let mut cfg = Config::new(NodeSetup {
        name: "node-a".into(),
        underlay: Ipv4Addr::new(172, 31, 0, 1),
        underlay_mtu: 1500,
        encapsulation: Encapsulation::default(),
    });
    cfg.resync_interval = Duration::from_secs(3600);
    cfg.status_ttl = status_ttl;
    let health = Health::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(furynet_agent::metrics::Metrics::register(&mut registry));
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (health, stop, metrics) = (health.clone(), stop.clone(), metrics.clone());
        std::thread::spawn(move || {
            furynet_agent::run(&cfg, ds.as_ref(), fake.as_ref(), &health, &metrics, &stop)
        })
    };
    Running {
        handle,
        stop,
        health,
        registry,
        metrics,
    }
}

/// `node-a`'s status record, if any.
pub fn status(ds: &dyn Datastore) -> Option<furynet_agent::keys::AgentStatus> {
    ds.get(&furynet_agent::keys::agent_key("node-a"))
        .unwrap()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

/// Poll `f` until it holds (15 s at most).
pub fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
