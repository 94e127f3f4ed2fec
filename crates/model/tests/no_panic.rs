//! Nothing panics on any input: arbitrary text, arbitrary JSON trees, and JSON trees shaped like
//! Kubernetes objects (known kinds and field names, random values) fed to `load_str`.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use furynet_model::{load_str, Severity};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the decoders look at, so random trees reach deep into them.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "generateName",
    "ownerReferences",
    "uid",
    "spec",
    "status",
    "items",
    "podSelector",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "policyTypes",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "ipBlock",
    "cidr",
    "except",
    "containers",
    "initContainers",
    "restartPolicy",
    "containerPort",
    "hostNetwork",
    "nodeName",
    "nodeSelector",
    "podIP",
    "podIPs",
    "ip",
    "phase",
    "addresses",
    "type",
    "address",
    "podCIDR",
    "podCIDRs",
    "selector",
    "clusterIP",
    "clusterIPs",
    "targetPort",
    "replicas",
    "template",
    "parallelism",
    "completions",
    "completionMode",
    "manualSelector",
    "<<",
];

const KINDS: &[&str] = &[
    "Pod",
    "Namespace",
    "Node",
    "Service",
    "NetworkPolicy",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "List",
    "PodList",
    "NetworkPolicyList",
    "ConfigMap",
    "",
];

const API_VERSIONS: &[&str] = &["v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "x/v9"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-3i64..70000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "",
            "TCP",
            "UDP",
            "sctp",
            "In",
            "Exists",
            "NotIn",
            "Ingress",
            "Egress",
            "http",
            "80",
            "10.0.0.0/8",
            "10.0.1.0/24",
            "fd00::/64",
            "None",
            "Always",
            "Indexed",
            "Succeeded",
            "InternalIP",
            "10.0.0.1",
            "a b",
            "-x-",
            "app",
            "web",
            "Deployment",
            "ReplicaSet",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..6).prop_map(
                |kvs| Value::Object(kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
            prop::collection::vec((".{0,6}", inner), 0..3)
                .prop_map(|kvs| Value::Object(kvs.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(KINDS),
        prop::sample::select(API_VERSIONS),
        tree(),
        tree(),
        tree(),
        prop::collection::vec(tree(), 0..3),
    )
        .prop_map(|(kind, av, metadata, spec, status, items)| {
            let mut m = Map::new();
            m.insert("kind".into(), kind.into());
            m.insert("apiVersion".into(), av.into());
            m.insert("metadata".into(), metadata);
            m.insert("spec".into(), spec);
            m.insert("status".into(), status);
            if kind.ends_with("List") {
                m.insert("items".into(), Value::Array(items));
            }
            Value::Object(m)
        })
}

/// Valid objects of every kind, with most fields set, to mutate.
const SEEDS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x, labels: {a: b}}
spec:
  podSelector: {matchLabels: {app: web}, matchExpressions: [{key: env, operator: In, values: [prod]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: c}}
      namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}
    ports: [{port: 80}, {port: http, protocol: UDP}, {port: 1000, endPort: 2000}]
  egress:
  - to: [{namespaceSelector: {}}]
    ports: [{protocol: SCTP}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-abc-x
  namespace: x
  labels: {app: web, pod-template-hash: abc}
  ownerReferences: [{kind: ReplicaSet, name: web-abc}]
spec:
  nodeName: n1
  hostNetwork: false
  initContainers: [{name: s, restartPolicy: Always, ports: [{containerPort: 15000, name: admin}]}]
  containers: [{name: c, ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP}]}]
status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {role: w}}
spec: {podCIDR: 10.244.0.0/24, podCIDRs: [10.244.0.0/24]}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec:
  selector: {app: web}
  clusterIPs: [10.96.0.1]
  ports: [{name: http, port: 80, targetPort: http}, {name: b, port: 81, targetPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x, uid: u}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {nodeSelector: {role: w}, containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: x}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {hostNetwork: true, nodeSelector: {role: w}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: pi, namespace: x}
spec: {parallelism: 2, completions: 2, completionMode: Indexed, template: {metadata: {labels: {a: b}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: x}
spec: {replicas: 2, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}}}
"#;

fn seeds() -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(SEEDS)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// Replaces (or, with `None`, removes) the node reached by following `path` (each step picks
/// a child by index modulo the number of children).
fn mutate(v: &mut Value, path: &[usize], replacement: Option<Value>) {
    let Some((&step, rest)) = path.split_first() else {
        if let Some(r) = replacement {
            *v = r;
        }
        return;
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            let Some(k) = m.keys().nth(step % m.len()).cloned() else {
                return;
            };
            if rest.is_empty() && replacement.is_none() {
                m.remove(&k);
            } else if let Some(child) = m.get_mut(&k) {
                mutate(child, rest, replacement);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = step % a.len();
            if rest.is_empty() && replacement.is_none() {
                a.remove(i);
            } else {
                mutate(&mut a[i], rest, replacement);
            }
        }
        _ => {
            if let Some(r) = replacement {
                *v = r;
            }
        }
    }
}

fn mutated_seeds() -> impl Strategy<Value = Vec<Value>> {
    let mutation = (
        prop::collection::vec(any::<usize>(), 2..10),
        prop::option::weighted(0.7, tree()),
    );
    prop::collection::vec(
        (any::<usize>(), prop::collection::vec(mutation, 1..4)),
        1..4,
    )
    .prop_map(|picks| {
        let all = seeds();
        picks
            .into_iter()
            .map(|(i, muts)| {
                let mut v = all[i % all.len()].clone();
                for (path, replacement) in muts {
                    mutate(&mut v, &path, replacement);
                }
                v
            })
            .collect()
    })
}

fn check(file: &str, text: &str) {
    let l = load_str(file, text);
    // Every error names the file, and every pod is in a namespace the cluster has.
    for d in &l.diagnostics {
        assert_eq!(d.file, file);
        if d.severity == Severity::Error {
            assert!(!d.message.is_empty());
        }
    }
    for p in &l.cluster.pods {
        assert!(l.cluster.namespace(&p.namespace).is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check("fuzz.yaml", &text);
        check("fuzz.json", &text);
    }

    #[test]
    fn yamlish_text_never_panics(
        lines in prop::collection::vec(
            r"( {0,4})(- )?([a-zA-Z<]{1,8}: ?)?(\[|\{|\}|\]|&a|\*a|!t|---|\.\.\.|%YAML 1\.2|'|\x22|[a-z0-9 ,:]{0,10}){0,3}",
            0..20,
        )
    ) {
        check("fuzz.yaml", &lines.join("\n"));
    }

    #[test]
    fn arbitrary_json_trees_never_panic(v in tree()) {
        let json = serde_json::to_string(&v).unwrap();
        check("fuzz.json", &json);
        let yaml = serde_yaml_ng::to_string(&v).unwrap();
        check("fuzz.yaml", &yaml);
    }

    #[test]
    fn kubernetes_shaped_objects_never_panic(objs in prop::collection::vec(object(), 1..4)) {
        let docs: Vec<String> = objs
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect();
        check("fuzz.yaml", &docs.join("---\n"));
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objs});
        check("fuzz.json", &list.to_string());
    }

    #[test]
    fn mutated_valid_objects_never_panic(objs in mutated_seeds()) {
        let docs: Vec<String> = objs
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect();
        check("fuzz.yaml", &docs.join("---\n"));
    }
}

#[test]
fn seeds_are_valid_and_mutations_reach_deep_fields() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let text: Vec<String> = seeds()
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap())
        .collect();
    let l = load_str("seeds.yaml", &text.join("---\n"));
    assert!(
        l.diagnostics.iter().all(|d| d.severity == Severity::Note),
        "{:#?}",
        l.diagnostics
    );
    assert_eq!(l.cluster.policies.len(), 1);
    // The generator produces errors deep inside objects, not just at the top.
    let mut runner = TestRunner::deterministic();
    let mut deep = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let objs = mutated_seeds().new_tree(&mut runner).unwrap().current();
        let text: Vec<String> = objs
            .iter()
            .map(|o| serde_yaml_ng::to_string(o).unwrap())
            .collect();
        let l = load_str("f.yaml", &text.join("---\n"));
        for f in l.diagnostics.iter().filter_map(|d| d.field.as_deref()) {
            if f.matches(['.', '[']).count() >= 3 {
                deep.insert(f.to_string());
            }
        }
    }
    let deep = deep.len();
    assert!(deep >= 15, "only {deep} distinct deep error fields");
}
