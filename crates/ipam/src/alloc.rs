//! Allocation: one address per family, affine blocks first, then claim, adopt, borrow; then the
//! handle record, which decides (by CAS) what a handle holds.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::clock::{fnv1a, Backoff};
use crate::error::IpamError;
use crate::records::{
    affinity_key, affinity_prefix, block_key, decode_json, encode_json, from_u128, handle_key,
    span, unescape_cidr, AffinityRecord, AllocationRecord, BlockRecord, HandleAddress,
    HandleRecord, BLOCKS_PREFIX,
};
use crate::store::Store;
use crate::tx::{Cas, Created, Tx};
use crate::types::{validate_node, AllocRequest, Allocation, Family, PoolConfig};
use crate::{ClaimOrder, Ipam};

/// Which blocks an attempt may write into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Blocks affine to this node.
    Mine,
    /// Blocks affine to no node: take the affinity and allocate in one write.
    Adopt,
    /// Any block (borrowing from another node's block).
    Borrow,
}

impl<S: Store> Ipam<S> {
    /// Allocate one address per address family present in `req.pools` (several pools of one
    /// family are tried in order). Idempotent per handle: repeating the request returns the
    /// addresses the handle already holds (the same ones, not new ones).
    ///
    /// On error nothing new is left allocated for the handle, except when the store fails
    /// mid-way and cannot undo either; such leftovers have no handle record and the GC frees
    /// them after its grace period.
    pub fn allocate(&self, req: &AllocRequest<'_>) -> Result<Vec<Allocation>, IpamError> {
        let ctx = format!("allocate handle {} on node {}", req.handle, req.node);
        validate_node(&ctx, req.node)?;
        if req.pools.is_empty() {
            return Err(IpamError::InvalidRequest {
                ctx,
                reason: "no pools given".into(),
            });
        }
        let mut families: Vec<Family> = Vec::new();
        for p in req.pools {
            p.validate()?;
            if !families.contains(&p.family()) {
                families.push(p.family());
            }
        }
        let started = self.clock.now_ms();
        let mut run = Run {
            ipam: self,
            tx: self.tx(&ctx),
            req,
            backoff: self.backoff(&ctx),
            started,
            record: AllocationRecord {
                handle: req.handle.clone(),
                node: req.node.to_owned(),
                created_ms: started,
                attrs: req.attrs.clone(),
            },
            affine: None,
        };
        let mut fresh = Vec::new();
        let mut exhausted = Vec::new();
        for &fam in &families {
            match run.family(fam) {
                Ok(Some(a)) => fresh.push(a),
                Ok(None) => exhausted.push(fam),
                Err(e) => {
                    run.undo(&fresh);
                    return Err(e);
                }
            }
        }
        match run.index(&families, &fresh, &exhausted) {
            Ok((chosen, extras)) => {
                run.undo(&extras);
                Ok(chosen)
            }
            Err(e) => {
                run.undo(&fresh);
                Err(e)
            }
        }
    }
}

struct Run<'a, S> {
    ipam: &'a Ipam<S>,
    tx: Tx<'a>,
    req: &'a AllocRequest<'a>,
    backoff: Backoff<'a>,
    started: i64,
    /// What every new allocation of this run stores in its block.
    record: AllocationRecord,
    /// Blocks indexed as affine to this node (listed once per run, on first need).
    affine: Option<Vec<IpNet>>,
}

impl<S: Store> Run<'_, S> {
    fn node(&self) -> &str {
        self.req.node
    }

    fn lost_race(&mut self, key: &str) -> Result<(), IpamError> {
        if self.backoff.conflict() {
            Ok(())
        } else {
            Err(self.tx.contention(key, self.backoff.conflicts))
        }
    }

    fn deadline(&self) -> Result<(), IpamError> {
        let elapsed_ms = self.ipam.clock.now_ms() - self.started;
        let limit_ms =
            i64::try_from(self.ipam.opts.max_alloc_duration.as_millis()).unwrap_or(i64::MAX);
        if elapsed_ms > limit_ms {
            return Err(IpamError::DeadlineExceeded {
                ctx: self.tx.ctx.into(),
                elapsed_ms,
                limit_ms,
            });
        }
        Ok(())
    }

    fn exhausted(&self, family: Family) -> IpamError {
        let pools: Vec<String> = self
            .req
            .pools
            .iter()
            .filter(|p| p.family() == family)
            .map(|p| p.cidr.to_string())
            .collect();
        IpamError::PoolExhausted {
            ctx: self.tx.ctx.into(),
            family,
            pools: pools.join(", "),
        }
    }

    /// Best-effort removal of this run's own allocations (on failure, or when the handle turned
    /// out to hold other addresses already). Leftovers are found by the GC.
    fn undo(&self, allocs: &[Allocation]) {
        let handle = &self.req.handle;
        for a in allocs {
            let mut backoff = self.ipam.backoff(self.tx.ctx);
            let _ = self.ipam.free_in_block(
                self.tx,
                &mut backoff,
                &a.block,
                a.ip,
                &|r: &AllocationRecord| &r.handle == handle,
            );
        }
    }

    /// One address of `family` from the request's pools of that family, in order; `None` when
    /// they are all full.
    fn family(&mut self, family: Family) -> Result<Option<Allocation>, IpamError> {
        let pools: Vec<PoolConfig> = self
            .req
            .pools
            .iter()
            .filter(|p| p.family() == family)
            .copied()
            .collect();
        for pool in &pools {
            if let Some(a) = self.in_affine_blocks(pool)? {
                return Ok(Some(a));
            }
            if let Some(a) = self.slow_path(pool)? {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// The fast path: one list of the node's affinity index, then the affine blocks in order.
    fn in_affine_blocks(&mut self, pool: &PoolConfig) -> Result<Option<Allocation>, IpamError> {
        if self.affine.is_none() {
            let prefix = affinity_prefix(self.node());
            let mut blocks: Vec<IpNet> = self
                .tx
                .list(&prefix)?
                .iter()
                .filter_map(|(k, _)| k.strip_prefix(&prefix).and_then(unescape_cidr))
                .collect();
            blocks.sort();
            self.affine = Some(blocks);
        }
        let candidates: Vec<IpNet> = self
            .affine
            .iter()
            .flatten()
            .filter(|c| pool.cidr.contains(*c))
            .copied()
            .collect();
        // In address order, so allocations pack into the lowest blocks and the others can empty
        // out and be released. A node has few blocks (~pods per node / block size).
        for cidr in candidates {
            if let Some(a) = self.try_block(&block_key(&cidr), None, Want::Mine)? {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    /// Allocate the lowest free ordinal of one block by CAS, re-reading after lost races.
    fn try_block(
        &mut self,
        key: &str,
        known: Option<(BlockRecord, i64)>,
        want: Want,
    ) -> Result<Option<Allocation>, IpamError> {
        let mut known = known;
        loop {
            let (mut blk, rev) = match known.take() {
                Some(k) => k,
                None => match self.tx.get(key)? {
                    None => return Ok(None),
                    Some(v) => match BlockRecord::decode(self.tx.ctx, key, &v.value) {
                        Ok(b) => (b, v.revision),
                        // A corrupt block is left for `check()` to report.
                        Err(_) => return Ok(None),
                    },
                },
            };
            let eligible = match want {
                Want::Mine => blk.affinity.as_deref() == Some(self.node()),
                Want::Adopt => blk.affinity.is_none(),
                Want::Borrow => true,
            };
            if !eligible {
                return Ok(None);
            }
            let Some(ord) = blk.first_free() else {
                return Ok(None);
            };
            if want == Want::Adopt {
                blk.affinity = Some(self.node().to_owned());
            }
            blk.allocations.insert(ord, self.record.clone());
            match self.tx.update(key, &encode_json(&blk), rev)? {
                Cas::Done => {
                    if want == Want::Adopt {
                        self.index_affinity(&blk.cidr);
                    }
                    return Ok(Some(blk.allocation_at(ord)));
                }
                Cas::Lost => self.lost_race(key)?,
            }
        }
    }

    /// Write the affinity index entry for a block this node now owns. Best effort: the block's
    /// `affinity` field is the truth, and a missing entry is repaired by the slow path or GC.
    fn index_affinity(&self, cidr: &IpNet) {
        let rec = AffinityRecord {
            node: self.node().to_owned(),
            block: *cidr,
        };
        let _ = self
            .tx
            .create(&affinity_key(self.node(), cidr), &encode_json(&rec));
    }

    /// No room in the indexed affine blocks: (b) claim a new block (needs only the keys of the
    /// existing blocks); failing that, read every block once and (a) use blocks affine to this
    /// node that its index lacks, (c) adopt a block affine to no node, (d) borrow from another
    /// node's block.
    fn slow_path(&mut self, pool: &PoolConfig) -> Result<Option<Allocation>, IpamError> {
        let family = pool.family();
        let (ps, pe) = span(&pool.cidr);
        let overlapping = |cidr: &IpNet| {
            let (s, e) = span(cidr);
            (Family::of_net(cidr) == family && s <= pe && e >= ps).then_some((s, e))
        };
        let occupied: Vec<(u128, u128)> = self
            .tx
            .list_keys(BLOCKS_PREFIX)?
            .iter()
            .filter_map(|k| k.strip_prefix(BLOCKS_PREFIX).and_then(unescape_cidr))
            .filter_map(|c| overlapping(&c))
            .collect();
        if let Some(a) = self.claim(pool, occupied)? {
            return Ok(Some(a));
        }

        let mut blocks: Vec<(String, i64, BlockRecord)> = Vec::new();
        for (key, v) in self.tx.list(BLOCKS_PREFIX)? {
            if let Ok(b) = BlockRecord::decode(self.tx.ctx, &key, &v.value) {
                if pool.cidr.contains(&b.cidr) && b.free() > 0 {
                    blocks.push((key, v.revision, b));
                }
            }
        }
        // Start at a node-specific place so nodes borrowing at once spread over the blocks.
        if !blocks.is_empty() {
            let offset = fnv1a(self.node().as_bytes()) % blocks.len() as u64;
            blocks.rotate_left(usize::try_from(offset).unwrap_or(0));
        }
        // (a) Affine to us but missing from the index (a crash or race): repair and use.
        for (key, rev, b) in &blocks {
            if b.affinity.as_deref() == Some(self.node()) {
                self.index_affinity(&b.cidr);
                if let Some(a) = self.try_block(key, Some((b.clone(), *rev)), Want::Mine)? {
                    return Ok(Some(a));
                }
            }
        }
        // (c) Adopt an orphaned block (its node's affinity was released).
        for (key, rev, b) in &blocks {
            if b.affinity.is_none() {
                if let Some(a) = self.try_block(key, Some((b.clone(), *rev)), Want::Adopt)? {
                    return Ok(Some(a));
                }
            }
        }
        // (d) Borrow.
        for (key, rev, b) in &blocks {
            if b.affinity.as_deref().is_some_and(|n| n != self.node()) {
                if let Some(a) = self.try_block(key, Some((b.clone(), *rev)), Want::Borrow)? {
                    return Ok(Some(a));
                }
            }
        }
        Ok(None)
    }

    /// Create a new block, affine to this node, that already holds our allocation at ordinal 0
    /// (claim and allocate in one write). `occupied` are the address ranges of existing blocks.
    fn claim(
        &mut self,
        pool: &PoolConfig,
        mut occupied: Vec<(u128, u128)>,
    ) -> Result<Option<Allocation>, IpamError> {
        let family = pool.family();
        let prefix = pool.effective_block_prefix();
        let block_size: u128 = 1 << (family.bits() - prefix);
        let (ps, pe) = span(&pool.cidr);
        let count_shift = u32::from(prefix - pool.cidr.prefix_len());
        let start_index = match self.ipam.opts.claim_order {
            ClaimOrder::Sequential => 0,
            ClaimOrder::Hashed => match 1u128.checked_shl(count_shift) {
                Some(count) => u128::from(fnv1a(self.node().as_bytes())) % count,
                None => u128::from(fnv1a(self.node().as_bytes())),
            },
        };
        let start = ps + start_index * block_size;
        occupied.sort_unstable();
        let merged = merge(occupied);
        let mut ranges = vec![(start, pe)];
        if start > ps {
            ranges.push((ps, start - 1));
        }
        for (lo, hi) in ranges {
            let mut cur = lo;
            while cur <= hi && hi - cur >= block_size - 1 {
                let last = cur + (block_size - 1);
                // The last merged range starting at or before `last` is the only one that can
                // overlap [cur, last].
                let i = merged.partition_point(|&(s, _)| s <= last);
                if let Some(&(_, e)) = i.checked_sub(1).and_then(|i| merged.get(i)) {
                    if e >= cur {
                        // Skip to the first aligned block after the covering range.
                        let aligned = e
                            .checked_add(1)
                            .and_then(|next| {
                                (next - ps).div_ceil(block_size).checked_mul(block_size)
                            })
                            .and_then(|off| ps.checked_add(off));
                        match aligned {
                            Some(a) if a > cur => cur = a,
                            _ => break,
                        }
                        continue;
                    }
                }
                let cidr = match IpNet::new(from_u128(family, cur), prefix) {
                    Ok(c) => c,
                    Err(_) => break,
                };
                let key = block_key(&cidr);
                let mut blk = BlockRecord::new(cidr, pool.cidr, Some(self.node().to_owned()));
                blk.allocations.insert(0, self.record.clone());
                match self.tx.create(&key, &encode_json(&blk))? {
                    Created::Done => {
                        self.index_affinity(&cidr);
                        return Ok(Some(blk.allocation_at(0)));
                    }
                    Created::Exists => self.lost_race(&key)?,
                }
                match cur.checked_add(block_size) {
                    Some(n) => cur = n,
                    None => break,
                }
            }
        }
        Ok(None)
    }

    /// Decide what the handle holds. The handle record is the arbiter between concurrent
    /// requests for one handle: whoever writes it first wins, the others adopt its addresses
    /// and undo their own (`extras`). Returns (addresses to hand out, extras to undo).
    fn index(
        &mut self,
        families: &[Family],
        fresh: &[Allocation],
        exhausted: &[Family],
    ) -> Result<(Vec<Allocation>, Vec<Allocation>), IpamError> {
        let key = handle_key(&self.req.handle);
        let mut try_create = exhausted.is_empty();
        loop {
            if try_create {
                self.deadline()?;
                let rec = HandleRecord {
                    handle: self.req.handle.clone(),
                    node: self.node().to_owned(),
                    attrs: self.req.attrs.clone(),
                    addresses: fresh.iter().map(|a| HandleAddress::from(*a)).collect(),
                };
                match self.tx.create(&key, &encode_json(&rec))? {
                    Created::Done => return Ok((fresh.to_vec(), Vec::new())),
                    Created::Exists => try_create = false,
                }
            }
            let Some(cur) = self.tx.get(&key)? else {
                if let Some(&fam) = exhausted.first() {
                    return Err(self.exhausted(fam));
                }
                // Deleted since our create failed: try creating again.
                self.lost_race(&key)?;
                try_create = true;
                continue;
            };
            // A corrupt record is overwritten as if it listed nothing (blocks are the truth; any
            // allocation it indexed becomes unindexed and the GC frees it).
            let rec: HandleRecord =
                decode_json(self.tx.ctx, &key, &cur.value).unwrap_or_else(|_| HandleRecord {
                    handle: self.req.handle.clone(),
                    node: self.node().to_owned(),
                    attrs: self.req.attrs.clone(),
                    addresses: Vec::new(),
                });
            let mut kept: Vec<HandleAddress> = Vec::new();
            let mut changed = false;
            for a in &rec.addresses {
                if self.held(a)? {
                    kept.push(*a);
                } else {
                    changed = true;
                }
            }
            let mut chosen = Vec::new();
            let mut extras = Vec::new();
            for &fam in families {
                let ours = fresh.iter().find(|a| a.family() == fam);
                if let Some(k) = kept.iter().find(|a| Family::of_addr(&a.ip) == fam) {
                    chosen.push(Allocation::from(*k));
                    // Ours may be the very address the record lists (a stale entry for an
                    // address we just got again): then it is not an extra to give back.
                    extras.extend(ours.filter(|a| a.ip != k.ip || a.block != k.block).copied());
                } else if let Some(a) = ours {
                    chosen.push(*a);
                    kept.push(HandleAddress::from(*a));
                    changed = true;
                } else {
                    return Err(self.exhausted(fam));
                }
            }
            if !changed {
                return Ok((chosen, extras));
            }
            self.deadline()?;
            let new = HandleRecord {
                addresses: kept,
                ..rec
            };
            match self.tx.update(&key, &encode_json(&new), cur.revision)? {
                Cas::Done => return Ok((chosen, extras)),
                Cas::Lost => self.lost_race(&key)?,
            }
        }
    }

    /// Whether the block still holds `a` for this handle.
    fn held(&self, a: &HandleAddress) -> Result<bool, IpamError> {
        held_by(self.tx, a.block, a.ip, &self.req.handle)
    }
}

/// Whether block `block` currently holds `ip` for `handle` (a corrupt block holds nothing).
pub(crate) fn held_by(
    tx: Tx<'_>,
    block: IpNet,
    ip: IpAddr,
    handle: &crate::types::HandleId,
) -> Result<bool, IpamError> {
    let key = block_key(&block);
    let Some(v) = tx.get(&key)? else {
        return Ok(false);
    };
    let Ok(b) = BlockRecord::decode(tx.ctx, &key, &v.value) else {
        return Ok(false);
    };
    Ok(b.ordinal_of(ip)
        .and_then(|o| b.allocations.get(&o))
        .is_some_and(|r| &r.handle == handle))
}

/// Merge sorted closed intervals.
fn merge(sorted: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
