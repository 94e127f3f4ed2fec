//! Mapping of datastore keys to Kubernetes resources and object names.
//!
//! Every key belongs to exactly one [`Resource`]. Core objects (namespaces, pods, network
//! policies, services, endpoint slices) are read-only views of the Kubernetes API; `nodes/<name>`
//! maps to the core Node; everything else is stored as a cluster-scoped custom resource whose
//! object name is derived from the key by [`object_name`]. That mapping is injective: when
//! sanitising loses information, a short SHA-256 suffix of the original key is appended, and the
//! original key is always kept in the object's spec.

use sha2::{Digest, Sha256};

/// The Kubernetes resource a datastore key lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `cluster/namespaces/<name>`: core Namespace (read-only).
    Namespaces,
    /// `cluster/pods/<ns>/<name>`: core Pod (read-only).
    Pods,
    /// `cluster/networkpolicies/<ns>/<name>`: networking.k8s.io NetworkPolicy (read-only).
    NetworkPolicies,
    /// `cluster/services/<ns>/<name>`: core Service (read-only).
    Services,
    /// `cluster/endpointslices/<ns>/<name>`: discovery.k8s.io EndpointSlice (read-only).
    EndpointSlices,
    /// `nodes/<name>`: core Node (underlay annotation is writable).
    Nodes,
    /// `ipam/pools/<name>`: IPPool custom resource.
    IpPools,
    /// `ipam/blocks/<cidr>`: IPAMBlock custom resource.
    IpamBlocks,
    /// `ipam/affinity/<node>/<cidr>`: BlockAffinity custom resource.
    BlockAffinities,
    /// `ipam/handles/<id>`: IPAMHandle custom resource.
    IpamHandles,
    /// Any other key: DatastoreEntry custom resource.
    Entries,
}

impl Resource {
    /// All resources, in a fixed order.
    pub const ALL: [Resource; 11] = [
        Resource::Namespaces,
        Resource::Pods,
        Resource::NetworkPolicies,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
        Resource::IpPools,
        Resource::IpamBlocks,
        Resource::BlockAffinities,
        Resource::IpamHandles,
        Resource::Entries,
    ];

    /// The key prefix this resource owns (`None` for [`Resource::Entries`], which owns the rest).
    pub fn prefix(self) -> Option<&'static str> {
        Some(match self {
            Resource::Namespaces => "cluster/namespaces/",
            Resource::Pods => "cluster/pods/",
            Resource::NetworkPolicies => "cluster/networkpolicies/",
            Resource::Services => "cluster/services/",
            Resource::EndpointSlices => "cluster/endpointslices/",
            Resource::Nodes => "nodes/",
            Resource::IpPools => "ipam/pools/",
            Resource::IpamBlocks => "ipam/blocks/",
            Resource::BlockAffinities => "ipam/affinity/",
            Resource::IpamHandles => "ipam/handles/",
            Resource::Entries => return None,
        })
    }

    /// Whether the datastore may write keys of this resource (core objects are owned by the
    /// Kubernetes API and changed with kubectl).
    pub fn writable(self) -> bool {
        !matches!(
            self,
            Resource::Namespaces
                | Resource::Pods
                | Resource::NetworkPolicies
                | Resource::Services
                | Resource::EndpointSlices
        )
    }

    /// The resource a key belongs to. A key equal to a prefix without a name (e.g. `nodes/`)
    /// belongs to [`Resource::Entries`], since no object of the typed resource can hold it.
    pub fn of_key(key: &str) -> Resource {
        for r in Resource::ALL {
            if let Some(p) = r.prefix() {
                if key.len() > p.len() && key.starts_with(p) {
                    return r;
                }
            }
        }
        Resource::Entries
    }

    /// The resources whose key space intersects `prefix` (what `list`/`watch` must read).
    pub fn for_prefix(prefix: &str) -> Vec<Resource> {
        Resource::ALL
            .into_iter()
            .filter(|r| match r.prefix() {
                // A typed resource holds keys `p + name`; it intersects when either is a
                // prefix of the other.
                Some(p) => p.starts_with(prefix) || prefix.starts_with(p),
                // Entries may hold any key not claimed by a typed resource, including a bare
                // prefix like `nodes/`; only a prefix strictly inside a typed space excludes it.
                None => !Resource::ALL.iter().any(|t| {
                    t.prefix()
                        .is_some_and(|p| prefix.starts_with(p) && prefix.len() > p.len())
                }),
            })
            .collect()
    }
}

/// Longest object name Kubernetes accepts (DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Hex digits of the SHA-256 suffix appended when sanitising is lossy.
const HASH_LEN: usize = 10;

/// The object name storing `key` (relative to the resource's prefix for typed resources, the
/// whole key for entries). The result is a valid DNS-1123 subdomain, and distinct keys give
/// distinct names: names that are already valid and contain no `.` are kept as they are; every
/// other key is sanitised and gets `.` + a hash of the original key, a suffix no kept name can
/// carry.
pub fn object_name(resource: Resource, key: &str) -> String {
    let part = match resource.prefix() {
        Some(p) => key.strip_prefix(p).unwrap_or(key),
        None => key,
    };
    if is_plain_label_chain(part) {
        return part.to_string();
    }
    let mut s: String = part
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let hash = hex_prefix(&Sha256::digest(key.as_bytes()), HASH_LEN);
    s.truncate(MAX_NAME - HASH_LEN - 2);
    let s = s.trim_matches('-');
    if s.is_empty() {
        format!("k.{hash}")
    } else {
        format!("{s}.{hash}")
    }
}

/// A name kept verbatim: non-empty, at most 253 characters, only `[a-z0-9-]`, starting and
/// ending alphanumeric, and no `.` (so it can never collide with a hashed name).
fn is_plain_label_chain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    let mut out = String::with_capacity(n);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
        if out.len() >= n {
            break;
        }
    }
    out.truncate(n);
    out
}

/// Whether `name` is a valid DNS-1123 subdomain (what the API server requires).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_route_to_their_resource() {
        assert_eq!(Resource::of_key("cluster/pods/default/web"), Resource::Pods);
        assert_eq!(Resource::of_key("nodes/n1"), Resource::Nodes);
        assert_eq!(
            Resource::of_key("ipam/blocks/10.0.0.0/26"),
            Resource::IpamBlocks
        );
        assert_eq!(
            Resource::of_key("ipam/affinity/n1/10.0.0.0/26"),
            Resource::BlockAffinities
        );
        assert_eq!(Resource::of_key("agents/n1"), Resource::Entries);
        assert_eq!(Resource::of_key("nodes/"), Resource::Entries);
        assert!(!Resource::Pods.writable());
        assert!(Resource::Nodes.writable());
    }

    #[test]
    fn prefixes_select_intersecting_resources() {
        assert_eq!(
            Resource::for_prefix("cluster/pods/default/"),
            vec![Resource::Pods]
        );
        let ipam = Resource::for_prefix("ipam/");
        assert!(ipam.contains(&Resource::IpamBlocks) && ipam.contains(&Resource::Entries));
        assert!(!ipam.contains(&Resource::Pods));
        assert_eq!(Resource::for_prefix("").len(), Resource::ALL.len());
        assert_eq!(
            Resource::for_prefix("nodes/"),
            vec![Resource::Nodes, Resource::Entries]
        );
    }

    #[test]
    fn names_are_valid_and_injective() {
        let keys = [
            "agents/n1",
            "agents-n1",
            "Agents/n1",
            "ipam/blocks/10.0.0.0/26",
            "ipam/blocks/10-0-0-0-26",
            "a",
            "-",
            "",
            "x.y",
            &"k".repeat(400),
            &"k/".repeat(300),
        ];
        let mut seen = HashSet::new();
        for k in keys {
            let n = object_name(Resource::Entries, k);
            assert!(is_dns1123_subdomain(&n), "{k:?} -> {n:?}");
            assert!(seen.insert(n.clone()), "collision for {k:?}: {n:?}");
        }
        assert_eq!(object_name(Resource::Nodes, "nodes/worker-1"), "worker-1");
        let b = object_name(Resource::IpamBlocks, "ipam/blocks/10.0.0.0/26");
        assert!(b.starts_with("10-0-0-0-26."), "{b}");
    }
}
