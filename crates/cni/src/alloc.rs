//! The IPAM seam: the plugin's narrow view of address allocation.
//!
//! [`crate::ipamalloc::IpamAllocator`] implements it with `furynet-ipam` (block IPAM) over
//! `furynet-datastore`; unit tests use a recording fake.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One attachment's allocation key: the CNI spec's `(network name, CNI_CONTAINERID,
/// CNI_IFNAME)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handle {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Handle {
    pub fn new(network: &str, container_id: &str, ifname: &str) -> Self {
        Handle {
            network: network.to_string(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// `network/containerID/ifname` (unambiguous: none of the three may contain `/`).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// What gets recorded with an allocation (from `CNI_ARGS` and the config).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocAttrs {
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_infra_container_id: Option<String>,
}

/// Allocation failures, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Busy or unreachable datastore: retrying later should work (CNI error 11).
    #[error("datastore temporarily unavailable: {0}")]
    Transient(String),
    /// No free address in the configured pools.
    #[error("no free address: {0}")]
    Exhausted(String),
    /// Anything else (unusable path, corrupt state, unsupported backend).
    #[error("datastore failure: {0}")]
    Failed(String),
}

impl AllocError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, AllocError::Transient(_))
    }
}

/// Address allocation for one network on one node.
pub trait Allocator {
    /// One address per configured family. Idempotent: the same handle gets the same addresses.
    fn allocate(&self, handle: &Handle, attrs: &AllocAttrs) -> Result<Vec<IpAddr>, AllocError>;
    /// The addresses held by `handle`, if any.
    fn lookup(&self, handle: &Handle) -> Result<Option<Vec<IpAddr>>, AllocError>;
    /// Releases `handle`'s addresses. Idempotent; `Ok(false)` when it held nothing.
    fn release(&self, handle: &Handle) -> Result<bool, AllocError>;
    /// Releases every allocation of this network whose handle is not in `keep`; returns them.
    fn gc(&self, keep: &[Handle]) -> Result<Vec<Handle>, AllocError>;
    /// `Ok` when an ADD could be served now (datastore usable, a free address per family).
    fn status(&self) -> Result<(), AllocError>;
}
