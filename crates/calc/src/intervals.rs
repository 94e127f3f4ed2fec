//! Exact address intervals: pod addresses and `ipBlock`s (cidr minus excepts) become a sorted
//! list of disjoint, non-adjacent inclusive ranges, so an nftables interval set never sees
//! overlapping elements (which it rejects) and matches exactly what the policy means.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use furynet_model::IpBlock;
use ipnet::IpNet;

/// Inclusive ranges of one address family, as integers (IPv4 in the low 32 bits).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ranges {
    v6: bool,
    ranges: Vec<(u128, u128)>,
}

fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn net_range(net: &IpNet) -> (u128, u128) {
    (to_int(net.network()), to_int(net.broadcast()))
}

impl Ranges {
    pub(crate) fn new(v6: bool) -> Self {
        Ranges {
            v6,
            ranges: Vec::new(),
        }
    }

    /// Adds an address of this family (others are ignored).
    pub(crate) fn add_ip(&mut self, ip: IpAddr) {
        if ip.is_ipv6() == self.v6 {
            let n = to_int(ip);
            self.ranges.push((n, n));
        }
    }

    /// Adds `cidr` minus every `except` (when the block is of this family).
    pub(crate) fn add_block(&mut self, block: &IpBlock) {
        if matches!(block.cidr, IpNet::V6(_)) != self.v6 {
            return;
        }
        let mut pieces = vec![net_range(&block.cidr)];
        for ex in &block.except {
            let (es, ee) = net_range(ex);
            let mut next = Vec::with_capacity(pieces.len() + 1);
            for (s, e) in pieces {
                if ee < s || es > e {
                    next.push((s, e));
                    continue;
                }
                if es > s {
                    next.push((s, es - 1));
                }
                if ee < e {
                    next.push((ee + 1, e));
                }
            }
            pieces = next;
        }
        self.ranges.extend(pieces);
    }

    /// Sorts and merges overlapping or adjacent ranges.
    pub(crate) fn normalize(&mut self) {
        self.ranges.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match out.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        self.ranges = out;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn fmt_addr(&self, n: u128) -> String {
        if self.v6 {
            Ipv6Addr::from(n).to_string()
        } else {
            Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)).to_string()
        }
    }

    /// nft elements: `a` for a single address, `a-b` for a range.
    pub(crate) fn elements(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(|&(s, e)| {
                if s == e {
                    self.fmt_addr(s)
                } else {
                    format!("{}-{}", self.fmt_addr(s), self.fmt_addr(e))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cidr_minus_except_and_merge() {
        let mut r = Ranges::new(false);
        r.add_block(&IpBlock {
            cidr: "10.10.0.0/16".parse().unwrap(),
            except: vec![
                "10.10.5.0/24".parse().unwrap(),
                "10.10.0.0/24".parse().unwrap(),
            ],
        });
        r.add_ip("10.10.5.9".parse().unwrap());
        r.add_ip("10.10.1.3".parse().unwrap()); // inside: merged away
        r.add_ip("fd00::1".parse().unwrap()); // other family: ignored
        r.normalize();
        assert_eq!(
            r.elements(),
            vec![
                "10.10.1.0-10.10.4.255",
                "10.10.5.9",
                "10.10.6.0-10.10.255.255"
            ]
        );
    }

    #[test]
    fn adjacent_addresses_merge() {
        let mut r = Ranges::new(true);
        r.add_ip("fd00::2".parse().unwrap());
        r.add_ip("fd00::1".parse().unwrap());
        r.add_ip("fd00::9".parse().unwrap());
        r.normalize();
        assert_eq!(r.elements(), vec!["fd00::1-fd00::2", "fd00::9"]);
    }
}
