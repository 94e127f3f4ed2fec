//! `furynet-cni`: the furynet CNI plugin (spec 1.1.0; speaks 0.3.0 through 1.1.0).
//!
//! The binary is a thin `main`; everything here is pure logic over two seams so it is unit
//! tested without root: [`furynet_dataplane::Kernel`] (veth, addresses, routes, sysctls) and
//! [`alloc::Allocator`] (IPAM). See `docs/cni.md` for configuration, wiring and error codes.

pub mod add;
pub mod alloc;
pub mod check;
pub mod config;
pub mod env;
pub mod error;
pub mod filealloc;
pub mod plugin;
pub mod result;
pub mod teardown;
pub mod version;
pub mod wiring;

#[cfg(test)]
mod tests;

pub use plugin::{log_conf_hint, run, Deps, Outcome};
pub use wiring::host_veth_name;

use std::time::Duration;

use alloc::{AllocError, Allocator};
use config::{DatastoreConf, NetConf};

/// Opens the allocator for a configuration: today the temporary file-backed one
/// ([`filealloc`]) for the `embedded` datastore. `etcd` needs `furynet-ipam` and
/// `furynet-datastore`, which replace this function when they merge.
pub fn open_allocator(
    conf: &NetConf,
    node: &str,
    lock_timeout: Duration,
) -> Result<Box<dyn Allocator>, AllocError> {
    match &conf.datastore {
        DatastoreConf::Embedded { path } => Ok(Box::new(filealloc::FileAllocator::open(
            path,
            &conf.name,
            node,
            &conf.pools,
            lock_timeout,
        )?)),
        DatastoreConf::Etcd { .. } => Err(AllocError::Failed(
            "the etcd datastore needs furynet-ipam/furynet-datastore, not in this build yet; \
             use {\"type\":\"embedded\"}"
                .into(),
        )),
    }
}
