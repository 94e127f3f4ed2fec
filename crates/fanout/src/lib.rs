//! The fan-out server (Typha's job) and its client.
//!
//! One [`Server`] lists and watches the datastore once, keeps the whole state in memory
//! ([`hub`]) and streams it to many agents over a framed TCP protocol ([`proto`]): a
//! compressed snapshot, then deltas. Every frame is encoded once and the same bytes go to
//! every agent; an agent is a cursor into a bounded history of those frames, so memory grows
//! with the state, not with the number of agents. [`FanoutStore`] is the agent side: a
//! read-only [`furynet_datastore::Datastore`] kept current by a background connection that
//! resumes and fails over between servers, so the agent's list + watch loop works unchanged.
//! [`RawClient`] is a lightweight client for benchmarks. See `docs/fanout.md`.

pub mod client;
pub mod hub;
pub mod metrics;
pub mod proto;
pub mod raw;
pub mod server;
pub mod tls;

pub use client::{ClientConfig, FanoutStore};
pub use metrics::FanoutMetrics;
pub use raw::{RawClient, RawEvent};
pub use server::{Server, ServerConfig, ServerStats};
pub use tls::{ClientTls, ServerTls, Tls};

/// What the fan-out server and client fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("fan-out server {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("fan-out client: {0}")]
    Client(String),
}
