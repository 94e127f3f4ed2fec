//! furynet's pure calculation step: the compiled policy [`Engine`](furynet_policy::Engine) plus
//! this node's name and its local pods' host interfaces become the *desired* nftables state of
//! the node ([`NftState`]), rendered as an `nft -f` script ([`render_full`]) or as the minimal
//! transaction from a previous state ([`render_delta`]).
//!
//! No I/O and no kernel crate: the dataplane driver applies what this crate renders. The output
//! depends only on the content of its inputs (everything is sorted; chain and set names are
//! hashes of pod keys and set contents). Layout and rationale: `docs/dataplane-nftables.md`.

mod compute;
mod intervals;
mod render;

pub use compute::{compute, NftState, PodChains, SetDef, SetKind};
pub use render::{render_delta, render_full, render_resync};

/// Our nftables table (family `inet`): the ownership marker. Nothing outside it is touched.
pub const TABLE: &str = "furynet";
/// Family of [`TABLE`].
pub const FAMILY: &str = "inet";
