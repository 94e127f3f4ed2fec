//! The furynet node agent: one per node. It follows the datastore (list, then watch from the
//! list revision), turns the cluster state into this node's desired dataplane with the pure
//! steps (`furynet_calc::compute` for nftables, `routing::plan` for routes and VXLAN), and
//! programs the kernel through the drivers (`nft::Nft::sync`: minimal delta, read-back, drift
//! repair; `routing::reconcile`). See `docs/agent.md`.
//!
//! Layout: [`keys`] (where cluster objects, node registrations and agent status live in the
//! datastore), [`state`] (the pure snapshot the watch feeds and the desired state derived
//! from it), [`agent`] (the loop and the kernel seam), [`health`] (`/healthz`, `/readyz`),
//! [`split`] (reads through a fan-out server, writes to the datastore).

pub mod agent;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod signals;
pub mod split;
pub mod state;

pub use agent::{run, Config, Dataplane, LinuxDataplane};
pub use health::Health;
