//! Behaviour of the `furynet analyze` command line: contract, filters, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_furynet"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn furynet");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(args: &[&str]) -> Vec<serde_json::Value> {
    let (code, out, err) = run(args, None);
    assert_eq!(code, 0, "stderr: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad json ({e}): {out}"))
}

fn verdict(entries: &[serde_json::Value], src: &str, dst: &str, port: u64, proto: &str) -> bool {
    entries
        .iter()
        .find(|e| e["src"] == src && e["dst"] == dst && e["port"] == port && e["protocol"] == proto)
        .unwrap_or_else(|| panic!("no entry {src} -> {dst} {port}/{proto}"))["allowed"]
        .as_bool()
        .unwrap()
}

#[test]
fn json_contract_shape() {
    let entries = json(&["analyze", "examples/analyze/named-ports.yaml", "-o", "json"]);
    // 3 pods; web-a and web-b declare 2 ports each, client none: 2 destinations x 2 sources x 2 ports.
    assert_eq!(entries.len(), 8);
    for e in &entries {
        let obj = e.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "{e}");
        for k in ["src", "dst", "port", "protocol", "allowed"] {
            assert!(obj.contains_key(k), "{e} lacks {k}");
        }
        assert_ne!(e["src"], e["dst"], "pairs are of distinct pods");
    }
    assert!(verdict(&entries, "shop/client", "shop/web-a", 80, "TCP"));
    assert!(!verdict(&entries, "shop/client", "shop/web-a", 9090, "TCP"));
    assert!(verdict(&entries, "shop/client", "shop/web-b", 8080, "TCP"));
    assert!(!verdict(&entries, "shop/web-a", "shop/web-b", 9090, "TCP"));
}

#[test]
fn examples_verdicts() {
    let e = json(&[
        "analyze",
        "examples/analyze/default-deny.yaml",
        "-o",
        "json",
    ]);
    assert!(!verdict(&e, "dev/tester", "prod/web", 80, "TCP"));
    assert!(!verdict(&e, "prod/api", "prod/web", 80, "TCP"));
    assert!(verdict(&e, "prod/web", "dev/tester", 80, "TCP"));

    let e = json(&[
        "analyze",
        "examples/analyze/allow-from-namespace.yaml",
        "-o",
        "json",
    ]);
    assert!(verdict(&e, "backend/api", "data/db", 5432, "TCP"));
    assert!(verdict(&e, "data/admin", "data/db", 5432, "TCP"));
    assert!(!verdict(&e, "frontend/web", "data/db", 5432, "TCP"));

    let e = json(&[
        "analyze",
        "examples/analyze/egress-dns-only.yaml",
        "-o",
        "json",
    ]);
    assert!(verdict(&e, "locked/app", "kube-system/coredns", 53, "UDP"));
    assert!(verdict(&e, "locked/app", "kube-system/coredns", 53, "TCP"));
    assert!(!verdict(
        &e,
        "locked/app",
        "kube-system/coredns",
        9153,
        "TCP"
    ));
    assert!(!verdict(&e, "locked/app", "locked/worker", 8080, "TCP"));
    assert!(verdict(
        &e,
        "kube-system/coredns",
        "locked/app",
        8080,
        "TCP"
    ));

    let e = json(&[
        "analyze",
        "examples/analyze/ipblock-except.yaml",
        "-o",
        "json",
    ]);
    assert!(verdict(&e, "net/inside", "net/api", 443, "TCP"));
    assert!(!verdict(&e, "net/excepted", "net/api", 443, "TCP"));
    assert!(!verdict(&e, "net/outside", "net/api", 443, "TCP"));
    assert!(
        !verdict(&e, "net/pending", "net/api", 443, "TCP"),
        "no IP, no ipBlock match"
    );

    let e = json(&[
        "analyze",
        "examples/analyze/endport-range.yaml",
        "-o",
        "json",
    ]);
    let pods: std::collections::BTreeSet<String> = e
        .iter()
        .map(|x| x["src"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        pods.len(),
        2,
        "Deployment with replicas: 2 expands to 2 pods: {pods:?}"
    );
    let (a, b) = (pods.iter().next().unwrap(), pods.iter().nth(1).unwrap());
    for (port, proto, want) in [
        (9999, "UDP", false),
        (10000, "UDP", true),
        (10010, "UDP", true),
        (10011, "UDP", false),
        (8000, "TCP", true),
        (8001, "TCP", false),
    ] {
        assert_eq!(verdict(&e, a, b, port, proto), want, "{port}/{proto}");
    }
}

#[test]
fn filters_select_pairs_and_ports() {
    let all = json(&["analyze", "examples/demo", "-o", "json"]);
    let some = json(&[
        "analyze",
        "examples/demo",
        "-o",
        "json",
        "--from",
        "web",
        "--to",
        "api",
        "--port",
        "8080/TCP",
    ]);
    assert!(!some.is_empty());
    for e in &some {
        assert!(e["src"].as_str().unwrap().starts_with("web/"));
        assert!(e["dst"].as_str().unwrap().starts_with("api/"));
        assert_eq!(e["port"], 8080);
        assert!(
            all.contains(e),
            "filtered entry must equal the full matrix's: {e}"
        );
    }
}

#[test]
fn stdin_and_yaml_output() {
    let text = std::fs::read_to_string(root().join("examples/analyze/named-ports.yaml")).unwrap();
    let (code, out, err) = run(&["analyze", "-", "-o", "yaml"], Some(&text));
    assert_eq!(code, 0, "{err}");
    let v: Vec<serde_json::Value> = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(v.len(), 8);
}

#[test]
fn exit_codes() {
    // Usage errors: 2.
    assert_eq!(run(&["analyze"], None).0, 2);
    assert_eq!(run(&["analyze", "x.yaml", "-o", "xml"], None).0, 2);
    assert_eq!(run(&["analyze", "x.yaml", "--explain"], None).0, 2);
    assert_eq!(run(&["analyze", "x.yaml", "--port", "99999"], None).0, 2);
    // Nothing readable: 1.
    let (code, _, err) = run(&["analyze", "/nonexistent/furynet.yaml"], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/nonexistent/furynet.yaml"),
        "names the file: {err}"
    );
    // Unknown pod: 1.
    let (code, _, err) = run(&["analyze", "examples/demo", "--from", "web/nope"], None);
    assert_eq!(code, 1);
    assert!(err.contains("web/nope"), "{err}");
}

const BAD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, endPort: 70}]
"#;

#[test]
fn invalid_object_is_reported_and_rest_analysed() {
    let (code, out, err) = run(&["analyze", "-", "-o", "json"], Some(BAD));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("NetworkPolicy x/broken"),
        "names the object: {err}"
    );
    assert!(
        err.contains("spec.ingress[0].ports[0].endPort"),
        "names the field: {err}"
    );
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // The broken policy is left out, so nothing is isolated.
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|e| e["allowed"] == true));
    // --strict refuses.
    let (code, out, _) = run(&["analyze", "-", "-o", "json", "--strict"], Some(BAD));
    assert_eq!(code, 1);
    assert!(out.is_empty());
}
