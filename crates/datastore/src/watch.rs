//! The blocking watch handle both backends hand out.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::Event;

/// How many events a watch buffers before its producer waits for the consumer.
pub(crate) const WATCH_BUFFER: usize = 1024;

/// The producer side of a watch, held by a backend's watch thread.
pub(crate) type WatchSender = SyncSender<Result<Event>>;

/// A stream of changes under a prefix, in revision order.
///
/// Events arrive in the order of their revisions (events of one revision in key order for
/// the embedded backend, in the backend's order for etcd). An `Err` item ends the watch;
/// [`Error::Compacted`] is the "re-list" signal: list again and start a new watch from the
/// list revision + 1. Dropping the `Watch` stops the backend's work for it.
///
/// Use [`Watch::recv_timeout`] for a bounded wait, or iterate (each `next()` blocks until an
/// event or the end arrives).
pub struct Watch {
    backend: &'static str,
    rx: Receiver<Result<Event>>,
    ended: bool,
    _stop: StopOnDrop,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("backend", &self.backend)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Runs the backend's stop action exactly once, when the `Watch` is dropped.
struct StopOnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop();
        }
    }
}

impl Watch {
    /// A watch fed by `rx`; `stop` is called when the watch is dropped.
    pub(crate) fn new(
        backend: &'static str,
        rx: Receiver<Result<Event>>,
        stop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Watch {
            backend,
            rx,
            ended: false,
            _stop: StopOnDrop(Some(Box::new(stop))),
        }
    }

    /// A watch fed by another crate's backend (e.g. the fan-out client): `rx` carries the
    /// events in revision order, an `Err` ends the watch, and `stop` runs when the consumer
    /// drops it. Backends in other crates keep the same semantics as the ones here.
    pub fn from_channel(
        backend: &'static str,
        rx: Receiver<Result<Event>>,
        stop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self::new(backend, rx, stop)
    }

    /// The next event, waiting at most `timeout`. `Ok(None)` means nothing happened in time.
    /// An `Err` ends the watch; later calls return [`Error::Unavailable`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>> {
        if self.ended {
            return Err(self.ended_error());
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(event)) => Ok(Some(event)),
            Ok(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Err(self.ended_error())
            }
        }
    }

    /// The next event, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Event> {
        if self.ended {
            return Err(self.ended_error());
        }
        match self.rx.recv() {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            Err(_) => {
                self.ended = true;
                Err(self.ended_error())
            }
        }
    }

    /// Whether the watch has ended (an error was returned).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn ended_error(&self) -> Error {
        Error::Unavailable {
            backend: self.backend,
            op: "watch",
            reason: "the watch has ended; start a new watch from the last seen revision + 1".into(),
        }
    }
}

/// Blocks for each item; yields the ending error once, then `None`.
impl Iterator for Watch {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        Some(self.recv())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;

    #[test]
    fn error_ends_the_watch_and_drop_stops_the_producer() {
        let (tx, rx) = sync_channel(4);
        let stopped = Arc::new(AtomicBool::new(false));
        let s = stopped.clone();
        let mut w = Watch::new("test", rx, move || s.store(true, Ordering::SeqCst));
        tx.send(Ok(Event::Delete {
            key: "a".into(),
            mod_revision: 2,
        }))
        .unwrap();
        tx.send(Err(Error::Compacted {
            requested: 1,
            compact_revision: 5,
        }))
        .unwrap();
        assert_eq!(
            w.recv_timeout(Duration::from_millis(10))
                .unwrap()
                .unwrap()
                .revision(),
            2
        );
        assert!(w.next().unwrap().unwrap_err().is_compacted());
        assert!(w.is_ended());
        assert!(w.next().is_none());
        assert!(!stopped.load(Ordering::SeqCst));
        drop(w);
        assert!(stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn timeout_is_not_an_error() {
        let (_tx, rx) = sync_channel::<Result<Event>>(1);
        let mut w = Watch::new("test", rx, || {});
        assert!(w.recv_timeout(Duration::from_millis(1)).unwrap().is_none());
        assert!(!w.is_ended());
    }
}
