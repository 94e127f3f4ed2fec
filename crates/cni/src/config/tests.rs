//! Tests of `config`.
use super::*;
use serde_json::json;

fn full(v: Value) -> Result<NetConf, CniError> {
    let m = decode(v.to_string().as_bytes())?;
    let ver = version_of(&m)?;
    parse(&m, ver)
}

fn contract() -> Value {
    json!({"cniVersion":"1.1.0","name":"k8s-pod-network","type":"furynet-cni",
           "datastore":{"type":"embedded","path":"/var/lib/furynet"},"nodeName":"node-1",
           "ipam":{"pools":["10.244.0.0/16","fd00:10:244::/56"],"blockSize":26},"mtu":1450})
}

#[test]
fn the_contract_example_parses() {
    let c = full(contract()).unwrap();
    assert_eq!(c.name, "k8s-pod-network");
    assert_eq!(c.cni_version, SpecVersion::V1_1_0);
    assert_eq!(
        c.datastore,
        DatastoreConf::Embedded {
            path: "/var/lib/furynet".into()
        }
    );
    assert_eq!(c.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        c.pools,
        vec![
            PoolConf {
                cidr: "10.244.0.0/16".parse().unwrap(),
                block_prefix: 26
            },
            PoolConf {
                cidr: "fd00:10:244::/56".parse().unwrap(),
                block_prefix: 122
            }
        ]
    );
    assert_eq!(c.mtu, Some(1450));
    assert!(c.has_v6());
    assert!(c.unknown_keys.is_empty());
    assert_eq!(c.log.level, "info");
}

#[test]
fn defaults_and_etcd() {
    let c = full(json!({"cniVersion":"0.4.0","name":"n","type":"furynet-cni",
        "datastore":{"type":"etcd","endpoints":["http://127.0.0.1:2379"]},
        "ipam":{"pools":["10.99.0.0/30"]},"runtimeConfig":{},"sommething":1}))
    .unwrap();
    assert_eq!(
        c.datastore,
        DatastoreConf::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()]
        }
    );
    assert_eq!(c.pools[0].block_prefix, 30, "tiny pool is a single block");
    assert_eq!(c.mtu, None);
    assert_eq!(c.teardown, Teardown::Background);
    assert_eq!(c.node_name, None);
    assert_eq!(c.unknown_keys, vec!["sommething".to_string()]);
    let c = full(
        json!({"cniVersion":"1.0.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},
        "teardown":"wait"}),
    )
    .unwrap();
    assert_eq!(c.teardown, Teardown::Wait);
    assert_eq!(
        c.datastore,
        DatastoreConf::Embedded {
            path: DEFAULT_DATASTORE_PATH.into()
        }
    );
}

#[test]
fn decode_and_version_errors() {
    assert_eq!(decode(b"{nope").unwrap_err().code, 6);
    assert_eq!(decode(b"[1]").unwrap_err().code, 6);
    assert_eq!(decode(b"").unwrap_err().code, 6);
    for v in [
        json!({"name":"n"}),
        json!({"cniVersion":"0.2.0"}),
        json!({"cniVersion":1}),
    ] {
        let m = decode(v.to_string().as_bytes()).unwrap();
        assert_eq!(version_of(&m).unwrap_err().code, 1, "{v}");
    }
}

#[test]
fn every_problem_is_reported_together() {
    let e = full(json!({"cniVersion":"1.1.0","name":"bad name!",
        "datastore":{"type":"embedded","path":"relative","extra":1},
        "ipam":{"pools":["10.244.0.1/16","10.0.0.0/8","10.244.0.0/24","fd00::/56","nope"],
                "blockSize":40,"blockSizeV6":48,"typo":1},
        "mtu":70000,"logLevel":"loud","dns":[],"teardown":"later"}))
    .unwrap_err();
    assert_eq!(e.code, 7);
    for needle in [
        "name \"bad name!\"",
        "datastore.path relative",
        "datastore.extra: unknown field",
        "10.244.0.1/16 has host bits set",
        "10.244.0.0/24 overlaps 10.0.0.0/8",
        "\"nope\" is not a CIDR",
        "ipam.blockSize: expected an integer 0-32",
        "ipam.blockSizeV6 48: blocks must fit inside pool fd00::/56",
        "ipam.typo: unknown field",
        "mtu: expected an integer 68-65535",
        "logLevel \"loud\"",
        "dns: expected an object",
        "teardown: expected \"background\" or \"wait\", found \"later\"",
    ] {
        assert!(
            e.details.contains(needle),
            "missing {needle:?} in {}",
            e.details
        );
    }
}

#[test]
fn more_invalid_configs() {
    let cases = [
        json!({"cniVersion":"1.1.0","name":"n"}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":[]}}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"type":"host-local","pools":["10.0.0.0/8"]}}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["fd00::/64"]},"mtu":1000}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},"datastore":{"type":"etcd","endpoints":["127.0.0.1:2379"]}}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},"datastore":{"type":"consul"}}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},"nodeName":""}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},"logFile":"rel.log"}),
        json!({"cniVersion":"1.1.0","name":"n","ipam":{"pools":["10.0.0.0/8"]},"cni.dev/valid-attachments":[{"containerID":"a"}]}),
    ];
    for c in cases {
        assert_eq!(full(c.clone()).unwrap_err().code, 7, "{c}");
    }
}

#[test]
fn gc_attachments_new_and_old_key() {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let mut v = contract();
        v[key] = json!([{"containerID":"c1","ifname":"eth0"}]);
        let c = full(v).unwrap();
        assert_eq!(
            c.valid_attachments,
            Some(vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
    }
    assert_eq!(full(contract()).unwrap().valid_attachments, None);
}

#[test]
fn kubernetes_datastore() {
    let c = full(json!({"cniVersion":"1.1.0","name":"n","type":"furynet-cni",
        "datastore":{"type":"kubernetes","kubeconfig":"/etc/cni/net.d/furynet-kubeconfig"},
        "ipam":{"pools":["10.99.0.0/16"]}}))
    .unwrap();
    assert_eq!(
        c.datastore,
        DatastoreConf::Kubernetes {
            kubeconfig: Some("/etc/cni/net.d/furynet-kubeconfig".into()),
            lease_namespace: None
        }
    );
    let e = full(json!({"cniVersion":"1.1.0","name":"n","type":"furynet-cni",
        "datastore":{"type":"kubernetes","kubeconfig":"relative","bogus":1},
        "ipam":{"pools":["10.99.0.0/16"]}}))
    .unwrap_err();
    let msg = format!("{e:?}");
    assert!(
        msg.contains("datastore.kubeconfig") && msg.contains("bogus"),
        "{msg}"
    );
}
