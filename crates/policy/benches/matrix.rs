//! Policy engine benchmarks on synthetic clusters of realistic shape ([`synth`]): compiling a
//! cluster ([`Engine::new`]), the full reachability matrix ([`Engine::matrix`]) and single-pair
//! verdicts ([`Engine::allowed`]), at 500 / 5,000 / 20,000 pods (50 namespaces, one policy per
//! five pods, 3 declared port keys).
//!
//! `cargo bench -p furynet-policy --bench matrix` (or `scripts/bench-policy.sh`, which also
//! measures peak memory). Sample counts are kept low so the whole run takes about a minute.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use divan::{black_box, Bencher};
use furynet_model::{Cluster, Protocol};
use furynet_policy::synth::{self, SynthSpec};
use furynet_policy::{Engine, PodId};

const SIZES: &[usize] = &[500, 5_000, 20_000];

fn main() {
    divan::main();
}

fn cluster(pods: usize) -> Cluster {
    synth::cluster(&SynthSpec::bench(pods))
}

/// `Engine::new`: identities, the label index, selector resolution, rule IR.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1, max_time = 5)]
fn compile(bencher: Bencher, pods: usize) {
    let cluster = cluster(pods);
    bencher.bench_local(|| Engine::new(black_box(&cluster)));
}

/// `Engine::matrix`: every ordered pair of distinct pods on every declared port.
#[divan::bench(args = SIZES, sample_count = 10, sample_size = 1, max_time = 10)]
fn matrix(bencher: Bencher, pods: usize) {
    let engine = Engine::new(&cluster(pods));
    bencher.bench_local(|| black_box(&engine).matrix());
}

/// `Engine::allowed` for one pair, cycling through 4,096 precomputed random pairs (each on a
/// port the destination declares): the data those pairs touch stays in cache, so this is the
/// steady-state cost of the evaluation itself. The reported time is per call.
#[divan::bench(args = SIZES, sample_count = 200, sample_size = 256, max_time = 3)]
fn allowed_pair(bencher: Bencher, pods: usize) {
    allowed_pairs(bencher, pods, 4096);
}

/// Like [`allowed_pair`] but through 1,048,576 random pairs, so most calls touch pods, rules
/// and bitsets that are not in cache: closer to one-off queries on a large cluster.
#[divan::bench(args = SIZES, sample_count = 200, sample_size = 256, max_time = 3)]
fn allowed_pair_uncached(bencher: Bencher, pods: usize) {
    allowed_pairs(bencher, pods, 1 << 20);
}

fn allowed_pairs(bencher: Bencher, pods: usize, count: usize) {
    let engine = Engine::new(&cluster(pods));
    let pairs = random_pairs(&engine, count, 0x0dd_ba11);
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 1) % pairs.len();
        let (src, dst, port, protocol) = pairs[i];
        engine.allowed(
            black_box(src),
            black_box(dst),
            black_box(port),
            black_box(protocol),
        )
    });
}

/// `count` random `(src, dst, port, protocol)` with `src != dst` and a port `dst` declares.
fn random_pairs(engine: &Engine, count: usize, seed: u64) -> Vec<(PodId, PodId, u16, Protocol)> {
    let mut state = seed;
    let mut next = move |n: usize| {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((u128::from(z ^ (z >> 31)) * n as u128) >> 64) as usize
    };
    let pods = engine.pods();
    assert!(pods.len() > 1);
    (0..count)
        .map(|_| {
            let src = next(pods.len());
            let dst = (src + 1 + next(pods.len() - 1)) % pods.len();
            let ports = pods[dst].declared_ports();
            let (port, protocol) = ports[next(ports.len())];
            (src, dst, port, protocol)
        })
        .collect()
}
