//! Release by handle, by address, and of a lost node's affinities. Blocks are written first,
//! indexes after, so a crash leaves at worst a stale index entry (harmless, cleaned by GC).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::clock::Backoff;
use crate::error::IpamError;
use crate::records::{
    affinity_key, affinity_prefix, block_key, decode_json, encode_json, handle_key, unescape_cidr,
    AffinityRecord, AllocationRecord, BlockRecord, HandleRecord, BLOCKS_PREFIX,
};
use crate::store::Store;
use crate::tx::{Cas, Tx};
use crate::types::{validate_node, HandleId};
use crate::Ipam;

/// An address freed by [`Ipam::release_ip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedIp {
    pub ip: IpAddr,
    pub block: IpNet,
    /// The handle that held it.
    pub handle: HandleId,
}

/// What [`Ipam::release_node_affinities`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReleaseReport {
    /// Blocks that still hold addresses and are now affine to no node (their allocations stay
    /// until released or garbage-collected; other nodes may adopt or borrow from them).
    pub unaffined: Vec<IpNet>,
    /// Empty blocks deleted.
    pub deleted: Vec<IpNet>,
    /// Affinity index entries removed.
    pub index_entries_removed: usize,
}

impl<S: Store> Ipam<S> {
    /// Release every address of `handle` (a CNI DEL). Idempotent: an unknown handle releases
    /// nothing and succeeds. Returns the addresses freed by this call.
    pub fn release(&self, handle: &HandleId) -> Result<Vec<IpAddr>, IpamError> {
        let ctx = format!("release handle {handle}");
        let tx = self.tx(&ctx);
        let mut backoff = self.backoff(&ctx);
        let key = handle_key(handle);
        let mut released = Vec::new();
        loop {
            let Some(v) = tx.get(&key)? else {
                return Ok(released);
            };
            // A corrupt record cannot tell us where the addresses are; drop it so the DEL can
            // complete, and leave its allocations to the GC (they are now unindexed).
            let addresses = decode_json::<HandleRecord>(&ctx, &key, &v.value)
                .map(|r| r.addresses)
                .unwrap_or_default();
            for a in &addresses {
                let freed =
                    self.free_in_block(tx, &mut backoff, &a.block, a.ip, &|r| &r.handle == handle)?;
                if freed.is_some() && !released.contains(&a.ip) {
                    released.push(a.ip);
                }
            }
            match tx.delete(&key, v.revision)? {
                Cas::Done => return Ok(released),
                Cas::Lost => {
                    if !backoff.conflict() {
                        return Err(tx.contention(&key, backoff.conflicts));
                    }
                }
            }
        }
    }

    /// Release one address whoever holds it (`furynet ipam release <ip>`). `None` when it was
    /// not allocated.
    pub fn release_ip(&self, ip: IpAddr) -> Result<Option<ReleasedIp>, IpamError> {
        let ctx = format!("release address {ip}");
        let tx = self.tx(&ctx);
        let mut backoff = self.backoff(&ctx);
        let blocks: Vec<IpNet> = tx
            .list(BLOCKS_PREFIX)?
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(BLOCKS_PREFIX).and_then(unescape_cidr))
            .filter(|c| c.contains(&ip))
            .collect();
        for block in blocks {
            if let Some(r) = self.free_in_block(tx, &mut backoff, &block, ip, &|_| true)? {
                self.unindex(tx, &mut backoff, &r.handle, &[ip])?;
                return Ok(Some(ReleasedIp {
                    ip,
                    block,
                    handle: r.handle,
                }));
            }
        }
        Ok(None)
    }

    /// A node is gone: its blocks become affine to no node. Empty ones are deleted; the others
    /// keep their allocations until those are released or garbage-collected.
    pub fn release_node_affinities(&self, node: &str) -> Result<NodeReleaseReport, IpamError> {
        let ctx = format!("release affinities of node {node}");
        validate_node(&ctx, node)?;
        let tx = self.tx(&ctx);
        let mut backoff = self.backoff(&ctx);
        let prefix = affinity_prefix(node);
        let index = tx.list(&prefix)?;
        let mut cidrs: BTreeSet<IpNet> = index
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(&prefix).and_then(unescape_cidr))
            .collect();
        // Blocks affine to the node but missing from its index count too.
        for (k, v) in tx.list(BLOCKS_PREFIX)? {
            if let Ok(b) = BlockRecord::decode(&ctx, &k, &v.value) {
                if b.affinity.as_deref() == Some(node) {
                    cidrs.insert(b.cidr);
                }
            }
        }
        let mut report = NodeReleaseReport::default();
        for cidr in cidrs {
            match self.unaffine_block(tx, &mut backoff, node, &cidr)? {
                Some(true) => report.deleted.push(cidr),
                Some(false) => report.unaffined.push(cidr),
                None => {}
            }
        }
        for (key, v) in index {
            let mut rev = v.revision;
            loop {
                match tx.delete(&key, rev)? {
                    Cas::Done => {
                        report.index_entries_removed += 1;
                        break;
                    }
                    Cas::Lost => match tx.get(&key)? {
                        Some(v) if backoff.conflict() => rev = v.revision,
                        Some(_) => return Err(tx.contention(&key, backoff.conflicts)),
                        None => break,
                    },
                }
            }
        }
        Ok(report)
    }

    /// Make one block of `node` affine to no node, or delete it if empty. `Some(deleted)` when
    /// it was still the node's block.
    fn unaffine_block(
        &self,
        tx: Tx<'_>,
        backoff: &mut Backoff<'_>,
        node: &str,
        cidr: &IpNet,
    ) -> Result<Option<bool>, IpamError> {
        let key = block_key(cidr);
        while let Some(v) = tx.get(&key)? {
            let Ok(mut b) = BlockRecord::decode(tx.ctx, &key, &v.value) else {
                return Ok(None);
            };
            if b.affinity.as_deref() != Some(node) {
                return Ok(None);
            }
            let delete = b.allocations.is_empty();
            let outcome = if delete {
                tx.delete(&key, v.revision)?
            } else {
                b.affinity = None;
                tx.update(&key, &encode_json(&b), v.revision)?
            };
            if outcome == Cas::Done {
                return Ok(Some(delete));
            }
            if !backoff.conflict() {
                return Err(tx.contention(&key, backoff.conflicts));
            }
        }
        Ok(None)
    }

    /// Free `ip` in `block` if `pred` accepts its current holder; returns the freed allocation.
    /// The last address of a block takes the block with it (one CAS delete, so a concurrent
    /// allocator either lands first and keeps the block alive, or re-reads and finds it gone),
    /// unless it is affine and `release_empty_affine_blocks` is off.
    pub(crate) fn free_in_block(
        &self,
        tx: Tx<'_>,
        backoff: &mut Backoff<'_>,
        block: &IpNet,
        ip: IpAddr,
        pred: &dyn Fn(&AllocationRecord) -> bool,
    ) -> Result<Option<AllocationRecord>, IpamError> {
        let key = block_key(block);
        loop {
            let Some(v) = tx.get(&key)? else {
                return Ok(None);
            };
            // A corrupt block holds nothing we can free; `check()` reports it.
            let Ok(mut b) = BlockRecord::decode(tx.ctx, &key, &v.value) else {
                return Ok(None);
            };
            let Some(ord) = b.ordinal_of(ip) else {
                return Ok(None);
            };
            let Some(held) = b.allocations.remove(&ord) else {
                return Ok(None);
            };
            if !pred(&held) {
                return Ok(None);
            }
            let delete_block = b.allocations.is_empty()
                && (b.affinity.is_none() || self.opts.release_empty_affine_blocks);
            let outcome = if delete_block {
                tx.delete(&key, v.revision)?
            } else {
                tx.update(&key, &encode_json(&b), v.revision)?
            };
            match outcome {
                Cas::Done => {
                    if delete_block {
                        if let Some(node) = &b.affinity {
                            self.drop_affinity_index(tx, node, block);
                        }
                    }
                    return Ok(Some(held));
                }
                Cas::Lost => {
                    if !backoff.conflict() {
                        return Err(tx.contention(&key, backoff.conflicts));
                    }
                }
            }
        }
    }

    /// Best-effort removal of an affinity index entry whose block is gone or no longer affine
    /// to `node`. Race-free against the node re-claiming the block (block create, then index
    /// create): the block is checked before deleting the entry (keep it if re-claimed) and again
    /// after (re-create it if the claim landed in between; a later claim's own index create
    /// then succeeds since the entry is gone).
    pub(crate) fn drop_affinity_index(&self, tx: Tx<'_>, node: &str, block: &IpNet) {
        let key = affinity_key(node, block);
        for _ in 0..self.opts.max_attempts.max(1) {
            let Ok(Some(v)) = tx.get(&key) else { return };
            match self.remove_affinity_entry(tx, node, block, v.revision) {
                Ok(Cas::Lost) => continue,
                _ => return,
            }
        }
    }

    /// One attempt of [`Self::drop_affinity_index`] at a known entry revision. `Done` also when
    /// the entry was kept because the block is (again) affine to the node.
    pub(crate) fn remove_affinity_entry(
        &self,
        tx: Tx<'_>,
        node: &str,
        block: &IpNet,
        rev: i64,
    ) -> Result<Cas, IpamError> {
        let bkey = block_key(block);
        let affine = || -> Result<bool, IpamError> {
            Ok(match tx.get(&bkey)? {
                Some(b) => BlockRecord::decode(tx.ctx, &bkey, &b.value)
                    .is_ok_and(|b| b.affinity.as_deref() == Some(node)),
                None => false,
            })
        };
        if affine()? {
            return Ok(Cas::Done);
        }
        let key = affinity_key(node, block);
        if tx.delete(&key, rev)? == Cas::Lost {
            return Ok(Cas::Lost);
        }
        if affine()? {
            let rec = AffinityRecord {
                node: node.to_owned(),
                block: *block,
            };
            tx.create(&key, &encode_json(&rec))?;
        }
        Ok(Cas::Done)
    }

    /// Remove `ips` from `handle`'s record (deleting the record when it becomes empty).
    pub(crate) fn unindex(
        &self,
        tx: Tx<'_>,
        backoff: &mut Backoff<'_>,
        handle: &HandleId,
        ips: &[IpAddr],
    ) -> Result<(), IpamError> {
        let key = handle_key(handle);
        loop {
            let Some(v) = tx.get(&key)? else {
                return Ok(());
            };
            let Ok(mut rec) = decode_json::<HandleRecord>(tx.ctx, &key, &v.value) else {
                return Ok(());
            };
            let before = rec.addresses.len();
            rec.addresses.retain(|a| !ips.contains(&a.ip));
            if rec.addresses.len() == before {
                return Ok(());
            }
            let outcome = if rec.addresses.is_empty() {
                tx.delete(&key, v.revision)?
            } else {
                tx.update(&key, &encode_json(&rec), v.revision)?
            };
            match outcome {
                Cas::Done => return Ok(()),
                Cas::Lost => {
                    if !backoff.conflict() {
                        return Err(tx.contention(&key, backoff.conflicts));
                    }
                }
            }
        }
    }
}
