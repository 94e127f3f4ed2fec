//! `furynet-cni`: the furynet CNI plugin (spec 1.1.0; speaks 0.3.0 through 1.1.0).
//!
//! The binary is a thin `main`; everything here is pure logic over two seams so it is unit
//! tested without root: [`furynet_dataplane::Kernel`] (veth, addresses, routes, sysctls) and
//! [`alloc::Allocator`] (IPAM). See `docs/cni.md` for configuration, wiring and error codes.

pub mod add;
pub mod alloc;
pub mod calls;
pub mod check;
pub mod config;
pub mod env;
pub mod error;
pub mod ipamalloc;
pub mod plugin;
pub mod result;
pub mod teardown;
pub mod version;
pub mod wiring;

#[cfg(test)]
mod tests;

pub use plugin::{log_conf_hint, run, Deps, Outcome};
pub use wiring::host_veth_name;

use alloc::{AllocError, Allocator};
use config::{DatastoreConf, NetConf};
use furynet_datastore::DatastoreConfig;
use furynet_ipam::PoolConfig;

/// Opens the allocator for a configuration: block IPAM (`furynet-ipam`) on the configured
/// datastore (embedded SQLite file or etcd).
pub fn open_allocator(conf: &NetConf, node: &str) -> Result<Box<dyn Allocator>, AllocError> {
    let datastore = match &conf.datastore {
        DatastoreConf::Embedded { path } => DatastoreConfig::Embedded { path: path.clone() },
        DatastoreConf::Etcd { endpoints } => DatastoreConfig::Etcd {
            endpoints: endpoints.clone(),
        },
        DatastoreConf::Kubernetes {
            kubeconfig,
            lease_namespace,
        } => DatastoreConfig::Kubernetes {
            kubeconfig: kubeconfig.clone(),
            lease_namespace: lease_namespace.clone(),
        },
    };
    let pools = conf
        .pools
        .iter()
        .map(|p| PoolConfig::with_block_prefix(p.cidr, p.block_prefix))
        .collect();
    Ok(Box::new(ipamalloc::IpamAllocator::open(
        &datastore, &conf.name, node, pools,
    )?))
}
