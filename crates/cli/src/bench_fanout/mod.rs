//! `furynet bench fanout`: one fan-out server process on this machine serving N simulated
//! agents, against the same agents watching etcd directly, in one run.
//!
//! Phases, each printed as it starts: start a throwaway etcd and fill it with M objects;
//! start `furynet fanout` on it (a separate process, so its memory and CPU are its own);
//! connect N clients and time until every one has the full snapshot; write R changes per
//! second for the churn duration and record when each client receives each change; then the
//! same with the baseline clients connected to etcd itself.

mod client;
mod etcd;
mod pki;
mod procstat;
mod stats;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use furynet_datastore::etcd::process::EtcdProcess;

use crate::exit;
use crate::out::{with_stdout, Format};
use procstat::Memory;
use stats::{Propagation, Quantiles, Seen, Writes};

/// Measure the fan-out server with many simulated agents, against etcd watched directly.
///
/// Starts its own etcd (Debian's etcd-server) and fan-out server on loopback, fills the
/// store with --objects pod-sized objects, connects --clients simulated agents, and reports:
/// the time until all clients hold the snapshot, update propagation latency (median, p99,
/// and to the last client) under --rate writes per second, and the server's memory and CPU.
/// Then the same with --baseline-clients clients each watching etcd directly. Progress goes
/// to stderr, the report to stdout (-o json for a machine-readable one).
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct FanoutBench {
    /// Simulated agents connected to the fan-out server.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Objects in the datastore (the snapshot every client receives).
    #[arg(long, default_value_t = 50_000)]
    objects: usize,
    /// Changes written per second during the churn phase.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Size of each object's value, in bytes.
    #[arg(long, default_value_t = 400)]
    value_bytes: usize,
    /// Clients in the baseline (each with its own etcd connection, full read, then watch);
    /// default: as many as --clients; 0 skips the baseline.
    #[arg(long)]
    baseline_clients: Option<usize>,
    /// The fan-out server's --write-coalesce-ms.
    #[arg(long, default_value_t = 10)]
    write_coalesce_ms: u64,
    /// Mutual TLS between the simulated agents and the fan-out server (a throwaway CA, a
    /// server certificate and one client certificate; the etcd baseline stays plain).
    #[arg(long)]
    tls: bool,
    /// The fan-out server's --sweepers (0: its default, half the CPUs, 1 to 4).
    #[arg(long, default_value_t = 0)]
    sweepers: usize,
    /// Seconds to wait for all clients' snapshots before giving up.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Output format (table or json).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// One side of the comparison.
#[derive(Debug, Serialize)]
pub struct Side {
    pub name: String,
    pub clients: usize,
    /// Time from connecting the other clients (all but the first) until every client held
    /// the full snapshot.
    pub snapshot_all_clients_s: f64,
    /// Per client: connect to full snapshot.
    pub snapshot_per_client: Quantiles,
    pub propagation: Propagation,
    /// The serving process (fan-out server, or etcd for the baseline), with one client
    /// connected (state and snapshot built), then with all of them.
    pub server_memory_before_clients: Option<Memory>,
    pub server_memory_with_clients: Option<Memory>,
    /// (RSS with all clients − RSS with one) / (clients − 1): what one more client costs.
    pub server_kib_per_client: Option<f64>,
    /// CPU the serving process used during the churn phase, in cores (1.0 = one core busy).
    pub server_cpu_cores_churn: Option<f64>,
    /// The fan-out server's own share of propagation: from reading a change to writing it
    /// to an agent's socket (its `furynet_fanout_propagation_seconds`), median and p99 in
    /// ms; the rest is the simulated agents' side (on the same 2 cores).
    pub server_side_propagation_ms: Option<(f64, f64)>,
    /// Clients that failed (connection lost, refused); the first few reasons below.
    pub failed_clients: usize,
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    objects: usize,
    value_bytes: usize,
    rate: u32,
    duration_s: u64,
    fanout: Side,
    etcd_direct: Option<Side>,
}

fn progress(msg: &str) {
    eprintln!("bench fanout: {msg}");
}

fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())
}

/// Lets this process and its children (the fan-out server) hold a socket per client.
fn raise_fd_limit(clients: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = (clients as u64 * 2 + 4096).min(hard);
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
    }
}

/// The fan-out server as a child process (and its metrics port); killed on drop.
struct ServerProcess(Child, u16);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(
    datastore: &str,
    listen: SocketAddr,
    coalesce_ms: u64,
    sweepers: usize,
    tls: &[String],
) -> Result<ServerProcess, String> {
    let health = free_addr()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["fanout", "--datastore", datastore, "--print-ready"])
        .args(["--listen", &listen.to_string()])
        .args(["--health-addr", &health.to_string()])
        .args(["--write-coalesce-ms", &coalesce_ms.to_string()])
        .args(["--sweepers", &sweepers.to_string()])
        .args(tls)
        .env("FURYNET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting the fan-out server: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let server = ServerProcess(child, health.port());
    if line.trim() != "ready" {
        return Err("the fan-out server did not become ready".into());
    }
    Ok(server)
}

/// Connects `n` clients with `connect`, waits for all snapshots, runs the churn, collects.
#[allow(clippy::too_many_arguments)]
async fn run_side<F, Fut>(
    name: &str,
    n: usize,
    b: &FanoutBench,
    endpoint: &str,
    server: (u32, Option<u16>),
    connect: F,
) -> Result<Side, String>
where
    F: Fn(Arc<AtomicUsize>, tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(Duration, Seen), String>> + Send + 'static,
{
    let done = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // One client first: the server's memory then includes its state and the encoded
    // snapshot, so what the others add is the cost per client.
    tasks.spawn(connect(done.clone(), stop.clone()));
    let warm = Instant::now() + Duration::from_secs(b.timeout);
    while done.load(Ordering::SeqCst) == 0 && Instant::now() < warm && tasks.len() == 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (server_pid, metrics_port) = server;
    let before = procstat::memory(server_pid);
    progress(&format!(
        "{name}: connecting {} more clients",
        n.saturating_sub(1)
    ));
    let start = Instant::now();
    for _ in 1..n {
        tasks.spawn(connect(done.clone(), stop.clone()));
    }
    let deadline = start + Duration::from_secs(b.timeout);
    let mut last_report = Instant::now();
    let mut failures = Vec::new();
    while done.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            failures.push(format!(
                "only {}/{n} clients had the snapshot after {} s",
                done.load(Ordering::SeqCst),
                b.timeout
            ));
            break;
        }
        // A client that ends before the churn has failed (they only end when stopped); the
        // others go on, and the report lists the failures.
        while let Some(r) = tasks.try_join_next() {
            match r {
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(e.to_string()),
                Ok(Ok(_)) => failures.push("a client ended early".into()),
            }
        }
        if done.load(Ordering::SeqCst) + failures.len() >= n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&format!(
                "{name}: {}/{n} clients have the snapshot",
                done.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot_all = start.elapsed();
    let with_clients = procstat::memory(server_pid);
    progress(&format!(
        "{name}: all snapshots in {:.2} s; churn: {} writes/s for {} s",
        snapshot_all.as_secs_f64(),
        b.rate,
        b.duration
    ));
    let writes = Arc::new(Writes::default());
    let cpu0 = procstat::cpu_seconds(server_pid);
    let t0 = Instant::now();
    if done.load(Ordering::SeqCst) > 0 {
        etcd::churn(
            endpoint,
            b.objects,
            b.value_bytes,
            b.rate,
            Duration::from_secs(b.duration),
            writes.clone(),
        )
        .await?;
    }
    let churn_time = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, procstat::cpu_seconds(server_pid)) {
        (Some(a), Some(b)) if churn_time > 0.0 => Some((b - a) / churn_time),
        _ => None,
    };
    // Let the last changes arrive, then stop every client.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_side = match metrics_port {
        Some(port) => tokio::task::spawn_blocking(move || {
            crate::lab::http_get(port, "/metrics")
                .ok()
                .and_then(|(_, text)| {
                    stats::histogram_quantiles(&text, "furynet_fanout_propagation_seconds")
                })
        })
        .await
        .ok()
        .flatten(),
        None => None,
    };
    stop_tx.send_replace(true);
    let mut seen = Vec::with_capacity(n);
    let mut per_client = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((took, s))) => {
                per_client.push(took);
                seen.push(s);
            }
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let failed = failures.len();
    failures.truncate(5);
    Ok(Side {
        failed_clients: failed,
        name: name.to_string(),
        clients: n,
        snapshot_all_clients_s: snapshot_all.as_secs_f64(),
        snapshot_per_client: Quantiles::of(per_client),
        propagation: stats::propagation(&writes.snapshot(), &seen),
        server_kib_per_client: match (before, with_clients) {
            (Some(a), Some(b)) if n > 1 => Some((b.rss_mib - a.rss_mib) * 1024.0 / (n - 1) as f64),
            _ => None,
        },
        server_memory_before_clients: before,
        server_memory_with_clients: with_clients,
        server_cpu_cores_churn: cpu,
        server_side_propagation_ms: server_side,
        failures,
    })
}

/// Starts the throwaway etcd (before any async runtime: its health check uses the blocking
/// datastore API).
fn start_etcd() -> Result<EtcdProcess, String> {
    let bin = furynet_datastore::etcd::process::etcd_binary()
        .ok_or("etcd is not installed (apt-get install etcd-server): the benchmark runs on etcd")?;
    progress("starting a throwaway etcd on loopback");
    EtcdProcess::start(&bin)
}

async fn bench(b: &FanoutBench, etcd: EtcdProcess) -> Result<Report, String> {
    progress(&format!(
        "writing {} objects of {} bytes",
        b.objects, b.value_bytes
    ));
    etcd::fill(&etcd.endpoint, b.objects, b.value_bytes).await?;
    let listen = free_addr()?;
    progress(&format!("starting the fan-out server on {listen}"));
    let datastore = etcd.datastore_arg();
    let (coalesce, sweepers) = (b.write_coalesce_ms, b.sweepers);
    let pki = if b.tls { Some(pki::Pki::new()?) } else { None };
    let server_tls = pki.as_ref().map(pki::Pki::server_args).unwrap_or_default();
    let client_tls = pki
        .as_ref()
        .map(|p| p.connector().map(Arc::new))
        .transpose()?;
    let server = tokio::task::spawn_blocking(move || {
        start_server(&datastore, listen, coalesce, sweepers, &server_tls)
    })
    .await
    .map_err(|e| e.to_string())??;
    let objects = b.objects;
    let first = Arc::new(AtomicBool::new(true));
    // Room for every change of the churn (and some), so recording one never copies.
    let expected_changes = (u64::from(b.rate) * b.duration) as usize * 5 / 4 + 64;
    let fanout = run_side(
        "fanout",
        b.clients,
        b,
        &etcd.endpoint,
        (server.0.id(), Some(server.1)),
        |done, stop| {
            let expect = first.swap(false, Ordering::Relaxed).then_some(objects);
            let tls = client_tls.clone();
            client::fanout_client(listen, expect, expected_changes, tls, done, stop)
        },
    )
    .await?;
    drop(server);
    let baseline = b.baseline_clients.unwrap_or(b.clients);
    let etcd_direct = if baseline > 0 {
        let endpoint = etcd.endpoint.clone();
        Some(
            run_side(
                "etcd-direct",
                baseline,
                b,
                &etcd.endpoint,
                (etcd.pid(), None),
                |done, stop| etcd::direct_client(endpoint.clone(), objects, done, stop),
            )
            .await?,
        )
    } else {
        None
    };
    drop(etcd);
    Ok(Report {
        objects: b.objects,
        value_bytes: b.value_bytes,
        rate: b.rate,
        duration_s: b.duration,
        fanout,
        etcd_direct,
    })
}

fn print_side(w: &mut dyn Write, s: &Side) -> std::io::Result<()> {
    let mem = |m: Option<Memory>| m.map_or("-".into(), |m| format!("{:.0} MiB", m.rss_mib));
    writeln!(
        w,
        "{:<12} clients {:>5} | snapshot: all {:>7.2} s, per client median {:>8.1} ms | propagation median {:>6.1} ms p99 {:>7.1} ms, to last client median {:>6.1} ms p99 {:>7.1} ms | missing {} | server RSS {} -> {} ({} KiB/client), CPU {} cores",
        s.name,
        s.clients,
        s.snapshot_all_clients_s,
        s.snapshot_per_client.median_ms,
        s.propagation.per_client.median_ms,
        s.propagation.per_client.p99_ms,
        s.propagation.to_last_client.median_ms,
        s.propagation.to_last_client.p99_ms,
        s.propagation.missing,
        mem(s.server_memory_before_clients),
        mem(s.server_memory_with_clients),
        s.server_kib_per_client.map_or("-".into(), |k| format!("{k:.1}")),
        s.server_cpu_cores_churn.map_or("-".into(), |c| format!("{c:.2}")),
    )?;
    if s.failed_clients > 0 {
        writeln!(w, "  {} client(s) failed:", s.failed_clients)?;
    }
    if let Some((p50, p99)) = s.server_side_propagation_ms {
        writeln!(
            w,
            "  server side (read from the datastore -> written to the agent's socket): median {p50:.1} ms p99 {p99:.1} ms"
        )?;
    }
    for f in &s.failures {
        writeln!(w, "  failure: {f}")?;
    }
    Ok(())
}

pub fn run(b: &FanoutBench) -> u8 {
    raise_fd_limit(b.clients.max(b.baseline_clients.unwrap_or(0)));
    let etcd = match start_etcd() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("furynet bench fanout: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("furynet bench fanout: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let report = match rt.block_on(bench(b, etcd)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("furynet bench fanout: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let ok = report.fanout.failures.is_empty()
        && report
            .etcd_direct
            .as_ref()
            .is_none_or(|s| s.failures.is_empty());
    let res = with_stdout(|w| match b.output {
        Format::Json | Format::Yaml => {
            serde_json::to_writer_pretty(&mut *w, &report)?;
            writeln!(w)
        }
        _ => {
            writeln!(
                w,
                "{} objects x {} B, {} writes/s for {} s",
                report.objects, report.value_bytes, report.rate, report.duration_s
            )?;
            print_side(w, &report.fanout)?;
            if let Some(s) = &report.etcd_direct {
                print_side(w, s)?;
            }
            Ok(())
        }
    });
    match res {
        Ok(()) if ok => exit::OK,
        _ => exit::INVALID_INPUT,
    }
}
