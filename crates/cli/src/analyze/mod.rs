//! `furynet analyze`: which pod may talk to which pod on which port, from Kubernetes YAML.

mod explain;
mod table;

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use furynet_model::{load_paths, Diagnostic, Protocol, Severity};
use furynet_policy::{Engine, PodId};
use serde::Serialize;

use crate::exit;
use crate::out::{with_stdout, Format};

/// Predict pod-to-pod reachability from Kubernetes YAML/JSON (NetworkPolicy semantics).
///
/// Reads Namespaces, Pods, workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job — expanded
/// into the pods Kubernetes would create), NetworkPolicies and Services from files, directories
/// or `-` (stdin); `kubectl get pods,namespaces,networkpolicies -A -o yaml` output works as is.
/// Prints, for every ordered pair of distinct pods and every (containerPort, protocol) the
/// destination declares, whether the connection is allowed.
///
/// Invalid objects are reported on stderr (file, document, object, field) and left out; the rest
/// is still analysed unless --strict is given.
///
/// Exit codes: 0 ok; 1 invalid input (with --strict), nothing could be read, or an unknown pod;
/// 2 bad usage.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AnalyzeArgs {
    /// Files or directories (*.yaml, *.yml, *.json, recursively); `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Output format: table (a matrix per port), wide (one line per connection, with the deciding
    /// policies), json or yaml (one entry per connection).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,

    /// Only connections from this pod (`NAMESPACE/POD`) or namespace (`NAMESPACE`).
    #[arg(long, value_name = "NS/POD")]
    from: Option<String>,

    /// Only connections to this pod (`NAMESPACE/POD`) or namespace (`NAMESPACE`).
    #[arg(long, value_name = "NS/POD")]
    to: Option<String>,

    /// Only this destination port: `PORT` or `PORT/PROTOCOL` (TCP, UDP, SCTP; default TCP).
    #[arg(long, value_name = "PORT/PROTO", value_parser = parse_port)]
    port: Option<(u16, Protocol)>,

    /// Explain one connection: which policies isolate each side and which rule allowed it.
    /// Needs --from NS/POD, --to NS/POD and --port.
    #[arg(long, requires_all = ["from", "to", "port"])]
    explain: bool,

    /// Fail (exit 1) on any invalid object instead of analysing the rest.
    #[arg(long)]
    strict: bool,
}

fn parse_port(s: &str) -> Result<(u16, Protocol), String> {
    let (num, proto) = match s.split_once('/') {
        Some((n, p)) => (n, p.to_ascii_uppercase()),
        None => (s, "TCP".to_string()),
    };
    let port: u16 = num
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {num:?}: expected 1-65535"))?;
    let proto = Protocol::parse(&proto)
        .ok_or_else(|| format!("invalid protocol {proto:?}: expected TCP, UDP or SCTP"))?;
    Ok((port, proto))
}

/// One connection verdict: the `-o json` contract.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Entry {
    pub src: String,
    pub dst: String,
    pub port: u16,
    pub protocol: Protocol,
    pub allowed: bool,
}

/// A `--from`/`--to` selection.
#[derive(Debug, Clone)]
enum PodFilter {
    All,
    Namespace(String),
    Pod(PodId),
}

impl PodFilter {
    fn parse(engine: &Engine, arg: Option<&str>) -> Result<Self, String> {
        let Some(arg) = arg else { return Ok(Self::All) };
        match arg.split_once('/') {
            Some((ns, name)) => engine
                .find(ns, name)
                .map(Self::Pod)
                .ok_or_else(|| format!("pod {ns}/{name} not found in the input")),
            None if engine.pods().iter().any(|p| p.namespace == arg) => {
                Ok(Self::Namespace(arg.to_string()))
            }
            None => Err(format!("no pods in namespace {arg} in the input")),
        }
    }

    fn admits(&self, engine: &Engine, id: PodId) -> bool {
        match self {
            Self::All => true,
            Self::Namespace(ns) => engine.pod(id).is_some_and(|p| &p.namespace == ns),
            Self::Pod(p) => *p == id,
        }
    }

    fn single(&self) -> Option<PodId> {
        match self {
            Self::Pod(p) => Some(*p),
            _ => None,
        }
    }
}

fn print_diagnostics(diags: &[Diagnostic]) {
    let mut err = io::stderr().lock();
    for d in diags {
        // Nothing useful to do if stderr itself is gone.
        let _ = writeln!(err, "{d}");
    }
}

pub fn run(args: &AnalyzeArgs) -> u8 {
    let loaded = load_paths(&args.paths);
    print_diagnostics(&loaded.diagnostics);
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if args.strict && errors > 0 {
        eprintln!("furynet analyze: {errors} invalid object(s); not analysing (--strict)");
        return exit::INVALID_INPUT;
    }
    let cluster = &loaded.cluster;
    let read_nothing = cluster.pods.is_empty()
        && cluster.policies.is_empty()
        && cluster.namespaces.is_empty()
        && cluster.services.is_empty()
        && cluster.nodes.is_empty();
    if read_nothing && errors > 0 {
        eprintln!("furynet analyze: nothing could be read from the input");
        return exit::INVALID_INPUT;
    }

    let engine = Engine::new(cluster);
    let (from, to) = match (
        PodFilter::parse(&engine, args.from.as_deref()),
        PodFilter::parse(&engine, args.to.as_deref()),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("furynet analyze: {e}");
            return exit::INVALID_INPUT;
        }
    };

    let result = if args.explain {
        let (Some(src), Some(dst), Some((port, proto))) = (from.single(), to.single(), args.port)
        else {
            eprintln!("furynet analyze: --explain needs --from NS/POD, --to NS/POD and --port");
            return exit::USAGE;
        };
        explain::print(&engine, src, dst, port, proto, args.output)
    } else {
        let entries = entries(&engine, &from, &to, args.port);
        print_entries(&engine, &entries, args.output)
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("furynet analyze: writing output: {e}");
            exit::INVALID_INPUT
        }
    }
}

/// Verdicts for the selected pairs and ports, ordered by source, destination, port, protocol.
fn entries(
    engine: &Engine,
    from: &PodFilter,
    to: &PodFilter,
    port: Option<(u16, Protocol)>,
) -> Vec<Entry> {
    let pods = engine.pods();
    let make = |s: PodId, d: PodId, p: u16, proto: Protocol, allowed: bool| Entry {
        src: pods[s].key(),
        dst: pods[d].key(),
        port: p,
        protocol: proto,
        allowed,
    };
    if matches!((from, to, port), (PodFilter::All, PodFilter::All, None)) {
        let matrix = engine.matrix();
        return matrix
            .entries()
            .map(|e| make(e.src, e.dst, e.port, e.protocol, e.allowed))
            .collect();
    }
    let mut out = Vec::new();
    for s in (0..pods.len()).filter(|&s| from.admits(engine, s)) {
        for d in (0..pods.len()).filter(|&d| d != s && to.admits(engine, d)) {
            for (p, proto) in pods[d].declared_ports() {
                if port.is_none_or(|want| want == (p, proto)) {
                    out.push(make(s, d, p, proto, engine.allowed(s, d, p, proto)));
                }
            }
        }
    }
    out
}

/// The `-o table` rendering of verdicts (also used by `furynet lab`).
pub(crate) fn render_table(
    engine: &Engine,
    entries: &[Entry],
    w: &mut dyn Write,
) -> io::Result<()> {
    table::matrix(engine, entries, w)
}

fn print_entries(engine: &Engine, entries: &[Entry], format: Format) -> io::Result<()> {
    with_stdout(|w| match format {
        Format::Json => {
            // One object per line: stable, diffable, streamable.
            if entries.is_empty() {
                return writeln!(w, "[]");
            }
            writeln!(w, "[")?;
            for (i, e) in entries.iter().enumerate() {
                serde_json::to_writer(&mut *w, e)?;
                writeln!(w, "{}", if i + 1 < entries.len() { "," } else { "" })?;
            }
            writeln!(w, "]")
        }
        Format::Yaml => {
            let text = serde_yaml_ng::to_string(entries).map_err(io::Error::other)?;
            w.write_all(text.as_bytes())
        }
        Format::Table => table::matrix(engine, entries, w),
        Format::Wide => table::wide(engine, entries, w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_argument() {
        assert_eq!(parse_port("80"), Ok((80, Protocol::Tcp)));
        assert_eq!(parse_port("53/udp"), Ok((53, Protocol::Udp)));
        assert_eq!(parse_port("9/SCTP"), Ok((9, Protocol::Sctp)));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").is_err());
        assert!(parse_port("80/ICMP").is_err());
        assert!(parse_port("http").is_err());
    }
}
