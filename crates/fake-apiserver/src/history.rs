//! History queries of the store: compaction, lists as of a revision, list pages.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde_json::Value;

use crate::store::{EvType, Filter, State};
use crate::util;

impl State {
    pub fn compact(&mut self, revision: i64) {
        let revision = revision.min(self.rev);
        if revision <= self.compacted {
            return;
        }
        self.compacted = revision;
        while self.history.front().is_some_and(|e| e.rev < revision) {
            self.history.pop_front();
        }
    }

    /// Whether history can answer "state as of `rev`" / "events after `rev`".
    pub fn too_old(&self, rev: i64) -> bool {
        rev < self.compacted
    }

    /// Objects of one resource (optionally one namespace) as of `at` (None: now), sorted.
    pub fn list_at(&self, res_id: &str, at: Option<i64>) -> Vec<Value> {
        let mut map: BTreeMap<(String, String), Value> =
            self.objects.get(res_id).cloned().unwrap_or_default();
        if let Some(at) = at {
            for ev in self.history.iter().rev().take_while(|e| e.rev > at) {
                if ev.res_id != res_id {
                    continue;
                }
                let key = (
                    util::namespace_of(&ev.object).to_string(),
                    util::name_of(&ev.object).to_string(),
                );
                match (&ev.ty, &ev.prev) {
                    (EvType::Added, _) | (_, None) => {
                        map.remove(&key);
                    }
                    (_, Some(p)) => {
                        map.insert(key, p.clone());
                    }
                }
            }
        }
        map.into_values().collect()
    }

    /// One page of a list as of `at` (None: now), after the key `after`, without cloning the
    /// objects it skips: the current objects merged with an overlay of the changes since `at`.
    /// Returns the page and whether more objects follow.
    pub fn list_page(
        &self,
        res_id: &str,
        at: Option<i64>,
        after: Option<&(String, String)>,
        filter: &Filter,
        limit: Option<usize>,
    ) -> (Vec<Value>, bool) {
        let empty = BTreeMap::new();
        let cur = self.objects.get(res_id).unwrap_or(&empty);
        // Key → the object as of `at` (None: absent then), from the oldest change after `at`.
        let mut overlay: BTreeMap<(String, String), Option<&Value>> = BTreeMap::new();
        if let Some(at) = at {
            for ev in self.history.iter().rev().take_while(|e| e.rev > at) {
                if ev.res_id != res_id {
                    continue;
                }
                let key = (
                    util::namespace_of(&ev.object).to_string(),
                    util::name_of(&ev.object).to_string(),
                );
                let before = match ev.ty {
                    EvType::Added => None,
                    _ => ev.prev.as_ref(),
                };
                overlay.insert(key, before);
            }
        }
        let lower = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut a = cur.range((lower.clone(), Bound::Unbounded)).peekable();
        let mut b = overlay.range((lower, Bound::Unbounded)).peekable();
        let mut out = Vec::new();
        loop {
            let next: Option<&Value> = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => a.next().map(|(_, v)| v),
                (None, Some(_)) => b.next().and_then(|(_, v)| *v),
                (Some((ka, _)), Some((kb, _))) => {
                    if ka < kb {
                        a.next().map(|(_, v)| v)
                    } else if kb < ka {
                        b.next().and_then(|(_, v)| *v)
                    } else {
                        a.next();
                        b.next().and_then(|(_, v)| *v)
                    }
                }
            };
            let Some(obj) = next else { continue };
            if !filter.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| out.len() >= l) {
                return (out, true);
            }
            out.push(obj.clone());
        }
        (out, false)
    }
}
