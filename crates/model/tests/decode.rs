//! Decoding: documents, Lists, files, directories, kinds, and the objects' fields.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use common::*;
use furynet_model::{load_paths, load_str, Protocol, Severity, NAMESPACE_NAME_LABEL};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

#[test]
fn multi_document_yaml_with_comments_and_empty_documents() {
    let l = load(
        "# a comment before the first marker\n\
         ---\n\
         apiVersion: v1\n\
         kind: Namespace\n\
         metadata: {name: shop}\n\
         ---\n\
         # an empty document\n\
         ---\n\
         apiVersion: v1\n\
         kind: Pod\n\
         metadata: {name: web, namespace: shop}\n\
         ---\n\
         ---\n\
         apiVersion: v1\n\
         kind: Pod\n\
         metadata: {name: Bad, namespace: shop}\n\
         ...\n",
    );
    assert_eq!(l.cluster.namespaces.len(), 1);
    assert_eq!(pod_names(&l), vec!["shop/web"]);
    // Empty documents are ignored but still counted, as YAML numbers documents.
    let e = error_at(&l, "metadata.name");
    assert_eq!(e.document, 4);
    assert_eq!(e.file, "test.yaml");
    assert_eq!(e.item, None);
    assert_eq!(e.kind.as_deref(), Some("Pod"));
    assert_eq!(e.namespace.as_deref(), Some("shop"));
    assert_eq!(e.name.as_deref(), Some("Bad"));
}

#[test]
fn document_without_leading_marker() {
    let l = load("kind: Namespace\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Namespace\napiVersion: v1\nmetadata: {name: b}\n");
    let names: Vec<&str> = l
        .cluster
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert!(l.diagnostics.is_empty());
}

#[test]
fn empty_input_loads_nothing() {
    for text in ["", "\n\n", "# only a comment\n", "---\n", "---\n---\n...\n"] {
        let l = load(text);
        assert!(l.diagnostics.is_empty(), "{text:?}: {:?}", l.diagnostics);
        assert_eq!(l.cluster, Default::default());
    }
}

#[test]
fn yaml_syntax_error_names_document_and_line_and_the_rest_loads() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata:\n  name: x\n   bad: [\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
    let l = load(text);
    let errs = errors(&l);
    assert_eq!(errs.len(), 1, "{:#?}", l.diagnostics);
    assert_eq!(errs[0].document, 1);
    assert_eq!(errs[0].kind, None);
    assert!(
        errs[0].message.starts_with("YAML syntax error"),
        "{}",
        errs[0].message
    );
    assert!(errs[0].message.contains("line 8"), "{}", errs[0].message);
    let names: Vec<&str> = l
        .cluster
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn kubectl_list_and_typed_lists_put_item_index_in_diagnostics() {
    let l = load(
        r#"
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x}
- apiVersion: v1
  kind: Pod
  metadata: {name: b_bad, namespace: x}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c, namespace: x}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {name: deny, namespace: x}
  spec: {podSelector: {}}
---
apiVersion: v1
kind: PodList
items: []
"#,
    );
    assert_eq!(pod_names(&l), vec!["x/a"]);
    let e = error_at(&l, "metadata.name");
    assert_eq!((e.document, e.item), (0, Some(1)));
    let n = notes(&l);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].message, "skipped unknown kind ConfigMap");
    assert_eq!((n[0].document, n[0].item), (0, Some(2)));
    // Typed-list items without kind/apiVersion (as the API server returns them) take the
    // list's.
    assert_eq!(l.cluster.policies.len(), 1);
    assert_eq!(l.cluster.policies[0].key(), "x/deny");
}

#[test]
fn list_with_bad_items_field() {
    let l = load("apiVersion: v1\nkind: List\nitems: {a: 1}\n");
    let e = error_at(&l, "items");
    assert!(e.message.contains("expected array"), "{}", e.message);
    let l = load("apiVersion: v1\nkind: List\nitems: [1, null, [2]]\n");
    let errs = errors(&l);
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0].item, Some(0));
    assert_eq!(errs[1].item, Some(2));
}

#[test]
fn json_files_and_json_lists() {
    let l = load_str(
        "pods.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "a", "namespace": "x", "labels": {"app": "a"}},
             "status": {"podIP": "10.0.0.1"}}]}"#,
    );
    assert_clean(&l);
    assert_eq!(
        pod(&l, "x", "a").ips,
        vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let l = load_str("broken.json", r#"{"kind": "Pod", "#);
    let e = &errors(&l)[0];
    assert_eq!(e.file, "broken.json");
    assert!(e.message.starts_with("JSON syntax error"), "{}", e.message);
}

#[test]
fn directories_are_walked_sorted_and_only_manifests_are_read() {
    let dir = data("tree");
    let l = load_paths(&[&dir]);
    // Namespace `shop` from the first file, with its label and the automatic one.
    let shop = l.cluster.namespace("shop").unwrap();
    assert_eq!(
        shop.labels.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(
        shop.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
        Some("shop")
    );
    // policy.json sorts before web.yml; notes.txt is ignored.
    assert_eq!(l.cluster.policies.len(), 1);
    assert_eq!(pod_names(&l), vec!["shop/web", "shop/fine"]);
    assert_eq!(
        pod(&l, "shop", "web").named_port("http", Protocol::Tcp),
        Some(80)
    );
    // The broken pod in 30-broken.yaml is reported with its file, the other one still loads.
    let e = error_at(&l, "metadata.labels");
    assert!(e.file.ends_with("30-broken.yaml"), "{}", e.file);
    assert_eq!(e.document, 0);
    assert_eq!(e.namespace.as_deref(), Some("default"));
    assert_eq!(errors(&l).len(), 1);
    // Same result whatever way the paths are given.
    let files = [
        data("tree/10-namespaces.yaml"),
        data("tree/20-apps/policy.json"),
        data("tree/20-apps/web.yml"),
        data("tree/30-broken.yaml"),
    ];
    let again = load_paths(&files);
    assert_eq!(again.cluster, l.cluster);
}

#[test]
fn unreadable_paths_are_errors_naming_the_file() {
    let missing = data("does-not-exist.yaml");
    let l = load_paths(&[missing.clone(), data("tree/10-namespaces.yaml")]);
    let errs = errors(&l);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].file, missing.display().to_string());
    assert!(
        errs[0].message.contains("No such file or directory"),
        "{}",
        errs[0].message
    );
    // Other paths still load.
    assert!(l.cluster.namespace("shop").is_some());
}

#[test]
fn unknown_kinds_are_notes_and_wrong_api_versions_are_skipped() {
    let l = load(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
---
apiVersion: extensions/v1beta1
kind: NetworkPolicy
metadata: {name: old}
spec: {podSelector: {}}
---
apiVersion: apps/v1beta2
kind: Deployment
metadata: {name: old}
"#,
    );
    assert!(errors(&l).is_empty());
    let n = notes(&l);
    assert_eq!(n.len(), 3);
    assert_eq!(n[0].message, "skipped unknown kind ConfigMap");
    assert_eq!(n[0].name.as_deref(), Some("cfg"));
    assert_eq!(
        n[1].message,
        "skipped NetworkPolicy with apiVersion extensions/v1beta1: furynet reads NetworkPolicy from networking.k8s.io/v1"
    );
    assert_eq!(n[1].document, 1);
    assert!(l.cluster.policies.is_empty());
    assert!(l.cluster.pods.is_empty());
}

#[test]
fn objects_without_kind_or_not_objects_are_errors() {
    let l = load(
        "apiVersion: v1\nmetadata: {name: x}\n---\njust a string\n---\n[1, 2]\n---\nkind: 5\n",
    );
    let errs = errors(&l);
    assert_eq!(errs.len(), 4, "{:#?}", l.diagnostics);
    assert_eq!(errs[0].field.as_deref(), Some("kind"));
    assert_eq!(errs[0].message, "Required value: Object 'Kind' is missing");
    assert_eq!(errs[0].name.as_deref(), Some("x"));
    assert!(
        errs[1].message.contains("got string"),
        "{}",
        errs[1].message
    );
    assert!(errs[2].message.contains("got array"), "{}", errs[2].message);
    assert_eq!(errs[3].field.as_deref(), Some("kind"));
}

#[test]
fn namespaced_objects_default_to_default_namespace() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ''}\n");
    assert_clean(&l);
    assert_eq!(l.cluster.pods[0].namespace, "default");
    assert_eq!(l.cluster.policies[0].namespace, "default");
    // ensure_namespaces added it.
    assert!(l.cluster.namespace("default").is_some());
}

#[test]
fn duplicates_keep_the_first_and_report_already_exists() {
    let l = load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {v: first}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {v: second}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: other}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
    );
    let errs = errors(&l);
    assert_eq!(errs.len(), 2, "{:#?}", l.diagnostics);
    assert_eq!(errs[0].document, 5);
    assert!(
        errs[0]
            .message
            .starts_with("namespaces \"n\" already exists"),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[1].document, 1);
    assert_eq!(
        errs[1].message,
        "pods \"a\" already exists (first defined in test.yaml document 0)"
    );
    assert_eq!(pod(&l, "default", "a").labels["v"], "first");
    assert_eq!(l.cluster.pods.len(), 2);
    assert_eq!(
        l.cluster.services.len(),
        1,
        "a Service may share a Pod's name"
    );
}

#[test]
fn invalid_first_copy_does_not_block_a_valid_second() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {'-x': y}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n");
    assert_eq!(error_fields(&l), vec!["metadata.labels"]);
    assert_eq!(l.cluster.pods.len(), 1);
}

#[test]
fn wrong_types_are_errors_with_paths_and_never_panics() {
    let l = load(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: three
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: {name: not-a-list}
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: [a, b]}
spec: "nope"
---
apiVersion: v1
kind: Pod
metadata: {name: q, labels: {version: 1.0}}
spec: {hostNetwork: "yes", containers: [{ports: [{containerPort: "80"}]}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: still-loads}
"#,
    );
    assert_eq!(
        error_fields(&l),
        vec![
            "spec.template.spec.containers",
            "spec.replicas",
            "metadata.labels",
            "spec",
            "metadata.labels[version]",
            "spec.containers[0].ports[0].containerPort",
            "spec.hostNetwork",
        ]
    );
    assert_eq!(
        error_at(&l, "spec.replicas").message,
        "Invalid type: expected integer (int32), got string \"three\""
    );
    assert!(l.cluster.pods.is_empty());
    assert!(l.cluster.namespace("still-loads").is_some());
}

#[test]
fn yaml_anchors_and_merge_keys() {
    let l = load(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: a
  labels: &common {app: shop, tier: fe}
---
apiVersion: v1
kind: Pod
metadata:
  name: b
  labels:
    <<: {app: shop, tier: fe}
    tier: be
"#,
    );
    assert_clean(&l);
    assert_eq!(pod(&l, "default", "a").labels["tier"], "fe");
    assert_eq!(pod(&l, "default", "b").labels["tier"], "be");
    assert_eq!(pod(&l, "default", "b").labels["app"], "shop");
}

#[test]
fn generate_name_is_supported_deterministically() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {generateName: job-}\n---\napiVersion: v1\nkind: Pod\nmetadata: {generateName: job-}\n";
    let l = load(text);
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 2);
    assert!(l
        .cluster
        .pods
        .iter()
        .all(|p| p.name.starts_with("job-") && p.name.len() == 9));
    assert_ne!(l.cluster.pods[0].name, l.cluster.pods[1].name);
    assert_eq!(pod_names(&load(text)), pod_names(&l));
}

#[test]
fn diagnostics_display_is_readable() {
    let l = load("apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{ports: [{containerPort: 0}]}]}\n");
    let d = errors(&l)[0];
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(
        d.to_string(),
        "error: test.yaml document 0: Pod x/a: spec.containers[0].ports[0].containerPort: Required value"
    );
}

/// An object already parsed (from the Kubernetes API) decodes exactly as its text does.
#[test]
fn load_value_decodes_like_load_str() {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
        "status": {"podIP": "10.0.0.5"}
    });
    let from_value = furynet_model::load_value("api", &v);
    let from_text = furynet_model::load_str("api", &v.to_string());
    assert_eq!(from_value.cluster.pods, from_text.cluster.pods);
    assert_eq!(from_value.cluster.pods.len(), 1);
    let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 70000}]}]}});
    assert!(furynet_model::load_value("api", &bad).has_errors());
}
