//! `furynet`: the command-line entry point (analyze now; lab, ipam, observe as they land).

mod agent;
mod analyze;
mod bench;
mod bench_dataplane;
mod bench_fanout;
mod fanout;
mod ipam;
mod lab;
mod out;
mod store_arg;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// furynet: Kubernetes networking in Rust. `lab demo` builds a cluster's networking from
/// network namespaces and checks NetworkPolicy with real traffic; `analyze` predicts what
/// NetworkPolicies allow; `ipam` inspects and repairs IP address management (see the README).
#[derive(Debug, Parser)]
#[command(name = "furynet", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Analyze(analyze::AnalyzeArgs),
    Agent(agent::AgentArgs),
    Fanout(fanout::FanoutArgs),
    Ipam(ipam::IpamArgs),
    Lab(lab::LabArgs),
    /// Benchmarks that compare furynet with a baseline in the same run.
    Bench(bench::BenchArgs),
}

/// Exit codes, as documented in `--help` and the README.
pub(crate) mod exit {
    /// Everything read and printed.
    pub const OK: u8 = 0;
    /// Invalid input (with `--strict`), nothing could be read, or a named pod does not exist.
    pub const INVALID_INPUT: u8 = 1;
    /// Bad command line (clap uses 2 for its own usage errors too).
    pub const USAGE: u8 = 2;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Analyze(args) => analyze::run(&args),
        Command::Agent(args) => agent::run(&args),
        Command::Fanout(args) => fanout::run(&args),
        Command::Ipam(args) => ipam::run(&args),
        Command::Lab(args) => lab::run_cmd(&args),
        Command::Bench(args) => bench::run(&args),
    };
    ExitCode::from(code)
}
