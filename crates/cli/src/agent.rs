//! `furynet agent`: the node agent (one per node, as root, in the node's network namespace).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use furynet_agent::state::NodeSetup;
use furynet_agent::{Config, Health};
use furynet_dataplane::routing::plan::Encapsulation;

use crate::exit;

/// Run the node agent: follow the datastore, program this node's routes, VXLAN overlay and
/// nftables policy, and report health.
///
/// The agent registers the node (`nodes/NAME`), lists and watches the datastore, and programs
/// the kernel of the network namespace it runs in: routes (protocol 154) and the VXLAN device
/// to every other node's pod blocks, and table `inet furynet` (minimal delta per change, full
/// resync at start and every --resync-interval). It writes its status to `agents/NAME`
/// (attached to a lease, so it disappears when the agent dies) and serves `/healthz`,
/// `/readyz` and `/metrics` (Prometheus; names in docs/metrics.md) on --health-addr. SIGTERM/SIGINT stop it; the kernel state is left in place,
/// so a restarted agent takes over without disrupting traffic.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AgentArgs {
    /// This node's name (as pods' spec.nodeName and IPAM block affinities name it).
    #[arg(long, env = "FURYNET_NODE")]
    node: String,
    /// This node's underlay IPv4 address (VXLAN endpoint, next hop for direct routes).
    #[arg(long, env = "FURYNET_NODE_IP")]
    node_ip: Ipv4Addr,
    /// Datastore: a directory (embedded, the default /var/lib/furynet), etcd://HOST:PORT[,...], or
    /// kubernetes[:KUBECONFIG] (the Kubernetes API; in-cluster config or $KUBECONFIG without a path).
    #[arg(long, env = "FURYNET_DATASTORE", default_value = "/var/lib/furynet")]
    datastore: String,
    /// Pod-to-pod transport between nodes.
    #[arg(long, value_enum, default_value_t = Encap::Vxlan)]
    encapsulation: Encap,
    /// VXLAN network identifier.
    #[arg(long, default_value_t = furynet_dataplane::routing::plan::DEFAULT_VNI)]
    vxlan_vni: u32,
    /// VXLAN UDP port.
    #[arg(long, default_value_t = furynet_dataplane::routing::plan::DEFAULT_VXLAN_PORT)]
    vxlan_port: u16,
    /// VXLAN device name (keep the fny prefix: it marks the device as ours).
    #[arg(long, default_value = furynet_dataplane::routing::plan::DEFAULT_VXLAN_DEVICE)]
    vxlan_device: String,
    /// MTU of the underlay interface (the pod MTU is this minus the overlay's overhead).
    #[arg(long, default_value_t = 1500)]
    underlay_mtu: u32,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, default_value = "127.0.0.1:9099")]
    health_addr: SocketAddr,
    /// Seconds between full re-reads of the kernel (drift repair) when nothing changes.
    #[arg(long, default_value_t = 30)]
    resync_interval: u64,
    /// The CNI plugin's `metricsFile` (one line per call), folded into furynet_cni_* metrics.
    #[arg(long, env = "FURYNET_CNI_CALLS_FILE")]
    cni_calls_file: Option<std::path::PathBuf>,
    /// Read the cluster through fan-out servers (HOST:PORT; repeat, or comma-separate, for
    /// failover: tried in order) instead of watching the datastore directly. The node
    /// registration and the agent's status are still written to --datastore.
    #[arg(long, env = "FURYNET_FANOUT", value_delimiter = ',')]
    fanout: Vec<String>,
    /// CA (PEM) that signed the fan-out servers' certificates: enables TLS to them.
    #[arg(long, requires = "fanout")]
    fanout_ca: Option<std::path::PathBuf>,
    /// This agent's client certificate (PEM), for fan-out servers that require one.
    #[arg(long, requires = "fanout_ca", requires = "fanout_key")]
    fanout_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "fanout_cert")]
    fanout_key: Option<std::path::PathBuf>,
    /// Name the fan-out servers' certificates must carry.
    #[arg(long, default_value = "furynet-fanout")]
    fanout_server_name: String,
}

/// The agent's view of the cluster: the datastore, or fan-out servers in front of it (reads)
/// with the datastore for the agent's own records (writes).
fn cluster_store(
    args: &AgentArgs,
    ds: Arc<dyn furynet_datastore::Datastore>,
) -> Result<Arc<dyn furynet_datastore::Datastore>, String> {
    if args.fanout.is_empty() {
        return Ok(ds);
    }
    let mut cfg = furynet_fanout::ClientConfig::new(args.fanout.clone(), args.node.clone());
    if let Some(ca) = &args.fanout_ca {
        cfg.tls = Some(furynet_fanout::ClientTls {
            ca_pem: ca.clone(),
            cert_pem: args.fanout_cert.clone(),
            key_pem: args.fanout_key.clone(),
            server_name: args.fanout_server_name.clone(),
        });
    }
    let reads = furynet_fanout::FanoutStore::connect(cfg)
        .map_err(|e| format!("fan-out {}: {e}", args.fanout.join(",")))?;
    Ok(Arc::new(furynet_agent::split::SplitStore::new(reads, ds)))
}

/// Called for every failed log write (the agent counts them in `felix_log_errors`, the
/// fan-out server in `typha_log_errors`).
pub type OnLogError = Arc<dyn Fn() + Send + Sync>;

/// Our log stream: stderr, with every failed write reported.
#[derive(Clone)]
struct CountingStderr(Option<OnLogError>);

impl CountingStderr {
    fn failed(&self) {
        if let Some(f) = &self.0 {
            f();
        }
    }
}

impl std::io::Write for CountingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().write(buf).inspect_err(|_| self.failed())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush().inspect_err(|_| self.failed())
    }
}

/// Logs to stderr at `FURYNET_LOG` (default info), reporting failed writes.
pub fn init_logging(on_error: Option<OnLogError>) {
    let level = std::env::var("FURYNET_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_writer(move || CountingStderr(on_error.clone()))
        .with_max_level(level)
        .try_init();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encap {
    Vxlan,
    None,
}

pub fn run(args: &AgentArgs) -> u8 {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = furynet_agent::metrics::Metrics::register(&mut registry);
    let log_errors = metrics.felix_log_errors.clone();
    init_logging(Some(Arc::new(move || log_errors.inc())));
    if !args
        .vxlan_device
        .starts_with(furynet_dataplane::HOST_IFACE_PREFIX)
    {
        eprintln!(
            "furynet agent: --vxlan-device {:?} must start with {:?} (the prefix marks our links)",
            args.vxlan_device,
            furynet_dataplane::HOST_IFACE_PREFIX
        );
        return exit::USAGE;
    }
    let encapsulation = match args.encapsulation {
        Encap::Vxlan => Encapsulation::Vxlan {
            vni: args.vxlan_vni,
            port: args.vxlan_port,
            device: args.vxlan_device.clone(),
        },
        Encap::None => Encapsulation::None,
    };
    let mut cfg = Config::new(NodeSetup {
        name: args.node.clone(),
        underlay: args.node_ip,
        underlay_mtu: args.underlay_mtu,
        encapsulation,
    });
    cfg.resync_interval = Duration::from_secs(args.resync_interval.max(1));
    cfg.cni_calls_file = args.cni_calls_file.clone();
    let ds = match crate::store_arg::parse(&args.datastore)
        .and_then(|c| crate::store_arg::connect(&c))
    {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("furynet agent: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let ds = match cluster_store(args, ds) {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("furynet agent: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let health = Health::new();
    let registry = Arc::new(registry);
    match furynet_agent::health::serve(args.health_addr, health.clone(), registry) {
        Ok(addr) => tracing::info!(%addr, "serving /healthz, /readyz and /metrics"),
        Err(e) => {
            eprintln!("furynet agent: cannot listen on {}: {e}", args.health_addr);
            return exit::INVALID_INPUT;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = furynet_agent::signals::stop_on_term(stop.clone()) {
        eprintln!("furynet agent: cannot install signal handlers: {e}");
        return exit::INVALID_INPUT;
    }
    tracing::info!(node = %args.node, datastore = %args.datastore, fanout = %args.fanout.join(","), "agent starting");
    match furynet_agent::agent::run_linux(&cfg, ds, health, &metrics, stop) {
        Ok(()) => {
            tracing::info!("agent stopped");
            exit::OK
        }
        Err(e) => {
            eprintln!("furynet agent: {e}");
            exit::INVALID_INPUT
        }
    }
}
