//! Workload expansion: pods named and labelled as Kubernetes' controllers would, and no double
//! counting when the input already holds the workload's pods.
// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use furynet_model::workload::naming::SAFE_ALPHABET;
use furynet_model::{load_str, ContainerPort, Protocol};

fn is_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| SAFE_ALPHABET.contains(&b))
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, tier: fe}
    spec:
      nodeName: worker-1
      containers:
      - name: nginx
        ports: [{name: http, containerPort: 80}, {containerPort: 9090, protocol: UDP}]
"#;

#[test]
fn deployment_pods_are_named_and_labelled_like_kubernetes() {
    let l = load(DEPLOYMENT);
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 3);
    let hash = l.cluster.pods[0].labels["pod-template-hash"].clone();
    assert!(is_safe(&hash) && hash.len() <= 10, "{hash}");
    let mut names = std::collections::HashSet::new();
    for p in &l.cluster.pods {
        assert_eq!(p.namespace, "shop");
        let rest = p.name.strip_prefix(&format!("web-{hash}-")).unwrap();
        assert_eq!(rest.len(), 5);
        assert!(is_safe(rest));
        assert!(names.insert(p.name.clone()));
        assert_eq!(p.labels.len(), 3);
        assert_eq!(p.labels["app"], "web");
        assert_eq!(p.labels["tier"], "fe");
        assert_eq!(p.labels["pod-template-hash"], hash);
        assert!(p.ips.is_empty());
        assert_eq!(p.node_name.as_deref(), Some("worker-1"));
        assert!(!p.host_network);
        assert_eq!(
            p.ports,
            vec![
                ContainerPort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Protocol::Tcp
                },
                ContainerPort {
                    name: None,
                    port: 9090,
                    protocol: Protocol::Udp
                },
            ]
        );
    }
    assert!(l.cluster.namespace("shop").is_some());
}

#[test]
fn expansion_is_deterministic_and_follows_the_template() {
    let a = load(DEPLOYMENT);
    let b = load(DEPLOYMENT);
    assert_eq!(pod_names(&a), pod_names(&b));
    // Key order in the template does not change the hash...
    let reordered = DEPLOYMENT.replace(
        "labels: {app: web, tier: fe}",
        "labels: {tier: fe, app: web}",
    );
    assert_eq!(pod_names(&load(&reordered)), pod_names(&a));
    // ...a different template does.
    let changed = DEPLOYMENT.replace("containerPort: 80}", "containerPort: 8080}");
    let c = load(&changed);
    assert_ne!(
        c.cluster.pods[0].labels["pod-template-hash"],
        a.cluster.pods[0].labels["pod-template-hash"]
    );
    // Another file name or document position does not change names either.
    let moved = load_str(
        "other.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{DEPLOYMENT}"),
    );
    assert_eq!(pod_names(&moved), pod_names(&a));
}

#[test]
fn replicas_default_to_one_and_zero_means_none() {
    let one = DEPLOYMENT.replace("  replicas: 3\n", "");
    assert_eq!(load(&one).cluster.pods.len(), 1);
    let zero = DEPLOYMENT.replace("replicas: 3", "replicas: 0");
    let l = load(&zero);
    assert_clean(&l);
    assert!(l.cluster.pods.is_empty());
}

#[test]
fn replicaset_pods() {
    let l = load("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: front}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: f}}\n  template:\n    metadata: {labels: {app: f}}\n");
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 2);
    for p in &l.cluster.pods {
        let rest = p.name.strip_prefix("front-").unwrap();
        assert!(rest.len() == 5 && is_safe(rest), "{}", p.name);
        assert_eq!(p.labels.len(), 1, "a bare ReplicaSet adds no labels");
    }
}

#[test]
fn statefulset_pods() {
    let l = load("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: data}\nspec:\n  replicas: 3\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: pg, ports: [{containerPort: 5432}]}]}\n");
    assert_clean(&l);
    assert_eq!(pod_names(&l), vec!["data/db-0", "data/db-1", "data/db-2"]);
    let p = pod(&l, "data", "db-2");
    assert_eq!(p.labels["statefulset.kubernetes.io/pod-name"], "db-2");
    assert_eq!(p.labels["apps.kubernetes.io/pod-index"], "2");
    let rev = &p.labels["controller-revision-hash"];
    assert!(is_safe(rev.strip_prefix("db-").unwrap()), "{rev}");
    assert_eq!(p.labels["app"], "db");
    assert_eq!(p.declared_ports(), vec![(5432, Protocol::Tcp)]);
}

const DAEMONSET: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: kube-system}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      hostNetwork: true\n      containers: [{name: a, ports: [{containerPort: 9100, name: metrics}]}]\n";

#[test]
fn daemonset_pods_one_per_node() {
    let nodes = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {role: worker}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: n2}\n---\n";
    // Nodes after the DaemonSet in the input: expansion waits for all input.
    let l = load(&format!("{DAEMONSET}---\n{nodes}"));
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 2);
    let on: Vec<Option<&str>> = l
        .cluster
        .pods
        .iter()
        .map(|p| p.node_name.as_deref())
        .collect();
    assert_eq!(on, vec![Some("n1"), Some("n2")]);
    for p in &l.cluster.pods {
        assert!(p.name.starts_with("agent-") && p.name.len() == "agent-".len() + 5);
        assert!(p.host_network);
        assert_eq!(p.labels["pod-template-generation"], "1");
        assert!(is_safe(&p.labels["controller-revision-hash"]));
        assert_eq!(p.named_port("metrics", Protocol::Tcp), Some(9100));
    }
    // A nodeSelector limits the nodes.
    let selective = DAEMONSET.replace(
        "hostNetwork: true",
        "hostNetwork: true\n      nodeSelector: {role: worker}",
    );
    let l = load(&format!("{nodes}{selective}"));
    let on: Vec<Option<&str>> = l
        .cluster
        .pods
        .iter()
        .map(|p| p.node_name.as_deref())
        .collect();
    assert_eq!(on, vec![Some("n1")]);
    // Without Node objects: one pod, no node.
    let l = load(DAEMONSET);
    assert_eq!(l.cluster.pods.len(), 1);
    assert_eq!(l.cluster.pods[0].node_name, None);
}

#[test]
fn job_pods() {
    let job = |spec: &str| {
        load(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: pi, namespace: batch}}\nspec:\n{spec}  template:\n    metadata: {{labels: {{app: pi}}}}\n    spec: {{restartPolicy: Never}}\n"
        ))
    };
    let l = job("");
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 1);
    let p = &l.cluster.pods[0];
    let rest = p.name.strip_prefix("pi-").unwrap();
    assert!(rest.len() == 5 && is_safe(rest));
    assert_eq!(p.labels["app"], "pi");
    assert_eq!(p.labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(p.labels["job-name"], "pi");
    let uid = &p.labels["batch.kubernetes.io/controller-uid"];
    assert_eq!(uid.len(), 36);
    assert_eq!(&p.labels["controller-uid"], uid);

    assert_eq!(job("  parallelism: 4\n").cluster.pods.len(), 4);
    assert_eq!(
        job("  parallelism: 4\n  completions: 2\n")
            .cluster
            .pods
            .len(),
        2
    );
    assert_eq!(job("  completions: 5\n").cluster.pods.len(), 1);
    assert!(job("  parallelism: 0\n").cluster.pods.is_empty());

    // Indexed jobs: NAME-INDEX-xxxxx and the completion index label.
    let l = job("  parallelism: 2\n  completions: 2\n  completionMode: Indexed\n");
    assert_clean(&l);
    for (i, p) in l.cluster.pods.iter().enumerate() {
        assert!(p.name.starts_with(&format!("pi-{i}-")), "{}", p.name);
        assert_eq!(
            p.labels["batch.kubernetes.io/job-completion-index"],
            i.to_string()
        );
    }

    // A real uid is used when the Job has one.
    let l = load("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j, uid: 5a0f3c1e-8b7d-4e6f-9a2b-1c3d5e7f9a0b}\nspec: {template: {spec: {}}}\n");
    assert_eq!(
        l.cluster.pods[0].labels["controller-uid"],
        "5a0f3c1e-8b7d-4e6f-9a2b-1c3d5e7f9a0b"
    );
}

#[test]
fn invalid_workloads_create_no_pods_and_the_rest_still_loads() {
    let bad = DEPLOYMENT.replace(
        "selector: {matchLabels: {app: web}}",
        "selector: {matchLabels: {app: api}}",
    );
    let l = load(&format!("{bad}---\n{DAEMONSET}"));
    assert_eq!(error_fields(&l), vec!["spec.template.metadata.labels"]);
    assert_eq!(l.cluster.pods.len(), 1);
    assert!(l.cluster.pods[0].name.starts_with("agent-"));
}

// ---- de-duplication against real pods ---------------------------------------------------

const REPLICASET_OF_WEB: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-abc123\n  namespace: shop\n  labels: {app: web, pod-template-hash: abc123}\n  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: web, uid: u1, controller: true}]\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web, pod-template-hash: abc123}}\n  template:\n    metadata: {labels: {app: web, pod-template-hash: abc123}}\n";

fn real_pod(name: &str, owner_kind: &str, owner: &str, extra_labels: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n  labels: {{app: web{extra_labels}}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: {owner_kind}, name: {owner}, uid: u2, controller: true}}]\nstatus: {{phase: Running, podIP: 10.0.0.1}}\n")
}

/// Loads the documents in every rotation and checks the pod set is always the same.
fn same_in_every_order(docs: &[String]) -> Vec<String> {
    let mut result: Option<Vec<String>> = None;
    for start in 0..docs.len() {
        let rotated: Vec<&str> = docs[start..]
            .iter()
            .chain(&docs[..start])
            .map(String::as_str)
            .collect();
        let l = load(&rotated.join("---\n"));
        assert_clean(&l);
        let mut names = pod_names(&l);
        names.sort();
        match &result {
            None => result = Some(names),
            Some(prev) => assert_eq!(prev, &names, "order {start}"),
        }
    }
    result.unwrap_or_default()
}

#[test]
fn deployment_with_its_replicaset_and_pods_is_not_expanded() {
    let docs = vec![
        DEPLOYMENT.to_string(),
        REPLICASET_OF_WEB.to_string(),
        real_pod(
            "web-abc123-aaaaa",
            "ReplicaSet",
            "web-abc123",
            ", pod-template-hash: abc123",
        ),
        real_pod(
            "web-abc123-bbbbb",
            "ReplicaSet",
            "web-abc123",
            ", pod-template-hash: abc123",
        ),
    ];
    assert_eq!(
        same_in_every_order(&docs),
        vec!["shop/web-abc123-aaaaa", "shop/web-abc123-bbbbb"]
    );
    let l = load(&docs.join("---\n"));
    let n = notes(&l);
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].kind.as_deref(), Some("Deployment"));
    assert_eq!(
        n[0].message,
        "not expanded: the input already holds its ReplicaSets (ownerReferences)"
    );
    assert_eq!(n[1].kind.as_deref(), Some("ReplicaSet"));
}

#[test]
fn deployment_with_only_its_pods_is_not_expanded() {
    // `kubectl get pods,deployments`: the ReplicaSet in between is not in the input.
    let docs = vec![
        DEPLOYMENT.to_string(),
        real_pod(
            "web-abc123-aaaaa",
            "ReplicaSet",
            "web-abc123",
            ", pod-template-hash: abc123",
        ),
    ];
    assert_eq!(same_in_every_order(&docs), vec!["shop/web-abc123-aaaaa"]);
    // A ReplicaSet of another Deployment whose name starts the same does not count.
    let other = vec![
        DEPLOYMENT.to_string(),
        real_pod(
            "web-api-abc123-aaaaa",
            "ReplicaSet",
            "web-api-abc123",
            ", pod-template-hash: abc123",
        ),
    ];
    assert_eq!(same_in_every_order(&other).len(), 4);
}

#[test]
fn replicaset_alone_with_pods_is_not_expanded() {
    let docs = vec![
        REPLICASET_OF_WEB.to_string(),
        real_pod(
            "web-abc123-aaaaa",
            "ReplicaSet",
            "web-abc123",
            ", pod-template-hash: abc123",
        ),
    ];
    assert_eq!(same_in_every_order(&docs), vec!["shop/web-abc123-aaaaa"]);
    // Without pods, the ReplicaSet expands (3 replicas), keeping its template's hash label.
    let l = load(REPLICASET_OF_WEB);
    assert_eq!(l.cluster.pods.len(), 3);
    assert!(l
        .cluster
        .pods
        .iter()
        .all(|p| p.name.starts_with("web-abc123-") && p.labels["pod-template-hash"] == "abc123"));
}

#[test]
fn statefulset_daemonset_and_job_owned_pods() {
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}}\n".to_string();
    let docs = vec![sts.clone(), real_pod("db-0", "StatefulSet", "db", "")];
    assert_eq!(same_in_every_order(&docs), vec!["shop/db-0"]);

    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}}\n".to_string();
    let docs = vec![ds, real_pod("agent-x1x2x", "DaemonSet", "agent", "")];
    assert_eq!(same_in_every_order(&docs), vec!["shop/agent-x1x2x"]);

    // A finished Job pod is skipped, but it still shows the Job ran: no expansion.
    let job = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: pi, namespace: shop}\nspec: {template: {metadata: {labels: {app: web}}}}\n".to_string();
    let done = real_pod("pi-zzzzz", "Job", "pi", "").replace("phase: Running", "phase: Succeeded");
    let docs = vec![job, done];
    assert!(same_in_every_order(&docs).is_empty());

    // Ownership is per namespace.
    let elsewhere =
        real_pod("db-0", "StatefulSet", "db", "").replace("namespace: shop", "namespace: other");
    let l = load(&format!("{sts}---\n{elsewhere}"));
    assert_eq!(l.cluster.pods.len(), 3);
}

#[test]
fn expanded_pods_never_take_an_existing_pod_name() {
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db, namespace: shop}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template: {metadata: {labels: {app: db}}}\n";
    // A pod called db-0 that the StatefulSet does not own.
    let squatter = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-0, namespace: shop, labels: {app: other}}\n";
    let l = load(&format!("{sts}---\n{squatter}"));
    assert_clean(&l);
    assert_eq!(pod_names(&l), vec!["shop/db-0", "shop/db-1"]);
    assert_eq!(pod(&l, "shop", "db-0").labels["app"], "other");
    assert!(notes(&l)[0].message.contains("name is taken"));
}

#[test]
fn huge_replica_counts_are_capped_with_a_note() {
    let l = load(&DEPLOYMENT.replace("replicas: 3", "replicas: 2000000000"));
    assert_clean(&l);
    assert_eq!(l.cluster.pods.len(), 10_000);
    assert!(notes(&l)[0].message.contains("only the first 10000"));
}

// ---- validation -------------------------------------------------------------------------

fn deployment(spec: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: x}}\nspec:\n{spec}\n")
}

#[test]
fn workload_selector_must_match_template_labels() {
    let l = load(&deployment(
        "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: api}}",
    ));
    assert_eq!(
        error_at(&l, "spec.template.metadata.labels").message,
        "Invalid value: {\"app\":\"api\"}: `selector` does not match template `labels`"
    );
    assert!(l.cluster.pods.is_empty());
    let l = load(&deployment(
        "  selector: {matchExpressions: [{key: app, operator: NotIn, values: [api]}]}\n  template:\n    metadata: {labels: {app: api}}",
    ));
    error_at(&l, "spec.template.metadata.labels");
}

#[test]
fn workload_selector_is_required_and_not_empty() {
    let l = load(&deployment(
        "  template:\n    metadata: {labels: {app: web}}",
    ));
    assert_eq!(error_at(&l, "spec.selector").message, "Required value");
    let l = load(&deployment(
        "  selector: {}\n  template:\n    metadata: {labels: {app: web}}",
    ));
    assert!(error_at(&l, "spec.selector")
        .message
        .ends_with("empty selector is invalid for deployment"));
    let l = load("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  selector: {matchExpressions: [{key: a, operator: In}]}\n");
    error_at(&l, "spec.selector.matchExpressions[0].values");
}

#[test]
fn workload_counts_and_template() {
    let l = load(&deployment(
        "  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web, 'x y': z}}\n    spec: {containers: [{ports: [{containerPort: 0}]}]}",
    ));
    assert_eq!(
        error_fields(&l),
        vec![
            "spec.template.metadata.labels",
            "spec.template.spec.containers[0].ports[0].containerPort",
            "spec.replicas",
        ]
    );
    assert_eq!(
        error_at(&l, "spec.replicas").message,
        "Invalid value: -1: must be greater than or equal to 0"
    );
    let l = load("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {parallelism: -2, completionMode: Indexed}\n");
    assert_eq!(
        error_fields(&l),
        vec!["spec.parallelism", "spec.completions"]
    );
    let l = load("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {selector: {matchLabels: {a: b}}}\n");
    assert!(error_at(&l, "spec.selector")
        .message
        .ends_with("`selector` not auto-generated"));
}
