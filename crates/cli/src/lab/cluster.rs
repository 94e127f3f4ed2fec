//! Building and changing a long-lived lab: nodes with their agents, pods wired by the real
//! `furynet-cni` with a port server each, cluster objects written to the datastore, and
//! waiting until every agent has programmed a change.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_agent::keys::{self, AgentStatus, Object};
use furynet_datastore::{Datastore, Error as DsError};
use furynet_model::{Cluster, Pod};

use super::netns::{Ns, Res, PREFIX};
use super::state::{dir, LabState, NodeState, PodState};
use super::{progress, Encap};

/// How the lab is built.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub datastore: Option<String>,
    pub encapsulation: Encap,
    pub timeout: Duration,
    /// The agents' `--resync-interval` (seconds).
    pub resync_interval: u64,
    /// Start a Prometheus on this loopback port scraping the agents (`--monitoring`).
    pub monitoring: Option<u16>,
    /// Fan-out server replicas the agents read through (0: agents watch the datastore).
    pub fanout: usize,
    /// Pods get an address from an IPv6 pool too ([`POD_POOL_V6`]), routed over the VXLAN
    /// overlay (the underlay is IPv4).
    pub dual_stack: bool,
}

/// The lab's pod pools.
pub const POD_POOL_V4: &str = "10.244.0.0/16";
pub const POD_POOL_V6: &str = "fd00:10:244::/56";

fn exe() -> Res<PathBuf> {
    std::env::current_exe().map_err(|e| e.to_string())
}

pub fn cni_binary() -> Res<PathBuf> {
    let cni = exe()?.with_file_name("furynet-cni");
    if cni.is_file() {
        Ok(cni)
    } else {
        Err(format!(
            "{} not found next to furynet: build both (`cargo build --release`)",
            cni.display()
        ))
    }
}

pub fn open_datastore(state: &LabState) -> Res<Arc<dyn Datastore>> {
    let cfg = crate::store_arg::parse(&state.datastore)?;
    crate::store_arg::connect(&cfg)
}

/// Starts `args` inside `netns` as a background process in its own process group (so the
/// terminal's Ctrl-C does not reach it), stderr appended to `log`.
fn spawn_in(
    netns: &str,
    args: &[String],
    log: &PathBuf,
    stdout: Stdio,
) -> Res<std::process::Child> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {} in {netns}: {e}", args.join(" ")))
}

/// `lab up`: underlay, nodes, agents; returns once every agent reports in sync.
pub fn up(opts: &UpOptions) -> Res<LabState> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the lab needs root (it creates network namespaces)".into());
    }
    if opts.dual_stack && opts.encapsulation == Encap::None {
        return Err("--dual-stack needs --encapsulation vxlan: the lab's underlay is IPv4, so IPv6 pod blocks can only ride the VXLAN overlay".into());
    }
    if let Some(s) = LabState::load()? {
        return Err(format!(
            "a lab is already running ({} node(s), {} pod(s), namespaces {}-*): use it, or remove it with `furynet lab down`",
            s.nodes.len(),
            s.pods.len(),
            s.tag
        ));
    }
    if !super::netns::lab_namespaces()?.is_empty() {
        return Err(
            "lab namespaces (fnylab-*) exist from an earlier lab: run `furynet lab down` first"
                .into(),
        );
    }
    cni_binary()?;
    let tag = format!("{PREFIX}{}", std::process::id());
    let datastore = match &opts.datastore {
        Some(d) if d != "embedded" => d.clone(),
        _ => dir().join("datastore").display().to_string(),
    };
    let mut state = LabState {
        tag: tag.clone(),
        datastore,
        encapsulation: match opts.encapsulation {
            Encap::Vxlan => "vxlan".into(),
            Encap::None => "none".into(),
        },
        nodes: Vec::new(),
        pods: Vec::new(),
        next_pod: 0,
        resync_interval: opts.resync_interval,
        node_datastore: None,
        relay_pid: 0,
        prometheus: None,
        prometheus_pid: 0,
        probe_cursor: 0,
        fanout: Vec::new(),
        dual_stack: opts.dual_stack,
    };
    state.save()?;
    let ds = open_datastore(&state)?;
    let (existing, _) = ds.list("").map_err(|e| e.to_string())?;
    if !existing.is_empty() {
        LabState::remove();
        return Err(format!(
            "the datastore {} already holds {} key(s): the lab needs an empty one (it owns the whole /furynet/ prefix)",
            state.datastore,
            existing.len()
        ));
    }
    progress(&format!("creating the underlay and {} node(s)", opts.nodes));
    let underlay = Ns::new(format!("{tag}-underlay"))?;
    underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
    underlay.ip(&["link", "set", "br0", "up"])?;
    let underlay = underlay.keep();
    let underlay = Ns::existing(&underlay);
    for i in 0..opts.nodes {
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
        ns.sysctl("net.ipv6.conf.all.forwarding=1")?;
        let name = format!("node-{i}");
        let netns = ns.keep();
        state.nodes.push(NodeState {
            name,
            netns,
            underlay: ip,
            agent_pid: 0,
        });
        state.save()?;
    }
    let mut relay = relay_plan(&state.datastore)?.unwrap_or_default();
    if opts.monitoring.is_some() {
        for (i, n) in state.nodes.iter().enumerate() {
            relay
                .exposes
                .push(format!("{}={}:9099", n.netns, METRICS_BASE_PORT + i as u16));
        }
    }
    if opts.fanout > 0 && opts.monitoring.is_some() {
        for k in 0..opts.fanout {
            relay.exposes.push(format!(
                "{}={}:{}",
                underlay.name,
                FANOUT_METRICS_BASE_PORT + k as u16,
                FANOUT_HEALTH_BASE_PORT + k as u16
            ));
        }
    }
    if !relay.routes.is_empty() || !relay.exposes.is_empty() {
        progress("starting the lab relay (etcd into the nodes, agents' metrics out)");
        // Fan-out servers run in the underlay namespace: they need the etcd relay too.
        let extra = (opts.fanout > 0).then(|| underlay.name.clone());
        state.relay_pid = start_relay(&state, &relay, extra.as_deref())?;
        if !relay.node_datastore.is_empty() {
            state.node_datastore = Some(relay.node_datastore.clone());
        }
        state.save()?;
    }
    if opts.fanout > 0 {
        progress(&format!(
            "starting {} fan-out server(s) on the underlay (agents read the cluster through them)",
            opts.fanout
        ));
        start_fanout(&mut state, &underlay, opts.fanout)?;
    }
    for i in 0..state.nodes.len() {
        state.nodes[i].agent_pid = start_agent(&state, i)?;
        state.save()?;
    }
    progress("waiting for every agent's first complete sync");
    wait_for_agents(&state, ds.as_ref(), 0, opts.timeout)?;
    if let Some(port) = opts.monitoring {
        progress(&format!("starting Prometheus on 127.0.0.1:{port} (scraping every agent, furynet alert rules loaded)"));
        state.prometheus_pid = super::monitoring::start(&state, port)?;
        state.prometheus = Some(format!("http://127.0.0.1:{port}"));
        state.save()?;
    }
    Ok(state)
}

/// Node `i`'s agent metrics are exposed on the host at 127.0.0.1:(this + i).
pub const METRICS_BASE_PORT: u16 = 19100;

/// What the lab relay carries between the host and the node namespaces.
#[derive(Debug, Default)]
pub struct Relay {
    /// `LISTEN_PORT=HOST:PORT` per etcd endpoint (listeners inside every node).
    pub routes: Vec<String>,
    /// The `--datastore` value for agents and the CNI plugin (loopback in the node); empty
    /// when no etcd is relayed.
    pub node_datastore: String,
    /// `NETNS=HOST_PORT:TARGET_PORT`: the agents' metrics, out to the host.
    pub exposes: Vec<String>,
}

/// Node namespaces have their own loopback: an etcd on the host's 127.0.0.1 (or anywhere the
/// host reaches) is relayed to 127.0.0.1:23790+k inside every node namespace by one
/// `furynet lab relay` process running in the host namespace. `None` for the embedded store
/// (a file: namespaces do not matter).
pub fn relay_plan(datastore: &str) -> Res<Option<Relay>> {
    let furynet_datastore::DatastoreConfig::Etcd { endpoints } =
        crate::store_arg::parse(datastore)?
    else {
        return Ok(None);
    };
    let mut routes = Vec::new();
    let mut local = Vec::new();
    for (k, e) in endpoints.iter().enumerate() {
        let hostport = e
            .strip_prefix("http://")
            .ok_or_else(|| format!("{e}: the lab relays plain http:// etcd endpoints only"))?;
        let port = 23790 + k;
        routes.push(format!("{port}={hostport}"));
        local.push(format!("127.0.0.1:{port}"));
    }
    Ok(Some(Relay {
        routes,
        node_datastore: format!("etcd://{}", local.join(",")),
        exposes: Vec::new(),
    }))
}

fn start_relay(state: &LabState, relay: &Relay, extra_netns: Option<&str>) -> Res<u32> {
    let mut cmd = Command::new(exe()?);
    cmd.args(["lab", "relay", "--tag", &state.tag]);
    for n in state
        .nodes
        .iter()
        .map(|n| n.netns.as_str())
        .chain(extra_netns)
    {
        cmd.args(["--netns", n]);
    }
    for r in &relay.routes {
        cmd.args(["--route", r]);
    }
    for e in &relay.exposes {
        cmd.args(["--expose", e]);
    }
    let log = state.log_file("relay");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the lab relay: {e}"))?;
    wait_ready(child, "the lab relay", &log)
}

/// Waits for a helper process to print `ready` on stdout; kills it when it does not.
fn wait_ready(mut child: std::process::Child, what: &str, log: &std::path::Path) -> Res<u32> {
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} did not start (see {})", log.display()));
    }
    Ok(child.id())
}

/// Fan-out replica `k`'s health and metrics port inside the underlay namespace.
pub const FANOUT_HEALTH_BASE_PORT: u16 = 9098;
/// ... exposed on the host at 127.0.0.1:(this + k) with `--monitoring`.
pub const FANOUT_METRICS_BASE_PORT: u16 = 19190;
/// The port agents reach the fan-out servers on (Typha's).
pub const FANOUT_PORT: u16 = 5473;

/// Fan-out replica `k` listens on 172.31.255.(253 - k): an address of the underlay bridge,
/// so agents reach it over the node network, as they reach Typha in a cluster.
fn fanout_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 31, 255, 253 - k as u8)
}

/// Starts `replicas` fan-out servers in the underlay namespace, each on its own address of
/// the bridge, and waits until each is listening and in sync with the datastore.
fn start_fanout(state: &mut LabState, underlay: &Ns, replicas: usize) -> Res<()> {
    for k in 0..replicas {
        let ip = fanout_ip(k);
        underlay.ip(&["addr", "add", &format!("{ip}/16"), "dev", "br0"])?;
        let listen = format!("{ip}:{FANOUT_PORT}");
        let args: Vec<String> = [
            "fanout",
            "--datastore",
            state.node_datastore(),
            "--listen",
            &listen,
            "--health-addr",
            &format!("127.0.0.1:{}", FANOUT_HEALTH_BASE_PORT + k as u16),
            "--print-ready",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = state.log_file(&format!("fanout-{k}"));
        let child = spawn_in(&underlay.name, &args, &log, Stdio::piped())?;
        wait_ready(child, &format!("fan-out server {k}"), &log)?;
        state.fanout.push(listen);
        state.save()?;
    }
    Ok(())
}

/// Starts node `i`'s agent inside the node's namespace; returns its pid.
fn start_agent(state: &LabState, i: usize) -> Res<u32> {
    let node = &state.nodes[i];
    let args: Vec<String> = [
        "agent",
        "--node",
        &node.name,
        "--node-ip",
        &node.underlay.to_string(),
        "--datastore",
        state.node_datastore(),
        "--encapsulation",
        &state.encapsulation,
        "--health-addr",
        "127.0.0.1:9099",
        "--resync-interval",
        &state.resync_interval.to_string(),
        "--cni-calls-file",
        &state.log_file("cni-calls").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut args = args;
    if !state.fanout.is_empty() {
        args.extend(["--fanout".to_string(), state.fanout.join(",")]);
    }
    let log = state.log_file(&format!("agent-{}", node.name));
    Ok(spawn_in(&node.netns, &args, &log, Stdio::null())?.id())
}

/// `lab restart-agents`: stops every agent (SIGTERM) and starts it again, one node at a
/// time, each time waiting until the new agent is in sync. The kernel state stays in place.
pub fn restart_agents(state: &mut LabState, timeout: Duration) -> Res<()> {
    let ds = open_datastore(state)?;
    let revision = ds.current_revision().map_err(|e| e.to_string())?;
    for i in 0..state.nodes.len() {
        progress(&format!("restarting the agent of {}", state.nodes[i].name));
        stop_process(state.nodes[i].agent_pid);
        state.nodes[i].agent_pid = start_agent(state, i)?;
        state.save()?;
        // The old agent withdrew its status; wait for the new one's first sync.
        let one = LabState {
            nodes: vec![state.nodes[i].clone()],
            ..state.clone()
        };
        wait_for_agents(&one, ds.as_ref(), revision, timeout)?;
    }
    Ok(())
}

/// Waits until every node's agent reports in sync at `revision` or later.
pub fn wait_for_agents(
    state: &LabState,
    ds: &dyn Datastore,
    revision: i64,
    timeout: Duration,
) -> Res<Duration> {
    let started = Instant::now();
    loop {
        let statuses = agent_statuses(ds)?;
        let behind: Vec<String> = state
            .nodes
            .iter()
            .filter_map(|n| match statuses.get(&n.name) {
                // A status left by an earlier agent process does not count.
                Some(s) if s.pid != n.agent_pid => Some(format!("{} (agent restarting)", n.name)),
                Some(s) if s.in_sync && s.revision >= revision => None,
                Some(s) if !s.in_sync => Some(format!(
                    "{} (not in sync: {})",
                    n.name,
                    s.error.as_deref().unwrap_or("unknown")
                )),
                Some(s) => Some(format!(
                    "{} (at revision {}, want {revision})",
                    n.name, s.revision
                )),
                None => Some(format!(
                    "{} (no status: agent down? see {})",
                    n.name,
                    state.log_file(&format!("agent-{}", n.name)).display()
                )),
            })
            .collect();
        if behind.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "timed out after {timeout:?} waiting for agents: {}",
                behind.join("; ")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn agent_statuses(ds: &dyn Datastore) -> Res<BTreeMap<String, AgentStatus>> {
    let (kvs, _) = ds.list(keys::AGENTS_PREFIX).map_err(|e| e.to_string())?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<AgentStatus>(&kv.value).ok())
        .map(|s| (s.node.clone(), s))
        .collect())
}

fn cni_conf(state: &LabState, node: &str) -> Res<String> {
    let datastore = match crate::store_arg::parse(state.node_datastore())? {
        furynet_datastore::DatastoreConfig::Embedded { path } => {
            serde_json::json!({"type": "embedded", "path": path})
        }
        furynet_datastore::DatastoreConfig::Etcd { endpoints } => {
            serde_json::json!({"type": "etcd", "endpoints": endpoints})
        }
        other => return Err(format!("the lab cannot run on the datastore {other:?}")),
    };
    let pools = if state.dual_stack {
        vec![POD_POOL_V4, POD_POOL_V6]
    } else {
        vec![POD_POOL_V4]
    };
    Ok(serde_json::json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "furynet-cni",
        "datastore": datastore,
        "nodeName": node, "ipam": {"pools": pools}, "mtu": 1450,
        "metricsFile": state.log_file("cni-calls"),
    })
    .to_string())
}

/// Calls the plugin inside the node's namespace as a container runtime does.
pub fn cni(state: &LabState, pod: &PodState, verb: &str) -> Res<serde_json::Value> {
    let cni = cni_binary()?;
    let node = &state.nodes[pod.node];
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&cni)
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", &pod.container)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni.parent().unwrap_or(&cni))
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                pod.namespace, pod.name
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(cni_conf(state, &node.name)?.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "furynet-cni {verb} {}: {}",
            pod.key(),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    if out.stdout.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Starts the pod's port server (`furynet lab serve`) and waits until it listens.
fn start_server(state: &LabState, pod: &PodState, spec: &Pod) -> Res<u32> {
    let ports = spec.declared_ports();
    if ports.is_empty() {
        return Ok(0);
    }
    let mut args = vec![
        "lab".to_string(),
        "serve".into(),
        "--netns".into(),
        pod.netns.clone(),
    ];
    for ip in &pod.ips {
        args.push("--ip".into());
        args.push(ip.to_string());
    }
    for (port, proto) in ports {
        args.push("--port".into());
        args.push(format!("{port}/{}", proto.as_str()));
    }
    let child = spawn_in(
        &pod.netns,
        &args,
        &state.log_file("servers"),
        Stdio::piped(),
    )?;
    wait_ready(
        child,
        &format!("the port server of {}", pod.key()),
        &state.log_file("servers"),
    )
}

fn stop_process(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    if pid == 0 {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if kill(pid, Signal::SIGTERM).is_err() {
        return;
    }
    for _ in 0..40 {
        if kill(pid, None).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

/// Creates, wires and serves a new pod; returns its record.
fn add_pod(state: &mut LabState, spec: &Pod) -> Res<PodState> {
    let n = state.nodes.len();
    let node = spec
        .node_name
        .as_deref()
        .and_then(|name| state.nodes.iter().position(|x| x.name == name))
        .unwrap_or(state.next_pod % n);
    let i = state.next_pod;
    state.next_pod += 1;
    let ns = Ns::new(format!("{}-pod-{i}", state.tag))?;
    let container: String = format!(
        "{}-{}-{i}",
        spec.namespace,
        spec.name.chars().take(40).collect::<String>()
    )
    .chars()
    .map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' {
            c
        } else {
            '-'
        }
    })
    .collect();
    let mut pod = PodState {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        node,
        netns: ns.name.clone(),
        container,
        ips: Vec::new(),
        server_pid: 0,
    };
    let result = cni(state, &pod, "ADD")?;
    pod.ips = result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["address"].as_str())
                .filter_map(|a| a.split('/').next())
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default();
    if pod.ips.is_empty() {
        let _ = cni(state, &pod, "DEL");
        return Err(format!("no address in the ADD result for {}", pod.key()));
    }
    match start_server(state, &pod, spec) {
        Ok(pid) => pod.server_pid = pid,
        Err(e) => {
            let _ = cni(state, &pod, "DEL");
            return Err(e);
        }
    }
    ns.keep();
    Ok(pod)
}

fn remove_pod(state: &LabState, pod: &PodState) -> Res<()> {
    stop_process(pod.server_pid);
    let r = cni(state, pod, "DEL");
    drop(Ns::adopt(&pod.netns));
    r.map(|_| ())
}

/// What `apply` or `delete` did.
#[derive(Debug, Default)]
pub struct Changes {
    pub created: Vec<String>,
    pub configured: Vec<String>,
    pub unchanged: usize,
    pub deleted: Vec<String>,
    pub revision: i64,
}

fn write(ds: &dyn Datastore, key: &str, value: &[u8]) -> Res<Option<i64>> {
    furynet_datastore::put(ds, key, value, None).map_err(|e| format!("writing {key}: {e}"))
}

/// `lab apply`: create or update every object of `cluster` (workloads already expanded).
/// Pods new to the lab are scheduled, wired and served first; their records (with the
/// addresses IPAM gave them) are written after the namespaces and policies.
pub fn apply(state: &mut LabState, ds: &dyn Datastore, cluster: &Cluster) -> Res<Changes> {
    let mut ch = Changes::default();
    let record = |o: &Object, ch: &mut Changes| -> Res<()> {
        match write(ds, &o.key(), &o.encode())? {
            Some(rev) => {
                ch.revision = ch.revision.max(rev);
                ch.configured.push(o.describe());
            }
            None => ch.unchanged += 1,
        }
        Ok(())
    };
    let mut others = cluster.clone();
    others.pods.clear();
    for o in keys::objects(&others) {
        // The input names namespaces it only refers to (with just their automatic label):
        // those must not wipe the labels of a namespace applied earlier.
        if let Object::Namespace(n) = &o {
            let implicit = n.labels.len() == 1;
            if implicit && ds.get(&o.key()).map_err(|e| e.to_string())?.is_some() {
                ch.unchanged += 1;
                continue;
            }
        }
        record(&o, &mut ch)?;
    }
    let mut pods: Vec<&Pod> = cluster.pods.iter().collect();
    pods.sort_by_key(|p| p.key());
    let new: Vec<&&Pod> = pods
        .iter()
        .filter(|p| !state.pods.iter().any(|s| s.key() == p.key()))
        .collect();
    if !new.is_empty() {
        progress(&format!("wiring {} new pod(s) with furynet-cni", new.len()));
    }
    for spec in pods {
        let idx = match state.pods.iter().position(|s| s.key() == spec.key()) {
            Some(i) => i,
            None => {
                let pod = add_pod(state, spec)?;
                state.pods.push(pod);
                state.save()?;
                ch.created.push(format!("Pod {}", spec.key()));
                state.pods.len() - 1
            }
        };
        let lab_pod = &state.pods[idx];
        let mut stored = spec.clone();
        stored.ips = lab_pod.ips.clone();
        stored.node_name = Some(state.nodes[lab_pod.node].name.clone());
        let o = Object::Pod(stored);
        match write(ds, &o.key(), &o.encode())? {
            Some(rev) => {
                ch.revision = ch.revision.max(rev);
                if !ch.created.contains(&o.describe()) {
                    ch.configured.push(o.describe());
                }
            }
            None => ch.unchanged += 1,
        }
    }
    Ok(ch)
}

/// `lab delete`: remove every object of `cluster` that the lab has (pods are torn down).
pub fn delete(state: &mut LabState, ds: &dyn Datastore, cluster: &Cluster) -> Res<Changes> {
    let mut ch = Changes::default();
    for o in keys::objects(cluster) {
        // Namespaces the input only refers to are not deleted (see `apply`).
        if matches!(&o, Object::Namespace(n) if n.labels.len() == 1) {
            continue;
        }
        let key = o.key();
        if let Some(kv) = ds.get(&key).map_err(|e| e.to_string())? {
            match ds.delete(&key, Some(kv.mod_revision)) {
                Ok(rev) => {
                    ch.revision = ch.revision.max(rev);
                    ch.deleted.push(o.describe());
                }
                Err(DsError::NotFound { .. }) => {}
                Err(e) => return Err(format!("deleting {key}: {e}")),
            }
        }
        if let Object::Pod(p) = &o {
            if let Some(i) = state.pods.iter().position(|s| s.key() == p.key()) {
                let pod = state.pods.remove(i);
                remove_pod(state, &pod)?;
                state.save()?;
            }
        }
    }
    Ok(ch)
}

/// Everything the lab's datastore holds about the cluster, decoded as the agents decode it.
pub fn stored_cluster(ds: &dyn Datastore) -> Res<Cluster> {
    let (kvs, rev) = ds.list(keys::CLUSTER_PREFIX).map_err(|e| e.to_string())?;
    let d = furynet_agent::state::Snapshot::from_list(kvs, rev).decode();
    match d.errors.first() {
        Some(e) => Err(format!("undecodable record {e}")),
        None => Ok(d.cluster),
    }
}
