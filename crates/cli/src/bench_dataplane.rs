//! `furynet bench dataplane`: dataplane throughput and latency, furynet against a baseline, in
//! one run (issue 4).
//!
//! Two scenarios, each measured A/B in alternating order (A B B A A B ...) so slow drift of the
//! machine hits both sides alike; every figure is the median of the rounds:
//!
//! - **policy cost**: one node namespace, two pods wired by the real `furynet-cni` (embedded
//!   datastore in a temporary directory). Baseline: no nftables table at all. Policy: the
//!   node's `inet furynet` table rendered by `furynet_calc` for a synthetic cluster
//!   (`furynet_policy::synth`) with every pod local to the node (the worst case), plus two
//!   policies that select the benchmark pods and allow their traffic, padded with `/32`
//!   ipBlocks up to the requested number of set elements. Every new connection goes through
//!   the verdict maps, the pod chains and the set lookups; every packet through conntrack.
//! - **VXLAN**: two node namespaces joined by a veth underlay, one pod on each (furynet-cni).
//!   Ours: `furynet_dataplane::routing::{plan, reconcile}` over netlink. Baseline: the same
//!   FDB, neighbour and route entries programmed by hand with `ip`/`bridge` on a plain kernel
//!   `vxlan` device (`id 42 dstport 4789 nolearning`, same MTU and MAC).
//!
//! The traffic tool is built in: a TCP sink in the destination pod, a sender in the source pod
//! (sockets created on threads that `setns` into the pod). Throughput: one stream of 128 KiB
//! writes for N seconds, bytes counted by the receiver. Request/response: 1-byte ping-pong on
//! one `TCP_NODELAY` connection, per-transaction latency.
//!
//! Everything lives in namespaces named `fnyb-<pid>-*` and a temporary directory, all removed
//! by drop guards, also on error and on SIGINT/SIGTERM (the signals are turned into a stop flag
//! that the measurement loops check).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use furynet_dataplane::routing::netlink::NetlinkRouting;
use furynet_dataplane::routing::plan::{
    plan, BlockInfo, Encapsulation, NodeInfo, PlanInput, RoutingPlan,
};
use furynet_dataplane::routing::reconcile::reconcile;
use furynet_model::{Cluster, Severity};
use furynet_policy::synth::{self, SynthSpec};
use furynet_policy::Engine;
use serde::Serialize;

use crate::exit;
use crate::out::{with_stdout, Format};

type Res<T> = Result<T, String>;

/// Set by SIGINT / SIGTERM / SIGHUP: every loop stops, the guards clean up.
static STOP: AtomicBool = AtomicBool::new(false);

/// Every namespace and directory this benchmark creates starts with this and the pid.
const PREFIX: &str = "fnyb-";
const PORT: u16 = 5201;
const NODE: &str = "bench-node";
const BENCH_NS: &str = "fnyb-bench";
const MTU: u32 = 1450;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    All,
    Policy,
    Vxlan,
}

/// Pod-to-pod TCP throughput and request/response latency: with ~1,000 policies and ~10,000
/// set elements in force versus no policy, and over furynet's VXLAN versus a hand-built kernel
/// VXLAN. Needs root; `scripts/bench-dataplane.sh` builds and runs it.
#[derive(Debug, Args)]
pub struct DataplaneBench {
    /// Seconds per measurement (each of throughput and request/response).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// A/B rounds per scenario (alternating order); figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// NetworkPolicies in force on the node (policy scenario).
    #[arg(long, default_value_t = 1000)]
    policies: usize,
    /// Elements across the node's named sets (policy scenario); padded with /32 ipBlocks on
    /// the benchmark server's own policy when the synthetic cluster has fewer.
    #[arg(long, default_value_t = 10_000)]
    set_entries: usize,
    /// Run one scenario only.
    #[arg(long, value_enum, default_value_t = Only::All)]
    only: Only,
    /// Output format (table or json).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

// ---------------------------------------------------------------------------------------------
// Guards

fn sh(cmd: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// A named network namespace, deleted on drop (with every link inside it).
#[derive(Debug)]
struct Ns {
    name: String,
}

impl Ns {
    fn new(name: String) -> Res<Ns> {
        check_stop()?;
        sh("ip", &["netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    fn ip(&self, args: &[&str]) -> Res<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    fn exec(&self, args: &[&str]) -> Res<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// Runs `f` on a thread inside this namespace; sockets created there stay in it.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Res<T> {
        let file = File::open(self.path()).map_err(|e| format!("{}: {e}", self.name))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))
                .map(|()| f())
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A temporary directory (the embedded datastore), removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: String) -> Res<TempDir> {
        let p = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Turns SIGINT/SIGTERM/SIGHUP into [`STOP`]: blocked here (inherited by every thread started
/// later) and awaited on a dedicated thread. Child processes start with an empty mask.
fn stop_on_signals() -> Res<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().map_err(|e| format!("sigmask: {e}"))?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("bench dataplane: {sig}, stopping and cleaning up");
            STOP.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// The TCP sink/echo server in a pod; stops on drop.
#[derive(Debug)]
struct Sink {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// First byte of a connection: `T` throughput (read to EOF, answer the byte count as u64 BE),
/// `R` request/response (echo every byte).
fn serve_conn(mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'T' => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_be_bytes())
        }
        b'R' => {
            let mut b = [0u8; 1];
            while s.read(&mut b)? == 1 {
                s.write_all(&b)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn sink(ns: &Ns, addr: SocketAddr) -> Res<Sink> {
    let l = ns
        .enter(move || TcpListener::bind(addr))?
        .map_err(|e| format!("bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) && !STOP.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || serve_conn(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Ok(Sink {
        stop,
        handle: Some(handle),
    })
}

fn connect(ns: &Ns, addr: SocketAddr) -> Res<TcpStream> {
    ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?
        .map_err(|e| format!("connect {addr} from {}: {e}", ns.name))
}

/// One stream for `secs`: Gbit/s received by the server (until it confirmed the byte count).
fn throughput(ns: &Ns, addr: SocketAddr, secs: f64) -> Res<f64> {
    let mut s = connect(ns, addr)?;
    let e = |e: io::Error| format!("throughput to {addr}: {e}");
    s.write_all(b"T").map_err(e)?;
    let buf = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        check_stop()?;
        s.write_all(&buf).map_err(e)?;
    }
    s.shutdown(Shutdown::Write).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(e)?;
    let mut n = [0u8; 8];
    s.read_exact(&mut n).map_err(e)?;
    let took = start.elapsed().as_secs_f64().max(1e-9);
    Ok(u64::from_be_bytes(n) as f64 * 8.0 / took / 1e9)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct RrRun {
    tps: f64,
    median_us: f64,
    p99_us: f64,
}

/// 1-byte ping-pong for `secs` on one TCP_NODELAY connection.
fn request_response(ns: &Ns, addr: SocketAddr, secs: f64) -> Res<RrRun> {
    let mut s = connect(ns, addr)?;
    let e = |e: io::Error| format!("request/response to {addr}: {e}");
    s.set_nodelay(true).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(e)?;
    s.write_all(b"R").map_err(e)?;
    let mut b = [1u8; 1];
    let mut lat: Vec<f64> = Vec::with_capacity(1 << 18);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut now = start;
    while now < end {
        if lat.len().is_multiple_of(1024) {
            check_stop()?;
        }
        s.write_all(&b).map_err(e)?;
        s.read_exact(&mut b).map_err(e)?;
        let t = Instant::now();
        lat.push((t - now).as_secs_f64() * 1e6);
        now = t;
    }
    let took = start.elapsed().as_secs_f64().max(1e-9);
    let tps = lat.len() as f64 / took;
    lat.sort_by(f64::total_cmp);
    Ok(RrRun {
        tps,
        median_us: quantile(&lat, 0.5),
        p99_us: quantile(&lat, 0.99),
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank quantile of sorted samples (0 when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(idx).copied().unwrap_or(0.0)
}

/// Median (mean of the two middle values for an even count; 0 when empty).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Which side runs first in each round: A B, B A, A B, ... (ABBA), so drift cancels.
fn round_order(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

#[derive(Debug, Default, Serialize)]
struct Measure {
    /// Median over rounds.
    gbps: f64,
    rr_tps: f64,
    rr_median_us: f64,
    rr_p99_us: f64,
    gbps_runs: Vec<f64>,
    rr_runs: Vec<RrRun>,
}

impl Measure {
    fn finish(&mut self) {
        self.gbps = median(&self.gbps_runs);
        let col = |f: fn(&RrRun) -> f64| median(&self.rr_runs.iter().map(f).collect::<Vec<_>>());
        self.rr_tps = col(|r| r.tps);
        self.rr_median_us = col(|r| r.median_us);
        self.rr_p99_us = col(|r| r.p99_us);
    }
}

#[derive(Debug, Default, Serialize)]
struct Ratios {
    /// B / A throughput.
    throughput: f64,
    /// B / A transactions per second.
    rr_tps: f64,
    /// A / B median latency (above 1: B is faster).
    rr_median_latency: f64,
}

impl Ratios {
    fn of(a: &Measure, b: &Measure) -> Ratios {
        Ratios {
            throughput: ratio(b.gbps, a.gbps),
            rr_tps: ratio(b.rr_tps, a.rr_tps),
            rr_median_latency: ratio(a.rr_median_us, b.rr_median_us),
        }
    }
}

/// Measures A (`false`) and B (`true`) alternately; `switch(b)` configures the dataplane.
fn compare(
    args: &DataplaneBench,
    label: [&str; 2],
    from: &Ns,
    to: SocketAddr,
    switch: &mut dyn FnMut(bool) -> Res<()>,
) -> Res<(Measure, Measure)> {
    let secs = args.seconds.max(1) as f64;
    let mut m = [Measure::default(), Measure::default()];
    let mut current = None;
    for round in 0..args.rounds.max(1) {
        for side in round_order(round) {
            check_stop()?;
            if current != Some(side) {
                switch(side)?;
                current = Some(side);
            }
            let name = label[usize::from(side)];
            if round == 0 && side == round_order(0)[0] {
                // Warm-up (neighbours, caches, CPU frequency); not recorded.
                throughput(from, to, 1.0)?;
            }
            let g = throughput(from, to, secs)?;
            let r = request_response(from, to, secs)?;
            eprintln!(
                "  round {} {name:<14} {g:>7.2} Gbit/s | RR {:>8.0}/s median {:>6.1} us p99 {:>6.1} us",
                round + 1,
                r.tps,
                r.median_us,
                r.p99_us
            );
            let slot = &mut m[usize::from(side)];
            slot.gbps_runs.push(g);
            slot.rr_runs.push(r);
        }
    }
    let [mut a, mut b] = m;
    a.finish();
    b.finish();
    Ok((a, b))
}

// ---------------------------------------------------------------------------------------------
// Pods

/// A node namespace: forwarding on, and a default route (over a spare veth; no `dummy` module needed) so proxy ARP
/// answers the pods' `169.254.1.1` next hop, as it does on a real node with a default route.
fn node_ns(name: String) -> Res<Ns> {
    let ns = Ns::new(name)?;
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    ns.ip(&[
        "link", "add", "dflt0", "type", "veth", "peer", "name", "dflt1",
    ])?;
    ns.ip(&["link", "set", "dflt1", "up"])?;
    ns.ip(&["link", "set", "dflt0", "up"])?;
    ns.ip(&["route", "add", "default", "dev", "dflt0"])?;
    Ok(ns)
}

fn cni_binary() -> Res<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cni = exe.with_file_name("furynet-cni");
    if cni.is_file() {
        Ok(cni)
    } else {
        Err(format!(
            "{} not found next to furynet: build both (`cargo build --release -p furynet-cli -p furynet-cni`)",
            cni.display()
        ))
    }
}

/// CNI ADD inside the node's namespace, as a runtime does; returns the pod's address.
fn cni_add(cni: &Path, node: &Ns, node_name: &str, ds: &Path, pod: &Ns) -> Res<IpAddr> {
    check_stop()?;
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "furynet-cni",
        "datastore": {"type": "embedded", "path": ds},
        "nodeName": node_name, "ipam": {"pools": ["10.244.0.0/16"]}, "mtu": MTU,
    })
    .to_string();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(cni)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &pod.name)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni.parent().unwrap_or(cni))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAME={}", pod.name),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cni.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "furynet-cni ADD {}: {} {}",
            pod.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or_else(|| format!("no address in the ADD result for {}", pod.name))
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: policy cost

/// The two benchmark pods and the two policies that select them and allow their traffic,
/// the server's ingress peer list padded with `filler` non-adjacent `/32` ipBlocks.
fn own_yaml(filler: usize) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {BENCH_NS}}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: {BENCH_NS}, labels: {{app: fnyb-client}}}}\n\
         spec: {{containers: [{{name: c, image: bench}}]}}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: {BENCH_NS}, labels: {{app: fnyb-server}}}}\n\
         spec: {{containers: [{{name: c, image: bench, ports: [{{containerPort: {PORT}, protocol: TCP}}]}}]}}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: client-egress, namespace: {BENCH_NS}}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: fnyb-client}}}}\n  policyTypes: [Egress]\n  egress:\n\
         \x20 - to: [{{podSelector: {{matchLabels: {{app: fnyb-server}}}}}}]\n    ports: [{{protocol: TCP, port: {PORT}}}]\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: server-ingress, namespace: {BENCH_NS}}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: fnyb-server}}}}\n  policyTypes: [Ingress]\n  ingress:\n\
         \x20 - ports: [{{protocol: TCP, port: {PORT}}}]\n    from:\n    - podSelector: {{matchLabels: {{app: fnyb-client}}}}\n"
    );
    for ip in filler_addrs(filler) {
        y.push_str(&format!("    - ipBlock: {{cidr: {ip}/32}}\n"));
    }
    y
}

/// `n` distinct, pairwise non-adjacent IPv4 addresses in 100.64.0.0/10 (so an interval set
/// cannot merge them into ranges).
fn filler_addrs(n: usize) -> impl Iterator<Item = Ipv4Addr> {
    (0..n.min(1 << 21)).map(|i| Ipv4Addr::from(0x6440_0000u32 + 2 * i as u32))
}

/// The synthetic cluster (all pods on the benchmark node) plus the benchmark's own objects.
fn policy_cluster(policies: usize, filler: usize, client: IpAddr, server: IpAddr) -> Res<Cluster> {
    let synth_policies = policies.saturating_sub(2);
    let mut c = synth::cluster(&SynthSpec {
        pods: (synth_policies * 5).max(10),
        policies: synth_policies,
        ..SynthSpec::default()
    });
    for p in &mut c.pods {
        p.node_name = Some(NODE.into());
    }
    let l = furynet_model::load_str("bench-dataplane", &own_yaml(filler));
    if let Some(d) = l.diagnostics.iter().find(|d| d.severity == Severity::Error) {
        return Err(format!("benchmark objects: {d}"));
    }
    let mut own = l.cluster;
    for p in &mut own.pods {
        p.node_name = Some(NODE.into());
        p.ips = vec![if p.name == "client" { client } else { server }];
    }
    c.namespaces.append(&mut own.namespaces);
    c.pods.append(&mut own.pods);
    c.policies.append(&mut own.policies);
    Ok(c)
}

#[derive(Debug, Default, Serialize)]
struct NftCounts {
    policies: usize,
    local_pods: usize,
    chains: usize,
    rules: usize,
    sets: usize,
    set_elements: usize,
    /// Entries of the two interface verdict maps.
    vmap_entries: usize,
    /// `/32` ipBlocks added to the benchmark server's policy to reach `--set-entries`.
    filler_ipblocks: usize,
    /// Read back from the kernel after the first apply (`nft -j list table`).
    kernel_chains: usize,
    kernel_rules: usize,
    kernel_set_elements: usize,
    script_bytes: usize,
    calc_ms: f64,
    apply_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct PolicyReport {
    nft: NftCounts,
    no_policy: Measure,
    policy: Measure,
    ratio: Ratios,
}

fn elements(state: &furynet_calc::NftState) -> usize {
    state.sets.values().map(|s| s.elements.len()).sum()
}

fn policy_scenario(args: &DataplaneBench, tag: &str, cni: &Path) -> Res<PolicyReport> {
    eprintln!("policy: one node, two pods wired by furynet-cni");
    let ds = TempDir::new(format!("{tag}-ds-policy"))?;
    let node = node_ns(format!("{tag}-n1"))?;
    let client = Ns::new(format!("{tag}-p1"))?;
    let server = Ns::new(format!("{tag}-p2"))?;
    let client_ip = cni_add(cni, &node, NODE, &ds.0, &client)?;
    let server_ip = cni_add(cni, &node, NODE, &ds.0, &server)?;
    let ifaces_of = |c: &Cluster| -> HashMap<String, String> {
        c.pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let iface = match (p.namespace.as_str(), p.name.as_str()) {
                    (BENCH_NS, "client") => furynet_cni::host_veth_name(&client.name, "eth0"),
                    (BENCH_NS, "server") => furynet_cni::host_veth_name(&server.name, "eth0"),
                    // Not wired: the chains exist, no packet ever matches the interface.
                    _ => format!("fnx{i:08x}"),
                };
                (p.key(), iface)
            })
            .collect()
    };

    eprintln!(
        "policy: computing the node's table ({} policies, {} set elements wanted)",
        args.policies, args.set_entries
    );
    let started = Instant::now();
    let mut cluster = policy_cluster(args.policies, 0, client_ip, server_ip)?;
    let mut state = furynet_calc::compute(&Engine::new(&cluster), NODE, &ifaces_of(&cluster));
    let filler = args.set_entries.saturating_sub(elements(&state));
    if filler > 0 {
        cluster = policy_cluster(args.policies, filler, client_ip, server_ip)?;
        state = furynet_calc::compute(&Engine::new(&cluster), NODE, &ifaces_of(&cluster));
    }
    let script = furynet_calc::render_full(&state);
    let calc_ms = started.elapsed().as_secs_f64() * 1e3;
    let (chains, sets) = state.summary();
    let mut counts = NftCounts {
        policies: cluster.policies.len(),
        local_pods: state.pods.len(),
        chains: chains.len(),
        rules: chains.values().sum(),
        sets: state.sets.len(),
        set_elements: elements(&state),
        vmap_entries: sets.get("from_pod").copied().unwrap_or(0)
            + sets.get("to_pod").copied().unwrap_or(0),
        filler_ipblocks: filler,
        script_bytes: script.len(),
        calc_ms,
        ..NftCounts::default()
    };
    eprintln!(
        "policy: {} policies, {} local pods, {} chains, {} rules, {} sets with {} elements, {} vmap entries ({} filler ipBlocks; calc {:.0} ms)",
        counts.policies,
        counts.local_pods,
        counts.chains,
        counts.rules,
        counts.sets,
        counts.set_elements,
        counts.vmap_entries,
        filler,
        calc_ms
    );
    let client_chain = state
        .pods
        .values()
        .find(|p| p.pod == format!("{BENCH_NS}/client"))
        .map(|p| p.egress.len());
    let server_chain = state
        .pods
        .values()
        .find(|p| p.pod == format!("{BENCH_NS}/server"))
        .map(|p| p.ingress.len());
    if client_chain.unwrap_or(0) == 0 || server_chain.unwrap_or(0) == 0 {
        return Err(
            "the benchmark pods are not isolated by policy (no rules in their chains)".into(),
        );
    }

    let nft = furynet_dataplane::nft::Nft::in_netns(node.name.clone());
    let dst = SocketAddr::new(server_ip, PORT);
    let _sink = sink(&server, dst)?;
    let mut read_back = false;
    let mut apply_ms = Vec::new();
    let mut kernel = (0, 0, 0);
    let mut switch = |on: bool| -> Res<()> {
        if on {
            let t = Instant::now();
            nft.apply(&script).map_err(|e| format!("nft apply: {e}"))?;
            apply_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if !read_back {
                read_back = true;
                if let Ok(Some(view)) = nft.read_table() {
                    kernel = (
                        view.chains.len(),
                        view.chains.values().sum(),
                        view.sets
                            .iter()
                            .filter(|(n, _)| n.as_str() != "from_pod" && n.as_str() != "to_pod")
                            .map(|(_, n)| n)
                            .sum(),
                    );
                }
            }
            eprintln!("  (policy table applied)");
        } else {
            // Absent at the start; `delete` fails then, which is fine.
            let _ = node.exec(&["nft", "delete", "table", "inet", "furynet"]);
            eprintln!("  (no nftables table)");
        }
        Ok(())
    };
    let (a, b) = compare(args, ["no policy", "policy"], &client, dst, &mut switch)?;
    counts.apply_ms = apply_ms;
    (
        counts.kernel_chains,
        counts.kernel_rules,
        counts.kernel_set_elements,
    ) = kernel;
    Ok(PolicyReport {
        nft: counts,
        ratio: Ratios::of(&a, &b),
        no_policy: a,
        policy: b,
    })
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: VXLAN

#[derive(Debug, Serialize)]
struct VxlanReport {
    pod_mtu: u32,
    kernel_vxlan: Measure,
    furynet_vxlan: Measure,
    ratio: Ratios,
}

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The same entries as `p`, on a plain kernel VXLAN device `vx0` programmed with `ip`/`bridge`.
fn hand_vxlan(ns: &Ns, p: &RoutingPlan) -> Res<()> {
    let vx = p.vxlan.as_ref().ok_or("the plan has no VXLAN device")?;
    let local = vx.local.to_string();
    let mtu = vx.mtu.to_string();
    let mac = mac_str(&vx.mac);
    ns.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        &local,
        "dev",
        "ul0",
        "nolearning",
    ])?;
    ns.ip(&["link", "set", "vx0", "address", &mac, "mtu", &mtu, "up"])?;
    for f in &p.fdb {
        let (m, d) = (mac_str(&f.mac), f.dst.to_string());
        ns.exec(&["bridge", "fdb", "append", &m, "dev", "vx0", "dst", &d])?;
    }
    for n in &p.neighbours {
        let (ip, m) = (n.ip.to_string(), mac_str(&n.mac));
        ns.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &m,
            "dev",
            "vx0",
            "nud",
            "permanent",
        ])?;
    }
    for r in &p.routes {
        let (dst, via) = (r.dst.to_string(), r.via.to_string());
        ns.ip(&[
            "route", "replace", &dst, "via", &via, "dev", "vx0", "onlink",
        ])?;
    }
    Ok(())
}

fn vxlan_scenario(args: &DataplaneBench, tag: &str, cni: &Path) -> Res<VxlanReport> {
    eprintln!("vxlan: two nodes on a veth underlay, one pod each (furynet-cni)");
    let ds = TempDir::new(format!("{tag}-ds-vxlan"))?;
    let a = node_ns(format!("{tag}-a"))?;
    let b = node_ns(format!("{tag}-b"))?;
    a.ip(&[
        "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", &b.name,
    ])?;
    let nodes = [
        (&a, "node-a", Ipv4Addr::new(172, 31, 0, 1)),
        (&b, "node-b", Ipv4Addr::new(172, 31, 0, 2)),
    ];
    for (ns, _, ip) in nodes {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "ul0"])?;
        ns.ip(&["link", "set", "ul0", "up"])?;
    }
    let pa = Ns::new(format!("{tag}-pa"))?;
    let pb = Ns::new(format!("{tag}-pb"))?;
    cni_add(cni, &a, "node-a", &ds.0, &pa)?;
    let ip_b = cni_add(cni, &b, "node-b", &ds.0, &pb)?;

    let store = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Embedded {
        path: ds.0.clone(),
    })
    .map_err(|e| e.to_string())?;
    let (kvs, _) = store
        .list(furynet_ipam::records::BLOCKS_PREFIX)
        .map_err(|e| e.to_string())?;
    let mut blocks = Vec::new();
    for kv in kvs {
        let rec: furynet_ipam::records::BlockRecord =
            serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
        blocks.push(BlockInfo {
            cidr: rec.cidr,
            node: rec.affinity,
        });
    }
    drop(store);
    let infos: Vec<NodeInfo> = nodes
        .iter()
        .map(|(_, name, ip)| NodeInfo {
            name: (*name).into(),
            underlay: *ip,
        })
        .collect();
    let plans: Vec<RoutingPlan> = nodes
        .iter()
        .map(|(_, name, ip)| {
            plan(&PlanInput {
                node: (*name).into(),
                underlay: *ip,
                underlay_mtu: 1500,
                nodes: infos.clone(),
                blocks: blocks.clone(),
                encapsulation: Encapsulation::default(),
            })
        })
        .collect();
    let device = plans
        .first()
        .and_then(|p| p.vxlan.as_ref())
        .map(|v| v.name.clone())
        .ok_or("the plan has no VXLAN device")?;
    let pod_mtu = plans.first().map_or(0, |p| p.pod_mtu);

    let dst = SocketAddr::new(ip_b, PORT);
    let _sink = sink(&pb, dst)?;
    let mut switch = |ours: bool| -> Res<()> {
        for ((ns, name, _), p) in nodes.iter().zip(&plans) {
            if ours {
                let _ = ns.ip(&["link", "del", "vx0"]);
                reconcile(&NetlinkRouting::in_netns(ns.path()), p)
                    .map_err(|e| format!("routes on {name}: {e}"))?;
            } else {
                let _ = ns.ip(&["link", "del", &device]);
                hand_vxlan(ns, p)?;
            }
        }
        eprintln!(
            "  ({})",
            if ours {
                "furynet routing plan reconciled"
            } else {
                "kernel vxlan vx0 built by hand"
            }
        );
        Ok(())
    };
    let (k, f) = compare(
        args,
        ["kernel vxlan", "furynet vxlan"],
        &pa,
        dst,
        &mut switch,
    )?;
    Ok(VxlanReport {
        pod_mtu,
        ratio: Ratios::of(&k, &f),
        kernel_vxlan: k,
        furynet_vxlan: f,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    /// 1, 5 and 15 minute load averages at start.
    loadavg: [f64; 3],
    kernel: String,
}

fn machine() -> Machine {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut l = load
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0));
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg: [
            l.next().unwrap_or(0.0),
            l.next().unwrap_or(0.0),
            l.next().unwrap_or(0.0),
        ],
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    seconds: u64,
    rounds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vxlan: Option<VxlanReport>,
}

fn bench(args: &DataplaneBench) -> Res<Report> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (it creates network namespaces)".into());
    }
    stop_on_signals()?;
    let machine = machine();
    eprintln!(
        "bench dataplane: {} CPUs, load {:.2} {:.2} {:.2} at start, kernel {}",
        machine.cpus, machine.loadavg[0], machine.loadavg[1], machine.loadavg[2], machine.kernel
    );
    let cni = cni_binary()?;
    let tag = format!("{PREFIX}{}", std::process::id());
    let policy = match args.only {
        Only::All | Only::Policy => Some(policy_scenario(args, &tag, &cni)?),
        Only::Vxlan => None,
    };
    let vxlan = match args.only {
        Only::All | Only::Vxlan => Some(vxlan_scenario(args, &tag, &cni)?),
        Only::Policy => None,
    };
    Ok(Report {
        machine,
        seconds: args.seconds,
        rounds: args.rounds,
        policy,
        vxlan,
    })
}

fn verdict(r: f64) -> &'static str {
    if r >= 0.95 {
        "meets >= 0.95"
    } else {
        "MISSES 0.95"
    }
}

fn table(r: &Report, w: &mut dyn Write) -> io::Result<()> {
    let m = &r.machine;
    writeln!(
        w,
        "furynet bench dataplane: {} CPUs, load {:.2} {:.2} {:.2} at start, kernel {}; {} s per measurement, {} rounds A/B alternating, medians of rounds",
        m.cpus, m.loadavg[0], m.loadavg[1], m.loadavg[2], m.kernel, r.seconds, r.rounds
    )?;
    let row = |w: &mut dyn Write, name: &str, x: &Measure| {
        writeln!(
            w,
            "  {name:<16} {:>8.2} Gbit/s  {:>9.0} RR/s  median {:>6.1} us  p99 {:>6.1} us",
            x.gbps, x.rr_tps, x.rr_median_us, x.rr_p99_us
        )
    };
    let ratios = |w: &mut dyn Write, x: &Ratios| {
        writeln!(
            w,
            "  ratio            throughput {:.3} ({})  RR/s {:.3} ({})  median latency {:.3}",
            x.throughput,
            verdict(x.throughput),
            x.rr_tps,
            verdict(x.rr_tps),
            x.rr_median_latency
        )
    };
    if let Some(p) = &r.policy {
        let n = &p.nft;
        writeln!(w, "\nPolicy cost, pod -> pod on one node:")?;
        writeln!(
            w,
            "  in force: {} policies, {} local pods, {} chains / {} rules, {} sets / {} elements (kernel: {} chains / {} rules / {} elements), {} vmap entries; {} filler ipBlocks; calc {:.0} ms, apply {:.0} ms",
            n.policies, n.local_pods, n.chains, n.rules, n.sets, n.set_elements, n.kernel_chains,
            n.kernel_rules, n.kernel_set_elements, n.vmap_entries, n.filler_ipblocks, n.calc_ms,
            median(&n.apply_ms)
        )?;
        row(w, "no policy", &p.no_policy)?;
        row(w, "policy in force", &p.policy)?;
        ratios(w, &p.ratio)?;
    }
    if let Some(v) = &r.vxlan {
        writeln!(w, "\nCross-node over VXLAN (pod MTU {}):", v.pod_mtu)?;
        row(w, "kernel vxlan", &v.kernel_vxlan)?;
        row(w, "furynet vxlan", &v.furynet_vxlan)?;
        ratios(w, &v.ratio)?;
    }
    Ok(())
}

pub fn run(args: &DataplaneBench) -> u8 {
    match bench(args) {
        Ok(r) => {
            let res = with_stdout(|w| match args.output {
                Format::Json | Format::Yaml => {
                    serde_json::to_writer(&mut *w, &r)?;
                    writeln!(w)
                }
                _ => table(&r, w),
            });
            match res {
                Ok(()) => exit::OK,
                Err(_) => exit::INVALID_INPUT,
            }
        }
        Err(e) => {
            eprintln!("furynet bench dataplane: {e}");
            exit::INVALID_INPUT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_medians() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.5), 51.0);
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn ratios_guard_zero_and_orient_latency() {
        assert_eq!(ratio(1.0, 0.0), 0.0);
        let a = Measure {
            gbps: 10.0,
            rr_tps: 100.0,
            rr_median_us: 20.0,
            ..Measure::default()
        };
        let b = Measure {
            gbps: 9.0,
            rr_tps: 80.0,
            rr_median_us: 25.0,
            ..Measure::default()
        };
        let r = Ratios::of(&a, &b);
        assert!((r.throughput - 0.9).abs() < 1e-9);
        assert!((r.rr_tps - 0.8).abs() < 1e-9);
        assert!((r.rr_median_latency - 0.8).abs() < 1e-9);
    }

    #[test]
    fn rounds_alternate_abba() {
        let order: Vec<bool> = (0..3).flat_map(round_order).collect();
        assert_eq!(order, [false, true, true, false, false, true]);
    }

    #[test]
    fn measure_takes_medians_of_rounds() {
        let mut m = Measure {
            gbps_runs: vec![5.0, 1.0, 3.0],
            rr_runs: vec![
                RrRun {
                    tps: 10.0,
                    median_us: 5.0,
                    p99_us: 9.0,
                },
                RrRun {
                    tps: 30.0,
                    median_us: 1.0,
                    p99_us: 3.0,
                },
                RrRun {
                    tps: 20.0,
                    median_us: 3.0,
                    p99_us: 6.0,
                },
            ],
            ..Measure::default()
        };
        m.finish();
        assert_eq!(
            (m.gbps, m.rr_tps, m.rr_median_us, m.rr_p99_us),
            (3.0, 20.0, 3.0, 6.0)
        );
    }

    #[test]
    fn fillers_are_distinct_and_never_adjacent() {
        let v: Vec<u32> = filler_addrs(1000).map(u32::from).collect();
        assert_eq!(v.len(), 1000);
        assert!(v.windows(2).all(|w| w[1] - w[0] == 2));
        assert_eq!(
            v.first().copied(),
            Some(u32::from(Ipv4Addr::new(100, 64, 0, 0)))
        );
    }

    #[test]
    fn benchmark_cluster_selects_the_pods_and_counts_policies() {
        let c = policy_cluster(
            12,
            5,
            "10.244.0.2".parse().unwrap(),
            "10.244.0.3".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(c.policies.len(), 12);
        assert!(c.pods.iter().all(|p| p.node_name.as_deref() == Some(NODE)));
        let engine = Engine::new(&c);
        let pid = |name: &str| {
            engine
                .pods()
                .iter()
                .position(|p| p.namespace == BENCH_NS && p.name == name)
                .unwrap()
        };
        let (client, server) = (pid("client"), pid("server"));
        assert!(engine.allowed(client, server, PORT, furynet_model::Protocol::Tcp));
        assert!(!engine.allowed(client, server, PORT + 1, furynet_model::Protocol::Tcp));
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(mac_str(&[2, 0xab, 0, 1, 0x10, 0xff]), "02:ab:00:01:10:ff");
    }
}
