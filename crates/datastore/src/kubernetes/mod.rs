//! The `kubernetes` backend: cluster state in the Kubernetes API.
//!
//! [`store::KubeStore`] implements the [`Datastore`](crate::Datastore) trait over the API
//! (kube-rs): core objects (Namespaces, Pods, NetworkPolicies, Services, EndpointSlices, Nodes)
//! are read-only views translated by [`codec`]; furynet's own state (IPAM, agent status, any
//! other key) lives in the custom resources of [`crds`]; [`names`] maps keys to resources and
//! object names; [`status`] maps resourceVersions and HTTP statuses. See docs/datastore.md.

pub mod codec;
pub mod core_objects;
pub mod crds;
pub mod names;
pub mod status;
pub mod store;

pub use store::{KubeOptions, KubeStore};
