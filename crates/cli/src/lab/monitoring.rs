//! `lab up --monitoring`: a local Prometheus (Debian's `prometheus`) scraping every node's
//! agent through the lab relay, with furynet's alert rules (`deploy/monitoring/rules/`) loaded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
