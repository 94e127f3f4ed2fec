//! Human-readable renderings: a matrix per port (small inputs), a per-source list grouped by
//! namespace (large inputs), and `wide` lines with the deciding policies.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use furynet_model::Protocol;
use furynet_policy::{Engine, SideExplanation};

use super::Entry;

/// Above this many destination columns, a matrix stops being readable.
const MAX_MATRIX_COLUMNS: usize = 24;

const ALLOWED: &str = "✓";
const DENIED: &str = "✗";
const SELF: &str = "·";

/// The default `-o table`.
pub fn matrix(engine: &Engine, entries: &[Entry], w: &mut dyn Write) -> io::Result<()> {
    let pods = engine.pods();
    if entries.is_empty() {
        let what = if pods.is_empty() {
            "no pods in the input"
        } else {
            "no connections to show"
        };
        return writeln!(
            w,
            "{what} (pods count only with declared containerPorts as destinations)"
        );
    }
    let mut by_port: BTreeMap<(u16, Protocol), Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        by_port.entry((e.port, e.protocol)).or_default().push(e);
    }
    let srcs: BTreeSet<&str> = entries.iter().map(|e| e.src.as_str()).collect();
    let dsts: BTreeSet<&str> = entries.iter().map(|e| e.dst.as_str()).collect();
    let all: Vec<&str> = srcs.union(&dsts).copied().collect();
    let number = |key: &str| all.iter().position(|k| *k == key).map_or(0, |i| i + 1);
    let widest_columns = by_port
        .values()
        .map(|es| {
            es.iter()
                .map(|e| e.dst.as_str())
                .collect::<BTreeSet<_>>()
                .len()
        })
        .max()
        .unwrap_or(0);
    let as_matrix = widest_columns <= MAX_MATRIX_COLUMNS;

    if as_matrix {
        writeln!(w, "PODS")?;
        for (i, key) in all.iter().enumerate() {
            writeln!(w, "{:>4}  {key}", i + 1)?;
        }
        writeln!(w)?;
    }
    for ((port, proto), es) in &by_port {
        let allowed = es.iter().filter(|e| e.allowed).count();
        writeln!(
            w,
            "PORT {port}/{proto}: {allowed} of {} connections allowed",
            es.len()
        )?;
        if as_matrix {
            port_matrix(es, &number, w)?;
        } else {
            port_list(es, w)?;
        }
        writeln!(w)?;
    }
    if as_matrix {
        writeln!(
            w,
            "rows: from, columns: to; {ALLOWED} allowed, {DENIED} denied, {SELF} same pod"
        )?;
    }
    Ok(())
}

fn port_matrix(es: &[&Entry], number: &dyn Fn(&str) -> usize, w: &mut dyn Write) -> io::Result<()> {
    let rows: BTreeSet<usize> = es.iter().map(|e| number(&e.src)).collect();
    let cols: BTreeSet<usize> = es.iter().map(|e| number(&e.dst)).collect();
    let verdict: BTreeMap<(usize, usize), bool> = es
        .iter()
        .map(|e| ((number(&e.src), number(&e.dst)), e.allowed))
        .collect();
    let width = cols
        .iter()
        .map(|c| c.to_string().len())
        .max()
        .unwrap_or(1)
        .max(1)
        + 1;
    write!(w, "{:>8}", "from\\to")?;
    for c in &cols {
        write!(w, "{c:>width$}")?;
    }
    writeln!(w)?;
    for r in &rows {
        write!(w, "{r:>8}")?;
        for c in &cols {
            let cell = match verdict.get(&(*r, *c)) {
                Some(true) => ALLOWED,
                Some(false) => DENIED,
                None if r == c => SELF,
                None => " ",
            };
            write!(w, "{cell:>width$}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

/// For big inputs: per source, the allowed destinations, whole namespaces collapsed.
fn port_list(es: &[&Entry], w: &mut dyn Write) -> io::Result<()> {
    let mut per_src: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in es {
        per_src.entry(e.src.as_str()).or_default().push(e);
    }
    for (src, list) in per_src {
        let mut by_ns: BTreeMap<&str, (Vec<&str>, usize)> = BTreeMap::new();
        for e in &list {
            let ns = e.dst.split_once('/').map_or("", |(ns, _)| ns);
            let slot = by_ns.entry(ns).or_default();
            slot.1 += 1;
            if e.allowed {
                slot.0.push(e.dst.as_str());
            }
        }
        let mut parts = Vec::new();
        for (ns, (allowed, total)) in by_ns {
            if allowed.is_empty() {
                continue;
            }
            if allowed.len() == total {
                parts.push(format!("{ns}/* ({total} pods)"));
            } else {
                parts.extend(allowed.iter().map(|s| s.to_string()));
            }
        }
        let shown = if parts.is_empty() {
            "(nothing)".to_string()
        } else {
            parts.join(", ")
        };
        writeln!(w, "  {src} -> {shown}")?;
    }
    Ok(())
}

fn side(s: &SideExplanation) -> String {
    if s.isolated_by.is_empty() {
        return "open".to_string();
    }
    if s.allowed_by.is_empty() {
        return format!("denied (isolated by {})", s.isolated_by.join(","));
    }
    s.allowed_by
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `-o wide`: one line per connection with what decided it on each side.
pub fn wide(engine: &Engine, entries: &[Entry], w: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let explanation = e
                .src
                .split_once('/')
                .zip(e.dst.split_once('/'))
                .and_then(|((sn, sp), (dn, dp))| engine.find(sn, sp).zip(engine.find(dn, dp)))
                .and_then(|(s, d)| engine.explain(s, d, e.port, e.protocol));
            let (egress, ingress) = explanation.map_or((String::new(), String::new()), |x| {
                (side(&x.egress), side(&x.ingress))
            });
            [
                e.src.clone(),
                e.dst.clone(),
                format!("{}/{}", e.port, e.protocol),
                if e.allowed { "allowed" } else { "denied" }.to_string(),
                egress,
                ingress,
            ]
        })
        .collect();
    let header = ["FROM", "TO", "PORT", "VERDICT", "EGRESS", "INGRESS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<width$}   ", width = widths[i]));
            }
        }
        writeln!(w, "{}", line.trim_end())?;
    }
    Ok(())
}
