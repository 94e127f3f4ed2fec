//! The embedded backend: one SQLite database file (WAL mode) shared by every process on the
//! machine. No server; safe with many concurrent readers and writers.
//!
//! - Writes run in `BEGIN IMMEDIATE` transactions: SQLite's write lock serialises writers
//!   across processes (waiting up to the busy timeout), so the revision counter in `meta`
//!   is handed out in commit order and compare-and-swap is a plain read-check-write inside
//!   the transaction.
//! - Every change is appended to `log`; watches poll `PRAGMA data_version` (a cheap check of
//!   the shared WAL index that changes when any other connection commits) on their own
//!   connection and thread, and read new log rows when it changes.
//! - Leases store an expiry time. Expired leases are swept (keys deleted, at one revision)
//!   lazily: at the start of every write, before reads when one is due, and by watchers when
//!   one is due, so watchers see the deletes without any other activity.

mod schema;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use crate::keys::{check_key, check_revision, prefix_end, Root};
use crate::types::KeyValue;
use crate::watch::{Watch, WATCH_BUFFER};
use crate::Datastore;

use schema::SqlContext;

pub(crate) const BACKEND: &str = "embedded";

/// The database file inside the configured directory.
pub const DB_FILE: &str = "furynet.db";

/// Wall-clock time in milliseconds since the Unix epoch. Lease expiry is stored as such a
/// time so that every process on the machine agrees on it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (for deterministic lease tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Tuning of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// How often a watch checks for new commits (the main term of watch latency).
    pub poll_interval: Duration,
    /// How long a write waits for another process's write lock before failing with a
    /// retryable [`Error::Unavailable`].
    pub busy_timeout: Duration,
    /// Source of time for lease expiry.
    pub clock: Arc<dyn Clock>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            poll_interval: Duration::from_millis(5),
            busy_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
        }
    }
}

/// A datastore in a SQLite file. See the module docs.
#[derive(Debug)]
pub struct EmbeddedStore {
    conn: Mutex<Connection>,
    db_path: PathBuf,
    root: Root,
    options: EmbeddedOptions,
}

/// Open a connection with the settings every connection needs.
fn connect(db_path: &Path, options: &EmbeddedOptions) -> Result<Connection> {
    let location = || db_path.display().to_string();
    let open_err = |e: rusqlite::Error| Error::Open {
        backend: BACKEND,
        location: location(),
        reason: e.to_string(),
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db_path, flags).map_err(open_err)?;
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    // Switching a new database to WAL needs a moment of exclusive access; when several
    // processes open a fresh file at once, the losers see "busy" and try again.
    let mut attempt = 0;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => break,
            Ok(mode) => {
                return Err(Error::Open {
                    backend: BACKEND,
                    location: location(),
                    reason: format!(
                        "cannot enable WAL journal mode (got {mode:?}); is the file system local?"
                    ),
                })
            }
            Err(e) if attempt < 100 && is_busy(&e) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(open_err(e)),
        }
    }
    // NORMAL in WAL mode: commits are atomic and the database never corrupts; a power loss may
    // roll back the last commits (fsync happens at checkpoints). The embedded store serves one
    // machine, so whatever those commits allocated (pods, addresses) died with the power too;
    // FULL would cost an fsync per write (~10 ms here), 10x the IPAM latency.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;")
        .map_err(open_err)?;
    // The last connection to close would otherwise checkpoint the WAL into the database (two
    // fsyncs, ~2.5 ms here) — at the end of every CNI call, the short-lived process that is
    // usually the only one with the file open. Checkpoints still run automatically as the WAL
    // grows (every 1,000 pages), and durability is what NORMAL gives (above).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(open_err)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked))
}

impl EmbeddedStore {
    /// Open (creating if needed) the database in directory `dir`, with keys under `root`.
    pub fn open(dir: &Path, root: &str, options: EmbeddedOptions) -> Result<Self> {
        let root = Root::new(root)?;
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            op: "create datastore directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let db_path = dir.join(DB_FILE);
        let mut conn = connect(&db_path, &options)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("open")?;
        tx.execute_batch(schema::SCHEMA).ctx("open")?;
        let version = schema::meta(&tx, "schema_version").ctx("open")?;
        if version > schema::SCHEMA_VERSION {
            return Err(Error::Open {
                backend: BACKEND,
                location: db_path.display().to_string(),
                reason: format!(
                    "database schema version {version} is newer than this furynet understands ({}); upgrade furynet",
                    schema::SCHEMA_VERSION
                ),
            });
        }
        tx.commit().ctx("open")?;
        Ok(EmbeddedStore {
            conn: Mutex::new(conn),
            db_path,
            root,
            options,
        })
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction (it rolls back on drop),
        // so the connection is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in a write transaction, after sweeping expired leases.
    fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>, i64) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx(op)?;
        let now = self.options.clock.now_ms();
        let expired = schema::sweep_expired(&tx, now).ctx(op)?;
        if expired > 0 {
            tracing::debug!(expired, op, "embedded datastore: ended expired leases");
        }
        let out = f(&tx, now)?;
        tx.commit().ctx(op)?;
        Ok(out)
    }

    /// Run `f` in a read transaction (a consistent snapshot), sweeping first if a lease is due.
    fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let now = self.options.clock.now_ms();
        let mut conn = self.lock();
        if schema::next_expiry(&conn)
            .ctx(op)?
            .is_some_and(|t| t <= now)
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx(op)?;
            schema::sweep_expired(&tx, now).ctx(op)?;
            tx.commit().ctx(op)?;
        }
        let tx = conn.transaction().ctx(op)?;
        let out = f(&tx)?;
        tx.commit().ctx(op)?;
        Ok(out)
    }

    fn lease_missing(op: &'static str, lease: i64) -> Error {
        Error::LeaseNotFound { op, lease }
    }
}

impl Datastore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        const OP: &str = "get";
        check_key(OP, key)?;
        let full = self.root.full(key);
        let row = self.read(OP, |tx| schema::get(tx, &full).ctx(OP))?;
        row.map(|r| r.into_kv(&self.root, OP)).transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        const OP: &str = "list";
        let start = self.root.full(prefix);
        let end = prefix_end(&start);
        let (rows, rev) = self.read(OP, |tx| {
            let rows = schema::range(tx, &start, end.as_deref()).ctx(OP)?;
            Ok((rows, schema::meta(tx, "revision").ctx(OP)?))
        })?;
        let kvs = rows
            .into_iter()
            .map(|r| r.into_kv(&self.root, OP))
            .collect::<Result<_>>()?;
        Ok((kvs, rev))
    }

    fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64> {
        const OP: &str = "create";
        check_key(OP, key)?;
        let full = self.root.full(key);
        self.write(OP, |tx, _| {
            if let Some(existing) = schema::get(tx, &full).ctx(OP)? {
                return Err(Error::AlreadyExists {
                    key: key.to_owned(),
                    mod_revision: existing.mod_rev,
                });
            }
            if let Some(lease) = lease {
                if schema::lease_ttl(tx, lease).ctx(OP)?.is_none() {
                    return Err(Self::lease_missing(OP, lease));
                }
            }
            let rev = schema::bump_revision(tx).ctx(OP)?;
            schema::put(tx, rev, &full, value, rev, lease).ctx(OP)?;
            Ok(rev)
        })
    }

    fn update(&self, key: &str, value: &[u8], expected_mod_revision: i64) -> Result<i64> {
        const OP: &str = "update";
        check_key(OP, key)?;
        check_revision(OP, key, expected_mod_revision)?;
        let full = self.root.full(key);
        self.write(OP, |tx, _| {
            let Some(existing) = schema::get(tx, &full).ctx(OP)? else {
                return Err(Error::NotFound {
                    op: OP,
                    key: key.to_owned(),
                });
            };
            if existing.mod_rev != expected_mod_revision {
                return Err(Error::Conflict {
                    op: OP,
                    key: key.to_owned(),
                    expected: expected_mod_revision,
                    current: existing.mod_rev,
                });
            }
            let rev = schema::bump_revision(tx).ctx(OP)?;
            schema::put(tx, rev, &full, value, existing.create_rev, existing.lease).ctx(OP)?;
            Ok(rev)
        })
    }

    fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<i64> {
        const OP: &str = "delete";
        check_key(OP, key)?;
        if let Some(expected) = expected_mod_revision {
            check_revision(OP, key, expected)?;
        }
        let full = self.root.full(key);
        self.write(OP, |tx, _| {
            let Some(existing) = schema::get(tx, &full).ctx(OP)? else {
                return Err(Error::NotFound {
                    op: OP,
                    key: key.to_owned(),
                });
            };
            if let Some(expected) = expected_mod_revision {
                if existing.mod_rev != expected {
                    return Err(Error::Conflict {
                        op: OP,
                        key: key.to_owned(),
                        expected,
                        current: existing.mod_rev,
                    });
                }
            }
            let rev = schema::bump_revision(tx).ctx(OP)?;
            schema::delete(tx, rev, 0, &full).ctx(OP)?;
            Ok(rev)
        })
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch> {
        const OP: &str = "watch";
        let next = if from_revision <= 0 {
            self.current_revision()? + 1
        } else {
            from_revision
        };
        let start = self.root.full(prefix);
        let end = prefix_end(&start);
        let conn = connect(&self.db_path, &self.options)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(WATCH_BUFFER);
        let stop = Arc::new(AtomicBool::new(false));
        let task = watch::WatchTask {
            conn,
            root: self.root.clone(),
            start,
            end,
            next,
            tx,
            stop: stop.clone(),
            poll_interval: self.options.poll_interval,
            clock: self.options.clock.clone(),
        };
        std::thread::Builder::new()
            .name("furynet-watch".into())
            .spawn(move || task.run())
            .map_err(|e| Error::Backend {
                backend: BACKEND,
                op: OP,
                reason: format!("cannot start the watch thread: {e}"),
            })?;
        Ok(Watch::new(BACKEND, rx, move || {
            stop.store(true, Ordering::Relaxed)
        }))
    }

    fn compact(&self, revision: i64) -> Result<()> {
        const OP: &str = "compact";
        self.write(OP, |tx, _| {
            let current = schema::meta(tx, "revision").ctx(OP)?;
            if revision > current {
                return Err(Error::InvalidArgument {
                    op: OP,
                    reason: format!(
                        "revision {revision} is in the future (current revision is {current})"
                    ),
                });
            }
            if revision > schema::meta(tx, "compact_revision").ctx(OP)? {
                schema::compact(tx, revision).ctx(OP)?;
            }
            Ok(())
        })
    }

    fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        const OP: &str = "grant_lease";
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if ttl_ms <= 0 {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: format!("lease TTL {ttl:?} must be at least 1 ms"),
            });
        }
        self.write(OP, |tx, now| schema::grant_lease(tx, ttl_ms, now).ctx(OP))
    }

    fn keep_alive(&self, lease: i64) -> Result<()> {
        const OP: &str = "keep_alive";
        self.write(OP, |tx, now| {
            // Expired leases were swept at the start of the transaction.
            let ttl = schema::lease_ttl(tx, lease)
                .ctx(OP)?
                .ok_or_else(|| Self::lease_missing(OP, lease))?;
            schema::refresh_lease(tx, lease, now.saturating_add(ttl)).ctx(OP)
        })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        const OP: &str = "revoke_lease";
        self.write(OP, |tx, _| {
            if schema::lease_ttl(tx, lease).ctx(OP)?.is_none() {
                return Err(Self::lease_missing(OP, lease));
            }
            schema::revoke_lease(tx, lease).ctx(OP)
        })
    }

    fn current_revision(&self) -> Result<i64> {
        const OP: &str = "current_revision";
        self.read(OP, |tx| schema::meta(tx, "revision").ctx(OP))
    }

    fn health(&self) -> Result<()> {
        self.current_revision().map(|_| ())
    }
}

#[cfg(test)]
mod tests;
