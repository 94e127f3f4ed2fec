//! A deliberately direct implementation of NetworkPolicy semantics, straight from the
//! Kubernetes documentation, with no indexing: the oracle the engine is tested against.
