//! furynet's thin Linux layer: network namespaces, veth pairs, addresses, routes and sysctls.
//!
//! Everything the CNI plugin (and later the agent) asks of the kernel goes through the
//! [`Kernel`] trait, so the logic above it is unit-tested against [`fake::FakeKernel`] (feature
//! `fake`) without root. [`LinuxKernel`] is the real implementation: synchronous rtnetlink over
//! one socket per network namespace, `setns(2)` only for the instant it takes to open a socket
//! inside a namespace, and `/proc/sys` for per-interface sysctls.
//!
//! Ownership markers live here: routes furynet installs carry [`RTPROT_FURYNET`], and host-side
//! interfaces it creates start with [`HOST_IFACE_PREFIX`].

mod error;
mod kernel;
mod linux;
mod netlink;
pub mod nft;

#[cfg(any(test, feature = "fake"))]
pub mod fake;

pub use error::{Error, Result};
pub use kernel::{
    format_mac, Family, Kernel, Link, Mac, Netns, NetnsState, Route, RouteScope, VethSpec,
};
pub use linux::LinuxKernel;
pub use nft::{Applied, Nft, NftError, TableView};

/// The route protocol number furynet stamps on every route it installs (`ip route ... proto 154`).
/// It is the ownership marker for routes: furynet only ever prunes routes with this protocol.
pub const RTPROT_FURYNET: u8 = 154;

/// Prefix of every host-side interface furynet creates (`fny` + 11 hex characters for pods).
pub const HOST_IFACE_PREFIX: &str = "fny";

pub mod routing;
