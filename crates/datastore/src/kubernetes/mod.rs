//! The `kubernetes` backend (work in progress).
//!
//! Implemented so far, as pure, unit-tested functions: [`names`] decides which Kubernetes
//! resource a datastore key belongs to and which object name stores it; [`status`] turns
//! resourceVersions into revisions and HTTP statuses into errors and retry decisions. The
//! `KubeStore` client itself (kube-rs, CRDs, watches, leases) is not written yet.

pub mod core_objects;
pub mod crds;
pub mod names;
pub mod status;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// No store yet: every case skips. This only checks that the `skip_compaction` form of the
    /// conformance macro, which this backend will use, expands and compiles.
    fn no_store() -> Option<crate::conformance::Fixture> {
        None
    }

    crate::conformance_tests!(
        no_store,
        skip_compaction = "Kubernetes has no compaction API; tested against the fake's compact()"
    );
}
