//! The embedded backend's tables and the SQL each operation runs.
//!
//! ```text
//! meta(name, value)                      'revision', 'compact_revision', 'schema_version'
//! kv(key, value, create_rev, mod_rev, lease)        current state, key = root + caller key
//! log(rev, sub, key, value, create_rev, lease)      one row per change; value NULL = delete
//! leases(id, ttl_ms, expires_at_ms)                  live leases (AUTOINCREMENT: ids never reused)
//! ```
//!
//! Keys are BLOBs so prefix ranges compare bytes exactly as etcd does. Every function here runs
//! inside a transaction opened by the caller; write functions assume `BEGIN IMMEDIATE`, so
//! exactly one writer (across all processes) runs them at a time and revisions are handed out
//! in commit order.

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::keys::Root;
use crate::types::KeyValue;

use super::BACKEND;

/// Bump this when the tables change incompatibly.
pub(super) const SCHEMA_VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES
    ('schema_version', 1), ('revision', 1), ('compact_revision', 0);
CREATE TABLE IF NOT EXISTS kv (
    key        BLOB PRIMARY KEY,
    value      BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL,
    lease      INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv(lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER NOT NULL,
    sub        INTEGER NOT NULL,
    key        BLOB NOT NULL,
    value      BLOB,
    create_rev INTEGER NOT NULL,
    lease      INTEGER,
    PRIMARY KEY (rev, sub)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl_ms        INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases(expires_at_ms);
";

/// Attach the operation name to SQLite errors; "busy"/"locked" become retryable
/// [`Error::Unavailable`].
pub(super) trait SqlContext<T> {
    fn ctx(self, op: &'static str) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, op: &'static str) -> Result<T> {
        self.map_err(|e| sql_error(op, e))
    }
}

pub(super) fn sql_error(op: &'static str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked) => {
            Error::Unavailable {
                backend: BACKEND,
                op,
                reason: format!(
                    "database is locked by another writer for longer than the busy timeout ({e})"
                ),
            }
        }
        _ => Error::Backend {
            backend: BACKEND,
            op,
            reason: e.to_string(),
        },
    }
}

pub(super) fn meta(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
}

/// Take the next revision (one per write transaction).
pub(super) fn bump_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
        [],
        |r| r.get(0),
    )
}

/// A stored row of `kv`, with the full key.
#[derive(Debug)]
pub(super) struct Row {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_rev: i64,
    pub mod_rev: i64,
    pub lease: Option<i64>,
}

impl Row {
    pub(super) fn into_kv(self, root: &Root, op: &'static str) -> Result<KeyValue> {
        let key = root.strip(&self.key).ok_or_else(|| Error::Corrupt {
            backend: BACKEND,
            op,
            detail: format!(
                "stored key {:?} is not valid UTF-8 under root {}",
                String::from_utf8_lossy(&self.key),
                root.as_str()
            ),
        })?;
        Ok(KeyValue {
            key,
            value: self.value,
            create_revision: self.create_rev,
            mod_revision: self.mod_rev,
            lease: self.lease,
        })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        key: r.get(0)?,
        value: r.get(1)?,
        create_rev: r.get(2)?,
        mod_rev: r.get(3)?,
        lease: r.get(4)?,
    })
}

pub(super) fn get(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached("SELECT key, value, create_rev, mod_rev, lease FROM kv WHERE key = ?1")?
        .query_row([key], row)
        .optional()
}

/// Rows with `start <= key < end` (no upper bound when `end` is `None`), in key order.
pub(super) fn range(
    conn: &Connection,
    start: &[u8],
    end: Option<&[u8]>,
) -> rusqlite::Result<Vec<Row>> {
    match end {
        Some(end) => conn
            .prepare_cached(
                "SELECT key, value, create_rev, mod_rev, lease FROM kv
                 WHERE key >= ?1 AND key < ?2 ORDER BY key",
            )?
            .query_map(params![start, end], row)?
            .collect(),
        None => conn
            .prepare_cached(
                "SELECT key, value, create_rev, mod_rev, lease FROM kv
                 WHERE key >= ?1 ORDER BY key",
            )?
            .query_map(params![start], row)?
            .collect(),
    }
}

/// Insert or replace `key` at revision `rev`, and log the change.
pub(super) fn put(
    conn: &Connection,
    rev: i64,
    key: &[u8],
    value: &[u8],
    create_rev: i64,
    lease: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv(key, value, create_rev, mod_rev, lease) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
    )?
    .execute(params![key, value, create_rev, rev, lease])?;
    conn.prepare_cached(
        "INSERT INTO log(rev, sub, key, value, create_rev, lease) VALUES (?1, 0, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![rev, key, value, create_rev, lease])?;
    Ok(())
}

/// Delete `key` at revision `rev` as change number `sub` of that revision, and log it.
pub(super) fn delete(conn: &Connection, rev: i64, sub: i64, key: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?
        .execute([key])?;
    conn.prepare_cached(
        "INSERT INTO log(rev, sub, key, value, create_rev, lease) VALUES (?1, ?2, ?3, NULL, 0, NULL)",
    )?
    .execute(params![rev, sub, key])?;
    Ok(())
}

/// The lease's TTL in milliseconds, if the lease exists.
pub(super) fn lease_ttl(conn: &Connection, lease: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT ttl_ms FROM leases WHERE id = ?1")?
        .query_row([lease], |r| r.get(0))
        .optional()
}

pub(super) fn grant_lease(conn: &Connection, ttl_ms: i64, now_ms: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("INSERT INTO leases(ttl_ms, expires_at_ms) VALUES (?1, ?2)")?
        .execute(params![ttl_ms, now_ms.saturating_add(ttl_ms)])?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn refresh_lease(
    conn: &Connection,
    lease: i64,
    expires_at_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE leases SET expires_at_ms = ?2 WHERE id = ?1")?
        .execute(params![lease, expires_at_ms])?;
    Ok(())
}

/// End a lease: delete its keys, all at one new revision (as etcd does), then the lease.
pub(super) fn revoke_lease(conn: &Connection, lease: i64) -> rusqlite::Result<()> {
    let keys: Vec<Vec<u8>> = conn
        .prepare_cached("SELECT key FROM kv WHERE lease = ?1 ORDER BY key")?
        .query_map([lease], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !keys.is_empty() {
        let rev = bump_revision(conn)?;
        for (sub, key) in (0_i64..).zip(&keys) {
            delete(conn, rev, sub, key)?;
        }
    }
    conn.prepare_cached("DELETE FROM leases WHERE id = ?1")?
        .execute([lease])?;
    Ok(())
}

/// The earliest lease expiry, if any lease exists.
pub(super) fn next_expiry(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(expires_at_ms) FROM leases")?
        .query_row([], |r| r.get(0))
}

/// Revoke every lease that expired at or before `now_ms`. Returns how many ended.
pub(super) fn sweep_expired(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    let expired: Vec<i64> = conn
        .prepare_cached("SELECT id FROM leases WHERE expires_at_ms <= ?1 ORDER BY id")?
        .query_map([now_ms], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for lease in &expired {
        revoke_lease(conn, *lease)?;
    }
    Ok(expired.len())
}

/// One logged change, with the full key.
#[derive(Debug)]
pub(super) struct LogRow {
    pub rev: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    pub create_rev: i64,
    pub lease: Option<i64>,
}

/// Logged changes with `from <= rev < to` under the key range, in (revision, change) order.
pub(super) fn log_range(
    conn: &Connection,
    from: i64,
    to: i64,
    start: &[u8],
    end: Option<&[u8]>,
) -> rusqlite::Result<Vec<LogRow>> {
    let map = |r: &rusqlite::Row<'_>| {
        Ok(LogRow {
            rev: r.get(0)?,
            key: r.get(1)?,
            value: r.get(2)?,
            create_rev: r.get(3)?,
            lease: r.get(4)?,
        })
    };
    match end {
        Some(end) => conn
            .prepare_cached(
                "SELECT rev, key, value, create_rev, lease FROM log
                 WHERE rev >= ?1 AND rev < ?2 AND key >= ?3 AND key < ?4 ORDER BY rev, sub",
            )?
            .query_map(params![from, to, start, end], map)?
            .collect(),
        None => conn
            .prepare_cached(
                "SELECT rev, key, value, create_rev, lease FROM log
                 WHERE rev >= ?1 AND rev < ?2 AND key >= ?3 ORDER BY rev, sub",
            )?
            .query_map(params![from, to, start], map)?
            .collect(),
    }
}

/// Drop history below `revision` and record the new compaction point.
pub(super) fn compact(conn: &Connection, revision: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM log WHERE rev < ?1", [revision])?;
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'compact_revision'",
        [revision],
    )?;
    Ok(())
}
