//! The routing dataplane end to end: "node" namespaces on a shared underlay bridge, pods wired
//! by the real `furynet-cni` binary inside each node, blocks read back from the embedded
//! datastore, `furynet_dataplane::routing` plan + reconcile per node, then real traffic.
//! Needs root, `ip`/`bridge` (iproute2), `ping` and the vxlan module; skips loudly otherwise.
//! Namespaces are `fnyv-<pid>-<n>-<role>`, all deleted on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use furynet_dataplane::routing::ipcmd::IpCommand;
use furynet_dataplane::routing::netlink::NetlinkRouting;
use furynet_dataplane::routing::plan::{
    plan, BlockInfo, Encapsulation, NodeInfo, PlanInput, RoutingPlan,
};
use furynet_dataplane::routing::reconcile::{reconcile, RoutingKernel};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_furynet-cni");
static NEXT: AtomicU32 = AtomicU32::new(0);

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED (needs root)");
        false
    }
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Ns {
    name: String,
}

impl Ns {
    fn new(role: &str) -> Ns {
        let name = format!(
            "fnyv-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }
    fn exec_ok(&self, cmd: &[&str]) -> bool {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(cmd);
        Command::new("ip")
            .args(&full)
            .output()
            .expect("ip netns exec")
            .status
            .success()
    }
    fn ping(&self, addr: impl Into<IpAddr>) -> bool {
        let addr: IpAddr = addr.into();
        let a = addr.to_string();
        (0..3).any(|_| self.exec_ok(&["ping", "-c1", "-W1", &a]))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Node {
    name: String,
    ns: Ns,
    underlay: Ipv4Addr,
}

struct Pod {
    ns: Ns,
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
}

/// An underlay bridge and nodes on it, sharing one embedded datastore. Field order matters for
/// drop: pods, then nodes, then the underlay.
struct Cluster {
    backend: Backend,
    pools: Vec<&'static str>,
    pods: Vec<Pod>,
    nodes: Vec<Node>,
    underlay: Ns,
    datastore: tempfile::TempDir,
}

impl Cluster {
    fn new(n: usize, backend: Backend) -> Cluster {
        let underlay = Ns::new("ul");
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            let ns = Ns::new(&format!("n{i}"));
            let host_end = format!("p{i}");
            underlay.ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "ul0",
            ]);
            underlay.ip(&["link", "set", "ul0", "netns", &ns.name]);
            underlay.ip(&["link", "set", &host_end, "master", "br0", "up"]);
            let underlay_ip: Ipv4Addr = format!("172.31.0.{}", i + 1).parse().unwrap();
            ns.ip(&["addr", "add", &format!("{underlay_ip}/24"), "dev", "ul0"]);
            ns.ip(&["link", "set", "ul0", "up"]);
            // A default route (the "uplink"), so proxy ARP for 169.254.1.1 has somewhere to go.
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                "172.31.0.254",
                "dev",
                "ul0",
                "onlink",
            ]);
            // The agent's job: forwarding on for the node.
            assert!(ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
            nodes.push(Node {
                name,
                ns,
                underlay: underlay_ip,
            });
        }
        Cluster {
            backend,
            pools: vec!["10.244.0.0/16"],
            pods: Vec::new(),
            nodes,
            underlay,
            datastore: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `furynet-cni` ADD inside node `n` as a runtime would; returns the pod's index.
    fn add_pod(&mut self, n: usize) -> usize {
        let node = &self.nodes[n];
        let ns = Ns::new(&format!("pod{}", self.pods.len()));
        let conf = json!({
            "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "furynet-cni",
            "datastore": {"type": "embedded", "path": self.datastore.path()},
            "nodeName": node.name,
            "ipam": {"pools": self.pools},
            "mtu": 1450,
        });
        let mut child = Command::new("ip")
            .args(["netns", "exec", &node.ns.name, BIN])
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", format!("c-{}", ns.name))
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ADD failed: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut ip = None;
        let mut ip6 = None;
        for entry in result["ips"].as_array().unwrap() {
            let addr = entry["address"].as_str().unwrap();
            match addr.split('/').next().unwrap().parse::<IpAddr>().unwrap() {
                IpAddr::V4(a) => ip = Some(a),
                IpAddr::V6(a) => ip6 = Some(a),
            }
        }
        self.pods.push(Pod {
            ns,
            ip: ip.unwrap(),
            ip6,
        });
        self.pods.len() - 1
    }

    /// The IPAM blocks, read from the embedded datastore the plugin wrote.
    fn blocks(&self) -> Vec<BlockInfo> {
        let ds = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Embedded {
            path: self.datastore.path().to_path_buf(),
        })
        .unwrap();
        let (kvs, _) = ds.list(furynet_ipam::records::BLOCKS_PREFIX).unwrap();
        kvs.iter()
            .map(|kv| {
                let b: furynet_ipam::records::BlockRecord =
                    serde_json::from_slice(&kv.value).unwrap();
                BlockInfo {
                    cidr: b.cidr,
                    node: b.affinity,
                }
            })
            .collect()
    }

    fn plan_for(&self, n: usize, enc: &Encapsulation) -> RoutingPlan {
        plan(&PlanInput {
            node: self.nodes[n].name.clone(),
            underlay: self.nodes[n].underlay,
            underlay_mtu: 1500,
            nodes: self
                .nodes
                .iter()
                .map(|x| NodeInfo {
                    name: x.name.clone(),
                    underlay: x.underlay,
                })
                .collect(),
            blocks: self.blocks(),
            encapsulation: enc.clone(),
        })
    }

    /// Reconciles every node; returns how many changes each needed.
    fn reconcile_all(&self, enc: &Encapsulation) -> Vec<usize> {
        self.reconcile_with(self.backend, enc)
    }

    fn reconcile_with(&self, backend: Backend, enc: &Encapsulation) -> Vec<usize> {
        (0..self.nodes.len())
            .map(|n| {
                let ns = &self.nodes[n].ns;
                let k: Box<dyn RoutingKernel> = match backend {
                    Backend::IpCommand => Box::new(IpCommand::in_netns(&ns.name)),
                    Backend::Netlink => Box::new(NetlinkRouting::in_netns(ns.path())),
                };
                reconcile(k.as_ref(), &self.plan_for(n, enc)).unwrap().len()
            })
            .collect()
    }

    /// The other backend reads the same state: it must see nothing to change.
    fn cross_check(&self, enc: &Encapsulation) {
        let other = match self.backend {
            Backend::IpCommand => Backend::Netlink,
            Backend::Netlink => Backend::IpCommand,
        };
        assert!(self.reconcile_with(other, enc).iter().all(|n| *n == 0));
    }
}

/// Runs `f` on a thread that has entered `ns` (network namespaces are per thread).
fn in_netns<T: Send + 'static>(ns: &Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// TCP from `from` to `to`: returns the source address the server saw and checks the echo.
fn tcp_peer(from: &Pod, to: &Pod) -> Ipv4Addr {
    let listener = in_netns(&to.ns, move || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7777))).unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        peer
    });
    let dst = SocketAddr::from((to.ip, 7777));
    let echoed = in_netns(&from.ns, move || {
        let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(5)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        buf
    });
    assert_eq!(&echoed, b"hello");
    match server.join().unwrap() {
        SocketAddr::V4(a) => *a.ip(),
        SocketAddr::V6(a) => panic!("unexpected v6 peer {a}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    IpCommand,
    Netlink,
}

#[test]
fn vxlan_overlay_between_three_nodes_netlink() {
    if privileged() {
        vxlan_overlay_between_three_nodes(Backend::Netlink);
    }
}

#[test]
fn vxlan_overlay_between_three_nodes_ip_command() {
    if privileged() {
        vxlan_overlay_between_three_nodes(Backend::IpCommand);
    }
}

#[test]
fn direct_routes_on_a_shared_link_netlink() {
    if privileged() {
        direct_routes_on_a_shared_link(Backend::Netlink);
    }
}

#[test]
fn direct_routes_on_a_shared_link_ip_command() {
    if privileged() {
        direct_routes_on_a_shared_link(Backend::IpCommand);
    }
}

fn vxlan_overlay_between_three_nodes(backend: Backend) {
    let mut c = Cluster::new(3, backend);
    let a1 = c.add_pod(0);
    let a2 = c.add_pod(0);
    let b1 = c.add_pod(1);
    let c1 = c.add_pod(2);

    // Foreign objects in node 0 that the agent must leave alone.
    let n0 = &c.nodes[0].ns;
    n0.ip(&[
        "link",
        "add",
        "vx-other",
        "type",
        "vxlan",
        "id",
        "99",
        "dstport",
        "4790",
        "local",
        "172.31.0.1",
    ]);
    n0.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "172.31.0.9",
        "proto",
        "static",
    ]);
    let pod_routes_before = n0.ip(&["route", "show", "proto", "154"]);

    // Negative control: without the routing dataplane, other nodes' pods are unreachable.
    assert!(!c.pods[a1]
        .ns
        .exec_ok(&["ping", "-c1", "-W1", &c.pods[b1].ip.to_string()]));

    let enc = Encapsulation::default();
    let first = c.reconcile_all(&enc);
    assert!(first.iter().all(|n| *n > 0), "{first:?}");

    let n0 = &c.nodes[0].ns;
    let link = n0.ip(&["-d", "link", "show", "fny.vxlan"]);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("nolearning"), "{link}");

    let (p, q) = (&c.pods[a1], &c.pods[b1]);
    assert!(p.ns.ping(q.ip), "pod on node 0 -> pod on node 1");
    assert!(c.pods[b1].ns.ping(c.pods[c1].ip), "node 1 -> node 2");
    assert!(c.pods[c1].ns.ping(c.pods[a2].ip), "node 2 -> node 0");
    assert!(c.pods[a1].ns.ping(c.pods[a2].ip), "same node");
    assert!(c.nodes[0].ns.ping(c.pods[a1].ip), "node -> own pod");
    assert_eq!(tcp_peer(&c.pods[a1], &c.pods[b1]), c.pods[a1].ip, "no NAT");
    // The pod MTU (1450) fits the overlay: a full-size packet with DF set crosses it.
    let full = c.pods[b1].ip.to_string();
    assert!(
        c.pods[a1]
            .ns
            .exec_ok(&["ping", "-c1", "-W2", "-M", "do", "-s", "1422", &full]),
        "1450-byte packet with DF across the overlay"
    );
    assert_eq!(tcp_peer(&c.pods[c1], &c.pods[a2]), c.pods[c1].ip, "no NAT");

    // Idempotent: a second run (an agent restart) changes nothing, with either backend.
    assert_eq!(c.reconcile_all(&enc), vec![0, 0, 0]);
    c.cross_check(&enc);

    // Foreign objects and the CNI's pod routes are untouched.
    let n0 = &c.nodes[0].ns;
    assert!(n0.ip(&["link", "show", "vx-other"]).contains("vx-other"));
    assert!(n0
        .ip(&["route", "show", "10.99.0.0/24"])
        .contains("172.31.0.9"));
    for line in pod_routes_before.lines() {
        assert!(
            n0.ip(&["route", "show", "proto", "154"])
                .contains(line.trim()),
            "pod route {line} lost"
        );
    }

    // A stale route of ours is pruned; traffic still flows.
    n0.ip(&[
        "route",
        "add",
        "10.244.250.0/26",
        "via",
        "10.244.250.0",
        "dev",
        "fny.vxlan",
        "onlink",
        "proto",
        "154",
    ]);
    assert_eq!(c.reconcile_all(&enc), vec![1, 0, 0]);
    assert!(c.nodes[0]
        .ns
        .ip(&["route", "show", "10.244.250.0/26"])
        .trim()
        .is_empty());
    assert!(c.pods[a1].ns.ping(c.pods[b1].ip));

    // Drift on our device: MTU changed, stale neighbour and FDB entries. Fixed in place.
    let n0 = &c.nodes[0].ns;
    n0.ip(&["link", "set", "fny.vxlan", "mtu", "1400"]);
    n0.ip(&[
        "neigh",
        "add",
        "10.244.251.0",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "fny.vxlan",
        "nud",
        "permanent",
    ]);
    run_ok(
        "bridge",
        &[
            "-n",
            &n0.name,
            "fdb",
            "append",
            "02:00:00:00:00:99",
            "dev",
            "fny.vxlan",
            "dst",
            "172.31.0.99",
            "self",
            "permanent",
        ],
    );
    assert_eq!(c.reconcile_all(&enc), vec![3, 0, 0]);
    let n0 = &c.nodes[0].ns;
    assert!(n0.ip(&["link", "show", "fny.vxlan"]).contains("mtu 1450"));
    assert!(!n0
        .ip(&["neigh", "show", "dev", "fny.vxlan"])
        .contains("10.244.251.0"));
    assert!(!run_ok(
        "bridge",
        &["-n", &n0.name, "fdb", "show", "dev", "fny.vxlan"]
    )
    .contains("172.31.0.99"));
    assert!(c.pods[a1].ns.ping(c.pods[b1].ip));
    c.cross_check(&enc);

    // Switching to direct routes removes our device but not the foreign one.
    let none = Encapsulation::None;
    c.reconcile_all(&none);
    let n0 = &c.nodes[0].ns;
    assert!(!n0
        .ip(&["link", "show", "type", "vxlan"])
        .contains("fny.vxlan"));
    assert!(n0.ip(&["link", "show", "vx-other"]).contains("vx-other"));
    assert!(c.pods[a1].ns.ping(c.pods[b1].ip));
    assert!(c.pods[c1].ns.ping(c.pods[a2].ip));
    assert_eq!(c.reconcile_all(&none), vec![0, 0, 0]);
}

#[test]
fn dual_stack_over_vxlan_netlink() {
    if privileged() {
        dual_stack_over_vxlan(Backend::Netlink);
    }
}

#[test]
fn dual_stack_over_vxlan_ip_command() {
    if privileged() {
        dual_stack_over_vxlan(Backend::IpCommand);
    }
}

fn dual_stack_over_vxlan(backend: Backend) {
    let mut c = Cluster::new(2, backend);
    c.pools = vec!["10.244.0.0/16", "fd00:10:244::/56"];
    for n in &c.nodes {
        assert!(n
            .ns
            .exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]));
    }
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    let b6 = c.pods[b].ip6.unwrap().to_string();
    assert!(
        !c.pods[a].ns.exec_ok(&["ping", "-c1", "-W1", &b6]),
        "unreachable before"
    );
    let enc = Encapsulation::default();
    c.reconcile_all(&enc);
    let routes = c.nodes[0].ns.ip(&["-6", "route", "show", "proto", "154"]);
    assert!(routes.contains("dev fny.vxlan"), "{routes}");
    let (a6, b6) = (c.pods[a].ip6.unwrap(), c.pods[b].ip6.unwrap());
    assert!(c.pods[a].ns.ping(b6), "IPv6 pod -> pod across nodes");
    assert!(c.pods[b].ns.ping(a6), "and back");
    assert!(c.pods[a].ns.ping(c.pods[b].ip), "IPv4 too");
    assert_eq!(c.reconcile_all(&enc), vec![0, 0]);
    c.cross_check(&enc);
    // IPv6 pod routes of the CNI are untouched.
    let own = c.nodes[0].ns.ip(&["-6", "route", "show", "proto", "154"]);
    assert!(own.contains(&a6.to_string()), "{own}");
}

fn direct_routes_on_a_shared_link(backend: Backend) {
    let mut c = Cluster::new(2, backend);
    let a = c.add_pod(0);
    let b = c.add_pod(1);
    let enc = Encapsulation::None;
    let first = c.reconcile_all(&enc);
    assert_eq!(first, vec![1, 1], "one block route per node");
    let routes = c.nodes[0].ns.ip(&["route", "show", "proto", "154"]);
    assert!(routes.contains("via 172.31.0.2 dev ul0"), "{routes}");
    assert!(c.nodes[0]
        .ns
        .ip(&["link", "show", "type", "vxlan"])
        .trim()
        .is_empty());
    assert!(c.pods[a].ns.ping(c.pods[b].ip));
    assert_eq!(tcp_peer(&c.pods[b], &c.pods[a]), c.pods[b].ip, "no NAT");
    assert_eq!(c.reconcile_all(&enc), vec![0, 0]);
    c.cross_check(&enc);

    // Switching to VXLAN on a running cluster replaces the routes in place.
    let vx = Encapsulation::default();
    c.reconcile_all(&vx);
    assert!(c.nodes[0]
        .ns
        .ip(&["route", "show", "proto", "154"])
        .contains("dev fny.vxlan"));
    assert!(c.pods[a].ns.ping(c.pods[b].ip));
    assert_eq!(c.reconcile_all(&vx), vec![0, 0]);
    c.cross_check(&vx);
    let _ = &c.underlay;
}

/// Serves TCP `port` in `ns` until `stop`: each connection gets back the source address the
/// server saw (so the prober can check there is no NAT).
fn serve_peer_address(
    ns: &Ns,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let listener = in_netns(ns, move || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// Connects from `from` to `dst`: `Some(source address the server saw)` or `None` (dropped).
fn probe_tcp(from: &Ns, dst: SocketAddr) -> Option<String> {
    let file = File::open(from.path()).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut c = TcpStream::connect_timeout(&dst, Duration::from_millis(1500)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut seen = String::new();
        c.read_to_string(&mut seen).ok()?;
        Some(seen.trim().to_string())
    })
    .join()
    .unwrap()
}

/// The whole policy path across nodes: the demo application's pods wired by `furynet-cni` on
/// two nodes, the VXLAN overlay reconciled, each node's nftables ruleset computed by
/// `furynet-calc` from the policy engine and applied by the nft driver; then every TCP entry of
/// `furynet analyze`'s matrix is probed with real traffic and must agree, with the server
/// seeing the client pod's own address (no NAT). (UDP and SCTP probing is the lab's job.)
#[test]
fn network_policy_across_nodes_matches_analyze() {
    if !privileged() {
        return;
    }
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let loaded = furynet_model::load_paths(&[demo]);
    assert!(!loaded
        .diagnostics
        .iter()
        .any(|d| d.severity == furynet_model::Severity::Error));
    let mut model = loaded.cluster;
    model.pods.sort_by_key(|p| p.key());

    let mut cluster = Cluster::new(2, Backend::Netlink);
    let mut ifaces: Vec<std::collections::HashMap<String, String>> = vec![Default::default(); 2];
    for (i, pod) in model.pods.iter_mut().enumerate() {
        let n = i % 2;
        let idx = cluster.add_pod(n);
        pod.ips = vec![IpAddr::V4(cluster.pods[idx].ip)];
        pod.node_name = Some(cluster.nodes[n].name.clone());
        let container = format!("c-{}", cluster.pods[idx].ns.name);
        ifaces[n].insert(pod.key(), furynet_cni::host_veth_name(&container, "eth0"));
    }
    cluster.reconcile_all(&Encapsulation::default());

    let engine = furynet_policy::Engine::new(&model);
    for (n, node) in cluster.nodes.iter().enumerate() {
        let state = furynet_calc::compute(&engine, &node.name, &ifaces[n]);
        furynet_dataplane::nft::Nft::in_netns(node.ns.name.clone())
            .apply(&furynet_calc::render_full(&state))
            .unwrap();
    }

    // Engine pods are sorted by namespace/name, like `model.pods`, so indices line up.
    assert_eq!(engine.pods().len(), model.pods.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut servers = Vec::new();
    for (i, pod) in engine.pods().iter().enumerate() {
        assert_eq!(pod.key(), model.pods[i].key());
        for (port, proto) in pod.declared_ports() {
            if proto == furynet_model::Protocol::Tcp {
                servers.push(serve_peer_address(&cluster.pods[i].ns, port, stop.clone()));
            }
        }
    }
    let mut cases = Vec::new();
    for s in 0..engine.pods().len() {
        for d in (0..engine.pods().len()).filter(|&d| d != s) {
            for (port, proto) in engine.pods()[d].declared_ports() {
                if proto == furynet_model::Protocol::Tcp {
                    cases.push((s, d, port, engine.allowed(s, d, port, proto)));
                }
            }
        }
    }
    let results: Vec<Option<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(s, d, port, _)| {
                let (from, to) = (&cluster.pods[s], &cluster.pods[d]);
                scope.spawn(move || probe_tcp(&from.ns, SocketAddr::from((to.ip, port))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    stop.store(true, Ordering::SeqCst);
    for s in servers {
        s.join().unwrap();
    }
    let mut differences = Vec::new();
    let (mut allowed, mut denied) = (0, 0);
    for (&(s, d, port, want), got) in cases.iter().zip(&results) {
        let (src, dst) = (engine.pods()[s].key(), engine.pods()[d].key());
        match got {
            Some(seen) => {
                allowed += 1;
                assert_eq!(
                    seen,
                    &cluster.pods[s].ip.to_string(),
                    "{src} -> {dst}:{port}: NAT?"
                );
                if !want {
                    differences.push(format!(
                        "{src} -> {dst} {port}/TCP: analyze denies, traffic passed"
                    ));
                }
            }
            None => {
                denied += 1;
                if want {
                    differences.push(format!(
                        "{src} -> {dst} {port}/TCP: analyze allows, traffic dropped"
                    ));
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "dataplane differs from analyze:\n{}",
        differences.join("\n")
    );
    assert!(
        allowed > 0 && denied > 0,
        "the demo has both verdicts ({allowed} allowed, {denied} denied)"
    );
}
