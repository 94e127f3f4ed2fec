//! furynet's model of a Kubernetes cluster: the objects the networking cares about, decoded
//! from ordinary Kubernetes YAML/JSON, validated as the API server would, and with workloads
//! expanded into the pods Kubernetes would create. Pure: no I/O beyond reading input files.

pub mod decode;
pub mod diag;
pub mod labels;
pub mod net;
pub mod objects;
pub mod validate;
pub mod workload;

pub use decode::{load_paths, load_str, load_value, Loaded};
pub use diag::{Diagnostic, Severity};
pub use labels::{LabelSelector, Labels, Operator, Requirement, NAMESPACE_NAME_LABEL};
pub use net::{IpBlock, PortSpec, Protocol};
pub use objects::{
    Cluster, ContainerPort, Direction, Namespace, NetworkPolicy, Node, Peer, Pod, PolicyPort,
    PolicyRule, PolicyTypes, Service, ServicePort,
};
