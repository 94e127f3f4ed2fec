//! `furynet lab`: a whole cluster's networking on one Linux machine, for real.
//!
//! Nodes are network namespaces joined by an underlay bridge, each running its own
//! `furynet agent` (datastore watch → calc → routes, VXLAN and nftables). Pods are namespaces
//! wired by the real `furynet-cni`, run inside the node's namespace exactly as a container
//! runtime runs it, each with a port server (`lab serve`) that answers with the peer address
//! it saw. Objects go into the lab's datastore; `apply`/`delete` return when every agent has
//! programmed the change; `probe` measures every connection with real traffic; `verify`
//! compares that with `furynet analyze`. See the README and `docs/agent.md`.

mod bench;
mod check;
mod cluster;
mod monitoring;
pub(crate) use monitoring::http_get;
pub(crate) mod netns;
mod probe;
mod relay;
mod sctp;
mod state;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use furynet_model::{load_paths, load_str, Cluster, Protocol, Severity};
use serde::Serialize;

use crate::exit;
use crate::out::{with_stdout, Format};
use netns::{Ns, Res};
use state::LabState;

/// Build a cluster's networking from network namespaces and check NetworkPolicy for real.
///
/// Needs root. A lab is long-lived: `up` builds nodes (each running `furynet agent`), `apply`
/// and `delete` change its objects and return when every agent has programmed the change,
/// `probe` measures every connection with real traffic (TCP, UDP, SCTP), `verify` compares
/// that with `furynet analyze`, `down` removes everything. `demo` and `verify -f` do it all in
/// one go.
///
/// Exit codes: 0 done (verify: the dataplane agrees with analyze on every probed connection);
/// 1 it does not, or the lab could not be built or changed; 2 bad usage.
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
    Demo(OneShot),
    /// Start a lab: underlay, nodes and their agents; optionally apply files.
    Up {
        #[command(flatten)]
        build: BuildArgs,
        /// Files or directories to apply once the nodes are up.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
    },
    /// Create or update objects (Namespaces, Pods, workloads, NetworkPolicies, Services);
    /// returns when every agent has programmed them.
    Apply(ChangeArgs),
    /// Delete the objects named in the files (pods are torn down with CNI DEL); returns when
    /// every agent has programmed the change.
    Delete(ChangeArgs),
    /// Nodes (underlay address, agent in sync or not) and pods (node, addresses).
    Status {
        /// Output: table, wide or json.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Measure every connection (ordered pair of distinct pods, each declared port of the
    /// destination) with real traffic; -o json prints exactly `furynet analyze -o json`'s format.
    Probe(ProbeArgs),
    /// Probe and compare with `furynet analyze` on the lab's current objects; exit 1 and list
    /// each difference when intent and dataplane disagree. With -f: a one-shot lab (up with the
    /// files, verify, down).
    Verify {
        /// One-shot mode: files or directories (needs no running lab).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        probe: ProbeArgs,
    },
    /// Restart every node's agent, one at a time (the kernel state stays; traffic flows on).
    RestartAgents {
        /// Seconds to wait for each new agent's first sync.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Remove everything a lab created (its agents and servers, namespaces named fnylab-*,
    /// its datastore), from any state, also after a crash.
    Down,
    /// Benchmark: policy programming latency (datastore write -> probe flips) on a lab with
    /// synthetic pods and policies (see BENCHMARKS.md).
    #[command(hide = true)]
    BenchProgramming {
        #[arg(long, default_value_t = 100)]
        pods: usize,
        #[arg(long, default_value_t = 50)]
        policies: usize,
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        #[arg(long, default_value_t = 20)]
        samples: usize,
    },
    /// The etcd relay into the node namespaces (started by `lab up --datastore etcd://`).
    #[command(hide = true)]
    Relay {
        /// The lab's tag (lets `lab down` find this process after a crash).
        #[arg(long)]
        tag: String,
        #[arg(long)]
        netns: Vec<String>,
        /// LISTEN_PORT=HOST:PORT
        #[arg(long = "route")]
        routes: Vec<String>,
        /// NETNS=HOST_PORT:TARGET_PORT
        #[arg(long = "expose")]
        exposes: Vec<String>,
    },
    /// A pod's port server (started by the lab inside the pod's namespace).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        netns: String,
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// PORT/PROTOCOL, e.g. 80/TCP.
        #[arg(long = "port")]
        ports: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Encap {
    Vxlan,
    None,
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// Pod-to-pod transport between nodes.
    #[arg(long, value_enum, default_value_t = Encap::Vxlan)]
    encapsulation: Encap,
    /// Datastore: `embedded` (a file database in the lab's directory) or etcd://HOST:PORT.
    #[arg(long, default_value = "embedded")]
    datastore: String,
    /// Seconds to wait for the agents to program a change.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Seconds between the agents' full re-reads of the kernel (drift repair).
    #[arg(long, default_value_t = 10)]
    resync_interval: u64,
    /// Also start a local Prometheus (Debian's `prometheus`) scraping every agent, with
    /// furynet's alert rules loaded.
    #[arg(long)]
    monitoring: bool,
    /// Loopback port of that Prometheus.
    #[arg(long, default_value_t = 9090)]
    monitoring_port: u16,
    /// Run fan-out servers (`furynet fanout`, Typha's job) on the underlay and have every
    /// agent read the cluster through them instead of watching the datastore.
    #[arg(long)]
    fanout: bool,
    /// How many fan-out servers (agents fail over between them).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=8))]
    fanout_replicas: u8,
    /// Dual-stack pods: an IPv4 and an IPv6 address each (pools 10.244.0.0/16 and
    /// fd00:10:244::/56), IPv6 carried over the VXLAN overlay; probes and `verify` check
    /// every connection on both families.
    #[arg(long)]
    dual_stack: bool,
}

#[derive(Debug, Args)]
struct OneShot {
    #[command(flatten)]
    build: BuildArgs,
    /// Output: table (the verified matrix) or json (analyze's contract, measured).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Args)]
struct ChangeArgs {
    /// Files or directories.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Seconds to wait for the agents to program the change.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Only from these pods (namespace/name; repeatable).
    #[arg(long)]
    from: Vec<String>,
    /// Only to these pods (namespace/name; repeatable).
    #[arg(long)]
    to: Vec<String>,
    /// Output: table, wide or json (analyze's contract, measured).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// The demo application (`examples/demo/`), built into the binary so `lab demo` needs no files.
const DEMO: [&str; 3] = [
    include_str!("../../../../examples/demo/00-namespaces.yaml"),
    include_str!("../../../../examples/demo/10-workloads.yaml"),
    include_str!("../../../../examples/demo/20-policies.yaml"),
];

pub(crate) fn progress(msg: &str) {
    eprintln!("lab: {msg}");
}

pub fn run_cmd(args: &LabArgs) -> u8 {
    let res = match &args.command {
        LabCommand::Down => down(),
        LabCommand::Demo(o) => load_demo().and_then(|c| {
            one_shot(
                c,
                &o.build,
                &ProbeArgs {
                    from: vec![],
                    to: vec![],
                    output: o.output,
                },
                true,
            )
        }),
        LabCommand::Up { build, files } => up(build, files),
        LabCommand::Apply(c) => change(c, true),
        LabCommand::Delete(c) => change(c, false),
        LabCommand::Status { output } => status(*output),
        LabCommand::Probe(p) => probe_cmd(p, false),
        LabCommand::Verify {
            files,
            build,
            probe,
        } if files.is_empty() => {
            let _ = build;
            probe_cmd(probe, true)
        }
        LabCommand::Verify {
            files,
            build,
            probe,
        } => load_files(files).and_then(|c| one_shot(c, build, probe, false)),
        LabCommand::Serve { netns, ips, ports } => serve(netns, ips, ports),
        LabCommand::Relay {
            netns,
            routes,
            exposes,
            ..
        } => relay::run(netns, routes, exposes).map(|()| exit::OK),
        LabCommand::BenchProgramming {
            pods,
            policies,
            nodes,
            samples,
        } => bench::run(*pods, *policies, *nodes, (*samples).max(1)).and_then(|r| {
            with_stdout(|w| {
                serde_json::to_writer(&mut *w, &r)?;
                writeln!(w)
            })
            .map_err(|e| e.to_string())?;
            Ok(exit::OK)
        }),
        LabCommand::RestartAgents { timeout } => LabState::running().and_then(|mut s| {
            cluster::restart_agents(&mut s, Duration::from_secs(*timeout))?;
            eprintln!("lab: {} agent(s) restarted and in sync", s.nodes.len());
            Ok(exit::OK)
        }),
    };
    res.unwrap_or_else(|e| {
        eprintln!("furynet lab: {e}");
        exit::INVALID_INPUT
    })
}

fn check_diags(diags: &[furynet_model::Diagnostic]) -> Res<()> {
    for d in diags {
        eprintln!("{d}");
    }
    if diags.iter().any(|d| d.severity == Severity::Error) {
        return Err("the input has invalid objects (see above); nothing was changed".into());
    }
    Ok(())
}

fn load_demo() -> Res<Cluster> {
    // One input, as `furynet analyze examples/demo` reads it: namespaces are resolved once.
    let text = DEMO.join("\n---\n");
    let l = load_str("examples/demo", &text);
    check_diags(&l.diagnostics)?;
    Ok(l.cluster)
}

fn load_files(files: &[PathBuf]) -> Res<Cluster> {
    let l = load_paths(files);
    check_diags(&l.diagnostics)?;
    Ok(l.cluster)
}

fn down() -> Res<u8> {
    let state = LabState::load().ok().flatten();
    // Processes first (agents write status records while they run), then the namespaces.
    let (procs, namespaces) = netns::down()?;
    // An etcd-backed lab's keys (the whole /furynet/ prefix: `lab up` demanded it empty).
    let mut keys = 0;
    if let Some(s) = state.filter(|s| s.node_datastore.is_some()) {
        let ds = cluster::open_datastore(&s)?;
        let (kvs, _) = ds.list("").map_err(|e| e.to_string())?;
        for kv in kvs {
            if ds.delete(&kv.key, None).is_ok() {
                keys += 1;
            }
        }
    }
    LabState::remove();
    eprintln!(
        "lab down: stopped {procs} process(es), removed {namespaces} namespace(s){}",
        if keys > 0 {
            format!(" and {keys} datastore key(s)")
        } else {
            String::new()
        }
    );
    Ok(exit::OK)
}

fn up_opts(b: &BuildArgs) -> cluster::UpOptions {
    cluster::UpOptions {
        nodes: usize::from(b.nodes),
        datastore: Some(b.datastore.clone()),
        encapsulation: b.encapsulation,
        timeout: Duration::from_secs(b.timeout),
        resync_interval: b.resync_interval.max(1),
        monitoring: b.monitoring.then_some(b.monitoring_port),
        fanout: if b.fanout {
            usize::from(b.fanout_replicas)
        } else {
            0
        },
        dual_stack: b.dual_stack,
    }
}

/// `up`, tearing down whatever was built when it fails half-way.
fn build_lab(b: &BuildArgs) -> Res<LabState> {
    match cluster::up(&up_opts(b)) {
        Ok(s) => Ok(s),
        Err(e) if e.contains("already running") || e.contains("lab down` first") => Err(e),
        Err(e) => {
            let _ = down();
            Err(e)
        }
    }
}

fn apply_files(state: &mut LabState, c: &Cluster, timeout: Duration) -> Res<cluster::Changes> {
    let ds = cluster::open_datastore(state)?;
    let ch = cluster::apply(state, ds.as_ref(), c)?;
    if ch.revision > 0 {
        progress("waiting until every agent has programmed the change");
        let took = cluster::wait_for_agents(state, ds.as_ref(), ch.revision, timeout)?;
        progress(&format!(
            "{} agent(s) programmed revision {} in {} ms",
            state.nodes.len(),
            ch.revision,
            took.as_millis()
        ));
    }
    Ok(ch)
}

fn up(b: &BuildArgs, files: &[PathBuf]) -> Res<u8> {
    let input = if files.is_empty() {
        None
    } else {
        Some(load_files(files)?)
    };
    let mut state = build_lab(b)?;
    if let Some(c) = input {
        apply_files(&mut state, &c, Duration::from_secs(b.timeout))?;
    }
    if let Some(url) = &state.prometheus {
        eprintln!(
            "lab up: Prometheus at {url} (alerts: {url}/alerts); agents' metrics at http://127.0.0.1:{}..{}/metrics",
            cluster::METRICS_BASE_PORT,
            cluster::METRICS_BASE_PORT as usize + state.nodes.len() - 1
        );
    }
    if !state.fanout.is_empty() {
        eprintln!(
            "lab up: agents read the cluster through the fan-out servers {} (in namespace {}-underlay; logs {}/fanout-K.log)",
            state.fanout.join(", "),
            state.tag,
            state::dir().display()
        );
    }
    eprintln!(
        "lab up: {} node(s) ({} encapsulation, {}, datastore {}), {} pod(s); every agent in sync.\n\
         next: furynet lab apply -f FILE | lab status | lab probe | lab verify | lab down",
        state.nodes.len(),
        state.encapsulation,
        if state.dual_stack {
            "dual-stack pods: IPv4 and IPv6, probed on both"
        } else {
            "IPv4 pods"
        },
        state.datastore,
        state.pods.len()
    );
    Ok(exit::OK)
}

fn change(c: &ChangeArgs, apply: bool) -> Res<u8> {
    let input = load_files(&c.files)?;
    let mut state = LabState::running()?;
    let ds = cluster::open_datastore(&state)?;
    let timeout = Duration::from_secs(c.timeout);
    let ch = if apply {
        apply_files(&mut state, &input, timeout)?
    } else {
        let ch = cluster::delete(&mut state, ds.as_ref(), &input)?;
        if ch.revision > 0 {
            cluster::wait_for_agents(&state, ds.as_ref(), ch.revision, timeout)?;
        }
        ch
    };
    for o in &ch.created {
        eprintln!("{o} created");
    }
    for o in &ch.configured {
        eprintln!("{o} configured");
    }
    for o in &ch.deleted {
        eprintln!("{o} deleted");
    }
    if ch.unchanged > 0 {
        eprintln!("{} object(s) unchanged", ch.unchanged);
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusNode {
    name: String,
    underlay: String,
    netns: String,
    agent_pid: u32,
    in_sync: bool,
    revision: Option<i64>,
    error: Option<String>,
    endpoints: usize,
    /// Key figures from the agent's own `/metrics` (absent when it does not answer).
    metrics: Option<monitoring::KeyMetrics>,
}

#[derive(Serialize)]
struct StatusPod {
    namespace: String,
    name: String,
    node: String,
    ips: Vec<IpAddr>,
}

#[derive(Serialize)]
struct StatusOut {
    nodes: Vec<StatusNode>,
    pods: Vec<StatusPod>,
    /// The fan-out servers (`lab up --fanout`), absent without them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fanout: Vec<monitoring::FanoutStatus>,
}

fn status(output: Format) -> Res<u8> {
    let state = LabState::running()?;
    let ds = cluster::open_datastore(&state)?;
    let agents = cluster::agent_statuses(ds.as_ref())?;
    let out = StatusOut {
        nodes: state
            .nodes
            .iter()
            .map(|n| {
                let a = agents.get(&n.name);
                StatusNode {
                    name: n.name.clone(),
                    underlay: n.underlay.to_string(),
                    netns: n.netns.clone(),
                    agent_pid: n.agent_pid,
                    in_sync: a.is_some_and(|a| a.in_sync),
                    revision: a.map(|a| a.revision),
                    error: match a {
                        Some(a) => a.error.clone(),
                        None => Some("no status (agent down?)".into()),
                    },
                    endpoints: a.map_or(0, |a| a.endpoints),
                    metrics: monitoring::key_metrics(&n.netns),
                }
            })
            .collect(),
        pods: state
            .pods
            .iter()
            .map(|p| StatusPod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: state.nodes[p.node].name.clone(),
                ips: p.ips.clone(),
            })
            .collect(),
        fanout: monitoring::fanout_statuses(&state),
    };
    with_stdout(|w| match output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *w, &out)?;
            writeln!(w)
        }
        Format::Yaml => {
            let y = serde_yaml_ng::to_string(&out).map_err(std::io::Error::other)?;
            write!(w, "{y}")
        }
        _ => {
            let wide = output == Format::Wide;
            writeln!(
                w,
                "NODE\tUNDERLAY\tAGENT\tIN-SYNC\tREVISION\tENDPOINTS{}",
                if wide { "\tNETNS\tERROR" } else { "" }
            )?;
            for n in &out.nodes {
                write!(
                    w,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    n.name,
                    n.underlay,
                    n.agent_pid,
                    if n.in_sync { "yes" } else { "no" },
                    n.revision.map_or("-".into(), |r| r.to_string()),
                    n.endpoints
                )?;
                let m = n.metrics.as_ref();
                let num = |f: fn(&monitoring::KeyMetrics) -> f64| {
                    m.map_or("-".into(), |m| format!("{}", f(m)))
                };
                write!(
                    w,
                    "\t{}\t{}\t{}",
                    num(|m| m.applies),
                    num(|m| m.failures),
                    num(|m| m.resyncs)
                )?;
                if wide {
                    let avg = m.map_or("-".into(), |m| {
                        format!("{:.1}ms", m.programming_avg_seconds * 1e3)
                    });
                    write!(
                        w,
                        "\t{}\t{avg}\t{}\t{}",
                        num(|m| m.set_members),
                        n.netns,
                        n.error.as_deref().unwrap_or("-")
                    )?;
                }
                writeln!(w)?;
            }
            writeln!(w)?;
            writeln!(w, "NAMESPACE\tPOD\tNODE\tIPS")?;
            for p in &out.pods {
                let ips: Vec<String> = p.ips.iter().map(IpAddr::to_string).collect();
                writeln!(
                    w,
                    "{}\t{}\t{}\t{}",
                    p.namespace,
                    p.name,
                    p.node,
                    ips.join(",")
                )?;
            }
            if !out.fanout.is_empty() {
                writeln!(w)?;
                writeln!(w, "FANOUT\tREADY\tCONNECTIONS\tREVISION")?;
                for f in &out.fanout {
                    let opt = |v: Option<f64>| v.map_or("-".into(), |v| v.to_string());
                    writeln!(
                        w,
                        "{}\t{}\t{}\t{}",
                        f.address,
                        if f.ready { "yes" } else { "no" },
                        opt(f.connections),
                        opt(f.revision)
                    )?;
                }
            }
            Ok(())
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(exit::OK)
}

/// Prints the measured matrix; with `verify`, also the verdict. Returns the exit code.
fn report(m: &check::Measured, p: &ProbeArgs, verify: bool, headline: Option<String>) -> Res<u8> {
    with_stdout(|w| match p.output {
        Format::Json | Format::Yaml => {
            serde_json::to_writer(&mut *w, &m.entries)?;
            writeln!(w)
        }
        _ => {
            if let Some(h) = &headline {
                writeln!(w, "{h}\n")?;
            }
            crate::analyze::render_table(&m.engine, &m.entries, w)?;
            if !verify {
                return Ok(());
            }
            writeln!(w)?;
            if m.differences.is_empty() {
                writeln!(
                    w,
                    "VERIFIED: the dataplane agrees with `furynet analyze` on all {} connections; every server saw the client pod's own address (no NAT).",
                    m.entries.len()
                )
            } else {
                writeln!(w, "DIFFERENCES between intent and dataplane:")?;
                for d in &m.differences {
                    writeln!(w, "  {d}")?;
                }
                Ok(())
            }
        }
    })
    .map_err(|e| e.to_string())?;
    for u in &m.unprobed {
        eprintln!("not probed: {u}");
    }
    if verify && !m.differences.is_empty() {
        for d in &m.differences {
            eprintln!("difference: {d}");
        }
        return Ok(exit::INVALID_INPUT);
    }
    Ok(exit::OK)
}

fn probe_cmd(p: &ProbeArgs, verify: bool) -> Res<u8> {
    let mut state = LabState::running()?;
    let ds = cluster::open_datastore(&state)?;
    let c = cluster::stored_cluster(ds.as_ref())?;
    let m = check::measure(&mut state, &c, &p.from, &p.to)?;
    report(&m, p, verify, None)
}

/// `demo` and `verify -f`: up with the objects, probe, compare, down (always).
fn one_shot(input: Cluster, b: &BuildArgs, p: &ProbeArgs, demo: bool) -> Res<u8> {
    let mut state = build_lab(b)?;
    let run = (|| {
        apply_files(&mut state, &input, Duration::from_secs(b.timeout))?;
        progress("probing every connection with real traffic");
        let ds = cluster::open_datastore(&state)?;
        let c = cluster::stored_cluster(ds.as_ref())?;
        check::measure(&mut state, &c, &p.from, &p.to)
    })();
    progress("tearing down (agents, servers, namespaces, datastore)");
    let _ = down();
    let m = run?;
    let headline = demo.then(|| {
        format!(
            "furynet lab demo: {} node(s), {} pod(s), one furynet agent per node; matrix measured with real traffic",
            b.nodes,
            m.engine.pods().len()
        )
    });
    report(&m, p, true, headline)
}

/// The port server: binds every (address, port), prints `ready`, serves until SIGTERM.
fn serve(netns: &str, ips: &[IpAddr], ports: &[String]) -> Res<u8> {
    let stop = Arc::new(AtomicBool::new(false));
    furynet_agent::signals::stop_on_term(stop.clone()).map_err(|e| e.to_string())?;
    let ns = Ns::existing(netns);
    let mut handles = Vec::new();
    for spec in ports {
        let (port, proto) = spec
            .split_once('/')
            .ok_or_else(|| format!("--port {spec:?}: expected PORT/PROTOCOL"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--port {spec:?}: bad port"))?;
        let proto = match proto.to_ascii_uppercase().as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            other => return Err(format!("--port {spec:?}: unknown protocol {other}")),
        };
        for ip in ips {
            handles.push(probe::serve(&ns, *ip, port, proto, stop.clone())?);
        }
    }
    with_stdout(|w| {
        writeln!(w, "ready")?;
        w.flush()
    })
    .map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server threads block in accept/recv; exiting the process ends them.
    drop(handles);
    Ok(exit::OK)
}
