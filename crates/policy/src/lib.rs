//! NetworkPolicy semantics for furynet.
//!
//! [`Engine`] compiles a [`Cluster`](furynet_model::Cluster) once — pods are grouped into
//! identities (equal namespace and labels), selectors are evaluated through an inverted label
//! index into identity bitsets, and every policy rule becomes a [`ir::Rule`] — and then answers
//! single-pair questions ([`Engine::allowed`], [`Engine::explain`]) and the full reachability
//! matrix ([`Engine::matrix`]) without re-scanning policies.
//!
//! [`reference`] is a deliberately direct implementation of the same semantics, used as the
//! oracle in property tests.

pub mod engine;
pub mod explain;
mod index;
pub mod ir;
pub mod matrix;
pub mod reference;
pub mod synth;

pub use engine::{Engine, PodId};
pub use explain::{Explanation, RuleRef, SideExplanation};
pub use matrix::{Matrix, MatrixEntry};
