//! What IPAM stores, where, and the address arithmetic over blocks. See `docs/ipam.md`.
//!
//! ```text
//! ipam/blocks/<net>-<prefix>             BlockRecord     the truth: who holds which address
//! ipam/affinity/<node>/<net>-<prefix>    AffinityRecord  index: blocks affine to a node
//! ipam/handles/<handle id>               HandleRecord    index: addresses held by a handle
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::IpamError;
use crate::types::{Allocation, Family, HandleAttrs, HandleId};

pub const BLOCKS_PREFIX: &str = "ipam/blocks/";
pub const AFFINITY_PREFIX: &str = "ipam/affinity/";
pub const HANDLES_PREFIX: &str = "ipam/handles/";

/// Largest block IPAM accepts from the store (2^16 addresses); configured blocks are at most
/// 2^12.
const MAX_BLOCK_HOST_BITS: u8 = 16;

/// `10.0.0.64/26` → `10.0.0.64-26`, `fd00::40/122` → `fd00::40-122`.
pub fn escape_cidr(c: &IpNet) -> String {
    format!("{}-{}", c.network(), c.prefix_len())
}

/// Inverse of [`escape_cidr`].
pub fn unescape_cidr(s: &str) -> Option<IpNet> {
    let (addr, len) = s.rsplit_once('-')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    IpNet::new(addr, len).ok()
}

pub fn block_key(cidr: &IpNet) -> String {
    format!("{BLOCKS_PREFIX}{}", escape_cidr(cidr))
}

pub fn affinity_prefix(node: &str) -> String {
    format!("{AFFINITY_PREFIX}{node}/")
}

pub fn affinity_key(node: &str, cidr: &IpNet) -> String {
    format!("{AFFINITY_PREFIX}{node}/{}", escape_cidr(cidr))
}

pub fn handle_key(h: &HandleId) -> String {
    format!("{HANDLES_PREFIX}{h}")
}

/// One address held in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    pub handle: HandleId,
    /// The node that allocated it (may differ from the block's affinity when borrowed).
    pub node: String,
    /// When it was allocated (ms since epoch, the allocator's clock): the GC leaves younger
    /// allocations alone for a grace period.
    pub created_ms: i64,
    pub attrs: HandleAttrs,
}

/// A block: a CIDR carved from a pool, optionally affine to a node, and its allocations by
/// ordinal (offset from the block's network address; every address of the block is usable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub cidr: IpNet,
    pub pool: IpNet,
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default)]
    pub allocations: BTreeMap<u32, AllocationRecord>,
}

impl BlockRecord {
    pub fn new(cidr: IpNet, pool: IpNet, affinity: Option<String>) -> Self {
        Self {
            cidr,
            pool,
            affinity,
            allocations: BTreeMap::new(),
        }
    }

    /// Number of addresses in the block.
    pub fn capacity(&self) -> u32 {
        1u32 << host_bits(&self.cidr).min(31)
    }

    pub fn used(&self) -> u32 {
        u32::try_from(self.allocations.len()).unwrap_or(u32::MAX)
    }

    pub fn free(&self) -> u32 {
        self.capacity().saturating_sub(self.used())
    }

    /// The lowest unallocated ordinal.
    pub fn first_free(&self) -> Option<u32> {
        let mut expect = 0u32;
        for &k in self.allocations.keys() {
            if k != expect {
                break;
            }
            expect += 1;
        }
        (expect < self.capacity()).then_some(expect)
    }

    pub fn ip_at(&self, ordinal: u32) -> IpAddr {
        from_u128(
            Family::of_net(&self.cidr),
            to_u128(self.cidr.network()) + u128::from(ordinal),
        )
    }

    pub fn ordinal_of(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        u32::try_from(to_u128(ip) - to_u128(self.cidr.network())).ok()
    }

    pub fn allocation_at(&self, ordinal: u32) -> Allocation {
        Allocation {
            ip: self.ip_at(ordinal),
            block: self.cidr,
            pool: self.pool,
        }
    }

    /// Decode and check a stored block (network address, size, ordinals in range, key).
    pub fn decode(ctx: &str, key: &str, bytes: &[u8]) -> Result<Self, IpamError> {
        let b: BlockRecord = decode_json(ctx, key, bytes)?;
        let corrupt = |reason: String| IpamError::Corrupt {
            ctx: ctx.into(),
            key: key.into(),
            reason,
        };
        if b.cidr.trunc() != b.cidr || host_bits(&b.cidr) > MAX_BLOCK_HOST_BITS {
            return Err(corrupt(format!("bad block cidr {}", b.cidr)));
        }
        if block_key(&b.cidr) != key {
            return Err(corrupt(format!("holds block {} under another key", b.cidr)));
        }
        if let Some((&last, _)) = b.allocations.last_key_value() {
            if last >= b.capacity() {
                return Err(corrupt(format!("ordinal {last} outside {}", b.cidr)));
            }
        }
        Ok(b)
    }
}

/// One address listed in a handle record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HandleAddress {
    pub ip: IpAddr,
    pub block: IpNet,
    pub pool: IpNet,
}

impl From<Allocation> for HandleAddress {
    fn from(a: Allocation) -> Self {
        Self {
            ip: a.ip,
            block: a.block,
            pool: a.pool,
        }
    }
}

impl From<HandleAddress> for Allocation {
    fn from(a: HandleAddress) -> Self {
        Self {
            ip: a.ip,
            block: a.block,
            pool: a.pool,
        }
    }
}

/// Index of the addresses a handle holds, so release needs no block scan. Rebuildable from
/// blocks; written after them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleRecord {
    pub handle: HandleId,
    pub node: String,
    pub attrs: HandleAttrs,
    pub addresses: Vec<HandleAddress>,
}

/// Index entry: `node` has affinity to `block`. The block's own `affinity` field is the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffinityRecord {
    pub node: String,
    pub block: IpNet,
}

pub fn decode_json<T: DeserializeOwned>(
    ctx: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, IpamError> {
    serde_json::from_slice(bytes).map_err(|e| IpamError::Corrupt {
        ctx: ctx.into(),
        key: key.into(),
        reason: e.to_string(),
    })
}

pub fn encode_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs (string map keys, no non-finite floats) cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn host_bits(n: &IpNet) -> u8 {
    n.max_prefix_len() - n.prefix_len()
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

pub fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from_bits((v & 0xffff_ffff) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from_bits(v)),
    }
}

/// First and last address of a network as integers.
pub fn span(n: &IpNet) -> (u128, u128) {
    (to_u128(n.network()), to_u128(n.broadcast()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip() {
        for c in ["10.0.0.64/26", "fd00::40/122", "192.168.1.0/32"] {
            let n = net(c);
            assert_eq!(unescape_cidr(&escape_cidr(&n)), Some(n));
        }
        assert_eq!(block_key(&net("10.0.0.64/26")), "ipam/blocks/10.0.0.64-26");
        assert_eq!(
            affinity_key("n1", &net("fd00::40/122")),
            "ipam/affinity/n1/fd00::40-122"
        );
    }

    #[test]
    fn ordinals() {
        let mut b = BlockRecord::new(net("10.0.0.64/30"), net("10.0.0.0/24"), None);
        assert_eq!(b.capacity(), 4);
        assert_eq!(b.first_free(), Some(0));
        let rec = AllocationRecord {
            handle: HandleId::parse("h").unwrap(),
            node: "n".into(),
            created_ms: 0,
            attrs: HandleAttrs::default(),
        };
        b.allocations.insert(0, rec.clone());
        b.allocations.insert(2, rec.clone());
        assert_eq!(b.first_free(), Some(1));
        b.allocations.insert(1, rec.clone());
        b.allocations.insert(3, rec);
        assert_eq!(b.first_free(), None);
        assert_eq!(b.ip_at(3), "10.0.0.67".parse::<IpAddr>().unwrap());
        assert_eq!(b.ordinal_of("10.0.0.66".parse().unwrap()), Some(2));
        assert_eq!(b.ordinal_of("10.0.0.68".parse().unwrap()), None);
        let v6 = BlockRecord::new(net("fd00::40/122"), net("fd00::/64"), None);
        assert_eq!(v6.ip_at(5), "fd00::45".parse::<IpAddr>().unwrap());
        assert_eq!(v6.capacity(), 64);
    }

    #[test]
    fn decode_rejects_corruption() {
        let b = BlockRecord::new(net("10.0.0.0/30"), net("10.0.0.0/24"), None);
        let key = block_key(&b.cidr);
        let mut v = serde_json::to_value(&b).unwrap();
        BlockRecord::decode("t", &key, &encode_json(&v)).unwrap();
        assert!(BlockRecord::decode("t", "ipam/blocks/other", &encode_json(&v)).is_err());
        v["allocations"] = serde_json::json!({"9": {"handle": "h", "node": "n", "created_ms": 0,
            "attrs": {"container_id": "c", "ifname": "i"}}});
        assert!(BlockRecord::decode("t", &key, &encode_json(&v)).is_err());
        assert!(BlockRecord::decode("t", &key, b"{").is_err());
    }
}
