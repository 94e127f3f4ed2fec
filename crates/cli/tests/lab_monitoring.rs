//! Monitoring end to end: a lab with `--monitoring` (a real Prometheus scraping every agent,
//! furynet's alert rules loaded), traffic, a failing CNI call and a failing nftables
//! transaction; then every dashboard panel's and every alert's PromQL is run through the
//! Prometheus HTTP API: all must evaluate, every panel must return data (agents behind two
//! fan-out servers, so the fan-out dashboard is checked too), and the counters must show the failures under
//! furynet's and Calico's names. Needs root and Debian's `prometheus` (skips loudly otherwise,
//! fails under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{root, run, LabGuard};

fn furynet(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_furynet"), args)
}

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = furynet(args);
    assert_eq!(code, 0, "furynet {}:\n{out}\n{err}", args.join(" "));
    out
}

const PORT: u16 = 19090;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn get(path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Runs an instant query; the result vector.
fn query(expr: &str) -> Vec<serde_json::Value> {
    let v = get(&format!("/api/v1/query?query={}", urlencode(expr)));
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Dashboard variables as Grafana would fill them for "all".
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "10s")
        .replace("$__range", "5m")
        .replace("$node", ".*")
        .replace("$instance", ".*")
        .replace("$pool", ".*")
}

fn panel_exprs(dashboard: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
        panel_exprs(p, out);
    }
}

#[test]
fn metrics_alerts_and_dashboards_against_a_real_prometheus() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED (needs root)");
        return;
    }
    let has_prometheus = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !has_prometheus {
        assert!(
            std::env::var("CI").is_err(),
            "prometheus must be installed in CI"
        );
        eprintln!("SKIPPED (apt-get install prometheus)");
        return;
    }
    let _ = furynet(&["lab", "down"]);
    let _guard = LabGuard(env!("CARGO_BIN_EXE_furynet"));
    let data = "crates/cli/tests/data/lab";
    ok(&[
        "lab",
        "up",
        "--nodes",
        "2",
        "--monitoring",
        "--monitoring-port",
        &PORT.to_string(),
        // Agents through two fan-out servers, so the Typha series and the fan-out dashboard
        // are checked against a real server too.
        "--fanout",
        // Long: the failing delta below must reach the deleted table before a periodic
        // resync repairs it.
        "--resync-interval",
        "300",
        "-f",
        &format!("{data}/workloads.yaml"),
    ]);
    // Traffic, a policy change, then failures: a CNI call that fails (bad netns) and an
    // nftables transaction that fails (our table deleted behind the agent's back, then a
    // change whose delta refers to it).
    ok(&["lab", "probe"]);
    ok(&["lab", "apply", "-f", &format!("{data}/policy.yaml")]);
    let lab: serde_json::Value =
        serde_json::from_str(&ok(&["lab", "status", "-o", "json"])).unwrap();
    let node0 = lab["nodes"][0]["netns"].as_str().unwrap().to_string();
    // b/server-b runs on node-1: the policy change below is a delta there.
    let node1 = lab["nodes"][1]["netns"].as_str().unwrap().to_string();
    let calls = "/run/furynet-lab/cni-calls.log";
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node0])
        .arg(PathBuf::from(env!("CARGO_BIN_EXE_furynet")).with_file_name("furynet-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "broken")
        .env("CNI_NETNS", "/run/netns/does-not-exist")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            serde_json::json!({"cniVersion":"1.1.0","name":"k8s-pod-network","type":"furynet-cni",
                "datastore":{"type":"embedded","path":"/run/furynet-lab/datastore"},
                "nodeName":"node-0","ipam":{"pools":["10.244.0.0/16"]},"metricsFile":calls})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    assert!(!child.wait().unwrap().success(), "the broken ADD fails");
    assert!(Command::new("ip")
        .args(["netns", "exec", &node1, "nft", "delete", "table", "inet", "furynet"])
        .status()
        .unwrap()
        .success());
    ok(&["lab", "apply", "-f", &format!("{data}/policy-changed.yaml")]);
    // A pod deleted: CNI DEL.
    let gone = std::env::temp_dir().join(format!("furynet-monitoring-{}.yaml", std::process::id()));
    std::fs::write(
        &gone,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: server-a, namespace: a, labels: {app: server}}\nspec: {nodeName: node-0, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}\n",
    )
    .unwrap();
    let deleted = furynet(&["lab", "delete", "-f", gone.to_str().unwrap()]);
    let _ = std::fs::remove_file(&gone);
    assert_eq!(deleted.0, 0, "{deleted:?}");

    // Wait for the scrapes to show all of it.
    let deadline = Instant::now() + Duration::from_secs(90);
    let wanted = [
        "furynet_cni_operations_total{verb=\"ADD\",result=\"error\",node=\"node-0\"}",
        "furynet_cni_operations_total{verb=\"ADD\",result=\"ok\"}",
        "felix_iptables_restore_errors{node=\"node-1\"} > 0",
        "felix_int_dataplane_failures{node=\"node-1\"} > 0",
        "furynet_dataplane_failures_total{subsystem=\"nftables\",node=\"node-1\"} > 0",
        "furynet_dataplane_resyncs_total{reason=\"drift\",node=\"node-1\"} > 0",
        "furynet_agent_in_sync == 1",
        "furynet_ipam_addresses_in_use > 0",
        "furynet_endpoints_active > 0",
        "rate(furynet_dataplane_applies_total[1m]) >= 0",
    ];
    loop {
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|q| query(q).is_empty())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no data for {missing:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // The compatibility counters are stored under Calico's exact names.
    assert!(!query("felix_log_errors").is_empty());
    assert!(query("felix_iptables_restore_errors_total").is_empty());
    assert_eq!(
        query("up{job=\"furynet-agent\"} == 1").len(),
        2,
        "both agents scraped"
    );
    assert_eq!(
        query("up{job=\"furynet-fanout\"} == 1").len(),
        2,
        "both fan-out servers scraped"
    );

    // Every alert expression evaluates (firing or not), the rules are loaded and healthy, and
    // every metric an alert reads has series (agents' and fan-out servers').
    let rules = get("/api/v1/rules");
    let mut alerts = 0;
    let mut unread = Vec::new();
    for g in rules["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "{r}");
            let q = r["query"].as_str().unwrap();
            query(q);
            alerts += 1;
            for token in q.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
                if (token.starts_with("furynet_")
                    || token.starts_with("felix_")
                    || token.starts_with("typha_"))
                    && query(token).is_empty()
                {
                    unread.push(format!("{}: {token}", r["name"]));
                }
            }
        }
    }
    assert!(alerts >= 16, "{alerts} rules loaded");
    assert!(
        unread.is_empty(),
        "alert metrics without series: {unread:?}"
    );

    // `lab status` shows each agent's key metrics.
    let st: serde_json::Value =
        serde_json::from_str(&ok(&["lab", "status", "-o", "json"])).unwrap();
    for n in st["nodes"].as_array().unwrap() {
        assert!(n["metrics"]["applies"].as_f64().unwrap() > 0.0, "{n}");
    }
    assert!(
        st["nodes"][1]["metrics"]["failures"].as_f64().unwrap() > 0.0,
        "{st}"
    );

    // Every panel of every dashboard returns data, the fan-out dashboard's included.
    let mut panels = Vec::new();
    for f in std::fs::read_dir(root().join("deploy/monitoring/dashboards")).unwrap() {
        let path = f.unwrap().path();
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        panel_exprs(&d, &mut exprs);
        assert!(!exprs.is_empty(), "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        panels.extend(exprs.into_iter().map(|(t, e)| (name.clone(), t, e)));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let empty: Vec<String> = panels
            .iter()
            .filter(|(_, _, e)| query(&substitute(e)).is_empty())
            .map(|(f, t, e)| format!("{f}: {t}: {e}"))
            .collect();
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}
