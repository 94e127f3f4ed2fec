//! Compiles and computes the full matrix of a synthetic cluster once, and prints one JSON line
//! with the timings and the process's peak RSS (`VmHWM` from `/proc/self/status`).
//!
//! `cargo run --release -p furynet-policy --example matrix_scale -- --pods 5000`
//! Options: `--pods N` (default 5000), `--namespaces N` (50), `--policies N` (pods / 5),
//! `--seed N`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use furynet_policy::synth::{self, SynthSpec};
use furynet_policy::Engine;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let mut spec = SynthSpec::default();
    let mut policies = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or_else(|| {
                eprintln!(
                    "usage: matrix_scale [--pods N] [--namespaces N] [--policies N] [--seed N]"
                );
                std::process::exit(2)
            });
        match flag.as_str() {
            "--pods" => spec.pods = value as usize,
            "--namespaces" => spec.namespaces = value as usize,
            "--policies" => policies = Some(value as usize),
            "--seed" => spec.seed = value,
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    spec.policies = policies.unwrap_or(spec.pods / 5);

    let t = Instant::now();
    let cluster = synth::cluster(&spec);
    let synth_s = t.elapsed().as_secs_f64();
    let rss_before_engine = peak_rss_kib();

    let t = Instant::now();
    let engine = Engine::new(&cluster);
    let compile_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let matrix = engine.matrix();
    let matrix_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let allowed = matrix.allowed_count();
    let count_s = t.elapsed().as_secs_f64();

    let json = serde_json::json!({
        "pods": spec.pods,
        "namespaces": spec.namespaces,
        "policies": spec.policies,
        "seed": spec.seed,
        "identities": engine.identities().len(),
        "rules": engine.rules().len(),
        "ports": matrix.ports.len(),
        "synth_s": synth_s,
        "compile_s": compile_s,
        "matrix_s": matrix_s,
        "allowed_count_s": count_s,
        "entries": matrix.len(),
        "allowed": allowed,
        "peak_rss_after_synth_kib": rss_before_engine,
        "peak_rss_kib": peak_rss_kib(),
    });
    println!("{json}");
}
