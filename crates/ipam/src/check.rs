//! Read-only views: the consistency check (`furynet ipam check`) and usage (`furynet ipam show`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::error::IpamError;
use crate::records::{
    decode_json, span, unescape_cidr, BlockRecord, HandleRecord, AFFINITY_PREFIX, BLOCKS_PREFIX,
    HANDLES_PREFIX,
};
use crate::store::{Store, Versioned};
use crate::types::{Family, HandleId};
use crate::Ipam;

/// An allocation its handle's record does not list. Young ones may be an allocation in flight
/// (block written, handle record not yet); old ones are leaks the GC frees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeakedAllocation {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: HandleId,
    pub node: String,
    pub created_ms: i64,
    /// Whether the handle has a record at all.
    pub handle_record_exists: bool,
}

/// A handle record entry whose block does not hold the address for that handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleHandleEntry {
    pub handle: HandleId,
    pub ip: IpAddr,
    pub block: IpNet,
    /// Who the block says holds the address now, if anyone.
    pub held_by: Option<HandleId>,
}

/// One address held twice: in two (overlapping) blocks, or listed by two handle records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoubleAllocation {
    pub ip: IpAddr,
    /// (block, holder) for every block allocation of the address.
    pub in_blocks: Vec<(IpNet, HandleId)>,
    /// Handles whose records list the address.
    pub listed_by: Vec<HandleId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AffinityIssueKind {
    /// The block is affine to the node but the node's index lacks it.
    MissingIndexEntry,
    /// The index lists a block that is gone or affine to another node (or none).
    StaleIndexEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffinityIssue {
    pub node: String,
    pub block: IpNet,
    pub kind: AffinityIssueKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorruptRecord {
    pub key: String,
    pub reason: String,
}

/// Result of [`Ipam::check`]. Exact on a quiescent store; under concurrent allocation, young
/// leaks and index issues can be operations in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub blocks: usize,
    pub allocations: usize,
    pub handles: usize,
    pub leaked_allocations: Vec<LeakedAllocation>,
    pub stale_handle_entries: Vec<StaleHandleEntry>,
    pub double_allocations: Vec<DoubleAllocation>,
    pub overlapping_blocks: Vec<(IpNet, IpNet)>,
    pub affinity_issues: Vec<AffinityIssue>,
    pub corrupt: Vec<CorruptRecord>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.leaked_allocations.is_empty()
            && self.stale_handle_entries.is_empty()
            && self.double_allocations.is_empty()
            && self.overlapping_blocks.is_empty()
            && self.affinity_issues.is_empty()
            && self.corrupt.is_empty()
    }
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The node the block is affine to.
    pub node: Option<String>,
    pub used: u32,
    pub capacity: u32,
    /// Addresses allocated by nodes other than the affine one.
    pub borrowed: u32,
}

/// Usage of one pool (as far as it has blocks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub pool: IpNet,
    pub blocks: Vec<BlockUsage>,
}

impl PoolUsage {
    pub fn used(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.used)).sum()
    }

    /// Addresses in the pool's claimed blocks.
    pub fn block_capacity(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.capacity)).sum()
    }
}

/// Everything IPAM stores, decoded (corrupt records set aside).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub blocks: Vec<(String, i64, BlockRecord)>,
    pub handles: BTreeMap<HandleId, (String, i64, HandleRecord)>,
    /// (node, block, key, revision) for every affinity index entry.
    pub affinities: Vec<(String, IpNet, String, i64)>,
    pub corrupt: Vec<CorruptRecord>,
}

impl<S: Store> Ipam<S> {
    /// Lists blocks first, then handles, then affinities (the order the GC relies on).
    pub(crate) fn snapshot(&self, ctx: &str) -> Result<Snapshot, IpamError> {
        let tx = self.tx(ctx);
        let mut snap = Snapshot::default();
        let corrupt = |key: &str, e: IpamError| CorruptRecord {
            key: key.into(),
            reason: match e {
                IpamError::Corrupt { reason, .. } => reason,
                other => other.to_string(),
            },
        };
        for (key, Versioned { value, revision }) in tx.list(BLOCKS_PREFIX)? {
            match BlockRecord::decode(ctx, &key, &value) {
                Ok(b) => snap.blocks.push((key, revision, b)),
                Err(e) => snap.corrupt.push(corrupt(&key, e)),
            }
        }
        for (key, Versioned { value, revision }) in tx.list(HANDLES_PREFIX)? {
            match decode_json::<HandleRecord>(ctx, &key, &value) {
                Ok(h) if key.strip_prefix(HANDLES_PREFIX) == Some(h.handle.as_str()) => {
                    snap.handles.insert(h.handle.clone(), (key, revision, h));
                }
                Ok(h) => snap.corrupt.push(CorruptRecord {
                    key,
                    reason: format!("holds handle {} under another key", h.handle),
                }),
                Err(e) => snap.corrupt.push(corrupt(&key, e)),
            }
        }
        for (key, v) in tx.list(AFFINITY_PREFIX)? {
            let parsed = key
                .strip_prefix(AFFINITY_PREFIX)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(node, b)| Some((node.to_owned(), unescape_cidr(b)?)));
            match parsed {
                Some((node, block)) => snap.affinities.push((node, block, key, v.revision)),
                None => snap.corrupt.push(CorruptRecord {
                    key,
                    reason: "not an affinity key <node>/<block>".into(),
                }),
            }
        }
        Ok(snap)
    }

    /// Find leaks, stale index entries, double allocations, overlapping blocks, affinity
    /// inconsistencies and corrupt records. Reads only.
    pub fn check(&self) -> Result<CheckReport, IpamError> {
        let ctx = "check ipam consistency";
        let snap = self.snapshot(ctx)?;
        let mut r = CheckReport {
            blocks: snap.blocks.len(),
            handles: snap.handles.len(),
            corrupt: snap.corrupt.clone(),
            ..CheckReport::default()
        };

        // Who holds each address according to the blocks.
        let mut holders: BTreeMap<IpAddr, Vec<(IpNet, HandleId)>> = BTreeMap::new();
        for (_, _, b) in &snap.blocks {
            for (&ord, a) in &b.allocations {
                r.allocations += 1;
                let ip = b.ip_at(ord);
                holders
                    .entry(ip)
                    .or_default()
                    .push((b.cidr, a.handle.clone()));
                let record = snap.handles.get(&a.handle);
                let listed = record.is_some_and(|(_, _, h)| {
                    h.addresses.iter().any(|x| x.ip == ip && x.block == b.cidr)
                });
                if !listed {
                    r.leaked_allocations.push(LeakedAllocation {
                        ip,
                        block: b.cidr,
                        handle: a.handle.clone(),
                        node: a.node.clone(),
                        created_ms: a.created_ms,
                        handle_record_exists: record.is_some(),
                    });
                }
            }
        }

        // What the handle records claim.
        let mut listed_by: BTreeMap<IpAddr, Vec<HandleId>> = BTreeMap::new();
        for (handle, (_, _, h)) in &snap.handles {
            for a in &h.addresses {
                listed_by.entry(a.ip).or_default().push(handle.clone());
                let in_block = holders
                    .get(&a.ip)
                    .and_then(|hs| hs.iter().find(|(blk, _)| *blk == a.block));
                if in_block.map(|(_, h)| h) != Some(handle) {
                    r.stale_handle_entries.push(StaleHandleEntry {
                        handle: handle.clone(),
                        ip: a.ip,
                        block: a.block,
                        held_by: in_block.map(|(_, h)| h.clone()),
                    });
                }
            }
        }

        let ips: BTreeSet<IpAddr> = holders.keys().chain(listed_by.keys()).copied().collect();
        for ip in ips {
            let in_blocks = holders.get(&ip).cloned().unwrap_or_default();
            let mut listed = listed_by.get(&ip).cloned().unwrap_or_default();
            listed.dedup();
            if in_blocks.len() > 1 || listed.len() > 1 {
                r.double_allocations.push(DoubleAllocation {
                    ip,
                    in_blocks,
                    listed_by: listed,
                });
            }
        }

        // Overlapping blocks (blocks of different sizes over one range).
        let mut spans: Vec<(Family, u128, u128, IpNet)> = snap
            .blocks
            .iter()
            .map(|(_, _, b)| {
                let (s, e) = span(&b.cidr);
                (Family::of_net(&b.cidr), s, e, b.cidr)
            })
            .collect();
        spans.sort_by_key(|&(f, s, e, _)| (f, s, std::cmp::Reverse(e)));
        for (i, a) in spans.iter().enumerate() {
            for b in &spans[i + 1..] {
                if b.0 != a.0 || b.1 > a.2 {
                    break;
                }
                r.overlapping_blocks.push((a.3, b.3));
            }
        }

        // Affinity index versus the blocks' own affinity.
        let index: BTreeSet<(&str, IpNet)> = snap
            .affinities
            .iter()
            .map(|(n, b, _, _)| (n.as_str(), *b))
            .collect();
        let affine: BTreeMap<IpNet, Option<&str>> = snap
            .blocks
            .iter()
            .map(|(_, _, b)| (b.cidr, b.affinity.as_deref()))
            .collect();
        for (&cidr, node) in &affine {
            if let Some(node) = node {
                if !index.contains(&(*node, cidr)) {
                    r.affinity_issues.push(AffinityIssue {
                        node: (*node).to_owned(),
                        block: cidr,
                        kind: AffinityIssueKind::MissingIndexEntry,
                    });
                }
            }
        }
        for (node, block) in index {
            if affine.get(&block).copied().flatten() != Some(node) {
                r.affinity_issues.push(AffinityIssue {
                    node: node.to_owned(),
                    block,
                    kind: AffinityIssueKind::StaleIndexEntry,
                });
            }
        }
        Ok(r)
    }

    /// Blocks per pool with their affinity and fill, for `furynet ipam show`. Pools are those
    /// recorded in the blocks; a configured pool without blocks does not appear.
    pub fn usage(&self) -> Result<Vec<PoolUsage>, IpamError> {
        let ctx = "read ipam usage";
        let tx = self.tx(ctx);
        let mut pools: BTreeMap<IpNet, Vec<BlockUsage>> = BTreeMap::new();
        for (key, v) in tx.list(BLOCKS_PREFIX)? {
            let Ok(b) = BlockRecord::decode(ctx, &key, &v.value) else {
                continue;
            };
            let borrowed = b
                .allocations
                .values()
                .filter(|a| b.affinity.as_deref().is_some_and(|n| n != a.node))
                .count();
            pools.entry(b.pool).or_default().push(BlockUsage {
                cidr: b.cidr,
                node: b.affinity.clone(),
                used: b.used(),
                capacity: b.capacity(),
                borrowed: u32::try_from(borrowed).unwrap_or(u32::MAX),
            });
        }
        Ok(pools
            .into_iter()
            .map(|(pool, mut blocks)| {
                blocks.sort_by_key(|b| b.cidr);
                PoolUsage { pool, blocks }
            })
            .collect())
    }
}
