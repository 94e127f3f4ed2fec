//! The one error type of the datastore crate.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a datastore operation can fail with.
///
/// Every variant carries enough context to say what failed and on which key, lease or
/// revision. [`Error::is_retryable`] tells callers (the CNI plugin maps it to CNI error 11,
/// "try again later") whether repeating the operation can succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `create` found the key already present.
    #[error("key {key:?} already exists (mod revision {mod_revision}); read it and update it with that revision instead")]
    AlreadyExists {
        /// The key, relative to the store's root prefix.
        key: String,
        /// The existing entry's mod revision.
        mod_revision: i64,
    },

    /// The key does not exist (update or delete of a missing key).
    #[error("key {key:?} not found during {op}")]
    NotFound {
        /// The operation that failed.
        op: &'static str,
        /// The key, relative to the store's root prefix.
        key: String,
    },

    /// Compare-and-swap failed: the key was changed since it was read.
    #[error("revision conflict on key {key:?} during {op}: expected mod revision {expected}, current is {current}; re-read the key and retry")]
    Conflict {
        /// The operation that failed.
        op: &'static str,
        /// The key, relative to the store's root prefix.
        key: String,
        /// The mod revision the caller expected.
        expected: i64,
        /// The key's actual mod revision.
        current: i64,
    },

    /// The revision a watch should start from is older than the retained history.
    /// This is the "re-list" signal: list again and watch from the list's revision + 1.
    #[error("revision {requested} has been compacted (history starts at {compact_revision}); list again and watch from the list revision + 1")]
    Compacted {
        /// The first revision the watch still needed.
        requested: i64,
        /// The store's compaction revision: the oldest revision still watchable.
        compact_revision: i64,
    },

    /// The lease does not exist: never granted, revoked, or expired.
    #[error("lease {lease} not found during {op} (expired or revoked); grant a new lease")]
    LeaseNotFound {
        /// The operation that failed.
        op: &'static str,
        /// The lease id.
        lease: i64,
    },

    /// The caller passed something the operation cannot accept.
    #[error("invalid argument to {op}: {reason}")]
    InvalidArgument {
        /// The operation that failed.
        op: &'static str,
        /// What is wrong with the argument.
        reason: String,
    },

    /// The backend cannot be reached or is busy (locked database, lost connection, no
    /// leader). Retrying later can succeed.
    #[error("{backend} datastore unavailable during {op}: {reason}")]
    Unavailable {
        /// Backend name (`embedded`, `etcd`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// What the backend said.
        reason: String,
    },

    /// The operation did not finish in time. Retrying later can succeed.
    #[error("{backend} datastore timed out during {op} after {after:?}")]
    Timeout {
        /// Backend name (`embedded`, `etcd`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },

    /// The store could not be opened (bad path, permissions, bad endpoint URL).
    #[error("cannot open {backend} datastore at {location}: {reason}")]
    Open {
        /// Backend name (`embedded`, `etcd`).
        backend: &'static str,
        /// The path or endpoints that were being opened.
        location: String,
        /// Why it failed.
        reason: String,
    },

    /// The configuration is invalid.
    #[error("invalid datastore configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },

    /// Data read back from the store does not have the expected shape.
    #[error("corrupt data in {backend} datastore during {op}: {detail}")]
    Corrupt {
        /// Backend name (`embedded`, `etcd`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// Any other backend failure that retrying will not fix.
    #[error("{backend} datastore error during {op}: {reason}")]
    Backend {
        /// Backend name (`embedded`, `etcd`).
        backend: &'static str,
        /// The operation that failed.
        op: &'static str,
        /// What the backend said.
        reason: String,
    },

    /// A file system operation of the embedded backend failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether repeating the operation (after re-reading, for [`Error::Conflict`]) can succeed.
    ///
    /// Unavailable and timed-out backends are retryable; so is a CAS conflict, which callers
    /// resolve with a read-modify-write loop. The CNI plugin maps retryable errors to CNI
    /// error code 11 ("try again later").
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Conflict { .. }
        )
    }

    /// Whether this is the "history compacted, list again" signal of a watch.
    pub fn is_compacted(&self) -> bool {
        matches!(self, Error::Compacted { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let conflict = Error::Conflict {
            op: "update",
            key: "k".into(),
            expected: 1,
            current: 2,
        };
        assert!(conflict.is_retryable());
        assert!(Error::Timeout {
            backend: "etcd",
            op: "get",
            after: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(!Error::NotFound {
            op: "update",
            key: "k".into()
        }
        .is_retryable());
        let compacted = Error::Compacted {
            requested: 3,
            compact_revision: 10,
        };
        assert!(!compacted.is_retryable());
        assert!(compacted.is_compacted());
        assert!(compacted.to_string().contains("list again"));
    }
}
