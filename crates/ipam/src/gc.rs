//! Garbage collection: free allocations whose pods are gone and allocations no handle record
//! lists (crash leftovers), prune stale index entries, repair the affinity index, drop empty
//! blocks. Best effort: every failure is reported and the rest still runs.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use crate::alloc::held_by;
use crate::error::IpamError;
use crate::records::{
    affinity_key, decode_json, encode_json, handle_key, AffinityRecord, AllocationRecord,
    HandleRecord,
};
use crate::store::Store;
use crate::tx::{Cas, Created};
use crate::types::{HandleAttrs, HandleId};
use crate::Ipam;

/// GC settings.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Allocations younger than this are never touched: they may belong to an allocation in
    /// flight, or to a pod the caller's view does not show yet. Must exceed
    /// `IpamOptions::max_alloc_duration` plus clock skew between nodes.
    pub grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10 * 60),
        }
    }
}

/// One allocation the GC asks the caller about.
///
/// A good liveness test (what Calico does): the pod `attrs.namespace/attrs.pod` exists, is not
/// finished, and — once its status lists IPs — lists `ip`. A pod recreated under the same
/// name with a new address then does not keep the old sandbox's address alive.
#[derive(Debug, Clone, Copy)]
pub struct GcCandidate<'a> {
    pub handle: &'a HandleId,
    pub node: &'a str,
    pub attrs: &'a HandleAttrs,
    pub ip: IpAddr,
    pub block: IpNet,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GcReason {
    /// The caller said the attachment no longer exists.
    NotLive,
    /// No handle record lists it: an allocation whose request never completed.
    Unindexed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReleased {
    pub ip: IpAddr,
    pub block: IpNet,
    pub handle: HandleId,
    pub reason: GcReason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub released: Vec<GcReleased>,
    /// Allocations left alone because they are younger than the grace period.
    pub young_skipped: usize,
    /// Handle record entries removed because their block no longer holds them for the handle.
    pub stale_entries_removed: usize,
    /// Handle records deleted (empty or corrupt).
    pub handle_records_deleted: usize,
    pub affinity_entries_created: usize,
    pub affinity_entries_removed: usize,
    pub empty_blocks_deleted: usize,
    /// Failures (the GC kept going past each).
    pub errors: Vec<String>,
}

impl<S: Store> Ipam<S> {
    /// Collect garbage. `is_live` says whether an allocation's pod attachment still exists; it
    /// is only asked about allocations older than `opts.grace`.
    pub fn gc(
        &self,
        is_live: &dyn Fn(&GcCandidate<'_>) -> bool,
        opts: &GcOptions,
    ) -> Result<GcReport, IpamError> {
        let ctx = "garbage-collect ipam";
        let tx = self.tx(ctx);
        let snap = self.snapshot(ctx)?;
        let now = self.clock.now_ms();
        let grace_ms = i64::try_from(opts.grace.as_millis()).unwrap_or(i64::MAX);
        let mut r = GcReport::default();

        // 1. Allocations. The handle list was read after the block list, so an allocation the
        //    snapshot shows unindexed and older than the grace period can no longer get indexed
        //    (its allocator gave up at its deadline).
        for (_, _, b) in &snap.blocks {
            for (&ord, a) in &b.allocations {
                if now.saturating_sub(a.created_ms) < grace_ms {
                    r.young_skipped += 1;
                    continue;
                }
                let ip = b.ip_at(ord);
                let indexed = snap.handles.get(&a.handle).is_some_and(|(_, _, h)| {
                    h.addresses.iter().any(|x| x.ip == ip && x.block == b.cidr)
                });
                let reason = if !indexed {
                    GcReason::Unindexed
                } else if !is_live(&GcCandidate {
                    handle: &a.handle,
                    node: &a.node,
                    attrs: &a.attrs,
                    ip,
                    block: b.cidr,
                    created_ms: a.created_ms,
                }) {
                    GcReason::NotLive
                } else {
                    continue;
                };
                match self.gc_free(ctx, &b.cidr, ip, a, reason) {
                    Ok(true) => r.released.push(GcReleased {
                        ip,
                        block: b.cidr,
                        handle: a.handle.clone(),
                        reason,
                    }),
                    Ok(false) => {}
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
        }

        // 2. Handle records: drop entries their block no longer holds for them. The record is
        //    re-read first and the blocks after it, and the record is rewritten by CAS on that
        //    read, so an entry an allocator adds meanwhile is never dropped.
        let freed: BTreeSet<(IpAddr, HandleId)> = r
            .released
            .iter()
            .map(|x| (x.ip, x.handle.clone()))
            .collect();
        for (handle, (key, _, h)) in &snap.handles {
            let suspicious = h.addresses.is_empty()
                || h.addresses.iter().any(|x| {
                    freed.contains(&(x.ip, handle.clone()))
                        || !snap.blocks.iter().any(|(_, _, b)| {
                            b.cidr == x.block
                                && b.ordinal_of(x.ip)
                                    .and_then(|o| b.allocations.get(&o))
                                    .is_some_and(|a| &a.handle == handle)
                        })
                });
            if suspicious {
                if let Err(e) = self.prune_handle(ctx, key, &mut r) {
                    r.errors.push(e.to_string());
                }
            }
        }
        // Corrupt handle records can never be used; their allocations are freed as unindexed.
        for c in &snap.corrupt {
            if c.key.starts_with(crate::records::HANDLES_PREFIX) {
                match tx.get(&c.key) {
                    Ok(Some(v)) if decode_json::<HandleRecord>(ctx, &c.key, &v.value).is_err() => {
                        match tx.delete(&c.key, v.revision) {
                            Ok(Cas::Done) => r.handle_records_deleted += 1,
                            Ok(Cas::Lost) => {}
                            Err(e) => r.errors.push(e.to_string()),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
        }

        // 3 and 4 look at the blocks as steps 1 and 2 left them.
        if let Err(e) = self.gc_blocks(ctx, &mut r) {
            r.errors.push(e.to_string());
        }
        Ok(r)
    }

    /// Repair the affinity index and drop empty blocks, from a fresh snapshot.
    fn gc_blocks(&self, ctx: &str, r: &mut GcReport) -> Result<(), IpamError> {
        let tx = self.tx(ctx);
        let snap = self.snapshot(ctx)?;
        // 3. Affinity index versus the blocks' affinity field (the truth).
        let index: BTreeSet<(&str, IpNet)> = snap
            .affinities
            .iter()
            .map(|(n, b, _, _)| (n.as_str(), *b))
            .collect();
        for (_, _, b) in &snap.blocks {
            let Some(node) = b.affinity.as_deref() else {
                continue;
            };
            if index.contains(&(node, b.cidr)) {
                continue;
            }
            let rec = AffinityRecord {
                node: node.to_owned(),
                block: b.cidr,
            };
            match tx.create(&affinity_key(node, &b.cidr), &encode_json(&rec)) {
                Ok(Created::Done) => r.affinity_entries_created += 1,
                Ok(Created::Exists) => {}
                Err(e) => r.errors.push(e.to_string()),
            }
        }
        for (node, block, key, rev) in &snap.affinities {
            let ok = snap
                .blocks
                .iter()
                .any(|(_, _, b)| b.cidr == *block && b.affinity.as_deref() == Some(node));
            if ok {
                continue;
            }
            match self.remove_affinity_entry(tx, node, block, *rev) {
                Ok(Cas::Done) => {
                    if tx.get(key).is_ok_and(|v| v.is_none()) {
                        r.affinity_entries_removed += 1;
                    }
                }
                Ok(Cas::Lost) => {}
                Err(e) => r.errors.push(e.to_string()),
            }
        }

        // 4. Empty blocks (left by a crash or with `release_empty_affine_blocks` off, only the
        //    non-affine ones). CAS on the snapshot revision: any change since keeps the block.
        for (key, rev, b) in &snap.blocks {
            if b.allocations.is_empty()
                && (b.affinity.is_none() || self.opts.release_empty_affine_blocks)
            {
                match tx.delete(key, *rev) {
                    Ok(Cas::Done) => {
                        r.empty_blocks_deleted += 1;
                        if let Some(node) = &b.affinity {
                            self.drop_affinity_index(tx, node, &b.cidr);
                        }
                    }
                    Ok(Cas::Lost) => {}
                    Err(e) => r.errors.push(e.to_string()),
                }
            }
        }
        Ok(())
    }

    /// Free one allocation if the block still holds exactly it (same handle and timestamp),
    /// then remove it from its handle record.
    fn gc_free(
        &self,
        ctx: &str,
        block: &IpNet,
        ip: IpAddr,
        seen: &AllocationRecord,
        reason: GcReason,
    ) -> Result<bool, IpamError> {
        let tx = self.tx(ctx);
        let mut backoff = self.backoff(ctx);
        let freed = self.free_in_block(tx, &mut backoff, block, ip, &|a| {
            a.handle == seen.handle && a.created_ms == seen.created_ms
        })?;
        if freed.is_some() && reason == GcReason::NotLive {
            self.unindex(tx, &mut backoff, &seen.handle, &[ip])?;
        }
        Ok(freed.is_some())
    }

    /// Re-read a handle record, drop entries their blocks do not hold for it, write it back by
    /// CAS (deleting it when empty). A lost race is left for the next run.
    fn prune_handle(&self, ctx: &str, key: &str, r: &mut GcReport) -> Result<(), IpamError> {
        let tx = self.tx(ctx);
        let Some(v) = tx.get(key)? else {
            return Ok(());
        };
        let mut h: HandleRecord = decode_json(ctx, key, &v.value)?;
        if handle_key(&h.handle) != key {
            return Ok(());
        }
        let before = h.addresses.len();
        let mut kept = Vec::with_capacity(before);
        for a in &h.addresses {
            if held_by(tx, a.block, a.ip, &h.handle)? {
                kept.push(*a);
            }
        }
        if kept.len() == before && before > 0 {
            return Ok(());
        }
        let removed = before - kept.len();
        h.addresses = kept;
        let outcome = if h.addresses.is_empty() {
            tx.delete(key, v.revision)?
        } else {
            tx.update(key, &encode_json(&h), v.revision)?
        };
        if outcome == Cas::Done {
            r.stale_entries_removed += removed;
            if h.addresses.is_empty() {
                r.handle_records_deleted += 1;
            }
        }
        Ok(())
    }
}
