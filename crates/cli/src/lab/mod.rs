//! `furynet lab`: a whole cluster's networking on one Linux machine, for real.
//!
//! Nodes are network namespaces joined by an underlay bridge; pods are namespaces wired by the
//! real `furynet-cni` binary, run inside the node's namespace exactly as a container runtime
//! runs it; each node gets the VXLAN overlay routes (`furynet_dataplane::routing`) and its
//! nftables policy (`furynet_calc` → `furynet_dataplane::nft`); every pod serves its declared
//! ports; every entry of `furynet analyze`'s matrix is probed with real traffic.
//!
//! Today the lab is one-shot (`demo`, `verify`): it builds, probes, prints and tears down in
//! one process, programming each node directly; the per-node agent and the long-lived
//! `up/apply/probe/down` workflow are the next step (issue 4).

mod netns;
mod probe;
mod sctp;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use furynet_dataplane::routing::netlink::NetlinkRouting;
use furynet_dataplane::routing::plan::{plan, BlockInfo, Encapsulation, NodeInfo, PlanInput};
use furynet_dataplane::routing::reconcile::reconcile;
use furynet_model::{load_paths, load_str, Cluster, Severity};
use furynet_policy::Engine;

use crate::analyze::Entry;
use crate::exit;
use crate::out::{with_stdout, Format};
use netns::{Ns, Res, PREFIX};

/// Build a cluster's networking from network namespaces and check NetworkPolicy for real.
///
/// Needs root. Exit codes: 0 the dataplane agrees with `furynet analyze` on every probed
/// connection; 1 it does not, or the lab could not be built; 2 bad usage.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build a 3-node lab with the demo shop (default deny, frontend -> backend -> database,
    /// DNS egress, metrics scraping), probe every connection, print the verified matrix, tear
    /// everything down.
    Demo(RunArgs),
    /// The same with your own Kubernetes YAML (Namespaces, Pods, workloads, NetworkPolicies).
    Verify {
        /// Files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Remove everything a lab left behind (namespaces named fnylab-*), e.g. after a crash.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Encap {
    Vxlan,
    None,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// Pod-to-pod transport between nodes.
    #[arg(long, value_enum, default_value_t = Encap::Vxlan)]
    encapsulation: Encap,
    /// Output: table (the verified matrix) or json (analyze's contract, measured).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// The demo application (`examples/demo/`), built into the binary so `lab demo` needs no files.
const DEMO: [&str; 3] = [
    include_str!("../../../../examples/demo/00-namespaces.yaml"),
    include_str!("../../../../examples/demo/10-workloads.yaml"),
    include_str!("../../../../examples/demo/20-policies.yaml"),
];

pub fn run_cmd(args: &LabArgs) -> u8 {
    let res = match &args.command {
        LabCommand::Down => netns::down().map(|n| {
            eprintln!("lab down: removed {n} namespace(s)");
            exit::OK
        }),
        LabCommand::Demo(r) => load_demo().and_then(|c| run_lab(c, r, true)),
        LabCommand::Verify { files, run } => load_files(files).and_then(|c| run_lab(c, run, false)),
    };
    res.unwrap_or_else(|e| {
        eprintln!("furynet lab: {e}");
        exit::INVALID_INPUT
    })
}

fn check(diags: &[furynet_model::Diagnostic]) -> Res<()> {
    for d in diags {
        eprintln!("{d}");
    }
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err("the input has invalid objects (see above)".into());
    }
    Ok(())
}

fn load_demo() -> Res<Cluster> {
    // One input, as `furynet analyze examples/demo` reads it: namespaces are resolved once.
    let text = DEMO.join("\n---\n");
    let l = load_str("examples/demo", &text);
    check(&l.diagnostics)?;
    Ok(l.cluster)
}

fn load_files(files: &[PathBuf]) -> Res<Cluster> {
    let l = load_paths(files);
    check(&l.diagnostics)?;
    Ok(l.cluster)
}

struct Node {
    name: String,
    ns: Ns,
    underlay: Ipv4Addr,
}

struct LabPod {
    ns: Ns,
    ip: IpAddr,
    node: usize,
    container: String,
}

/// Drop order: pods, nodes, underlay.
struct Lab {
    pods: Vec<LabPod>,
    nodes: Vec<Node>,
    _underlay: Ns,
    datastore: PathBuf,
    cni: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.datastore);
    }
}

fn progress(msg: &str) {
    eprintln!("lab: {msg}");
}

fn cni_binary() -> Res<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cni = exe.with_file_name("furynet-cni");
    if cni.is_file() {
        Ok(cni)
    } else {
        Err(format!(
            "{} not found next to furynet: build both (`cargo build --release`)",
            cni.display()
        ))
    }
}

fn conf(lab: &Lab, node: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "furynet-cni",
        "datastore": {"type": "embedded", "path": lab.datastore},
        "nodeName": node, "ipam": {"pools": ["10.244.0.0/16"]}, "mtu": 1450,
    })
    .to_string()
}

/// Calls the plugin inside the node's namespace as a runtime does.
fn cni(lab: &Lab, node: usize, verb: &str, container: &str, pod: &Ns) -> Res<serde_json::Value> {
    let node = &lab.nodes[node];
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.ns.name])
        .arg(&lab.cni)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", lab.cni.parent().unwrap_or(&lab.cni))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAME={container}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf(lab, &node.name).as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "furynet-cni {verb} {container}: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if out.stdout.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn build(cluster: &mut Cluster, nodes: usize) -> Res<Lab> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the lab needs root (it creates network namespaces)".into());
    }
    let cni_path = cni_binary()?;
    let tag = format!("{PREFIX}{}", std::process::id());
    progress(&format!("creating the underlay and {nodes} node(s)"));
    let underlay = Ns::new(format!("{tag}-underlay"))?;
    underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
    underlay.ip(&["link", "set", "br0", "up"])?;
    let mut lab_nodes = Vec::new();
    for i in 0..nodes {
        let ns = Ns::new(format!("{tag}-node-{i}"))?;
        let port = format!("p{i}");
        underlay.ip(&["link", "add", &port, "type", "veth", "peer", "name", "ul0"])?;
        underlay.ip(&["link", "set", "ul0", "netns", &ns.name])?;
        underlay.ip(&["link", "set", &port, "master", "br0", "up"])?;
        let ip = Ipv4Addr::new(172, 31, (i / 250) as u8, (i % 250) as u8 + 1);
        ns.ip(&["addr", "add", &format!("{ip}/16"), "dev", "ul0"])?;
        ns.ip(&["link", "set", "ul0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            "172.31.255.254",
            "dev",
            "ul0",
            "onlink",
        ])?;
        ns.sysctl("net.ipv4.ip_forward=1")?;
        lab_nodes.push(Node {
            name: format!("node-{i}"),
            ns,
            underlay: ip,
        });
    }
    let datastore = std::env::temp_dir().join(format!("{tag}-datastore"));
    let mut lab = Lab {
        pods: Vec::new(),
        nodes: lab_nodes,
        _underlay: underlay,
        datastore,
        cni: cni_path,
    };

    cluster.pods.sort_by_key(|p| p.key());
    progress(&format!(
        "wiring {} pod(s) with furynet-cni",
        cluster.pods.len()
    ));
    for (i, pod) in cluster.pods.iter_mut().enumerate() {
        // Honour spec.nodeName when it names a lab node; otherwise round-robin.
        let node = pod
            .node_name
            .as_deref()
            .and_then(|n| lab.nodes.iter().position(|x| x.name == n))
            .unwrap_or(i % nodes);
        let ns = Ns::new(format!("{tag}-pod-{i}"))?;
        let container = format!(
            "{}-{}-{i}",
            pod.namespace,
            pod.name.chars().take(40).collect::<String>()
        );
        let container: String = container
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let result = cni(&lab, node, "ADD", &container, &ns)?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("no address in the ADD result for {}", pod.key()))?;
        pod.ips = vec![ip];
        pod.node_name = Some(lab.nodes[node].name.clone());
        lab.pods.push(LabPod {
            ns,
            ip,
            node,
            container,
        });
    }
    Ok(lab)
}

fn program(lab: &Lab, cluster: &Cluster, engine: &Engine, encap: Encap) -> Res<()> {
    progress("programming routes (VXLAN or direct) and nftables policy on every node");
    let ds = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Embedded {
        path: lab.datastore.clone(),
    })
    .map_err(|e| e.to_string())?;
    let (kvs, _) = ds
        .list(furynet_ipam::records::BLOCKS_PREFIX)
        .map_err(|e| e.to_string())?;
    let mut blocks = Vec::new();
    for kv in kvs {
        let b: furynet_ipam::records::BlockRecord =
            serde_json::from_slice(&kv.value).map_err(|e| e.to_string())?;
        blocks.push(BlockInfo {
            cidr: b.cidr,
            node: b.affinity,
        });
    }
    let nodes: Vec<NodeInfo> = lab
        .nodes
        .iter()
        .map(|n| NodeInfo {
            name: n.name.clone(),
            underlay: n.underlay,
        })
        .collect();
    let encapsulation = match encap {
        Encap::Vxlan => Encapsulation::default(),
        Encap::None => Encapsulation::None,
    };
    for (n, node) in lab.nodes.iter().enumerate() {
        let p = plan(&PlanInput {
            node: node.name.clone(),
            underlay: node.underlay,
            underlay_mtu: 1500,
            nodes: nodes.clone(),
            blocks: blocks.clone(),
            encapsulation: encapsulation.clone(),
        });
        reconcile(&NetlinkRouting::in_netns(node.ns.path()), &p)
            .map_err(|e| format!("routes on {}: {e}", node.name))?;
        let ifaces: HashMap<String, String> = cluster
            .pods
            .iter()
            .zip(&lab.pods)
            .filter(|(_, lp)| lp.node == n)
            .map(|(p, lp)| (p.key(), furynet_cni::host_veth_name(&lp.container, "eth0")))
            .collect();
        let state = furynet_calc::compute(engine, &node.name, &ifaces);
        furynet_dataplane::nft::Nft::in_netns(node.ns.name.clone())
            .apply(&furynet_calc::render_full(&state))
            .map_err(|e| format!("nftables on {}: {e}", node.name))?;
    }
    Ok(())
}

fn run_lab(mut cluster: Cluster, args: &RunArgs, demo: bool) -> Res<u8> {
    let lab = build(&mut cluster, usize::from(args.nodes))?;
    let engine = Engine::new(&cluster);
    program(&lab, &cluster, &engine, args.encapsulation)?;

    progress("starting pod servers and probing every connection");
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    let mut unprobed = Vec::new();
    let mut unserved = Vec::new();
    for (i, pod) in engine.pods().iter().enumerate() {
        for (port, proto) in pod.declared_ports() {
            match probe::serve(&lab.pods[i].ns, lab.pods[i].ip, port, proto, stop.clone()) {
                Ok(h) => servers.push(h),
                Err(e) => {
                    unserved.push((i, port, proto));
                    unprobed.push(format!("{} {port}/{proto}: {e}", pod.key()));
                }
            }
        }
    }
    let mut cases = Vec::new();
    for s in 0..engine.pods().len() {
        for d in (0..engine.pods().len()).filter(|&d| d != s) {
            for (port, proto) in engine.pods()[d].declared_ports() {
                // A port whose server could not start is reported as not probed.
                if !unserved.contains(&(d, port, proto)) {
                    cases.push((s, d, port, proto));
                }
            }
        }
    }
    let results: Vec<Res<Option<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(s, d, port, proto)| {
                let (from, to) = (&lab.pods[s], &lab.pods[d]);
                scope.spawn(move || probe::probe(&from.ns, SocketAddr::new(to.ip, port), proto))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("probe panicked".into())))
            .collect()
    });
    stop.store(true, Ordering::SeqCst);
    for s in servers {
        let _ = s.join();
    }

    let mut entries = Vec::new();
    let mut differences = Vec::new();
    for (&(s, d, port, proto), got) in cases.iter().zip(results) {
        let (src, dst) = (engine.pods()[s].key(), engine.pods()[d].key());
        let want = engine.allowed(s, d, port, proto);
        let seen = got?;
        let allowed = seen.is_some();
        if let Some(seen) = &seen {
            if *seen != lab.pods[s].ip.to_string() {
                differences.push(format!(
                    "{src} -> {dst} {port}/{proto}: the server saw {seen}, not {} (NAT)",
                    lab.pods[s].ip
                ));
            }
        }
        if allowed != want {
            let (a, b) = if want {
                ("allows", "dropped")
            } else {
                ("denies", "passed")
            };
            differences.push(format!(
                "{src} -> {dst} {port}/{proto}: analyze {a}, traffic {b}"
            ));
        }
        entries.push(Entry {
            src,
            dst,
            port,
            protocol: proto,
            allowed,
        });
    }

    progress("tearing down (CNI DEL for every pod, then the namespaces)");
    for p in &lab.pods {
        if let Err(e) = cni(&lab, p.node, "DEL", &p.container, &p.ns) {
            differences.push(format!("teardown: {e}"));
        }
    }
    drop(lab);

    with_stdout(|w| match args.output {
        Format::Json | Format::Yaml => {
            serde_json::to_writer(&mut *w, &entries)?;
            writeln!(w)
        }
        _ => {
            if demo {
                writeln!(w, "furynet lab demo: {} node(s), {} pod(s); matrix measured with real traffic\n", args.nodes, engine.pods().len())?;
            }
            crate::analyze::render_table(&engine, &entries, w)?;
            writeln!(w)?;
            if differences.is_empty() {
                writeln!(
                    w,
                    "VERIFIED: the dataplane agrees with `furynet analyze` on all {} connections; every server saw the client pod's own address (no NAT).",
                    entries.len()
                )
            } else {
                writeln!(w, "DIFFERENCES between intent and dataplane:")?;
                for d in &differences {
                    writeln!(w, "  {d}")?;
                }
                Ok(())
            }
        }
    })
    .map_err(|e| e.to_string())?;
    for u in &unprobed {
        eprintln!("not probed: {u}");
    }
    if !unprobed.is_empty() || cases.len() != entries.len() {
        eprintln!(
            "furynet lab: {} port(s) could not be probed (listed above)",
            unprobed.len()
        );
    }
    Ok(if differences.is_empty() {
        exit::OK
    } else {
        exit::INVALID_INPUT
    })
}
