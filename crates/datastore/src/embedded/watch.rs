//! The embedded backend's watch: a thread per watch that polls for commits.
//!
//! Each poll reads `PRAGMA data_version` on the watch's own connection. SQLite changes that
//! number whenever another connection (in any process) commits, and reading it costs no disk
//! I/O in WAL mode, so an idle watch costs one cheap check per poll interval. When it changes,
//! the task reads the new `log` rows in windows of whole revisions, each window in its own
//! read transaction together with the compaction revision, so a watch never skips a change:
//! either the rows are still there or it reports [`Error::Compacted`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};
use crate::keys::Root;
use crate::types::{Event, KeyValue};
use crate::watch::WatchSender;

use super::schema::{self, SqlContext};
use super::{Clock, BACKEND};

/// How many revisions one read transaction of a catching-up watch covers.
const WINDOW: i64 = 512;

/// Consecutive transient failures (database busy) a watch rides out before giving up.
const MAX_TRANSIENT_FAILURES: u32 = 200;

pub(super) struct WatchTask {
    pub conn: Connection,
    pub root: Root,
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
    /// The next revision to deliver.
    pub next: i64,
    pub tx: WatchSender,
    pub stop: Arc<AtomicBool>,
    pub poll_interval: Duration,
    pub clock: Arc<dyn Clock>,
}

/// Whether the consumer still listens.
enum Flow {
    Continue,
    ReceiverGone,
}

impl WatchTask {
    pub(super) fn run(mut self) {
        let mut seen_version: Option<i64> = None;
        let mut next_expiry: Option<i64> = None;
        let mut failures = 0_u32;
        while !self.stop.load(Ordering::Relaxed) {
            match self.poll(&mut seen_version, &mut next_expiry) {
                Ok(Flow::Continue) => failures = 0,
                Ok(Flow::ReceiverGone) => return,
                Err(e) if e.is_retryable() && failures < MAX_TRANSIENT_FAILURES => {
                    failures += 1;
                    seen_version = None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "embedded datastore: watch ended");
                    let _ = self.tx.send(Err(e));
                    return;
                }
            }
            std::thread::sleep(self.poll_interval);
        }
    }

    fn poll(
        &mut self,
        seen_version: &mut Option<i64>,
        next_expiry: &mut Option<i64>,
    ) -> Result<Flow> {
        let mut force = false;
        let now = self.clock.now_ms();
        if next_expiry.is_some_and(|t| t <= now) {
            // Our own commits do not change our data_version: read the log afterwards.
            self.sweep(now)?;
            force = true;
        }
        // Read the version before the log, so a commit landing in between is seen next poll.
        let version: i64 = self
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ctx("watch")?;
        if !force && *seen_version == Some(version) {
            return Ok(Flow::Continue);
        }
        let flow = self.deliver(next_expiry)?;
        *seen_version = Some(version);
        Ok(flow)
    }

    fn sweep(&mut self, now: i64) -> Result<()> {
        const OP: &str = "watch (lease sweep)";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(OP)?;
        schema::sweep_expired(&tx, now).ctx(OP)?;
        tx.commit().ctx(OP)
    }

    /// Send every logged change from `self.next` up to the current revision.
    fn deliver(&mut self, next_expiry: &mut Option<i64>) -> Result<Flow> {
        const OP: &str = "watch";
        loop {
            let tx = self.conn.transaction().ctx(OP)?;
            let current = schema::meta(&tx, "revision").ctx(OP)?;
            let compacted = schema::meta(&tx, "compact_revision").ctx(OP)?;
            *next_expiry = schema::next_expiry(&tx).ctx(OP)?;
            if self.next < compacted {
                return Err(Error::Compacted {
                    requested: self.next,
                    compact_revision: compacted,
                });
            }
            if self.next > current {
                return Ok(Flow::Continue);
            }
            let to = self
                .next
                .saturating_add(WINDOW)
                .min(current.saturating_add(1));
            let rows =
                schema::log_range(&tx, self.next, to, &self.start, self.end.as_deref()).ctx(OP)?;
            tx.commit().ctx(OP)?;
            for row in rows {
                let event = self.event(row)?;
                if self.tx.send(Ok(event)).is_err() {
                    return Ok(Flow::ReceiverGone);
                }
            }
            self.next = to;
        }
    }

    fn event(&self, row: schema::LogRow) -> Result<Event> {
        let key = self.root.strip(&row.key).ok_or_else(|| Error::Corrupt {
            backend: BACKEND,
            op: "watch",
            detail: format!(
                "logged key {:?} is not valid UTF-8",
                String::from_utf8_lossy(&row.key)
            ),
        })?;
        Ok(match row.value {
            Some(value) => Event::Put(KeyValue {
                key,
                value,
                create_revision: row.create_rev,
                mod_revision: row.rev,
                lease: row.lease,
            }),
            None => Event::Delete {
                key,
                mod_revision: row.rev,
            },
        })
    }
}
