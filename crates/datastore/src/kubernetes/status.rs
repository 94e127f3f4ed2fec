//! Translation of Kubernetes API answers into datastore errors, revisions and retry decisions.
//!
//! Pure functions so that the mapping is unit-tested without a server.

use std::time::Duration;

use crate::error::{Error, Result};

/// Backend name used in errors.
pub const BACKEND: &str = "kubernetes";

/// A resourceVersion as a store revision.
///
/// Assumption (documented in docs/datastore.md): the API server is backed by etcd and its
/// resourceVersions are etcd revisions, i.e. decimal integers that increase store-wide. The
/// Kubernetes API calls them opaque; a server that does not follow this is refused with
/// [`Error::Corrupt`] rather than silently misordered.
pub fn parse_revision(op: &'static str, resource_version: &str) -> Result<i64> {
    match resource_version.parse::<i64>() {
        Ok(r) if r > 0 => Ok(r),
        _ => Err(Error::Corrupt {
            backend: BACKEND,
            op,
            detail: format!(
                "resourceVersion {resource_version:?} is not a positive integer; the kubernetes \
                 backend needs an etcd-backed API server whose resourceVersions are etcd revisions"
            ),
        }),
    }
}

/// The error for a write to a key that mirrors a core Kubernetes object.
pub fn read_only(op: &'static str, key: &str) -> Error {
    Error::InvalidArgument {
        op,
        reason: format!(
            "key {key:?} mirrors an object that belongs to the Kubernetes API; change it with \
             kubectl, not through the datastore"
        ),
    }
}

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Do not retry: the answer is final.
    Never,
    /// Retry after this delay (from Retry-After, or the backoff schedule).
    After(Duration),
}

/// First delay of the backoff schedule.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay of the backoff schedule (and cap on Retry-After).
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The backoff delay before retry number `attempt` (0-based): doubling from
/// [`BACKOFF_BASE`], capped at [`BACKOFF_MAX`].
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX)
}

/// Whether an HTTP status may be retried, and when. `idempotent` is true for reads and for
/// writes whose outcome is known not to have happened (429 and 503 are refused before the
/// write is applied; other 5xx may have applied it). `retry_after` is the Retry-After header
/// value in seconds, if any.
pub fn classify(status: u16, idempotent: bool, retry_after: Option<u64>, attempt: u32) -> Retry {
    let delay = retry_after
        .map(|s| Duration::from_secs(s).min(BACKOFF_MAX))
        .unwrap_or_else(|| backoff(attempt));
    match status {
        429 | 503 => Retry::After(delay),
        500..=599 if idempotent => Retry::After(delay),
        _ => Retry::Never,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn revisions_parse_or_are_refused() {
        assert_eq!(parse_revision("get", "12345").unwrap(), 12345);
        for bad in ["", "0", "-3", "abc", "1.5"] {
            let e = parse_revision("get", bad).unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn core_keys_are_read_only() {
        let e = read_only("put", "cluster/pods/default/web");
        let msg = e.to_string();
        assert!(
            msg.contains("cluster/pods/default/web") && msg.contains("kubectl"),
            "{msg}"
        );
    }

    #[test]
    fn retry_decisions() {
        assert_eq!(
            classify(429, false, Some(2), 0),
            Retry::After(Duration::from_secs(2))
        );
        assert_eq!(
            classify(429, false, Some(600), 0),
            Retry::After(BACKOFF_MAX)
        );
        assert_eq!(classify(503, false, None, 0), Retry::After(BACKOFF_BASE));
        assert_eq!(
            classify(500, true, None, 2),
            Retry::After(Duration::from_millis(400))
        );
        assert_eq!(classify(500, false, None, 0), Retry::Never);
        assert_eq!(classify(409, true, None, 0), Retry::Never);
        assert_eq!(classify(404, true, None, 0), Retry::Never);
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
