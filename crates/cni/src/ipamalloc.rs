//! The production allocator: `furynet-ipam` block IPAM over the configured datastore
//! (embedded or etcd). Each CNI attachment `(network, container ID, ifname)` is one IPAM handle.

use std::collections::BTreeSet;
use std::net::IpAddr;

use furynet_datastore::ipam_store::IpamStore;
use furynet_datastore::{open, DatastoreConfig};
use furynet_ipam::records::{handle_key, HandleRecord, HANDLES_PREFIX};
use furynet_ipam::{
    AllocRequest, Family, HandleAttrs, HandleId, Ipam, IpamError, PoolConfig, Store,
};

use crate::alloc::{AllocAttrs, AllocError, Allocator, Handle};

/// Block IPAM for one network on one node.
#[derive(Debug)]
pub struct IpamAllocator {
    ipam: Ipam<IpamStore>,
    network: String,
    node: String,
    pools: Vec<PoolConfig>,
}

fn map(e: IpamError) -> AllocError {
    if matches!(e, IpamError::PoolExhausted { .. }) {
        AllocError::Exhausted(e.to_string())
    } else if e.is_retryable() {
        AllocError::Transient(e.to_string())
    } else {
        AllocError::Failed(e.to_string())
    }
}

fn map_ds(e: furynet_datastore::Error) -> AllocError {
    if e.is_retryable() {
        AllocError::Transient(e.to_string())
    } else {
        AllocError::Failed(e.to_string())
    }
}

impl IpamAllocator {
    /// Opens the datastore. `pools` are `(cidr, block prefix)` from the network config.
    pub fn open(
        datastore: &DatastoreConfig,
        network: &str,
        node: &str,
        pools: Vec<PoolConfig>,
    ) -> Result<Self, AllocError> {
        let ds = open(datastore).map_err(map_ds)?;
        Ok(Self {
            ipam: Ipam::new(IpamStore(ds)),
            network: network.to_string(),
            node: node.to_string(),
            pools,
        })
    }

    /// The IPAM handle of an attachment: the network name is part of it, as the CNI spec keys
    /// attachments by `(network, container ID, ifname)`.
    fn handle_id(&self, h: &Handle) -> Result<HandleId, AllocError> {
        HandleId::for_container(&format!("{}.{}", self.network, h.container_id), &h.ifname)
            .map_err(|e| AllocError::Failed(e.to_string()))
    }

    fn record(&self, id: &HandleId) -> Result<Option<HandleRecord>, AllocError> {
        let Some(v) = self
            .ipam
            .store()
            .get(&handle_key(id))
            .map_err(|e| AllocError::Transient(format!("reading handle {id}: {e}")))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v.value)
            .map(Some)
            .map_err(|e| AllocError::Failed(format!("handle record {id} is corrupt: {e}")))
    }
}

impl Allocator for IpamAllocator {
    fn allocate(&self, handle: &Handle, attrs: &AllocAttrs) -> Result<Vec<IpAddr>, AllocError> {
        let req = AllocRequest {
            handle: self.handle_id(handle)?,
            node: &self.node,
            pools: &self.pools,
            attrs: HandleAttrs {
                namespace: attrs.pod_namespace.clone(),
                pod: attrs.pod_name.clone(),
                container_id: handle.container_id.clone(),
                ifname: handle.ifname.clone(),
            },
        };
        let got = self.ipam.allocate(&req).map_err(map)?;
        Ok(got.into_iter().map(|a| a.ip).collect())
    }

    fn lookup(&self, handle: &Handle) -> Result<Option<Vec<IpAddr>>, AllocError> {
        let id = self.handle_id(handle)?;
        Ok(self
            .record(&id)?
            .map(|r| r.addresses.iter().map(|a| a.ip).collect()))
    }

    fn release(&self, handle: &Handle) -> Result<bool, AllocError> {
        let id = self.handle_id(handle)?;
        Ok(!self.ipam.release(&id).map_err(map)?.is_empty())
    }

    /// Releases this network's attachments that are not in `keep`, exactly as DEL would. Only
    /// indexed handles are seen here; half-written allocations are the IPAM garbage
    /// collector's job (it waits out a grace period so it never races an ADD in flight).
    fn gc(&self, keep: &[Handle]) -> Result<Vec<Handle>, AllocError> {
        let keep: BTreeSet<(&str, &str)> = keep
            .iter()
            .map(|h| (h.container_id.as_str(), h.ifname.as_str()))
            .collect();
        let records = self
            .ipam
            .store()
            .list(HANDLES_PREFIX)
            .map_err(|e| AllocError::Transient(format!("listing handles: {e}")))?;
        let mut released = Vec::new();
        for (_, v) in records {
            let Ok(rec) = serde_json::from_slice::<HandleRecord>(&v.value) else {
                continue; // `furynet ipam check` reports corrupt records
            };
            let h = Handle::new(&self.network, &rec.attrs.container_id, &rec.attrs.ifname);
            let ours = self.handle_id(&h).is_ok_and(|id| id == rec.handle);
            if !ours || keep.contains(&(h.container_id.as_str(), h.ifname.as_str())) {
                continue;
            }
            self.ipam.release(&rec.handle).map_err(map)?;
            released.push(h);
        }
        Ok(released)
    }

    /// The datastore answers and every configured family has a free address.
    fn status(&self) -> Result<(), AllocError> {
        let usage = self.ipam.usage().map_err(map)?;
        for family in [Family::V4, Family::V6] {
            let pools: Vec<&PoolConfig> =
                self.pools.iter().filter(|p| p.family() == family).collect();
            if pools.is_empty() {
                continue;
            }
            let free: u128 = pools
                .iter()
                .map(|p| {
                    let bits = u32::from(family.bits() - p.cidr.prefix_len()).min(127);
                    let size = 1u128 << bits;
                    let used: u128 = usage
                        .iter()
                        .filter(|u| u.pool == p.cidr)
                        .map(|u| u128::from(u.used()))
                        .sum();
                    size.saturating_sub(used)
                })
                .sum();
            if free == 0 {
                return Err(AllocError::Exhausted(format!(
                    "every {family} pool is full"
                )));
            }
        }
        Ok(())
    }
}
