//! The `kubernetes` backend (work in progress).
//!
//! Only the key mapping is implemented so far: [`names`] decides which Kubernetes resource a
//! datastore key belongs to and which object name stores it. The `KubeStore` client itself
//! (kube-rs, CRDs, watches, leases) is not written yet.

pub mod names;
