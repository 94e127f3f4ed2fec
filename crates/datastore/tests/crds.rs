#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fails when the checked-in CRD YAML in deploy/crds is stale.

use std::path::Path;

#[test]
fn checked_in_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let files = furynet_datastore::kubernetes::crds::crds().unwrap();
    assert_eq!(files.len(), 6, "five CRDs and a kustomization");
    for (name, yaml) in files {
        let path = dir.join(&name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is missing or stale; regenerate with \
             `cargo run -p furynet-datastore --example gen-crds -- deploy/crds`",
            path.display()
        );
    }
}

#[test]
fn crds_are_cluster_scoped_in_our_group() {
    for (name, yaml) in furynet_datastore::kubernetes::crds::crds().unwrap() {
        if name == "kustomization.yaml" {
            continue;
        }
        assert!(name.ends_with(".crd.furynet.io.yaml"), "{name}");
        assert!(yaml.contains("scope: Cluster"), "{name}");
        assert!(
            yaml.contains("x-kubernetes-preserve-unknown-fields") || name.starts_with("ippools"),
            "{name}"
        );
    }
}
