//! Cost of one agent pass's pure part (engine compile, calc, render) on a synthetic cluster.
//! `cargo run --release -p furynet-agent --example pass_cost -- PODS POLICIES`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::time::Instant;

use furynet_policy::synth::{cluster, SynthSpec};
use furynet_policy::Engine;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (pods, policies) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(500),
    );
    let mut c = cluster(&SynthSpec {
        pods,
        namespaces: 10,
        policies,
        seed: 0x5eed_f00d,
    });
    for (i, p) in c.pods.iter_mut().enumerate() {
        p.node_name = Some(format!("node-{}", i % 3));
    }
    let ifaces: HashMap<String, String> = c
        .pods
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(i, p)| (p.key(), format!("fny{i:011}")))
        .collect();
    let t = Instant::now();
    let engine = Engine::new(&c);
    let t_engine = t.elapsed();
    let t = Instant::now();
    let state = furynet_calc::compute(&engine, "node-0", &ifaces);
    let t_calc = t.elapsed();
    let t = Instant::now();
    let full = furynet_calc::render_full(&state);
    let t_render = t.elapsed();
    let (chains, sets) = state.summary();
    println!(
        "pods {pods} policies {policies} local {}: engine {t_engine:?} calc {t_calc:?} render {t_render:?} ({} bytes, {} chains, {} sets, {} set elements)",
        ifaces.len(),
        full.len(),
        chains.len(),
        sets.len(),
        sets.values().sum::<usize>()
    );
}
