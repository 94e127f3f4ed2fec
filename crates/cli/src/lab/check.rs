//! Probing a running lab: every ordered pair of distinct pods on every port the destination
//! declares, with real traffic, compared with what `furynet analyze` predicts for the lab's
//! current objects.

use std::net::SocketAddr;

use furynet_model::{Cluster, Protocol};
use furynet_policy::Engine;

use super::netns::{Ns, Res};
use super::probe;
use super::state::{LabState, PodState};
use crate::analyze::Entry;

/// The measured matrix and how it compares with the engine.
pub struct Measured {
    pub engine: Engine,
    pub entries: Vec<Entry>,
    /// Intent/dataplane disagreements and NAT sightings, one line each.
    pub differences: Vec<String>,
    /// Pods the engine knows that the lab does not run (not probed).
    pub unprobed: Vec<String>,
}

/// Source ports for UDP and SCTP probes cycle through this range (see [`probe::probe`]).
const PROBE_PORTS: std::ops::Range<u32> = 20_000..60_000;

/// The source port of the `i`-th probe of a run whose first port offset is `cursor`.
fn probe_port(cursor: u32, i: usize) -> u16 {
    let span = PROBE_PORTS.end - PROBE_PORTS.start;
    let off = (u64::from(cursor) + i as u64) % u64::from(span);
    (PROBE_PORTS.start + off as u32) as u16
}

/// Probes the lab. `from`/`to` restrict sources/destinations (`namespace/name`). Advances the
/// lab's probe port cursor (saved), so the next run uses fresh source ports.
pub fn measure(
    state: &mut LabState,
    cluster: &Cluster,
    from: &[String],
    to: &[String],
) -> Res<Measured> {
    let engine = Engine::new(cluster);
    let lab: Vec<Option<&PodState>> = engine
        .pods()
        .iter()
        .map(|p| state.pods.iter().find(|s| s.key() == p.key()))
        .collect();
    let unprobed: Vec<String> = engine
        .pods()
        .iter()
        .zip(&lab)
        .filter(|(_, l)| l.is_none())
        .map(|(p, _)| format!("{} (not running in the lab)", p.key()))
        .collect();
    let wanted = |list: &[String], key: &str| list.is_empty() || list.iter().any(|k| k == key);
    let n = engine.pods().len();
    let mut cases: Vec<(usize, usize, u16, Protocol)> = Vec::new();
    for s in 0..n {
        for d in (0..n).filter(|&d| d != s) {
            if lab[s].is_none()
                || lab[d].is_none()
                || !wanted(from, &engine.pods()[s].key())
                || !wanted(to, &engine.pods()[d].key())
            {
                continue;
            }
            for (port, proto) in engine.pods()[d].declared_ports() {
                cases.push((s, d, port, proto));
            }
        }
    }
    let cursor = state.probe_cursor;
    state.probe_cursor = (cursor + cases.len() as u32) % (PROBE_PORTS.end - PROBE_PORTS.start);
    state.save()?;
    let mut results: Vec<Res<Option<String>>> = Vec::with_capacity(cases.len());
    for (c, chunk) in cases.chunks(256).enumerate() {
        let got: Vec<Res<Option<String>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(k, &(s, d, port, proto))| {
                    let (src, dst) = (lab[s], lab[d]);
                    let sport = probe_port(cursor, c * 256 + k);
                    scope.spawn(move || {
                        let (Some(src), Some(dst)) = (src, dst) else {
                            return Err("pod not in the lab".to_string());
                        };
                        let ip = dst.ips.first().ok_or("pod without address")?;
                        probe::probe(
                            &Ns::existing(&src.netns),
                            SocketAddr::new(*ip, port),
                            proto,
                            sport,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("probe panicked".into())))
                .collect()
        });
        results.extend(got);
    }
    let mut entries = Vec::new();
    let mut differences = Vec::new();
    for (&(s, d, port, proto), got) in cases.iter().zip(results) {
        let (src, dst) = (engine.pods()[s].key(), engine.pods()[d].key());
        let want = engine.allowed(s, d, port, proto);
        let seen = got?;
        let allowed = seen.is_some();
        if let (Some(seen), Some(src_pod)) = (&seen, lab[s]) {
            let ok = src_pod.ips.iter().any(|ip| ip.to_string() == *seen);
            if !ok {
                differences.push(format!(
                    "{src} -> {dst} {port}/{proto}: the server saw {seen}, not the pod's own address (NAT)"
                ));
            }
        }
        if allowed != want {
            let (a, b) = if want {
                ("allows", "dropped")
            } else {
                ("denies", "passed")
            };
            differences.push(format!(
                "{src} -> {dst} {port}/{proto}: analyze {a}, traffic {b}"
            ));
        }
        entries.push(Entry {
            src,
            dst,
            port,
            protocol: proto,
            allowed,
        });
    }
    Ok(Measured {
        engine,
        entries,
        differences,
        unprobed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ports_stay_in_range_and_wrap() {
        assert_eq!(probe_port(0, 0), 20_000);
        assert_eq!(probe_port(39_999, 0), 59_999);
        assert_eq!(probe_port(39_999, 1), 20_000);
        assert_eq!(probe_port(5, 10), 20_015);
    }
}
