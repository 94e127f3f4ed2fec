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
//!   Then a second A/B: the policy table against furynet's own table for the same pods with
//!   no NetworkPolicy at all (what every furynet node runs: the base chains with conntrack and
//!   the verdict maps), so the policies' own cost is separated from the hook's.
//! - **VXLAN**: two node namespaces joined by a veth underlay, one pod on each (furynet-cni).
//!   Ours: `furynet_dataplane::routing::{plan, reconcile}` over netlink. Baseline: the same
//!   FDB, neighbour and route entries programmed by hand with `ip`/`bridge` on a plain kernel
//!   `vxlan` device (`id 42 dstport 4789 nolearning`, same MTU and MAC).
//!
//! The traffic tool is built in: a TCP sink in the destination pod, a sender in the source pod
//! (sockets created on threads that `setns` into the pod). Throughput: one stream of 128 KiB
//! writes for N seconds, bytes counted by the receiver. Request/response: 1-byte ping-pong on
//! one `TCP_NODELAY` connection, per-transaction latency, once with blocking reads and once
//! with both ends spinning on non-blocking sockets (no idle-CPU wake-ups in the round trip).
//!
//! Everything lives in namespaces named `fnyb-<pid>-*` and a temporary directory, all removed
//! by drop guards, also on error and on SIGINT/SIGTERM (the signals are turned into a stop flag
//! that the measurement loops check).

use std::collections::HashMap;
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
pub(super) const PREFIX: &str = "fnyb-";
pub(super) const PORT: u16 = 5201;
pub(super) const NODE: &str = "bench-node";
pub(super) const BENCH_NS: &str = "fnyb-bench";
pub(super) const MTU: u32 = 1450;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Only {
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

mod env;
mod scenarios;
mod traffic;

use env::*;
use scenarios::*;
use traffic::*;

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Debug, Serialize)]
pub(super) struct Machine {
    pub(super) cpus: usize,
    /// 1, 5 and 15 minute load averages at start.
    pub(super) loadavg: [f64; 3],
    pub(super) kernel: String,
}

pub(super) fn machine() -> Machine {
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
pub(super) struct Report {
    pub(super) machine: Machine,
    pub(super) seconds: u64,
    pub(super) rounds: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<PolicyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vxlan: Option<VxlanReport>,
}

pub(super) fn bench(args: &DataplaneBench) -> Res<Report> {
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

pub(super) fn verdict(r: f64) -> &'static str {
    if r >= 0.95 {
        "meets >= 0.95"
    } else {
        "MISSES 0.95"
    }
}

pub(super) fn table(r: &Report, w: &mut dyn Write) -> io::Result<()> {
    let m = &r.machine;
    writeln!(
        w,
        "furynet bench dataplane: {} CPUs, load {:.2} {:.2} {:.2} at start, kernel {}; {} s per measurement, {} rounds A/B alternating, medians of rounds",
        m.cpus, m.loadavg[0], m.loadavg[1], m.loadavg[2], m.kernel, r.seconds, r.rounds
    )?;
    let row = |w: &mut dyn Write, name: &str, x: &Measure| {
        writeln!(
            w,
            "  {name:<16} {:>8.2} Gbit/s  {:>9.0} RR/s  median {:>6.1} us  p99 {:>6.1} us | spinning {:>9.0} RR/s  median {:>6.2} us  p99 {:>6.2} us",
            x.gbps, x.rr_tps, x.rr_median_us, x.rr_p99_us, x.spin_rr_tps, x.spin_rr_median_us,
            x.spin_rr_p99_us
        )
    };
    let ratios = |w: &mut dyn Write, x: &Ratios| {
        writeln!(
            w,
            "  ratio            throughput {:.3} ({})  RR/s {:.3} ({})  median latency {:.3} | spinning RR/s {:.3} ({})  median latency {:.3}",
            x.throughput,
            verdict(x.throughput),
            x.rr_tps,
            verdict(x.rr_tps),
            x.rr_median_latency,
            x.spin_rr_tps,
            verdict(x.spin_rr_tps),
            x.spin_rr_median_latency
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
        writeln!(
            w,
            "  vs a node without any nftables table (no netfilter hook, no conntrack):"
        )?;
        row(w, "no table", &p.no_policy)?;
        row(w, "policy in force", &p.policy)?;
        ratios(w, &p.ratio)?;
        writeln!(
            w,
            "  vs furynet's table for the same pods with no NetworkPolicy (hook + conntrack in both):"
        )?;
        row(w, "no policy", &p.furynet_no_policy)?;
        row(w, "policy in force", &p.policy_again)?;
        ratios(w, &p.ratio_vs_furynet_no_policy)?;
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
    pub(super) fn quantiles_and_medians() {
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
    pub(super) fn ratios_guard_zero_and_orient_latency() {
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
    pub(super) fn rounds_alternate_abba() {
        let order: Vec<bool> = (0..3).flat_map(round_order).collect();
        assert_eq!(order, [false, true, true, false, false, true]);
    }

    #[test]
    pub(super) fn measure_takes_medians_of_rounds() {
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
            spin_rr_runs: vec![
                RrRun {
                    tps: 7.0,
                    median_us: 2.0,
                    p99_us: 4.0,
                },
                RrRun {
                    tps: 9.0,
                    median_us: 1.0,
                    p99_us: 2.0,
                },
            ],
            ..Measure::default()
        };
        m.finish();
        assert_eq!(
            (m.gbps, m.rr_tps, m.rr_median_us, m.rr_p99_us),
            (3.0, 20.0, 3.0, 6.0)
        );
        assert_eq!(
            (m.spin_rr_tps, m.spin_rr_median_us, m.spin_rr_p99_us),
            (8.0, 1.5, 3.0)
        );
    }

    #[test]
    pub(super) fn fillers_are_distinct_and_never_adjacent() {
        let v: Vec<u32> = filler_addrs(1000).map(u32::from).collect();
        assert_eq!(v.len(), 1000);
        assert!(v.windows(2).all(|w| w[1] - w[0] == 2));
        assert_eq!(
            v.first().copied(),
            Some(u32::from(Ipv4Addr::new(100, 64, 0, 0)))
        );
    }

    #[test]
    pub(super) fn benchmark_cluster_selects_the_pods_and_counts_policies() {
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
    pub(super) fn mac_formatting() {
        assert_eq!(mac_str(&[2, 0xab, 0, 1, 0x10, 0xff]), "02:ab:00:01:10:ff");
    }
}
