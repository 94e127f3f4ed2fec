//! `furynet fanout`: the fan-out server (Typha's job) as a command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use furynet_agent::Health;
use furynet_fanout::{FanoutMetrics, Server, ServerConfig, ServerTls};

use crate::exit;

/// Run the fan-out server: one watch on the datastore, streamed to many agents.
///
/// The server lists and watches the datastore once, keeps the whole state in memory and
/// serves agents (`furynet agent --fanout ADDR`) over a framed TCP protocol: a compressed
/// snapshot, then every change as a delta encoded once and shared by every client. A client
/// that falls too far behind is cut off and comes back with a resume or a fresh snapshot, so
/// memory grows with the state, not with the clients. With --tls-cert/--tls-key it speaks TLS;
/// adding --tls-client-ca requires client certificates (mutual TLS, as Typha does).
/// `/healthz`, `/readyz` (in sync with the datastore) and `/metrics` (furynet_fanout_* and the
/// typha_* names the module's alerts use) are served on --health-addr. SIGTERM stops it.
/// See docs/fanout.md.
///
/// Exit codes: 0 stopped by a signal, 1 cannot start (datastore, listen address,
/// certificates), 2 bad arguments.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct FanoutArgs {
    /// Datastore: a directory (embedded), etcd://HOST:PORT[,...] or kubernetes[:KUBECONFIG].
    #[arg(long, env = "FURYNET_DATASTORE", default_value = "/var/lib/furynet")]
    datastore: String,
    /// Address agents connect to (Typha's port is 5473).
    #[arg(long, default_value = "0.0.0.0:5473")]
    listen: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9098")]
    health_addr: SocketAddr,
    /// Server certificate (PEM); enables TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs the agents' client certificates: makes them required.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Accept only client certificates with this common name (repeatable; default: any
    /// certificate the CA signed).
    #[arg(long = "tls-client-cn", requires = "tls_client_ca")]
    tls_client_cn: Vec<String>,
    /// Seconds between pings to each agent (round trip in typha_ping_latency).
    #[arg(long, default_value_t = 10)]
    ping_interval: u64,
    /// Seconds a write to one agent may block before that agent is cut off.
    #[arg(long, default_value_t = 10)]
    write_timeout: u64,
    /// Milliseconds between two rounds of writes to the agents at least: changes arriving
    /// meanwhile leave in one write per agent (with thousands of agents, one syscall per
    /// agent per round instead of one per change). With more than 2,000 agents the interval
    /// grows by 5 us per agent (25 ms at 5,000) when that is longer. A change after a quiet
    /// spell leaves at once. 0 starts a round on every change (plus the per-agent part).
    #[arg(long, default_value_t = 10)]
    write_coalesce_ms: u64,
    /// Threads writing deltas to the agents, each to its share of them in rounds (0: half
    /// the CPUs, 1 to 4). Agents on TLS are encrypted for by the same threads.
    #[arg(long, default_value_t = 0)]
    sweepers: usize,
    /// Deltas kept for agents to catch up or resume from (older ones: snapshot).
    #[arg(long, default_value_t = 100_000)]
    history_entries: usize,
    /// Memory the delta history may use, in MiB.
    #[arg(long, default_value_t = 64)]
    history_mib: usize,
    /// Most agents served at once (more are refused, and try another replica).
    #[arg(long, default_value_t = 20_000)]
    max_clients: usize,
    /// Print `ready` on stdout once listening and in sync (for supervisors such as the lab).
    #[arg(long, hide = true)]
    print_ready: bool,
}

pub fn run(args: &FanoutArgs) -> u8 {
    crate::agent::init_logging(None);
    let ds = match crate::store_arg::parse(&args.datastore)
        .and_then(|c| crate::store_arg::connect(&c))
    {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("furynet fanout: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let mut cfg = ServerConfig {
        listen: args.listen,
        ..ServerConfig::default()
    };
    cfg.ping_interval = Duration::from_secs(args.ping_interval.max(1));
    cfg.ping_timeout = cfg.ping_interval * 3;
    cfg.write_timeout = Duration::from_secs(args.write_timeout.max(1));
    cfg.write_coalesce = Duration::from_millis(args.write_coalesce_ms);
    if args.sweepers > 0 {
        cfg.sweepers = args.sweepers;
    }
    cfg.history_max_entries = args.history_entries.max(1);
    cfg.history_max_bytes = args.history_mib.max(1) << 20;
    cfg.max_clients = args.max_clients;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some(ServerTls {
            cert_pem: cert.clone(),
            key_pem: key.clone(),
            client_ca_pem: args.tls_client_ca.clone(),
            allowed_client_cns: args.tls_client_cn.clone(),
        });
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = FanoutMetrics::register(&mut registry);
    furynet_agent::metrics::register_build_info(&mut registry);
    let health = Health::new();
    health.set_not_in_sync("starting: the first list of the datastore is not done");
    if let Err(e) =
        furynet_agent::health::serve(args.health_addr, health.clone(), Arc::new(registry))
    {
        eprintln!("furynet fanout: cannot listen on {}: {e}", args.health_addr);
        return exit::INVALID_INPUT;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = furynet_agent::signals::stop_on_term(stop.clone()) {
        eprintln!("furynet fanout: cannot install signal handlers: {e}");
        return exit::INVALID_INPUT;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fanout")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furynet fanout: cannot start the runtime: {e}");
            return exit::INVALID_INPUT;
        }
    };
    rt.block_on(async move {
        let server = match Server::start(cfg, ds, metrics).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("furynet fanout: {e}");
                return exit::INVALID_INPUT;
            }
        };
        tracing::info!(addr = %server.local_addr(), datastore = %args.datastore, "fan-out server listening");
        let mut announced = false;
        while !stop.load(Ordering::Relaxed) {
            health.tick();
            if server.in_sync() {
                health.set_in_sync(server.revision());
                if !announced && args.print_ready {
                    announced = true;
                    let _ = crate::out::with_stdout(|w| writeln!(w, "ready"));
                }
            } else {
                health.set_not_in_sync("not in sync with the datastore (listing or re-listing)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("stopping");
        server.shutdown().await;
        exit::OK
    })
}
