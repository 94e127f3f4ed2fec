//! `furynet bench`: reproducible measurements that compare furynet with a baseline in one run.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::exit;
use crate::out::{with_stdout, Format};

/// Benchmarks (see BENCHMARKS.md for the figures and the scripts that run them).
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time CNI ADD and DEL of any CNI plugin, the way a container runtime calls it.
    ///
    /// Run it inside a scratch network namespace (`ip netns exec NS furynet bench cni ...`):
    /// the plugin wires pods into that namespace. Each pod gets a fresh network namespace
    /// (created and removed outside the timed part). `scripts/bench-cni.sh` runs furynet-cni and
    /// the reference plugins side by side.
    Cni(CniBench),
    /// Pod-to-pod throughput and latency with policy in force and over VXLAN, each against
    /// its baseline (`scripts/bench-dataplane.sh`; needs root).
    Dataplane(crate::bench_dataplane::DataplaneBench),
    /// The fan-out server with many simulated agents against etcd watched directly
    /// (starts its own etcd and fan-out server; see BENCHMARKS.md).
    Fanout(crate::bench_fanout::FanoutBench),
}

#[derive(Debug, Args)]
struct CniBench {
    /// The plugin binary.
    #[arg(long)]
    plugin: PathBuf,
    /// The network configuration (JSON) passed on stdin.
    #[arg(long)]
    config: PathBuf,
    /// Directory of plugins (`CNI_PATH`, for delegated IPAM such as host-local).
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: String,
    /// Pods to add then delete.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Concurrent invocations.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// A label for the report.
    #[arg(long, default_value = "plugin")]
    name: String,
    /// Output format (table or json).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Serialize)]
struct Stats {
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct CniReport {
    name: String,
    pods: usize,
    parallel: usize,
    add: Stats,
    del: Stats,
    add_per_second: f64,
    add_del_median_ms: f64,
    /// How long after the last DEL returned the host namespace was back to its interfaces of
    /// before the ADDs (0 when DEL deletes synchronously; furynet-cni's reaper otherwise).
    links_gone_after_ms: f64,
    failures: usize,
}

/// Interfaces in the current network namespace other than bridges (the `bridge` plugin keeps
/// its bridge on purpose), from `/sys/class/net`, which `ip netns exec` remounts for the
/// namespace it enters.
fn link_count() -> usize {
    std::fs::read_dir("/sys/class/net").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| !e.path().join("bridge").exists())
            .count()
    })
}

/// Waits (up to 10 s) until at most `count` interfaces are left; returns how long it took.
fn links_back_to(count: usize) -> Duration {
    let start = Instant::now();
    while link_count() > count && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_micros(500));
    }
    start.elapsed()
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| {
        let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(idx).copied().map_or(0.0, ms)
    };
    Stats {
        median_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: samples.last().copied().map_or(0.0, ms),
    }
}

struct Pod {
    netns: String,
    container_id: String,
}

fn sh(args: &[&str]) -> io::Result<()> {
    let st = Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{} failed: {st}", args.join(" "))))
    }
}

fn invoke(b: &CniBench, config: &[u8], cmd: &str, pod: &Pod) -> Result<Duration, String> {
    let start = Instant::now();
    let mut child = Command::new(&b.plugin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &b.cni_path)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={}",
                pod.netns
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", b.plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(config).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "{cmd} {}: {} {}",
            pod.container_id,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `f` over `0..n` on `parallel` threads, collecting durations.
fn run_all(
    n: usize,
    parallel: usize,
    f: &(dyn Fn(usize) -> Result<Duration, String> + Sync),
) -> (Vec<Duration>, Vec<String>, Duration) {
    let next = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::with_capacity(n));
    let errors = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match f(i) {
                    Ok(d) => samples.lock().map(|mut v| v.push(d)).unwrap_or(()),
                    Err(e) => errors.lock().map(|mut v| v.push(e)).unwrap_or(()),
                }
            });
        }
    });
    let wall = start.elapsed();
    (
        samples.into_inner().unwrap_or_default(),
        errors.into_inner().unwrap_or_default(),
        wall,
    )
}

fn cni(b: &CniBench) -> Result<CniReport, String> {
    let config = std::fs::read(&b.config).map_err(|e| format!("{}: {e}", b.config.display()))?;
    let tag = std::process::id();
    let pods: Vec<Pod> = (0..b.pods)
        .map(|i| Pod {
            netns: format!("fnyb-{tag}-{i}"),
            container_id: format!("bench{tag}x{i}"),
        })
        .collect();
    eprint!("creating {} pod namespaces... ", pods.len());
    for p in &pods {
        sh(&["ip", "netns", "add", &p.netns]).map_err(|e| e.to_string())?;
    }
    eprintln!("done");
    let cleanup = || {
        for p in &pods {
            let _ = sh(&["ip", "netns", "delete", &p.netns]);
        }
    };
    let links_before = link_count();
    eprintln!("ADD x{} ({} at a time)...", b.pods, b.parallel);
    let (mut add, add_err, add_wall) = run_all(pods.len(), b.parallel, &|i| {
        invoke(b, &config, "ADD", &pods[i])
    });
    eprintln!("DEL x{}...", b.pods);
    let (mut del, del_err, _) = run_all(pods.len(), b.parallel, &|i| {
        invoke(b, &config, "DEL", &pods[i])
    });
    let links_gone = links_back_to(links_before);
    cleanup();
    for e in add_err.iter().chain(del_err.iter()).take(3) {
        eprintln!("failure: {e}");
    }
    let (a, d) = (stats(&mut add), stats(&mut del));
    Ok(CniReport {
        name: b.name.clone(),
        pods: b.pods,
        parallel: b.parallel,
        add_per_second: add.len() as f64 / add_wall.as_secs_f64().max(1e-9),
        add_del_median_ms: a.median_ms + d.median_ms,
        links_gone_after_ms: links_gone.as_secs_f64() * 1e3,
        add: a,
        del: d,
        failures: add_err.len() + del_err.len(),
    })
}

pub fn run(args: &BenchArgs) -> u8 {
    match &args.command {
        BenchCommand::Dataplane(b) => crate::bench_dataplane::run(b),
        BenchCommand::Fanout(b) => crate::bench_fanout::run(b),
        BenchCommand::Cni(b) => match cni(b) {
            Ok(r) => {
                let res = with_stdout(|w| {
                    match b.output {
                    Format::Json | Format::Yaml => {
                        serde_json::to_writer(&mut *w, &r)?;
                        writeln!(w)
                    }
                    _ => writeln!(
                        w,
                        "{:<16} pods {:>4} x{:<2} ADD median {:>7.2} ms p99 {:>7.2} ms | DEL median {:>7.2} ms p99 {:>7.2} ms | {:>7.1} ADD/s | links gone {:>6.1} ms after the last DEL | failures {}",
                        r.name, r.pods, r.parallel, r.add.median_ms, r.add.p99_ms, r.del.median_ms,
                        r.del.p99_ms, r.add_per_second, r.links_gone_after_ms, r.failures
                    ),
                }
                });
                match res {
                    Ok(()) if r.failures == 0 => exit::OK,
                    _ => exit::INVALID_INPUT,
                }
            }
            Err(e) => {
                eprintln!("furynet bench cni: {e}");
                exit::INVALID_INPUT
            }
        },
    }
}
