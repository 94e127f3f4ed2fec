//! Probing a running lab: every ordered pair of distinct pods on every port the destination
//! declares, with real traffic, compared with what `furynet analyze` predicts for the lab's
//! current objects.

use std::net::{IpAddr, SocketAddr};

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

/// An address family of the lab's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The pod's address of family `f`.
fn address(p: &PodState, f: Family) -> Option<IpAddr> {
    p.ips.iter().copied().find(|ip| Family::of(ip) == f)
}

/// `cluster` as seen on one address family: every pod keeps only its address of that family.
/// The engine on it judges that family's traffic: an `ipBlock` matches a dual-stack pod only
/// through the address of the CIDR's family, as in Kubernetes.
fn on_family(cluster: &Cluster, f: Family) -> Cluster {
    let mut c = cluster.clone();
    for p in &mut c.pods {
        p.ips.retain(|ip| Family::of(ip) == f);
    }
    c
}

/// One probe: source and destination pods (engine indices), port, protocol, and the family
/// (index into the families probed).
type Case = (usize, usize, u16, Protocol, usize);

/// Probes the lab. `from`/`to` restrict sources/destinations (`namespace/name`). Advances the
/// lab's probe port cursor (saved), so the next run uses fresh source ports.
///
/// Every connection is probed on each address family both pods have (IPv4, and IPv6 in a
/// dual-stack lab) and compared with the engine for that family; the matrix entry is allowed
/// when it passed on every family.
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
    let families: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|&f| state.pods.iter().any(|p| address(p, f).is_some()))
        .collect();
    // The engine orders pods by namespace and name, so every per-family engine indexes the
    // same pods as `engine`. With one family, `engine` is already that family's.
    let engines: Vec<Engine> = if families.len() > 1 {
        families
            .iter()
            .map(|&f| Engine::new(&on_family(cluster, f)))
            .collect()
    } else {
        Vec::new()
    };
    let engine_for = |fi: usize| engines.get(fi).unwrap_or(&engine);
    let wanted = |list: &[String], key: &str| list.is_empty() || list.iter().any(|k| k == key);
    let n = engine.pods().len();
    let mut cases: Vec<Case> = Vec::new();
    for s in 0..n {
        for d in (0..n).filter(|&d| d != s) {
            let (Some(src), Some(dst)) = (lab[s], lab[d]) else {
                continue;
            };
            if !wanted(from, &engine.pods()[s].key()) || !wanted(to, &engine.pods()[d].key()) {
                continue;
            }
            for (port, proto) in engine.pods()[d].declared_ports() {
                for (fi, &f) in families.iter().enumerate() {
                    if address(src, f).is_some() && address(dst, f).is_some() {
                        cases.push((s, d, port, proto, fi));
                    }
                }
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
                .map(|(k, &(s, d, port, proto, fi))| {
                    let (src, dst) = (lab[s], lab[d]);
                    let family = families[fi];
                    let sport = probe_port(cursor, c * 256 + k);
                    scope.spawn(move || {
                        let (Some(src), Some(dst)) = (src, dst) else {
                            return Err("pod not in the lab".to_string());
                        };
                        let ip = address(dst, family).ok_or("pod without address")?;
                        probe::probe(
                            &Ns::existing(&src.netns),
                            SocketAddr::new(ip, port),
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
    let mut entries: Vec<Entry> = Vec::new();
    let mut differences = Vec::new();
    let mut last: Option<(usize, usize, u16, Protocol)> = None;
    for (&(s, d, port, proto, fi), got) in cases.iter().zip(results) {
        let (src, dst) = (engine.pods()[s].key(), engine.pods()[d].key());
        let family = families[fi];
        let over = if families.len() > 1 {
            format!(" over {}", family.label())
        } else {
            String::new()
        };
        let want = engine_for(fi).allowed(s, d, port, proto);
        let seen = got?;
        let allowed = seen.is_some();
        if let (Some(seen), Some(src_pod)) = (&seen, lab[s]) {
            let own = address(src_pod, family).map(|ip| ip.to_string());
            if own.as_deref() != Some(seen.as_str()) {
                differences.push(format!(
                    "{src} -> {dst} {port}/{proto}{over}: the server saw {seen}, not the pod's own address (NAT)"
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
                "{src} -> {dst} {port}/{proto}{over}: analyze {a}, traffic {b}"
            ));
        }
        // One entry per connection: allowed when it passed on every family probed.
        if last == Some((s, d, port, proto)) {
            if let Some(e) = entries.last_mut() {
                e.allowed &= allowed;
            }
        } else {
            entries.push(Entry {
                src,
                dst,
                port,
                protocol: proto,
                allowed,
            });
            last = Some((s, d, port, proto));
        }
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
    fn each_family_sees_only_its_own_pod_addresses() {
        let l = furynet_model::load_str(
            "t",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\nspec: {containers: [{name: c, image: x}]}\n",
        );
        let mut c = l.cluster;
        let v4: IpAddr = "10.244.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        c.pods[0].ips = vec![v4, v6];
        assert_eq!(on_family(&c, Family::V4).pods[0].ips, [v4]);
        assert_eq!(on_family(&c, Family::V6).pods[0].ips, [v6]);
        assert_eq!(c.pods[0].ips, [v4, v6], "the original is untouched");
        let p = PodState {
            namespace: "n".into(),
            name: "p".into(),
            node: 0,
            netns: "x".into(),
            container: "c".into(),
            ips: vec![v4, v6],
            server_pid: 0,
        };
        assert_eq!(address(&p, Family::V6), Some(v6));
        assert_eq!(address(&p, Family::V4), Some(v4));
        assert_eq!(Family::of(&v6).label(), "IPv6");
    }

    #[test]
    fn probe_ports_stay_in_range_and_wrap() {
        assert_eq!(probe_port(0, 0), 20_000);
        assert_eq!(probe_port(39_999, 0), 59_999);
        assert_eq!(probe_port(39_999, 1), 20_000);
        assert_eq!(probe_port(5, 10), 20_015);
    }
}
