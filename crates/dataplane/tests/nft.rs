//! The nftables driver against real network namespaces: rulesets rendered by `furynet-calc`
//! are applied in a "node" namespace whose `fny*` veths lead to pod namespaces, and real TCP
//! connections prove what passes. Needs root; skips loudly otherwise. Every test makes its own
//! uniquely named namespaces and deletes them on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_calc::{compute, render_delta, render_resync, NftState};
use furynet_dataplane::{Applied, Nft, TableView};
use furynet_model::{load_str, Cluster};
use furynet_policy::Engine;
use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);
const NODE: &str = "node-1";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS ARGS...` (ARGS split on spaces), which must succeed.
fn ip_in(ns: &str, args: &str) -> String {
    let mut full = vec!["ip", "-n", ns];
    full.extend(args.split(' '));
    sh(&full)
}

/// A named network namespace, deleted on drop (even when the test panics).
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(role: &str) -> TestNs {
        let name = format!(
            "fnyn-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        TestNs { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `f` on a fresh thread that has entered `ns` (namespaces are per thread); sockets made
/// there stay in that namespace.
fn inside<T: Send + 'static>(ns: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let file = File::open(&ns).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("test thread")
}

/// A TCP echo server on `port` inside a namespace, stopped on drop.
struct Echo {
    stop: Arc<AtomicBool>,
}

impl Echo {
    fn start(ns: &TestNs, port: u16) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // `::` takes IPv4 too (v6only is off by default on Linux).
        let listener = inside(ns.path(), move || {
            TcpListener::bind(("::", port))
                .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
                .expect("bind")
        });
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).ok();
                            s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                            let mut buf = [0u8; 64];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo { stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Connects from inside `ns`; `None` when the connection is refused or times out.
fn connect(ns: &TestNs, ip: &str, port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::new(ip.parse().unwrap(), port);
    inside(ns.path(), move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(600)).ok()
    })
}

fn echo_ok(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(800))).ok();
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn can(ns: &TestNs, ip: &str, port: u16) -> bool {
    connect(ns, ip, port).is_some_and(|mut s| echo_ok(&mut s))
}

/// A node namespace with pods wired like furynet-cni does: a `fny*` veth per pod, the pod's
/// /32 on its `eth0`, a /32 route on the node, proxy ARP and forwarding on the node.
struct Lab {
    node: TestNs,
    pods: HashMap<String, (TestNs, String, String)>, // key -> (netns, ip, host iface)
    /// Each pod's IPv6 address, when the lab is dual-stack.
    v6: HashMap<String, String>,
}

impl Lab {
    fn new(pods: &[(&str, &str)]) -> Lab {
        let node = TestNs::new("node");
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        sh(&[
            "ip",
            "-n",
            &node.name,
            "addr",
            "add",
            "10.99.255.1/32",
            "dev",
            "lo",
        ]);
        let mut map = HashMap::new();
        for (i, (key, ip)) in pods.iter().enumerate() {
            let ns = TestNs::new(&format!("pod{i}"));
            let iface = format!(
                "fny{:05x}{:06x}",
                std::process::id() & 0xfffff,
                NEXT.fetch_add(1, Ordering::SeqCst)
            );
            let n = node.name.as_str();
            sh(&[
                "ip", "-n", n, "link", "add", &iface, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.name,
            ]);
            sh(&["ip", "-n", n, "link", "set", &iface, "up"]);
            node.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{iface}.proxy_arp=1"),
            ]);
            // Proxy ARP answers are delayed up to 0.8 s by default; tests need them at once.
            node.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.neigh.{iface}.proxy_delay=0"),
            ]);
            sh(&[
                "ip",
                "-n",
                n,
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                &iface,
                "proto",
                "154",
            ]);
            sh(&[
                "ip",
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", &ns.name, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns.name,
                "route",
                "add",
                "10.99.0.0/16",
                "dev",
                "eth0",
            ]);
            map.insert(key.to_string(), (ns, ip.to_string(), iface));
        }
        Lab {
            node,
            pods: map,
            v6: HashMap::new(),
        }
    }

    /// Gives every pod an IPv6 address too, wired as furynet-cni does: the pod's /128 on
    /// `eth0` and a default route via the node's link-local `fe80::1`; a /128 route on the
    /// node, which forwards IPv6 and has its own address on `lo`.
    fn dual_stack(mut self) -> Lab {
        let n = self.node.name.clone();
        self.node
            .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        ip_in(&n, "-6 addr add fd00:99:ffff::1/128 dev lo");
        let mut keys: Vec<String> = self.pods.keys().cloned().collect();
        keys.sort();
        for (i, key) in keys.iter().enumerate() {
            let (ns, _, iface) = &self.pods[key];
            let ip6 = format!("fd00:99::{:x}", i + 2);
            ip_in(&n, &format!("-6 addr add fe80::1/64 dev {iface} nodad"));
            ip_in(&n, &format!("-6 route add {ip6}/128 dev {iface} proto 154"));
            ip_in(&ns.name, &format!("-6 addr add {ip6}/128 dev eth0 nodad"));
            ip_in(&ns.name, "-6 route add default via fe80::1 dev eth0");
            self.v6.insert(key.clone(), ip6);
        }
        self
    }
    fn ip6(&self, key: &str) -> &str {
        &self.v6[key]
    }
    fn ns(&self, key: &str) -> &TestNs {
        &self.pods[key].0
    }
    fn ip(&self, key: &str) -> &str {
        &self.pods[key].1
    }
    fn ifaces(&self) -> HashMap<String, String> {
        self.pods
            .iter()
            .map(|(k, (_, _, i))| (k.clone(), i.clone()))
            .collect()
    }
    fn nft(&self) -> Nft {
        Nft::in_netns(&self.node.name)
    }
    fn state(&self, yaml: &str) -> NftState {
        let loaded = load_str("test.yaml", yaml);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let mut cluster: Cluster = loaded.cluster;
        for p in &mut cluster.pods {
            p.node_name = Some(NODE.into());
            p.ips = vec![self.ip(&p.key()).parse().unwrap()];
            if let Some(v6) = self.v6.get(&p.key()) {
                p.ips.push(v6.parse().unwrap());
            }
        }
        compute(&Engine::new(&cluster), NODE, &self.ifaces())
    }
}

fn view(s: &NftState) -> TableView {
    let (chains, sets) = s.summary();
    TableView { chains, sets }
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: client}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: t, labels: {app: web}}
spec: {containers: [{name: c, image: x, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: t, labels: {app: other}}
spec: {containers: [{name: c, image: x}]}
"#;

/// b admits only app=client on its named port `http`; c may only talk to app=client on 80.
const POLICIES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: t}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: other-egress, namespace: t}
spec:
  podSelector: {matchLabels: {app: other}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{protocol: TCP, port: 80}]
"#;

fn lab() -> Lab {
    Lab::new(&[
        ("t/a", "10.99.0.2"),
        ("t/b", "10.99.0.3"),
        ("t/c", "10.99.0.4"),
    ])
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED (needs root and nftables)");
            return;
        }
    };
}

/// What PODS + POLICIES allow, checked with real connections to the addresses `ip_a` (t/a) and
/// `ip_b` (t/b) of one family.
fn policies_hold(lab: &Lab, family: &str, ip_a: &str, ip_b: &str) {
    let (a, b, c) = (lab.ns("t/a"), lab.ns("t/b"), lab.ns("t/c"));
    assert!(can(a, ip_b, 80), "{family}: client -> web:http allowed");
    assert!(
        !can(a, ip_b, 81),
        "{family}: client -> web:81 not in the policy"
    );
    assert!(
        !can(c, ip_b, 80),
        "{family}: other -> web denied by web's ingress"
    );
    assert!(
        can(b, ip_a, 80),
        "{family}: web -> client: neither side isolated"
    );
    assert!(
        can(c, ip_a, 80),
        "{family}: other -> client:80 allowed by other's egress"
    );
    assert!(
        !can(c, ip_a, 81),
        "{family}: other -> client:81 denied by other's egress"
    );
    // The node reaches its pods whatever the policy (kubelet probes).
    assert!(can(&lab.node, ip_b, 81), "{family}: host -> pod allowed");
}

#[test]
fn policy_allows_and_denies_real_traffic() {
    need_root!();
    let lab = lab();
    let _servers: Vec<Echo> = ["t/a", "t/b", "t/c"]
        .iter()
        .flat_map(|k| [Echo::start(lab.ns(k), 80), Echo::start(lab.ns(k), 81)])
        .collect();
    // Without our table everything passes.
    assert!(can(lab.ns("t/c"), lab.ip("t/b"), 80));

    let s = lab.state(&format!("{PODS}{POLICIES}"));
    let nft = lab.nft();
    let got = nft.sync(None, "", &render_resync(&s), &view(&s)).unwrap();
    assert_eq!(got, Applied::Resync);

    policies_hold(&lab, "IPv4", lab.ip("t/a"), lab.ip("t/b"));
    // Syncing the same state again changes nothing.
    let again = nft
        .sync(
            Some(&view(&s)),
            &render_delta(&s, &s),
            &render_resync(&s),
            &view(&s),
        )
        .unwrap();
    assert_eq!(again, Applied::Unchanged);
}

/// Dual-stack pods: the same policies hold over IPv6 (peer sets of both families, the
/// per-pod chains reached for IPv6 packets too), and the node still reaches its pods.
#[test]
fn ipv6_traffic_follows_the_same_policies() {
    need_root!();
    let lab = lab().dual_stack();
    let _servers: Vec<Echo> = ["t/a", "t/b", "t/c"]
        .iter()
        .flat_map(|k| [Echo::start(lab.ns(k), 80), Echo::start(lab.ns(k), 81)])
        .collect();
    // Wired right: without our table everything passes, over both families.
    assert!(can(lab.ns("t/c"), lab.ip6("t/b"), 80), "IPv6 wiring");
    assert!(can(lab.ns("t/c"), lab.ip("t/b"), 80), "IPv4 wiring");

    let s = lab.state(&format!("{PODS}{POLICIES}"));
    let nft = lab.nft();
    nft.sync(None, "", &render_resync(&s), &view(&s)).unwrap();

    policies_hold(&lab, "IPv6", lab.ip6("t/a"), lab.ip6("t/b"));
    policies_hold(&lab, "IPv4", lab.ip("t/a"), lab.ip("t/b"));
}

#[test]
fn established_connection_survives_a_delta_and_new_ones_follow_policy() {
    need_root!();
    let lab = lab();
    let _servers: Vec<Echo> = ["t/a", "t/b"]
        .iter()
        .map(|k| Echo::start(lab.ns(k), 80))
        .collect();
    let nft = lab.nft();
    let s1 = lab.state(&format!("{PODS}{POLICIES}"));
    nft.sync(None, "", &render_resync(&s1), &view(&s1)).unwrap();
    let mut conn = connect(lab.ns("t/a"), lab.ip("t/b"), 80).expect("allowed connect");
    assert!(echo_ok(&mut conn));

    // s2: a third policy that keeps a -> b allowed (and isolates a for ingress).
    let extra = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-deny-all, namespace: t}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Ingress]
"#;
    let s2 = lab.state(&format!("{PODS}{POLICIES}{extra}"));
    let delta = render_delta(&s1, &s2);
    assert!(!delta.is_empty());
    let got = nft
        .sync(Some(&view(&s1)), &delta, &render_resync(&s2), &view(&s2))
        .unwrap();
    assert_eq!(got, Applied::Delta);
    assert!(
        echo_ok(&mut conn),
        "established connection survives the delta"
    );
    assert!(can(lab.ns("t/a"), lab.ip("t/b"), 80), "still allowed");
    assert!(!can(lab.ns("t/b"), lab.ip("t/a"), 80), "a is now isolated");

    // s3: drop the policy admitting a -> b... web stays isolated by nothing, so instead swap
    // it for a default deny on b: new connections fail.
    let deny_b = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny, namespace: t}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
"#;
    let s3 = lab.state(&format!("{PODS}{deny_b}"));
    let got = nft
        .sync(
            Some(&view(&s2)),
            &render_delta(&s2, &s3),
            &render_resync(&s3),
            &view(&s3),
        )
        .unwrap();
    assert_eq!(got, Applied::Delta);
    assert!(
        !can(lab.ns("t/a"), lab.ip("t/b"), 80),
        "new connection denied"
    );
    assert!(
        can(lab.ns("t/b"), lab.ip("t/a"), 80),
        "a no longer isolated"
    );
}

#[test]
fn full_resync_repairs_drift_and_other_tables_are_untouched() {
    need_root!();
    let lab = lab();
    let _servers: Vec<Echo> = ["t/b"].iter().map(|k| Echo::start(lab.ns(k), 80)).collect();
    let other = "table inet other {\n\tset keep { type ipv4_addr; elements = { 192.0.2.1 } }\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t\tip daddr @keep counter accept\n\t}\n}\n";
    let nft = lab.nft();
    nft.apply(other).unwrap();
    let listing = |t: &str| lab.node.exec(&["nft", "list", "table", "inet", t]);
    let other_before = listing("other");

    let s = lab.state(&format!("{PODS}{POLICIES}"));
    nft.sync(None, "", &render_resync(&s), &view(&s)).unwrap();
    assert!(!can(lab.ns("t/c"), lab.ip("t/b"), 80));

    // Someone flushes our table: the read-back differs, the next sync rebuilds it.
    lab.node.exec(&["nft", "flush", "table", "inet", "furynet"]);
    assert!(can(lab.ns("t/c"), lab.ip("t/b"), 80), "flushed: open");
    assert_ne!(nft.read_table().unwrap(), Some(view(&s)));
    let got = nft
        .sync(Some(&view(&s)), "", &render_resync(&s), &view(&s))
        .unwrap();
    assert_eq!(got, Applied::Resync);
    assert!(
        !can(lab.ns("t/c"), lab.ip("t/b"), 80),
        "repaired: denied again"
    );

    // Someone deletes our table.
    lab.node
        .exec(&["nft", "delete", "table", "inet", "furynet"]);
    assert_eq!(nft.read_table().unwrap(), None);
    let got = nft
        .sync(Some(&view(&s)), "", &render_resync(&s), &view(&s))
        .unwrap();
    assert_eq!(got, Applied::Resync);
    assert!(!can(lab.ns("t/c"), lab.ip("t/b"), 80));

    // A broken delta is all-or-nothing, and sync falls back to a resync.
    let bad = format!(
        "{}add rule inet furynet nosuchchain drop\n",
        render_delta(&s, &NftState::default())
    );
    assert!(nft.apply(&bad).is_err());
    assert_eq!(
        nft.read_table().unwrap(),
        Some(view(&s)),
        "nothing of a failed transaction applied"
    );
    let empty = NftState::default();
    let got = nft
        .sync(Some(&view(&s)), &bad, &render_resync(&empty), &view(&empty))
        .unwrap();
    assert_eq!(got, Applied::Resync);
    assert!(can(lab.ns("t/c"), lab.ip("t/b"), 80));

    assert_eq!(listing("other"), other_before, "table inet other untouched");
}

#[test]
fn golden_rulesets_and_deltas_apply() {
    need_root!();
    let ns = TestNs::new("golden");
    let nft = Nft::in_netns(&ns.name);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../calc/tests/golden");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("delta-") || !name.ends_with(".nft") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        nft.apply(&format!(
            "add table inet furynet\ndelete table inet furynet\n{text}"
        ))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(nft.read_table().unwrap().is_some());
        n += 1;
    }
    assert_eq!(n, 6);
    // delta-from-empty applies on top of the empty table.
    nft.apply(&render_resync(&NftState::default())).unwrap();
    let text = std::fs::read_to_string(dir.join("delta-from-empty.nft")).unwrap();
    nft.apply(&text).unwrap();
    // default-deny: three pods, two chains each, plus forward and output.
    assert_eq!(nft.read_table().unwrap().unwrap().chains.len(), 8);
}

/// Apply times for `docs/dataplane-nftables.md`:
/// `cargo test -p furynet-dataplane --test nft apply_timing -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn apply_timing() {
    need_root!();
    use furynet_policy::synth::{cluster, SynthSpec};
    for (pods, policies) in [(100, 50), (1000, 200)] {
        let ns = TestNs::new("timing");
        let nft = Nft::in_netns(&ns.name);
        let mut c = cluster(&SynthSpec {
            pods,
            namespaces: 10,
            policies,
            seed: 7,
        });
        for p in &mut c.pods {
            p.node_name = Some(NODE.into());
        }
        let ifaces: HashMap<String, String> = c
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key(), format!("fny{i:011x}")))
            .collect();
        let t = Instant::now();
        let s1 = compute(&Engine::new(&c), NODE, &ifaces);
        let calc = t.elapsed();
        let full = render_resync(&s1);
        let t = Instant::now();
        nft.apply(&full).unwrap();
        let apply_full = t.elapsed();
        let t = Instant::now();
        let read = nft.read_table().unwrap();
        let read_back = t.elapsed();
        assert_eq!(read, Some(view(&s1)));
        let mut c2 = c.clone();
        c2.policies.remove(0);
        let s2 = compute(&Engine::new(&c2), NODE, &ifaces);
        let delta = render_delta(&s1, &s2);
        let t = Instant::now();
        nft.apply(&delta).unwrap();
        let apply_delta = t.elapsed();
        assert_eq!(nft.read_table().unwrap(), Some(view(&s2)));
        // A second delta: one new policy isolating a whole namespace, admitting another one.
        let ns0 = c.pods[0].namespace.clone();
        let ns1 = c
            .pods
            .iter()
            .map(|p| p.namespace.clone())
            .find(|n| *n != ns0)
            .unwrap();
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bench-added, namespace: {ns0}}}\n\
             spec:\n  podSelector: {{}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns1}}}}}}}]\n    ports: [{{protocol: TCP, port: 8080}}]\n"
        );
        let mut c3 = c2.clone();
        c3.policies
            .extend(load_str("added.yaml", &yaml).cluster.policies);
        assert_eq!(c3.policies.len(), c2.policies.len() + 1);
        let s3 = compute(&Engine::new(&c3), NODE, &ifaces);
        let delta3 = render_delta(&s2, &s3);
        let t = Instant::now();
        nft.apply(&delta3).unwrap();
        let apply_delta3 = t.elapsed();
        assert_eq!(nft.read_table().unwrap(), Some(view(&s3)));
        eprintln!(
            "  add-policy delta ({ns0} from {ns1}): {} lines, apply {apply_delta3:?}",
            delta3.lines().count()
        );
        let rules: usize = s1.chains().values().map(|r| r.len()).sum();
        eprintln!(
            "{pods} pods / {policies} policies: {} sets, {rules} rules, script {} KiB; \
             calc {calc:?}, full apply {apply_full:?}, read-back {read_back:?}; \
             one-policy delta {} lines, apply {apply_delta:?}",
            s1.sets.len(),
            full.len() / 1024,
            delta.lines().count(),
        );
    }
}
