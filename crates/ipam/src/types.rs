//! Request and result types: pools, handles, attributes, allocations.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of_net(n: &IpNet) -> Family {
        match n {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(a: &IpAddr) -> Family {
        match a {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Default block size for IPv4 pools: /26 (64 addresses), as Calico.
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 26;
/// Default block size for IPv6 pools: /122 (64 addresses), as Calico.
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 122;

/// An IP pool as the caller configures it. Every caller must use the same `block_prefix` for a
/// given pool (blocks of different sizes over one range would overlap; `check()` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolConfig {
    pub cidr: IpNet,
    pub block_prefix: u8,
}

impl PoolConfig {
    /// A pool with the default block size for its family.
    pub fn new(cidr: IpNet) -> Self {
        let block_prefix = match Family::of_net(&cidr) {
            Family::V4 => DEFAULT_BLOCK_PREFIX_V4,
            Family::V6 => DEFAULT_BLOCK_PREFIX_V6,
        };
        Self { cidr, block_prefix }
    }

    pub fn with_block_prefix(cidr: IpNet, block_prefix: u8) -> Self {
        Self { cidr, block_prefix }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// The prefix of this pool's blocks: `block_prefix`, or the pool's own prefix when the pool
    /// is smaller than a block (then the pool is a single block).
    pub fn effective_block_prefix(&self) -> u8 {
        self.block_prefix.max(self.cidr.prefix_len())
    }

    /// Checks the pool is a network address (`10.0.0.0/16`, not `10.0.0.1/16`), not the whole
    /// address space, and that its block size is within Calico's limits (IPv4 /20../32, IPv6
    /// /116../128: at most 4096 addresses per block).
    pub fn validate(&self) -> Result<(), IpamError> {
        let bad = |reason: String| IpamError::InvalidPool {
            pool: self.cidr.to_string(),
            reason,
        };
        if self.cidr.trunc() != self.cidr {
            return Err(bad(format!(
                "not a network address (did you mean {}?)",
                self.cidr.trunc()
            )));
        }
        if self.cidr.prefix_len() == 0 {
            return Err(bad("a pool cannot be the whole address space".into()));
        }
        let range = match self.family() {
            Family::V4 => 20..=32,
            Family::V6 => 116..=128,
        };
        if !range.contains(&self.block_prefix) {
            return Err(bad(format!(
                "block prefix /{} out of range /{}../{}",
                self.block_prefix,
                range.start(),
                range.end()
            )));
        }
        Ok(())
    }
}

/// Identifies one pod attachment: derived from (container ID, interface name). The store key of
/// its handle record is `ipam/handles/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HandleId(String);

impl HandleId {
    /// `<container id>.<ifname>`, each part kept as-is if it only has `[A-Za-z0-9_-]` and
    /// percent-escaped otherwise, so the mapping is injective and the id is safe as a key.
    pub fn for_container(container_id: &str, ifname: &str) -> Result<Self, IpamError> {
        let bad = |reason: &str| IpamError::InvalidHandle {
            id: format!("{container_id}/{ifname}"),
            reason: reason.into(),
        };
        if container_id.is_empty() || container_id.len() > 256 {
            return Err(bad("container id must have 1..=256 bytes"));
        }
        if !container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(bad(
                "container id may only contain letters, digits, '_', '.' and '-'",
            ));
        }
        if ifname.is_empty() || ifname.len() > 15 || ifname == "." || ifname == ".." {
            return Err(bad(
                "interface name must have 1..=15 bytes and not be . or ..",
            ));
        }
        if ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                "interface name may not contain '/', ':', whitespace or control characters",
            ));
        }
        Ok(Self(format!("{}.{}", escape(container_id), escape(ifname))))
    }

    /// Accepts an id as stored (e.g. given to `furynet ipam release --handle`).
    pub fn parse(id: &str) -> Result<Self, IpamError> {
        if id.is_empty() || id.len() > 1024 {
            return Err(IpamError::InvalidHandle {
                id: id.into(),
                reason: "must have 1..=1024 bytes".into(),
            });
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'%'))
        {
            return Err(IpamError::InvalidHandle {
                id: id.into(),
                reason: "may only contain letters, digits, '_', '.', '-' and '%'".into(),
            });
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for HandleId {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Self, IpamError> {
        HandleId::parse(&s)
    }
}

impl From<HandleId> for String {
    fn from(h: HandleId) -> String {
        h.0
    }
}

/// Who an address is for. Stored with every allocation and handle record; the GC hands it to
/// the caller's liveness test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleAttrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub container_id: String,
    pub ifname: String,
}

/// One allocation request: one address per address family present in `pools`.
#[derive(Debug, Clone)]
pub struct AllocRequest<'a> {
    pub handle: HandleId,
    pub node: &'a str,
    /// Pools to allocate from, in order of preference within a family.
    pub pools: &'a [PoolConfig],
    pub attrs: HandleAttrs,
}

impl<'a> AllocRequest<'a> {
    /// The request for a container's interface (handle derived from both).
    pub fn for_container(
        container_id: &str,
        ifname: &str,
        node: &'a str,
        pools: &'a [PoolConfig],
    ) -> Result<Self, IpamError> {
        Ok(Self {
            handle: HandleId::for_container(container_id, ifname)?,
            node,
            pools,
            attrs: HandleAttrs {
                namespace: None,
                pod: None,
                container_id: container_id.to_owned(),
                ifname: ifname.to_owned(),
            },
        })
    }

    pub fn with_pod(mut self, namespace: &str, pod: &str) -> Self {
        self.attrs.namespace = Some(namespace.to_owned());
        self.attrs.pod = Some(pod.to_owned());
        self
    }
}

/// An address handed out, with the block and pool it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Allocation {
    pub ip: IpAddr,
    pub block: IpNet,
    pub pool: IpNet,
}

impl Allocation {
    pub fn family(&self) -> Family {
        Family::of_addr(&self.ip)
    }

    /// The address as a host network (`/32` or `/128`), as a CNI result carries it.
    pub fn host_net(&self) -> IpNet {
        IpNet::from(self.ip)
    }
}

/// Node names are Kubernetes object names: `[A-Za-z0-9._-]`, 1..=253 bytes.
pub(crate) fn validate_node(ctx: &str, node: &str) -> Result<(), IpamError> {
    if node.is_empty()
        || node.len() > 253
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(IpamError::InvalidRequest {
            ctx: ctx.into(),
            reason: format!("node name {node:?} must be 1..=253 letters, digits, '.', '-' or '_'"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_ids_are_injective_and_safe() {
        let a = HandleId::for_container("a.b", "c").unwrap();
        let b = HandleId::for_container("a", "b.c").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "a%2Eb.c");
        let h = HandleId::for_container("3f2a9c", "eth0").unwrap();
        assert_eq!(h.as_str(), "3f2a9c.eth0");
        assert!(HandleId::for_container("", "eth0").is_err());
        assert!(HandleId::for_container("abc/def", "eth0").is_err());
        assert!(HandleId::for_container("abc", "eth/0").is_err());
        assert!(HandleId::for_container("abc", "averyveryverylongname").is_err());
        assert_eq!(HandleId::parse(h.as_str()).unwrap(), h);
        assert!(HandleId::parse("a/b").is_err());
    }

    #[test]
    fn pool_validation_and_block_size() {
        let p = PoolConfig::new("10.0.0.0/16".parse().unwrap());
        assert_eq!(p.block_prefix, 26);
        p.validate().unwrap();
        let small = PoolConfig::new("10.1.0.0/28".parse().unwrap());
        assert_eq!(small.effective_block_prefix(), 28);
        assert!(PoolConfig::new("10.0.0.1/16".parse().unwrap())
            .validate()
            .is_err());
        assert!(
            PoolConfig::with_block_prefix("10.0.0.0/16".parse().unwrap(), 16)
                .validate()
                .is_err()
        );
        let v6 = PoolConfig::new("fd00::/64".parse().unwrap());
        assert_eq!(v6.block_prefix, 122);
        v6.validate().unwrap();
        assert!(PoolConfig::new("::/0".parse().unwrap()).validate().is_err());
    }
}
