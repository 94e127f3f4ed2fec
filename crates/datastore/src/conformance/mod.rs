//! The conformance suite every backend must pass, written once against [`Datastore`].
//!
//! A backend's integration test instantiates it with [`conformance_tests!`](crate::conformance_tests),
//! giving a function that returns a fresh [`Fixture`] (or `None` to skip loudly). The cases
//! return [`Outcome`] instead of panicking, so this module is ordinary library code; the
//! generated `#[test]` functions turn a [`Failure`] into a failed test with its message.
//!
//! Multi-process cases re-execute the current test binary, filtered to the generated
//! `conformance_child_entry` test, with the job described in an environment variable.

pub mod cases;
pub mod concurrency;

use std::any::Any;
use std::panic::Location;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::{Datastore, DatastoreConfig, Error, Event, Watch};

/// How long a case waits for an expected event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a conformance case failed, with the source location of the failed check.
pub struct Failure(String);

impl Failure {
    /// A failure at the caller's location.
    #[track_caller]
    pub fn new(message: impl Into<String>) -> Self {
        let loc = Location::caller();
        Failure(format!(
            "{} ({}:{})",
            message.into(),
            loc.file(),
            loc.line()
        ))
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for Failure {
    #[track_caller]
    fn from(e: Error) -> Self {
        Failure::new(format!("unexpected datastore error: {e} [{e:?}]"))
    }
}

impl From<std::io::Error> for Failure {
    #[track_caller]
    fn from(e: std::io::Error) -> Self {
        Failure::new(format!("i/o error in the test harness: {e}"))
    }
}

/// The result of a conformance case.
pub type Outcome<T = ()> = Result<T, Failure>;

/// Fail the case unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure::new(format!($($fmt)+)));
        }
    };
}

/// Fail the case unless the two values are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::conformance::Failure::new(format!(
                        "{}: left {:?} != right {:?}",
                        format!($($fmt)+),
                        l,
                        r
                    )));
                }
            }
        }
    };
}
pub(crate) use {ensure, ensure_eq};

/// A fresh, empty store for one case, and how other processes can open the same one.
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn Datastore>,
    /// The configuration child processes use to open the same store.
    pub config: DatastoreConfig,
    /// The root prefix the store was opened with.
    pub root: String,
    /// Whatever must live as long as the fixture (a temporary directory, a server).
    pub keep: Box<dyn Any + Send>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

static COMPACTION: RwLock<()> = RwLock::new(());

/// Held by every case except compaction: compaction is global to a server, so when cases
/// share one server (FURYNET_ETCD_ENDPOINTS), it must not run under another case's watches.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    COMPACTION.read().unwrap_or_else(|p| p.into_inner())
}

/// Held by the compaction case.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    COMPACTION.write().unwrap_or_else(|p| p.into_inner())
}

/// The next event, failing the case if none arrives within [`EVENT_TIMEOUT`].
#[track_caller]
pub fn next_event(watch: &mut Watch) -> Outcome<Event> {
    let loc = Location::caller();
    match watch.recv_timeout(EVENT_TIMEOUT) {
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(Failure(format!(
            "no watch event within {EVENT_TIMEOUT:?} ({}:{})",
            loc.file(),
            loc.line()
        ))),
        Err(e) => Err(Failure(format!(
            "watch failed: {e} ({}:{})",
            loc.file(),
            loc.line()
        ))),
    }
}

/// Fail if an event arrives within `quiet`.
#[track_caller]
pub fn expect_quiet(watch: &mut Watch, quiet: Duration) -> Outcome {
    let loc = Location::caller();
    match watch.recv_timeout(quiet) {
        Ok(None) => Ok(()),
        other => Err(Failure(format!(
            "expected no more watch events, got {other:?} ({}:{})",
            loc.file(),
            loc.line()
        ))),
    }
}

/// Poll `check` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> Outcome<bool>) -> Outcome<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if check()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Generate the conformance `#[test]`s for a backend. `$fixture` is a function
/// `fn() -> Option<Fixture>` returning a fresh store per call (`None` skips, after saying so).
///
/// A backend without a compaction API (e.g. `kubernetes`) passes
/// `skip_compaction = "reason"`: the `compaction` test then prints the reason and passes, and
/// the backend is expected to test the `Compacted` signal its own way.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:path, skip_compaction = $reason:expr) => {
        $crate::conformance_tests!(@common $fixture);

        #[test]
        fn compaction() {
            eprintln!("conformance case `compaction` skipped: {}", $reason);
        }
    };
    ($fixture:path) => {
        $crate::conformance_tests!(@common $fixture);
        $crate::conformance_tests!(@store $fixture, exclusive: compaction);
    };
    (@common $fixture:path) => {
        $crate::conformance_tests!(@store $fixture, shared:
            crud, create_existing_fails, cas_conflicts, list_is_a_snapshot, watch_ordering,
            watch_resume, watch_catch_up_many_revisions, lease_expiry, lease_keep_alive_and_revoke,
            health_and_revisions);
        $crate::conformance_tests!(@fixture $fixture:
            concurrent_threads, concurrent_processes, watch_latency_in_process,
            watch_latency_cross_process);

        /// Entry point of the child processes the multi-process cases start; does nothing
        /// in a normal test run.
        #[test]
        fn conformance_child_entry() -> ::std::result::Result<(), $crate::conformance::Failure> {
            $crate::conformance::concurrency::child_entry()
        }
    };
    (@store $fixture:path, $lock:ident: $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() -> ::std::result::Result<(), $crate::conformance::Failure> {
                let _guard = $crate::conformance::$lock();
                let Some(fixture) = $fixture() else { return Ok(()) };
                $crate::conformance::cases::$case(&*fixture.store)
            }
        )+
    };
    (@fixture $fixture:path: $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() -> ::std::result::Result<(), $crate::conformance::Failure> {
                let _guard = $crate::conformance::shared();
                let Some(fixture) = $fixture() else { return Ok(()) };
                $crate::conformance::concurrency::$case(&fixture)
            }
        )+
    };
}
