//! Values stored in and streamed from a datastore.

/// One stored entry, as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, relative to the store's root prefix (e.g. `ipam/blocks/10.244.0.0-26`).
    pub key: String,
    /// The value bytes (the callers' encoding; usually JSON).
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: i64,
    /// Revision of the last write to this key: the value to pass to `update`/`delete` for
    /// compare-and-swap.
    pub mod_revision: i64,
    /// The lease the key is attached to, if any: the key is deleted when the lease ends.
    pub lease: Option<i64>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created or updated; carries the new entry.
    Put(KeyValue),
    /// A key was deleted (explicitly, or because its lease ended).
    Delete {
        /// The key, relative to the store's root prefix.
        key: String,
        /// The revision of the delete.
        mod_revision: i64,
    },
}

impl Event {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }

    /// The revision at which the change happened. Several events can share a revision when
    /// one transaction changed several keys (a lease ending deletes all its keys at once).
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}
