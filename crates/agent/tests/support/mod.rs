//! A recording fake dataplane shared by the agent loop tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

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
