//! The server's state, pure and synchronous: the datastore's current entries, a bounded ring
//! of encoded delta frames shared by every client, and the latest encoded snapshot.
//!
//! A client is nothing but a sequence number into the ring (its cursor). Frames are encoded
//! once, here, and every client writes the same bytes. When the ring is trimmed past a
//! client's cursor, that client has fallen behind: it is cut off and comes back with a
//! resume or a snapshot, so a slow client never makes the server hold more than the ring.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use furynet_datastore::{Event, KeyValue};

use crate::proto::{self, Change, Msg};

/// One encoded `Deltas` frame in the ring.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// The revision before these changes.
    pub from: i64,
    /// The revision after them.
    pub revision: i64,
    /// When the changes were read from the datastore (Unix nanoseconds).
    pub read_at: u64,
    pub frame: Arc<[u8]>,
}

/// An encoded snapshot and where in the ring a client continues after it.
#[derive(Debug)]
pub struct Snapshot {
    pub revision: i64,
    /// The ring sequence number of the first delta after this snapshot.
    pub seq: u64,
    pub frames: Vec<Arc<[u8]>>,
    pub bytes: usize,
}

/// Where a new client starts.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Deltas from ring sequence `seq` (the client holds revision `revision`).
    Resume { seq: u64, revision: i64 },
    /// This snapshot, then deltas from its `seq`.
    Snapshot(Arc<Snapshot>),
}

/// Ring limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

/// Entries by key.
pub fn by_key(kvs: Vec<KeyValue>) -> BTreeMap<String, KeyValue> {
    kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect()
}

/// The changes that turn `old` into `fresh` (a later complete list at `revision`), in
/// revision order: puts of what is new or changed, deletes (at `revision`) of what is gone.
pub fn changes(
    old: &BTreeMap<String, KeyValue>,
    fresh: &BTreeMap<String, KeyValue>,
    revision: i64,
) -> Vec<Event> {
    let mut events: Vec<Event> = old
        .iter()
        .filter(|(k, _)| !fresh.contains_key(*k))
        .map(|(k, _)| Event::Delete {
            key: k.clone(),
            mod_revision: revision,
        })
        .collect();
    events.extend(
        fresh
            .iter()
            .filter(|(k, kv)| old.get(*k) != Some(*kv))
            .map(|(_, kv)| Event::Put(kv.clone())),
    );
    events.sort_by_key(Event::revision);
    events
}

#[derive(Debug)]
pub struct Hub {
    map: BTreeMap<String, KeyValue>,
    revision: i64,
    ring: VecDeque<Entry>,
    ring_bytes: usize,
    next_seq: u64,
    limits: Limits,
    snapshot: Option<Arc<Snapshot>>,
    synced: bool,
}

/// The client's cursor is older than the ring: it must start over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FellBehind;

impl Hub {
    pub fn new(limits: Limits) -> Self {
        Hub {
            map: BTreeMap::new(),
            revision: 0,
            ring: VecDeque::new(),
            ring_bytes: 0,
            next_seq: 0,
            limits: Limits {
                max_entries: limits.max_entries.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            snapshot: None,
            synced: false,
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// (entries, bytes) held in the ring.
    pub fn ring_usage(&self) -> (usize, usize) {
        (self.ring.len(), self.ring_bytes)
    }

    /// The next sequence number a delta will get (a client at this cursor is up to date).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn entries(&self) -> impl Iterator<Item = &KeyValue> {
        self.map.values()
    }

    /// A complete list of the datastore at `revision` (first sync or re-list after a lost
    /// watch). The first one just loads; later ones are turned into one delta against what
    /// clients hold, so nobody needs a new snapshot. Returns the delta's revision, if any.
    pub fn reset(&mut self, kvs: Vec<KeyValue>, revision: i64, read_at: u64) -> Option<i64> {
        if !self.synced {
            self.map = by_key(kvs);
            self.revision = revision;
            self.synced = true;
            self.snapshot = None;
            return None;
        }
        let fresh = by_key(kvs);
        let events = changes(&self.map, &fresh, revision);
        self.map = fresh;
        let from = self.revision;
        self.revision = revision.max(from);
        if events.is_empty() {
            return None;
        }
        self.push(from, self.revision, &events, read_at);
        Some(self.revision)
    }

    /// Watch events (of whole revisions) applied and broadcast as one delta frame.
    pub fn apply(&mut self, events: &[Event], read_at: u64) -> Option<i64> {
        let last = events.iter().map(Event::revision).max()?;
        for e in events {
            match e {
                Event::Put(kv) => {
                    self.map.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { key, .. } => {
                    self.map.remove(key);
                }
            }
        }
        let from = self.revision;
        self.revision = last.max(from);
        self.push(from, self.revision, events, read_at);
        Some(self.revision)
    }

    fn push(&mut self, from: i64, revision: i64, events: &[Event], read_at: u64) {
        let frame: Arc<[u8]> = Arc::from(proto::encode(&Msg::Deltas {
            from,
            revision,
            read_at_unix_nanos: read_at,
            changes: events.iter().map(Change::from).collect(),
        }));
        self.ring_bytes += frame.len();
        self.ring.push_back(Entry {
            seq: self.next_seq,
            from,
            revision,
            read_at,
            frame,
        });
        self.next_seq += 1;
        while self.ring.len() > self.limits.max_entries
            || (self.ring_bytes > self.limits.max_bytes && self.ring.len() > 1)
        {
            if let Some(old) = self.ring.pop_front() {
                self.ring_bytes -= old.frame.len();
            }
        }
    }

    fn first_seq(&self) -> u64 {
        self.ring.front().map_or(self.next_seq, |e| e.seq)
    }

    /// Frames from `seq` on, at most `max` of them and, past the first, at most `max_bytes`
    /// in all (what one write to a client may carry); empty when the client is up to date.
    pub fn frames_from(
        &self,
        seq: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<[u8]>>, FellBehind> {
        if seq < self.first_seq() {
            return Err(FellBehind);
        }
        let skip = (seq - self.first_seq()) as usize;
        let mut bytes = 0;
        Ok(self
            .ring
            .iter()
            .skip(skip)
            .take(max)
            .take_while(|e| {
                let first = bytes == 0;
                bytes += e.frame.len();
                first || bytes <= max_bytes
            })
            .map(|e| e.frame.clone())
            .collect())
    }

    /// When the frame at `seq` was read from the datastore (`None` past the newest).
    pub fn read_at(&self, seq: u64) -> Option<u64> {
        let i = seq.checked_sub(self.first_seq())? as usize;
        self.ring.get(i).map(|e| e.read_at)
    }

    /// The revision after the frame before `seq` (what a client at cursor `seq` holds).
    pub fn revision_at(&self, seq: u64) -> Option<i64> {
        if seq == self.next_seq {
            return Some(self.revision);
        }
        let first = self.first_seq();
        let i = seq.checked_sub(first)? as usize;
        self.ring.get(i).map(|e| e.from)
    }

    /// Where a client that holds `resume_from` (or nothing) starts.
    pub fn plan(&mut self, resume_from: Option<i64>) -> Plan {
        if let Some(r) = resume_from {
            if r == self.revision {
                return Plan::Resume {
                    seq: self.next_seq,
                    revision: r,
                };
            }
            // The first delta past `r` must start at or before `r`: nothing in between lost.
            if let Some(e) = self.ring.iter().find(|e| e.revision > r) {
                if e.from <= r && r < self.revision {
                    return Plan::Resume {
                        seq: e.seq,
                        revision: r,
                    };
                }
            }
        }
        Plan::Snapshot(self.snapshot())
    }

    /// The latest snapshot, re-encoded only when the ring no longer covers the deltas after
    /// the cached one (so thousands of clients connecting during churn share one encoding).
    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            if s.seq >= self.first_seq() {
                return s.clone();
            }
        }
        let frames = proto::snapshot_frames(self.revision, self.map.values());
        let s = Arc::new(Snapshot {
            revision: self.revision,
            seq: self.next_seq,
            bytes: frames.iter().map(|f| f.len()).sum(),
            frames,
        });
        self.snapshot = Some(s.clone());
        s
    }

    /// Size of the cached snapshot (0 before the first client asked for one).
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn put(k: &str, rev: i64) -> Event {
        Event::Put(KeyValue {
            key: k.into(),
            value: vec![b'v'; 10],
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        })
    }

    fn hub(entries: usize) -> Hub {
        let mut h = Hub::new(Limits {
            max_entries: entries,
            max_bytes: 1 << 20,
        });
        h.reset(vec![], 10, 0);
        h
    }

    #[test]
    fn deltas_are_shared_frames_and_clients_are_cursors() {
        let mut h = hub(100);
        let start = h.next_seq();
        h.apply(&[put("a", 11)], 100);
        h.apply(&[put("b", 12), put("c", 12)], 200);
        assert_eq!(h.read_at(start), Some(100));
        assert_eq!(h.read_at(start + 1), Some(200));
        assert_eq!(h.read_at(start + 2), None);
        let frames = h.frames_from(start, 10, usize::MAX).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(h
            .frames_from(h.next_seq(), 10, usize::MAX)
            .unwrap()
            .is_empty());
        // A byte budget limits a write, but never below one frame.
        assert_eq!(h.frames_from(start, 10, 1).unwrap().len(), 1);
        assert_eq!(h.revision(), 12);
        assert_eq!(h.len(), 3);
        assert_eq!(h.revision_at(start), Some(10));
        assert_eq!(h.revision_at(start + 1), Some(11));
        assert_eq!(h.revision_at(h.next_seq()), Some(12));
    }

    #[test]
    fn ring_is_bounded_and_slow_cursors_fall_behind() {
        let mut h = hub(3);
        let start = h.next_seq();
        for r in 11..20 {
            h.apply(&[put(&format!("k{r}"), r)], 0);
        }
        assert_eq!(h.ring_usage().0, 3);
        assert_eq!(h.frames_from(start, 10, usize::MAX), Err(FellBehind));
        assert_eq!(
            h.frames_from(h.next_seq() - 3, 10, usize::MAX)
                .unwrap()
                .len(),
            3
        );
        // By bytes too (always keeping the newest).
        let mut h = Hub::new(Limits {
            max_entries: 1000,
            max_bytes: 200,
        });
        h.reset(vec![], 1, 0);
        for r in 2..50 {
            h.apply(&[put(&format!("k{r}"), r)], 0);
        }
        let (n, bytes) = h.ring_usage();
        assert!(n >= 1 && bytes <= 200, "{n} entries, {bytes} bytes");
    }

    #[test]
    fn resume_when_the_ring_covers_it_else_snapshot() {
        let mut h = hub(4);
        for r in 11..=14 {
            h.apply(&[put(&format!("k{r}"), r)], 0);
        }
        match h.plan(Some(12)) {
            Plan::Resume { seq, revision } => {
                assert_eq!(revision, 12);
                assert_eq!(h.frames_from(seq, 10, usize::MAX).unwrap().len(), 2);
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(h.plan(Some(14)), Plan::Resume { .. }));
        // Trimmed past 10: snapshot. Ahead of the server: snapshot. Nothing held: snapshot.
        h.apply(&[put("x", 15)], 0);
        assert!(matches!(h.plan(Some(10)), Plan::Snapshot(_)));
        assert!(matches!(h.plan(Some(99)), Plan::Snapshot(_)));
        let Plan::Snapshot(s) = h.plan(None) else {
            panic!()
        };
        assert_eq!(s.revision, 15);
        assert_eq!(s.seq, h.next_seq());
        // Cached while the ring still covers what came after it.
        h.apply(&[put("y", 16)], 0);
        let Plan::Snapshot(again) = h.plan(None) else {
            panic!()
        };
        assert!(Arc::ptr_eq(&s, &again));
        for r in 17..30 {
            h.apply(&[put("z", r)], 0);
        }
        let Plan::Snapshot(newer) = h.plan(None) else {
            panic!()
        };
        assert_eq!(newer.revision, 29);
    }

    #[test]
    fn relist_becomes_one_delta() {
        let mut h = hub(10);
        h.apply(&[put("a", 11), put("b", 11)], 0);
        let before = h.next_seq();
        let a = match put("a", 11) {
            Event::Put(kv) => kv,
            _ => unreachable!(),
        };
        let c = match put("c", 20) {
            Event::Put(kv) => kv,
            _ => unreachable!(),
        };
        assert_eq!(h.reset(vec![a, c], 21, 0), Some(21));
        assert_eq!(h.next_seq(), before + 1);
        let keys: Vec<&str> = h.entries().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        let frame = &h.frames_from(before, 1, usize::MAX).unwrap()[0];
        let Msg::Deltas { changes, from, .. } = proto::decode(&frame[4..]).unwrap() else {
            panic!()
        };
        assert_eq!(from, 11);
        assert_eq!(changes.len(), 2, "{changes:?}");
        // An identical re-list sends nothing.
        let kvs: Vec<KeyValue> = h.entries().cloned().collect();
        assert_eq!(h.reset(kvs, 21, 0), None);
    }
}
