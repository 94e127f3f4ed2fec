//! The real plugin binary in real network namespaces. Needs root (skips loudly otherwise),
//! `ip` (iproute2) and `ping` (iputils-ping).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod failures;
mod harness;
mod lifecycle;
mod scale;
