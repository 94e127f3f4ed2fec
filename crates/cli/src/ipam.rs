//! `furynet ipam show | check | release`: the state of block IPAM in the datastore.

use std::io::{self, Write};
use std::net::IpAddr;

use clap::{Args, Subcommand};
use furynet_datastore::ipam_store::IpamStore;
use furynet_datastore::DatastoreConfig;
use furynet_ipam::records::{BlockRecord, BLOCKS_PREFIX};
use furynet_ipam::{Ipam, PoolUsage, Store};
use ipnet::IpNet;
use serde::Serialize;

use crate::exit;
use crate::out::{with_stdout, Format};
use crate::store_arg;

/// Inspect and repair IP address management: pools, per-node blocks, allocations.
///
/// Exit codes: 0 ok; 1 `check` found problems, `release` found no such allocation, or the
/// datastore failed; 2 bad usage.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct IpamArgs {
    /// Datastore: a directory (embedded store), `embedded:DIR`, `etcd://HOST:PORT[,...]`, or
    /// `kubernetes[:KUBECONFIG]` (the Kubernetes API).
    #[arg(long, global = true, env = "FURYNET_DATASTORE", value_parser = store_arg::parse,
          default_value = DatastoreConfig::DEFAULT_EMBEDDED_PATH)]
    datastore: DatastoreConfig,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, global = true, default_value_t = Format::Table)]
    output: Format,

    #[command(subcommand)]
    command: IpamCommand,
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// Pools, blocks per node and their utilisation; `-o wide` adds every allocation and its pod.
    Show,
    /// Find leaks (addresses nobody's handle owns), double allocations, stale index entries and
    /// affinity inconsistencies.
    Check,
    /// Free one address on purpose (e.g. after `check` reported a leak whose pod is gone).
    Release {
        /// The address to free.
        ip: IpAddr,
    },
}

/// One allocation, for `show -o wide|json|yaml`.
#[derive(Debug, Serialize)]
struct AllocationRow {
    ip: IpAddr,
    block: IpNet,
    node: String,
    handle: String,
    namespace: Option<String>,
    pod: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShowOutput {
    pools: Vec<PoolUsage>,
    allocations: Vec<AllocationRow>,
}

pub fn run(args: &IpamArgs) -> u8 {
    let ds = match store_arg::connect(&args.datastore) {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("furynet ipam: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let ipam = Ipam::new(IpamStore(ds));
    let res = match &args.command {
        IpamCommand::Show => show(&ipam, args.output),
        IpamCommand::Check => check(&ipam, args.output),
        IpamCommand::Release { ip } => release(&ipam, *ip, args.output),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("furynet ipam: {e}");
            exit::INVALID_INPUT
        }
    }
}

type Res = Result<u8, String>;

fn structured<T: Serialize>(w: &mut dyn Write, v: &T, format: Format) -> io::Result<()> {
    match format {
        Format::Yaml => {
            let text = serde_yaml_ng::to_string(v).map_err(io::Error::other)?;
            w.write_all(text.as_bytes())
        }
        _ => {
            serde_json::to_writer_pretty(&mut *w, v)?;
            writeln!(w)
        }
    }
}

fn allocations(ipam: &Ipam<IpamStore>) -> Result<Vec<AllocationRow>, String> {
    let blocks = ipam
        .store()
        .list(BLOCKS_PREFIX)
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (key, v) in blocks {
        let block: BlockRecord = serde_json::from_slice(&v.value)
            .map_err(|e| format!("block record {key} is corrupt: {e}"))?;
        for (ordinal, a) in &block.allocations {
            rows.push(AllocationRow {
                ip: block.ip_at(*ordinal),
                block: block.cidr,
                node: a.node.clone(),
                handle: a.handle.to_string(),
                namespace: a.attrs.namespace.clone(),
                pod: a.attrs.pod.clone(),
            });
        }
    }
    rows.sort_by_key(|r| r.ip);
    Ok(rows)
}

fn show(ipam: &Ipam<IpamStore>, format: Format) -> Res {
    let pools = ipam.usage().map_err(|e| e.to_string())?;
    let allocations = allocations(ipam)?;
    let out = ShowOutput { pools, allocations };
    with_stdout(|w| match format {
        Format::Json | Format::Yaml => structured(w, &out, format),
        Format::Table | Format::Wide => {
            if out.pools.is_empty() {
                writeln!(
                    w,
                    "no IPAM blocks yet (pools get blocks when their first pod starts)"
                )?;
            }
            for p in &out.pools {
                let used = p.used();
                let cap = p.block_capacity();
                let pct = if cap == 0 {
                    0.0
                } else {
                    used as f64 * 100.0 / cap as f64
                };
                writeln!(
                    w,
                    "POOL {}  blocks {}  addresses {used}/{cap} in blocks ({pct:.1}%)",
                    p.pool,
                    p.blocks.len()
                )?;
                writeln!(
                    w,
                    "  {:<24} {:<16} {:>9} {:>8}",
                    "BLOCK", "NODE", "USED", "BORROWED"
                )?;
                for b in &p.blocks {
                    writeln!(
                        w,
                        "  {:<24} {:<16} {:>9} {:>8}",
                        b.cidr.to_string(),
                        b.node.as_deref().unwrap_or("<none>"),
                        format!("{}/{}", b.used, b.capacity),
                        b.borrowed
                    )?;
                }
            }
            if format == Format::Wide && !out.allocations.is_empty() {
                writeln!(w, "\n{:<40} {:<16} {:<40} POD", "IP", "NODE", "HANDLE")?;
                for a in &out.allocations {
                    let pod = match (&a.namespace, &a.pod) {
                        (Some(ns), Some(p)) => format!("{ns}/{p}"),
                        _ => "-".to_string(),
                    };
                    writeln!(
                        w,
                        "{:<40} {:<16} {:<40} {pod}",
                        a.ip.to_string(),
                        a.node,
                        a.handle
                    )?;
                }
            }
            Ok(())
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(exit::OK)
}

fn check(ipam: &Ipam<IpamStore>, format: Format) -> Res {
    let report = ipam.check().map_err(|e| e.to_string())?;
    with_stdout(|w| match format {
        Format::Json | Format::Yaml => structured(w, &report, format),
        Format::Table | Format::Wide => {
            writeln!(
                w,
                "{} blocks, {} allocations, {} handles: {}",
                report.blocks,
                report.allocations,
                report.handles,
                if report.is_clean() {
                    "consistent"
                } else {
                    "PROBLEMS FOUND"
                }
            )?;
            for l in &report.leaked_allocations {
                writeln!(w, "  leak: {l:?}")?;
            }
            for d in &report.double_allocations {
                writeln!(w, "  double allocation: {d:?}")?;
            }
            for s in &report.stale_handle_entries {
                writeln!(w, "  stale handle entry: {s:?}")?;
            }
            for (a, b) in &report.overlapping_blocks {
                writeln!(w, "  overlapping blocks: {a} and {b}")?;
            }
            for a in &report.affinity_issues {
                writeln!(w, "  affinity: {a:?}")?;
            }
            for c in &report.corrupt {
                writeln!(w, "  corrupt record: {c:?}")?;
            }
            Ok(())
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::INVALID_INPUT
    })
}

fn release(ipam: &Ipam<IpamStore>, ip: IpAddr, format: Format) -> Res {
    let released = ipam.release_ip(ip).map_err(|e| e.to_string())?;
    let Some(r) = released else {
        eprintln!("furynet ipam: {ip} is not allocated");
        return Ok(exit::INVALID_INPUT);
    };
    with_stdout(|w| match format {
        Format::Json | Format::Yaml => {
            let v =
                serde_json::json!({"ip": r.ip, "block": r.block, "handle": r.handle.to_string()});
            structured(w, &v, format)
        }
        _ => writeln!(
            w,
            "released {} (block {}, handle {})",
            r.ip, r.block, r.handle
        ),
    })
    .map_err(|e| e.to_string())?;
    Ok(exit::OK)
}
