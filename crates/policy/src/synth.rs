//! Deterministic synthetic clusters of realistic shape, for benchmarks and scale tests.
