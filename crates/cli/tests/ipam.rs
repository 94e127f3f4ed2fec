//! `furynet ipam show | check | release` against a real embedded datastore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use furynet_datastore::ipam_store::IpamStore;
use furynet_datastore::{open, DatastoreConfig};
use furynet_ipam::records::BLOCKS_PREFIX;
use furynet_ipam::{AllocRequest, Ipam, PoolConfig, Store};

fn furynet(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_furynet"))
        .args(args)
        .arg("--datastore")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn show_check_release() {
    let dir = tempfile::tempdir().unwrap();
    let ds = open(&DatastoreConfig::Embedded {
        path: dir.path().to_path_buf(),
    })
    .unwrap();
    let ipam = Ipam::new(IpamStore(ds.clone()));
    let pools = [
        PoolConfig::with_block_prefix("10.244.0.0/16".parse().unwrap(), 26),
        PoolConfig::new("fd00:10:244::/56".parse().unwrap()),
    ];
    let mut v4 = Vec::new();
    for (i, node) in ["node-1", "node-1", "node-2"].iter().enumerate() {
        let req = AllocRequest::for_container(&format!("ctr{i}"), "eth0", node, &pools)
            .unwrap()
            .with_pod("shop", &format!("web-{i}"));
        let got = ipam.allocate(&req).unwrap();
        assert_eq!(got.len(), 2, "dual-stack: one address per family");
        v4.push(got.iter().find(|a| a.ip.is_ipv4()).unwrap().ip);
    }

    let (code, out, err) = furynet(dir.path(), &["ipam", "show", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allocations"].as_array().unwrap().len(), 6);
    assert!(v["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["pod"] == "web-2" && a["node"] == "node-2"));
    let blocks: usize = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["blocks"].as_array().unwrap().len())
        .sum();
    assert_eq!(blocks, 4, "one block per node per family");

    let (code, out, _) = furynet(dir.path(), &["ipam", "show", "-o", "wide"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("shop/web-0") && out.contains("node-2"),
        "{out}"
    );

    let (code, out, err) = furynet(dir.path(), &["ipam", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("consistent"), "{out}");

    // Corrupt the state on purpose: drop a handle record so its allocations leak.
    let handles = ds.list("ipam/handles/").unwrap().0;
    let victim = &handles[0];
    ds.delete(&victim.key, Some(victim.mod_revision)).unwrap();
    let (code, out, _) = furynet(dir.path(), &["ipam", "check", "-o", "json"]);
    assert_eq!(code, 1, "check exits 1 on problems: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        !report["leaked_allocations"].as_array().unwrap().is_empty(),
        "{out}"
    );

    // Release one address on purpose; releasing it again says it is not allocated.
    let ip = v4[2].to_string();
    let (code, out, err) = furynet(dir.path(), &["ipam", "release", &ip]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ip), "{out}");
    let (code, _, err) = furynet(dir.path(), &["ipam", "release", &ip]);
    assert_eq!(code, 1);
    assert!(err.contains("not allocated"), "{err}");
    let left = IpamStore(ds).list(BLOCKS_PREFIX).unwrap();
    assert!(!left.is_empty());
}

#[test]
fn unusable_datastore_is_an_error() {
    let (code, _, err) = furynet(
        std::path::Path::new("/proc/nonexistent/furynet"),
        &["ipam", "show"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("datastore"), "{err}");
}

/// The same commands on the kubernetes datastore (`--datastore kubernetes:KUBECONFIG`), against
/// the fake API server (a real HTTP server speaking the Kubernetes API; no live cluster here).
#[test]
fn show_and_check_on_the_kubernetes_datastore() {
    let api = furynet_fake_apiserver::FakeApiServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        furynet_datastore::kubernetes::crds::install(&client)
            .await
            .unwrap();
    });
    let config = DatastoreConfig::Kubernetes {
        kubeconfig: Some(kubeconfig.clone()),
        lease_namespace: None,
    };
    let ipam = Ipam::new(IpamStore(open(&config).unwrap()));
    let pools = [PoolConfig::with_block_prefix(
        "10.244.0.0/16".parse().unwrap(),
        26,
    )];
    for (i, node) in ["node-1", "node-2"].iter().enumerate() {
        let req = AllocRequest::for_container(&format!("ctr{i}"), "eth0", node, &pools)
            .unwrap()
            .with_pod("shop", &format!("web-{i}"));
        ipam.allocate(&req).unwrap();
    }
    let arg = format!("kubernetes:{}", kubeconfig.display());
    let (code, out, err) = furynet(std::path::Path::new(&arg), &["ipam", "show", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allocations"].as_array().unwrap().len(), 2);
    let (code, _, err) = furynet(std::path::Path::new(&arg), &["ipam", "check"]);
    assert_eq!(code, 0, "{err}");
    // `--datastore kubernetes` infers the config as kubectl does: here from $KUBECONFIG.
    let out = Command::new(env!("CARGO_BIN_EXE_furynet"))
        .args(["ipam", "show", "-o", "json", "--datastore", "kubernetes"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["allocations"].as_array().unwrap().len(), 2);
    // Without the CRDs the error says how to install them.
    let bare = furynet_fake_apiserver::FakeApiServer::start().unwrap();
    let bare_kc = dir.path().join("bare");
    bare.write_kubeconfig(&bare_kc).unwrap();
    let arg = format!("kubernetes:{}", bare_kc.display());
    let (code, _, err) = furynet(std::path::Path::new(&arg), &["ipam", "show"]);
    assert_ne!(code, 0);
    assert!(err.contains("deploy/crds"), "{err}");
}
