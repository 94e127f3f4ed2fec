//! API-server validation rules that matter for semantics.
