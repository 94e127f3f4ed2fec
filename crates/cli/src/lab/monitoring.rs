//! `lab up --monitoring`: a local Prometheus (Debian's `prometheus`) scraping every node's
//! agent through the lab relay, with furynet's alert rules (`deploy/monitoring/rules/`) loaded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::cluster::METRICS_BASE_PORT;
use super::netns::Res;
use super::state::{dir, LabState};

/// The generated plain rule files, built into the binary.
const RULES: [(&str, &str); 5] = [
    (
        "calico-compat.rules.yaml",
        include_str!("../../../../deploy/monitoring/rules/calico-compat.rules.yaml"),
    ),
    (
        "furynet-agent.rules.yaml",
        include_str!("../../../../deploy/monitoring/rules/furynet-agent.rules.yaml"),
    ),
    (
        "furynet-cni.rules.yaml",
        include_str!("../../../../deploy/monitoring/rules/furynet-cni.rules.yaml"),
    ),
    (
        "furynet-ipam.rules.yaml",
        include_str!("../../../../deploy/monitoring/rules/furynet-ipam.rules.yaml"),
    ),
    (
        "typha-compat.rules.yaml",
        include_str!("../../../../deploy/monitoring/rules/typha-compat.rules.yaml"),
    ),
];

fn binary() -> Res<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .ok_or_else(|| "--monitoring needs Prometheus: apt-get install prometheus".to_string())
}

/// The scrape configuration: one target per agent, with the labels a Kubernetes scrape would
/// give it (`node`, `pod`, `namespace`).
pub fn config(state: &LabState, rules_dir: &std::path::Path) -> String {
    let mut s = format!(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nrule_files:\n  - {}/*.yaml\nscrape_configs:\n  - job_name: furynet-agent\n    static_configs:\n",
        rules_dir.display()
    );
    for (i, n) in state.nodes.iter().enumerate() {
        s.push_str(&format!(
            "      - targets: ['127.0.0.1:{}']\n        labels: {{node: {}, pod: furynet-agent-{}, namespace: kube-system}}\n",
            METRICS_BASE_PORT + i as u16,
            n.name,
            n.name
        ));
    }
    if !state.fanout.is_empty() {
        s.push_str("  - job_name: furynet-fanout\n    static_configs:\n");
        for k in 0..state.fanout.len() {
            s.push_str(&format!(
                "      - targets: ['127.0.0.1:{}']\n        labels: {{pod: furynet-fanout-{k}, namespace: kube-system}}\n",
                super::cluster::FANOUT_METRICS_BASE_PORT + k as u16,
            ));
        }
    }
    s
}

/// A plain HTTP GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Res<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Writes the configuration and rules, starts Prometheus, waits until it is ready.
pub fn start(state: &LabState, port: u16) -> Res<u32> {
    let bin = binary()?;
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(format!(
            "127.0.0.1:{port} is in use: pick another with --monitoring-port"
        ));
    }
    let rules = dir().join("rules");
    std::fs::create_dir_all(&rules).map_err(|e| format!("{}: {e}", rules.display()))?;
    for (name, body) in RULES {
        std::fs::write(rules.join(name), body).map_err(|e| e.to_string())?;
    }
    let conf = dir().join("prometheus.yml");
    std::fs::write(&conf, config(state, &rules)).map_err(|e| e.to_string())?;
    let log = state.log_file("prometheus");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(bin)
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir().join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting prometheus: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(port, "/-/ready") {
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Prometheus did not become ready (see {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An agent's key figures, read from its `/metrics` inside the node namespace.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetrics {
    pub applies: f64,
    pub failures: f64,
    pub resyncs: f64,
    pub set_members: f64,
    pub programming_avg_seconds: f64,
}

/// Sums every sample of `name` (any labels) in a text exposition.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn parse_key_metrics(text: &str) -> KeyMetrics {
    let count = sum(text, "furynet_policy_programming_seconds_count");
    KeyMetrics {
        applies: sum(text, "furynet_dataplane_applies_total"),
        failures: sum(text, "furynet_dataplane_failures_total"),
        resyncs: sum(text, "furynet_dataplane_resyncs_total"),
        set_members: sum(text, "furynet_set_members_active"),
        programming_avg_seconds: if count > 0.0 {
            sum(text, "furynet_policy_programming_seconds_sum") / count
        } else {
            0.0
        },
    }
}

/// Reads the agent's metrics at 127.0.0.1:9099 inside `netns`.
pub fn key_metrics(netns: &str) -> Option<KeyMetrics> {
    let body = super::netns::Ns::existing(netns)
        .enter(|| http_get(9099, "/metrics"))
        .ok()?
        .ok()?;
    (body.0 == 200).then(|| parse_key_metrics(&body.1))
}

/// A fan-out server of the lab, as `lab status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FanoutStatus {
    pub address: String,
    /// `/readyz` answered 200 (listening and in sync with the datastore).
    pub ready: bool,
    /// `furynet_fanout_connections`: agents streaming from it.
    pub connections: Option<f64>,
    /// `furynet_fanout_revision`: the datastore revision its state is at.
    pub revision: Option<f64>,
}

/// Asks each fan-out server (in the underlay namespace) for readiness and key figures.
pub fn fanout_statuses(state: &LabState) -> Vec<FanoutStatus> {
    let ns = super::netns::Ns::existing(&format!("{}-underlay", state.tag));
    state
        .fanout
        .iter()
        .enumerate()
        .map(|(k, address)| {
            let port = super::cluster::FANOUT_HEALTH_BASE_PORT + k as u16;
            let get = |path: &'static str| ns.enter(move || http_get(port, path)).ok()?.ok();
            let ready = get("/readyz").is_some_and(|(code, _)| code == 200);
            let metrics = get("/metrics").filter(|(code, _)| *code == 200);
            let sample = |name: &str| metrics.as_ref().map(|(_, m)| sum(m, name));
            FanoutStatus {
                address: address.clone(),
                ready,
                connections: sample("furynet_fanout_connections"),
                revision: sample("furynet_fanout_revision"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_metrics_sum_label_sets() {
        let text = "# TYPE furynet_dataplane_applies counter\n\
            furynet_dataplane_applies_total{subsystem=\"routes\"} 3\n\
            furynet_dataplane_applies_total{subsystem=\"nftables\"} 4\n\
            furynet_dataplane_applies_total_bogus 100\n\
            furynet_policy_programming_seconds_sum 0.5\n\
            furynet_policy_programming_seconds_count 10\n\
            furynet_set_members_active 7\n# EOF\n";
        let m = parse_key_metrics(text);
        assert_eq!(m.applies, 7.0);
        assert_eq!(m.set_members, 7.0);
        assert_eq!(m.failures, 0.0);
        assert!((m.programming_avg_seconds - 0.05).abs() < 1e-9);
    }

    #[test]
    fn scrape_config_labels_every_agent() {
        let state = LabState {
            tag: "fnylab-1".into(),
            datastore: "/x".into(),
            encapsulation: "vxlan".into(),
            nodes: vec![
                super::super::state::NodeState {
                    name: "node-0".into(),
                    netns: "fnylab-1-node-0".into(),
                    underlay: "172.31.0.1".parse().unwrap(),
                    agent_pid: 1,
                },
                super::super::state::NodeState {
                    name: "node-1".into(),
                    netns: "fnylab-1-node-1".into(),
                    underlay: "172.31.0.2".parse().unwrap(),
                    agent_pid: 2,
                },
            ],
            pods: vec![],
            next_pod: 0,
            resync_interval: 10,
            node_datastore: None,
            relay_pid: 0,
            prometheus: None,
            prometheus_pid: 0,
            probe_cursor: 0,
            fanout: vec!["172.31.255.253:5473".into()],
            dual_stack: false,
        };
        let c = config(&state, std::path::Path::new("/r"));
        assert!(c.contains("- /r/*.yaml"), "{c}");
        assert!(c.contains("job_name: furynet-fanout"), "{c}");
        assert!(c.contains("127.0.0.1:19190"), "{c}");
        assert!(c.contains("targets: ['127.0.0.1:19101']\n        labels: {node: node-1, pod: furynet-agent-node-1, namespace: kube-system}"), "{c}");
    }
}
