//! The running lab's record: `/run/furynet-lab/state.json` (override with
//! `FURYNET_LAB_DIR`), written by `lab up` and every command that changes the lab, removed by
//! `lab down`. Everything named here carries the lab prefix, so `lab down` can also clean up
//! without it (after a crash).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::netns::Res;

pub fn dir() -> PathBuf {
    std::env::var_os("FURYNET_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/furynet-lab"))
}

fn file() -> PathBuf {
    dir().join("state.json")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    /// Network namespace of the node.
    pub netns: String,
    pub underlay: Ipv4Addr,
    pub agent_pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    /// Index into `nodes`.
    pub node: usize,
    pub netns: String,
    pub container: String,
    pub ips: Vec<IpAddr>,
    /// The pod's port server (0 when the pod declares no port).
    pub server_pid: u32,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Prefix of every namespace of this lab (`fnylab-<pid of lab up>`).
    pub tag: String,
    /// The `--datastore` argument (a directory or `etcd://...`).
    pub datastore: String,
    pub encapsulation: String,
    pub nodes: Vec<NodeState>,
    pub pods: Vec<PodState>,
    /// Counter for pod namespace names.
    pub next_pod: usize,
    /// The agents' `--resync-interval` (seconds).
    pub resync_interval: u64,
    /// The datastore as seen from inside the node namespaces, when it differs (etcd relayed
    /// to the nodes' loopback).
    #[serde(default)]
    pub node_datastore: Option<String>,
    /// The relay process (etcd in, metrics out; 0: none).
    #[serde(default)]
    pub relay_pid: u32,
    /// The lab's Prometheus (`lab up --monitoring`), its URL and process.
    #[serde(default)]
    pub prometheus: Option<String>,
    #[serde(default)]
    pub prometheus_pid: u32,
    /// Where the next probe run's UDP/SCTP source ports start (see `check::measure`).
    #[serde(default)]
    pub probe_cursor: u32,
    /// Addresses of the fan-out servers the agents read through (`lab up --fanout`); they
    /// run in the underlay namespace.
    #[serde(default)]
    pub fanout: Vec<String>,
    /// Pods get an IPv6 address too (`lab up --dual-stack`).
    #[serde(default)]
    pub dual_stack: bool,
}

impl LabState {
    pub fn load() -> Res<Option<LabState>> {
        match std::fs::read(file()) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e} (run `furynet lab down`)", file().display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", file().display())),
        }
    }

    /// The running lab, or an error that says how to start one.
    pub fn running() -> Res<LabState> {
        LabState::load()?.ok_or_else(|| "no lab is running: start one with `furynet lab up`".into())
    }

    pub fn save(&self) -> Res<()> {
        std::fs::create_dir_all(dir()).map_err(|e| format!("{}: {e}", dir().display()))?;
        let tmp = dir().join("state.json.tmp");
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, file()).map_err(|e| format!("{}: {e}", file().display()))
    }

    pub fn remove() {
        let _ = std::fs::remove_dir_all(dir());
    }

    /// The `--datastore` for agents and the CNI plugin (inside the node namespaces).
    pub fn node_datastore(&self) -> &str {
        self.node_datastore.as_deref().unwrap_or(&self.datastore)
    }

    pub fn log_file(&self, what: &str) -> PathBuf {
        dir().join(format!("{what}.log"))
    }
}
