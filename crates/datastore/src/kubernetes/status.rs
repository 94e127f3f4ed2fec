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

/// A client-side rate limit on requests (client-go's QPS/burst): a token bucket refilled at
/// `qps` per second, holding at most `burst`. [`TokenBucket::take`] reserves one token and
/// says how long to wait before using it, so callers queue fairly instead of spinning.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    /// A full bucket. `qps` and `burst` below 1 are raised to 1.
    pub fn new(qps: f64, burst: u32, now: std::time::Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps: qps.max(1.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Reserve a token at `now`; the delay before the request may go out.
    pub fn take(&mut self, now: std::time::Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
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

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let t0 = std::time::Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0), Duration::ZERO);
        }
        // The 4th and 5th requests queue behind each other: 100 ms, then 200 ms.
        let d4 = b.take(t0);
        let d5 = b.take(t0);
        assert!((d4.as_secs_f64() - 0.1).abs() < 1e-6, "{d4:?}");
        assert!((d5.as_secs_f64() - 0.2).abs() < 1e-6, "{d5:?}");
        // After a quiet second the bucket is full again (never more than the burst).
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(b.take(t1), Duration::ZERO);
        }
        assert!(b.take(t1) > Duration::ZERO);
    }
}
