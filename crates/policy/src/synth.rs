//! Deterministic synthetic clusters of realistic shape, for benchmarks and scale tests.
//!
//! [`cluster`] is a pure function of its [`SynthSpec`]: the same spec always gives the same
//! cluster (a small splitmix64 generator is built in; no I/O, no clock, no global state).
//!
//! # Shape
//!
//! **Namespaces** (`spec.namespaces`, at least one): `kube-system` (CoreDNS), `monitoring`
//! (Prometheus) when there are at least two, then application namespaces named
//! `<team>-<env>-<i>` labelled `team` (8 teams), `env` (`prod` / `staging` / `dev`) and, through
//! [`Namespace::new`], `kubernetes.io/metadata.name`.
//!
//! **Pods** (exactly `spec.pods`): two CoreDNS replicas (`k8s-app=kube-dns`) and two Prometheus
//! replicas (`app=prometheus`) when the count allows, then applications placed in random
//! application namespaces until the count is reached:
//! - deployments of 1–10 replicas, pods named `<app>-<hash>-<suffix>` (Kubernetes' own alphabet),
//!   labelled `app`, `tier` (frontend / backend / db / cache / worker), `version` and
//!   `pod-template-hash` (all replicas share their labels, so one deployment is one identity);
//! - about half of the `db` and `cache` apps are statefulsets of 1–5 replicas, pods named
//!   `<app>-<ordinal>` with `controller-revision-hash` and a unique
//!   `statefulset.kubernetes.io/pod-name` (one identity per pod).
//!
//! Every pod has a unique IPv4 address in `10.0.0.0/8` (100 pods per node, one `/24` per node;
//! unique up to 6.5 million pods)
//! and declares the same three `(port, protocol)` keys, so the matrix has exactly three ports:
//! `80/TCP` (named `http`, or `web` for about 10 % of the apps, so named-port resolution really
//! differs between pods), `8080/TCP` (`metrics`) and `53/UDP` (`dns`).
//!
//! **Policies** (exactly `spec.policies`). Namespace-wide ones come first, in this order, as far
//! as the budget allows:
//! - `allow-dns` in `kube-system`: CoreDNS ingress from every namespace on `53/UDP`, `53/TCP`;
//! - for every fifth application namespace (egress-locked): `allow-dns-egress` (egress to
//!   `kube-system` AND `k8s-app=kube-dns` on `53/UDP` and `53/TCP`), `allow-same-namespace-egress`
//!   and `default-deny-egress`;
//! - `default-deny-ingress` in every application namespace.
//!
//! The rest of the budget goes to per-application policies (target app drawn at random), with
//! this mix:
//!
//! | share | shape |
//! |------:|-------|
//! | 24 % | ingress from same-namespace `tier=frontend` on named port `http` |
//! | 12 % | ingress from `namespaceSelector: team=<T>` on `80/TCP` |
//! | 12 % | ingress from `monitoring` AND `app=prometheus` (pod + namespace selector) on named `metrics` |
//! | 12 % | `matchExpressions`: selects `tier In (backend,worker)`, `version Exists`; ingress from namespaces `env NotIn (dev)` AND pods `tier In (frontend,backend)` on `80/TCP`, `8080/TCP` |
//! | 10 % | egress-isolating: egress to `tier In (db,cache)` on `80/TCP`, `5432/TCP`, `6379/TCP`, plus DNS to `kube-system` |
//! |  8 % | egress `ipBlock` with `except`: `0.0.0.0/0` minus RFC 1918 on `443/TCP`, and `10.0.0.0/8` minus one `/16` on `80/TCP` |
//! | 10 % | `endPort` range: ingress from every namespace on `8000–8999/TCP` |
//! |  8 % | ingress from a named app in another namespace (pod + namespace selector) on `80/TCP` and `53/UDP` |
//! |  4 % | allow-all ingress (one empty rule) |
//!
//! # Defaults
//!
//! [`SynthSpec::bench`] gives the benchmark shape: 50 namespaces and one policy per five pods
//! (1,000 policies at 5,000 pods).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use furynet_model::{
    Cluster, ContainerPort, IpBlock, LabelSelector, Labels, Namespace, NetworkPolicy, Node,
    Operator, Peer, Pod, PolicyPort, PolicyRule, PolicyTypes, PortSpec, Protocol, Requirement,
    NAMESPACE_NAME_LABEL,
};
use ipnet::{IpNet, Ipv4Net};

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SynthSpec {
    /// Exact number of pods.
    pub pods: usize,
    /// Number of namespaces (at least one is always generated: `kube-system`).
    pub namespaces: usize,
    /// Exact number of NetworkPolicies.
    pub policies: usize,
    pub seed: u64,
}

impl SynthSpec {
    /// The benchmark shape: `pods` pods, 50 namespaces, `pods / 5` policies, a fixed seed.
    pub fn bench(pods: usize) -> Self {
        Self {
            pods,
            namespaces: 50,
            policies: pods / 5,
            seed: 0x5eed_f00d,
        }
    }
}

impl Default for SynthSpec {
    /// [`SynthSpec::bench`] at 5,000 pods.
    fn default() -> Self {
        Self::bench(5_000)
    }
}

/// splitmix64: tiny, fast, good enough for shaping test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    /// A random element; `fallback` for an empty slice.
    fn pick<'a>(&mut self, items: &[&'a str], fallback: &'a str) -> &'a str {
        items
            .get(self.below(items.len()))
            .copied()
            .unwrap_or(fallback)
    }

    /// `len` characters from Kubernetes' name-suffix alphabet (no vowels, no 0/1/3).
    fn k8s_suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| {
                ALPHABET
                    .get(self.below(ALPHABET.len()))
                    .map_or('x', |&b| char::from(b))
            })
            .collect()
    }
}

const TEAMS: &[&str] = &[
    "payments", "checkout", "search", "identity", "platform", "data", "growth", "media",
];
const ENVS: &[&str] = &["prod", "staging", "dev"];
const WORDS: &[&str] = &[
    "api",
    "web",
    "cart",
    "auth",
    "orders",
    "ledger",
    "catalog",
    "inventory",
    "billing",
    "profile",
    "notify",
    "ingest",
    "session",
    "gateway",
    "reports",
    "recommend",
    "mailer",
    "pricing",
    "shipping",
    "reviews",
];
const KUBE_SYSTEM: &str = "kube-system";
const MONITORING: &str = "monitoring";
/// Pods per node (and per node `/24`).
const PODS_PER_NODE: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Frontend,
    Backend,
    Db,
    Cache,
    Worker,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Frontend => "frontend",
            Tier::Backend => "backend",
            Tier::Db => "db",
            Tier::Cache => "cache",
            Tier::Worker => "worker",
        }
    }

    /// 20 % frontend, 35 % backend, 10 % db, 10 % cache, 25 % worker.
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..20 => Tier::Frontend,
            20..55 => Tier::Backend,
            55..65 => Tier::Db,
            65..75 => Tier::Cache,
            _ => Tier::Worker,
        }
    }
}

/// An application: where it lives and what its pods are called.
struct App {
    namespace: String,
    name: String,
}

/// Generates a cluster of realistic shape; see the module documentation for the mix.
pub fn cluster(spec: &SynthSpec) -> Cluster {
    let mut rng = Rng(spec.seed);
    let namespaces = namespaces(spec.namespaces.max(1), &mut rng);
    // Application namespaces: everything but kube-system and monitoring (or kube-system alone).
    let app_ns: Vec<&Namespace> = match namespaces.get(2..) {
        Some(rest) if !rest.is_empty() => rest.iter().collect(),
        _ => namespaces.iter().take(1).collect(),
    };

    let mut gen = PodGen {
        rng: &mut rng,
        pods: Vec::with_capacity(spec.pods),
        limit: spec.pods,
    };
    gen.deployment(KUBE_SYSTEM, "coredns", 2, &[("k8s-app", "kube-dns")], "dns");
    if namespaces.len() > 1 {
        gen.deployment(
            MONITORING,
            "prometheus",
            2,
            &[("app", "prometheus")],
            "http",
        );
    }
    let mut apps: Vec<App> = Vec::new();
    let mut used: HashSet<(String, String)> = HashSet::new();
    while gen.pods.len() < gen.limit {
        let ns = app_ns
            .get(gen.rng.below(app_ns.len()))
            .map_or(KUBE_SYSTEM, |n| n.name.as_str())
            .to_string();
        let tier = Tier::draw(gen.rng);
        let word = gen.rng.pick(WORDS, "app");
        let mut name = format!("{word}-{}", tier.as_str());
        let mut n = 2;
        while used.contains(&(ns.clone(), name.clone())) {
            name = format!("{word}-{}-{n}", tier.as_str());
            n += 1;
        }
        used.insert((ns.clone(), name.clone()));
        let version = format!("v{}", gen.rng.between(1, 3));
        let labels = [
            ("app", name.as_str()),
            ("tier", tier.as_str()),
            ("version", version.as_str()),
        ];
        let http_name = if gen.rng.percent(10) { "web" } else { "http" };
        let stateful = matches!(tier, Tier::Db | Tier::Cache) && gen.rng.percent(50);
        if stateful {
            let replicas = gen.rng.between(1, 5);
            gen.statefulset(&ns, &name, replicas, &labels, http_name);
        } else {
            let replicas = gen.rng.between(1, 10);
            gen.deployment(&ns, &name, replicas, &labels, http_name);
        }
        apps.push(App {
            namespace: ns,
            name,
        });
    }
    let pods = gen.pods;

    let policies = policies(spec.policies, &namespaces, &app_ns, &apps, &mut rng);
    let nodes = (0..pods.len().div_ceil(PODS_PER_NODE))
        .map(|k| Node {
            name: node_name(k),
            labels: Labels::new(),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, (k >> 8) as u8, k as u8))],
            pod_cidrs: Ipv4Net::new(node_base(k), 24)
                .map(|n| vec![IpNet::V4(n)])
                .unwrap_or_default(),
        })
        .collect();
    Cluster {
        namespaces,
        pods,
        policies,
        services: Vec::new(),
        nodes,
    }
}

fn node_name(k: usize) -> String {
    format!("node-{k:03}")
}

/// First address of node `k`'s `/24`: `10.a.b.0`.
fn node_base(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, (k >> 8) as u8, k as u8, 0)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn namespaces(count: usize, rng: &mut Rng) -> Vec<Namespace> {
    let mut out = vec![Namespace::new(
        KUBE_SYSTEM,
        labels(&[("team", "platform"), ("env", "prod")]),
    )];
    if count > 1 {
        out.push(Namespace::new(
            MONITORING,
            labels(&[("team", "platform"), ("env", "prod")]),
        ));
    }
    for i in out.len()..count {
        let team = rng.pick(TEAMS, "platform");
        let env = rng.pick(ENVS, "prod");
        out.push(Namespace::new(
            format!("{team}-{env}-{i}"),
            labels(&[("team", team), ("env", env)]),
        ));
    }
    out
}

struct PodGen<'r> {
    rng: &'r mut Rng,
    pods: Vec<Pod>,
    limit: usize,
}

impl PodGen<'_> {
    fn push(&mut self, namespace: &str, name: String, labels: Labels, http_name: &str) {
        let i = self.pods.len();
        let node = i / PODS_PER_NODE;
        let base = u32::from(node_base(node));
        let ip = Ipv4Addr::from(base + 2 + (i % PODS_PER_NODE) as u32);
        self.pods.push(Pod {
            namespace: namespace.to_string(),
            name,
            labels,
            ips: vec![IpAddr::V4(ip)],
            ports: vec![
                port(http_name, 80, Protocol::Tcp),
                port("metrics", 8080, Protocol::Tcp),
                port("dns", 53, Protocol::Udp),
            ],
            node_name: Some(node_name(node)),
            host_network: false,
        });
    }

    fn deployment(
        &mut self,
        namespace: &str,
        app: &str,
        replicas: usize,
        base: &[(&str, &str)],
        http_name: &str,
    ) {
        let hash = self.rng.k8s_suffix(10);
        let mut l = labels(base);
        l.insert("pod-template-hash".into(), hash.clone());
        for _ in 0..replicas {
            if self.pods.len() >= self.limit {
                return;
            }
            let name = format!("{app}-{hash}-{}", self.rng.k8s_suffix(5));
            self.push(namespace, name, l.clone(), http_name);
        }
    }

    fn statefulset(
        &mut self,
        namespace: &str,
        app: &str,
        replicas: usize,
        base: &[(&str, &str)],
        http_name: &str,
    ) {
        let revision = format!("{app}-{}", self.rng.k8s_suffix(10));
        for ordinal in 0..replicas {
            if self.pods.len() >= self.limit {
                return;
            }
            let name = format!("{app}-{ordinal}");
            let mut l = labels(base);
            l.insert("controller-revision-hash".into(), revision.clone());
            l.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
            self.push(namespace, name, l, http_name);
        }
    }
}

fn port(name: &str, port: u16, protocol: Protocol) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        port,
        protocol,
    }
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
    Requirement {
        key: key.to_string(),
        operator,
        values: values.iter().map(|v| (*v).to_string()).collect(),
    }
}

fn num(protocol: Protocol, n: u16) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortSpec::Number(n)),
        end_port: None,
    }
}

fn named(protocol: Protocol, name: &str) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortSpec::Name(name.to_string())),
        end_port: None,
    }
}

fn pods_peer(pod: LabelSelector) -> Peer {
    Peer::Selector {
        pod_selector: Some(pod),
        namespace_selector: None,
    }
}

fn ns_peer(ns: LabelSelector, pod: Option<LabelSelector>) -> Peer {
    Peer::Selector {
        pod_selector: pod,
        namespace_selector: Some(ns),
    }
}

fn block(cidr: Ipv4Net, except: &[Ipv4Net]) -> Peer {
    Peer::IpBlock(IpBlock {
        cidr: IpNet::V4(cidr),
        except: except.iter().map(|&e| IpNet::V4(e)).collect(),
    })
}

fn net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).unwrap_or_default()
}

fn dns_rule() -> PolicyRule {
    PolicyRule {
        peers: vec![ns_peer(
            sel(&[(NAMESPACE_NAME_LABEL, KUBE_SYSTEM)]),
            Some(sel(&[("k8s-app", "kube-dns")])),
        )],
        ports: vec![num(Protocol::Udp, 53), num(Protocol::Tcp, 53)],
    }
}

const INGRESS: PolicyTypes = PolicyTypes {
    ingress: true,
    egress: false,
};
const EGRESS: PolicyTypes = PolicyTypes {
    ingress: false,
    egress: true,
};

fn policy(
    namespace: &str,
    name: String,
    pod_selector: LabelSelector,
    types: PolicyTypes,
    rules: Vec<PolicyRule>,
) -> NetworkPolicy {
    let (ingress, egress) = if types.egress {
        (Vec::new(), rules)
    } else {
        (rules, Vec::new())
    };
    NetworkPolicy {
        namespace: namespace.to_string(),
        name,
        pod_selector,
        ingress,
        egress,
        policy_types: types,
    }
}

fn policies(
    budget: usize,
    namespaces: &[Namespace],
    app_ns: &[&Namespace],
    apps: &[App],
    rng: &mut Rng,
) -> Vec<NetworkPolicy> {
    let mut out = Vec::with_capacity(budget);
    let all = LabelSelector::everything;

    // Namespace-wide policies first.
    let mut wide = vec![policy(
        KUBE_SYSTEM,
        "allow-dns".into(),
        sel(&[("k8s-app", "kube-dns")]),
        INGRESS,
        vec![PolicyRule {
            peers: vec![ns_peer(all(), None)],
            ports: vec![num(Protocol::Udp, 53), num(Protocol::Tcp, 53)],
        }],
    )];
    for ns in app_ns.iter().step_by(5) {
        let n = ns.name.as_str();
        wide.push(policy(
            n,
            "allow-dns-egress".into(),
            all(),
            EGRESS,
            vec![dns_rule()],
        ));
        wide.push(policy(
            n,
            "allow-same-namespace-egress".into(),
            all(),
            EGRESS,
            vec![PolicyRule {
                peers: vec![pods_peer(all())],
                ports: Vec::new(),
            }],
        ));
        wide.push(policy(
            n,
            "default-deny-egress".into(),
            all(),
            EGRESS,
            Vec::new(),
        ));
    }
    for ns in app_ns {
        wide.push(policy(
            &ns.name,
            "default-deny-ingress".into(),
            all(),
            INGRESS,
            Vec::new(),
        ));
    }
    out.extend(wide.into_iter().take(budget));

    let mut k = 0usize;
    while out.len() < budget {
        k += 1;
        let Some(app) = apps.get(rng.below(apps.len())) else {
            // No application pods at all: pad with (redundant) deny-all policies.
            let ns = app_ns.first().map_or(KUBE_SYSTEM, |n| n.name.as_str());
            out.push(policy(
                ns,
                format!("deny-all-{k}"),
                all(),
                INGRESS,
                Vec::new(),
            ));
            continue;
        };
        let ns = app.namespace.as_str();
        let target = sel(&[("app", app.name.as_str())]);
        let p = match rng.below(100) {
            0..24 => policy(
                ns,
                format!("{}-allow-frontend-{k}", app.name),
                target,
                INGRESS,
                vec![PolicyRule {
                    peers: vec![pods_peer(sel(&[("tier", "frontend")]))],
                    ports: vec![named(Protocol::Tcp, "http")],
                }],
            ),
            24..36 => {
                let team = rng.pick(TEAMS, "platform");
                policy(
                    ns,
                    format!("{}-allow-team-{team}-{k}", app.name),
                    target,
                    INGRESS,
                    vec![PolicyRule {
                        peers: vec![ns_peer(sel(&[("team", team)]), None)],
                        ports: vec![num(Protocol::Tcp, 80)],
                    }],
                )
            }
            36..48 => policy(
                ns,
                format!("{}-allow-prometheus-{k}", app.name),
                target,
                INGRESS,
                vec![PolicyRule {
                    peers: vec![ns_peer(
                        sel(&[(NAMESPACE_NAME_LABEL, MONITORING)]),
                        Some(sel(&[("app", "prometheus")])),
                    )],
                    ports: vec![named(Protocol::Tcp, "metrics")],
                }],
            ),
            48..60 => policy(
                ns,
                format!("backends-from-non-dev-{k}"),
                LabelSelector {
                    match_labels: Labels::new(),
                    match_expressions: vec![
                        req("tier", Operator::In, &["backend", "worker"]),
                        req("version", Operator::Exists, &[]),
                    ],
                },
                INGRESS,
                vec![PolicyRule {
                    peers: vec![ns_peer(
                        LabelSelector {
                            match_labels: Labels::new(),
                            match_expressions: vec![req("env", Operator::NotIn, &["dev"])],
                        },
                        Some(LabelSelector {
                            match_labels: Labels::new(),
                            match_expressions: vec![req(
                                "tier",
                                Operator::In,
                                &["frontend", "backend"],
                            )],
                        }),
                    )],
                    ports: vec![num(Protocol::Tcp, 80), num(Protocol::Tcp, 8080)],
                }],
            ),
            60..70 => policy(
                ns,
                format!("{}-egress-to-data-{k}", app.name),
                target,
                EGRESS,
                vec![
                    PolicyRule {
                        peers: vec![pods_peer(LabelSelector {
                            match_labels: Labels::new(),
                            match_expressions: vec![req("tier", Operator::In, &["db", "cache"])],
                        })],
                        ports: vec![
                            num(Protocol::Tcp, 80),
                            num(Protocol::Tcp, 5432),
                            num(Protocol::Tcp, 6379),
                        ],
                    },
                    dns_rule(),
                ],
            ),
            70..78 => {
                let hole = rng.below(256) as u8;
                policy(
                    ns,
                    format!("{}-egress-external-{k}", app.name),
                    target,
                    EGRESS,
                    vec![
                        PolicyRule {
                            peers: vec![block(
                                net(0, 0, 0, 0, 0),
                                &[
                                    net(10, 0, 0, 0, 8),
                                    net(172, 16, 0, 0, 12),
                                    net(192, 168, 0, 0, 16),
                                ],
                            )],
                            ports: vec![num(Protocol::Tcp, 443)],
                        },
                        PolicyRule {
                            peers: vec![block(net(10, 0, 0, 0, 8), &[net(10, hole, 0, 0, 16)])],
                            ports: vec![num(Protocol::Tcp, 80)],
                        },
                    ],
                )
            }
            78..88 => policy(
                ns,
                format!("{}-allow-high-ports-{k}", app.name),
                target,
                INGRESS,
                vec![PolicyRule {
                    peers: vec![ns_peer(all(), None)],
                    ports: vec![PolicyPort {
                        protocol: Protocol::Tcp,
                        port: Some(PortSpec::Number(8000)),
                        end_port: Some(8999),
                    }],
                }],
            ),
            88..96 => {
                let client = apps.get(rng.below(apps.len())).unwrap_or(app);
                let client_ns = namespaces
                    .iter()
                    .find(|n| n.name == client.namespace)
                    .map_or(KUBE_SYSTEM, |n| n.name.as_str());
                policy(
                    ns,
                    format!("{}-allow-{}-{k}", app.name, client.name),
                    target,
                    INGRESS,
                    vec![PolicyRule {
                        peers: vec![ns_peer(
                            sel(&[(NAMESPACE_NAME_LABEL, client_ns)]),
                            Some(sel(&[("app", client.name.as_str())])),
                        )],
                        ports: vec![num(Protocol::Tcp, 80), num(Protocol::Udp, 53)],
                    }],
                )
            }
            _ => policy(
                ns,
                format!("{}-allow-all-{k}", app.name),
                target,
                INGRESS,
                vec![PolicyRule::default()],
            ),
        };
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn counts_are_exact_and_output_deterministic() {
        for pods in [0, 1, 3, 17, 500] {
            let spec = SynthSpec::bench(pods);
            let c = cluster(&spec);
            assert_eq!(c.pods.len(), pods);
            assert_eq!(c.policies.len(), pods / 5);
            assert_eq!(c.namespaces.len(), 50);
            assert_eq!(c, cluster(&spec));
        }
        let other = cluster(&SynthSpec {
            seed: 1,
            ..SynthSpec::bench(500)
        });
        assert_ne!(other, cluster(&SynthSpec::bench(500)));
    }

    #[test]
    fn shape_is_realistic() {
        let c = cluster(&SynthSpec::bench(5_000));
        let keys: BTreeSet<(u16, Protocol)> =
            c.pods.iter().flat_map(|p| p.declared_ports()).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");

        let ips: HashSet<IpAddr> = c.pods.iter().flat_map(|p| p.ips.clone()).collect();
        assert_eq!(ips.len(), c.pods.len(), "unique pod IPs");
        let names: HashSet<String> = c.pods.iter().map(Pod::key).collect();
        assert_eq!(names.len(), c.pods.len(), "unique pod names");
        let pol: HashSet<String> = c.policies.iter().map(NetworkPolicy::key).collect();
        assert_eq!(pol.len(), c.policies.len(), "unique policy names");

        for ns in &c.namespaces {
            assert_eq!(ns.labels.get(NAMESPACE_NAME_LABEL), Some(&ns.name));
        }
        for p in &c.pods {
            assert!(c.namespace(&p.namespace).is_some(), "{}", p.key());
        }
        let sts: Vec<&Pod> = c
            .pods
            .iter()
            .filter(|p| p.labels.contains_key("statefulset.kubernetes.io/pod-name"))
            .collect();
        assert!(!sts.is_empty());
        for p in sts {
            assert_eq!(
                p.labels.get("statefulset.kubernetes.io/pod-name"),
                Some(&p.name)
            );
        }
        assert!(c
            .pods
            .iter()
            .any(|p| p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns")));
        for name in [
            "default-deny-ingress",
            "default-deny-egress",
            "allow-dns-egress",
        ] {
            assert!(c.policies.iter().any(|p| p.name == name), "{name}");
        }
        assert!(c.policies.iter().any(|p| p
            .ingress
            .iter()
            .any(|r| r.ports.iter().any(|pp| pp.end_port.is_some()))));
        assert!(c.policies.iter().any(|p| p.egress.iter().any(|r| r
            .peers
            .iter()
            .any(|x| matches!(x, Peer::IpBlock(b) if !b.except.is_empty())))));
    }

    #[test]
    fn degenerate_specs_do_not_panic() {
        for namespaces in [0, 1, 2, 3] {
            for policies in [0, 1, 10, 200] {
                let c = cluster(&SynthSpec {
                    pods: 40,
                    namespaces,
                    policies,
                    seed: 7,
                });
                assert_eq!(c.pods.len(), 40);
                assert_eq!(c.policies.len(), policies);
            }
        }
        for policies in [0, 5] {
            let c = cluster(&SynthSpec {
                pods: 0,
                namespaces: 3,
                policies,
                seed: 7,
            });
            assert_eq!(c.policies.len(), policies);
        }
    }
}
