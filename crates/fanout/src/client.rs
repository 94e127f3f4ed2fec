//! [`FanoutStore`]: the agent's side. A read-only `Datastore` whose list, get and watch are
//! served from a local mirror that a background connection keeps current: snapshot, then
//! deltas; on a lost server it reconnects (the same one after a cutoff, else the next) and
//! resumes from its revision, or takes a snapshot and turns the difference into events, so
//! open watches stay valid across failovers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use furynet_datastore::{Datastore, Error as DsError, Event, KeyValue, Result as DsResult, Watch};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::hub;
use crate::proto::{self, Change, Msg, SnapshotAssembler, Start};
use crate::raw::open;
use crate::tls::{self, ClientTls, Tls};
use crate::Error;

const BACKEND: &str = "fanout";
/// Recent events kept so `list` then `watch(revision + 1)` never misses a change.
const LOG_MAX: usize = 100_000;
/// Events a watch buffers before it is ended (its consumer re-lists).
const WATCH_BUFFER: usize = 65_536;

/// How a [`FanoutStore`] connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Servers (`HOST:PORT`), tried in order; the next one when one fails.
    pub addrs: Vec<String>,
    /// This client's name (its node), for the servers' logs.
    pub name: String,
    pub tls: Option<ClientTls>,
    pub connect_timeout: Duration,
    /// A server silent for this long (no delta, no ping) is considered dead.
    pub silence_timeout: Duration,
    /// How long `list` waits for the first snapshot.
    pub first_sync_timeout: Duration,
}

impl ClientConfig {
    pub fn new(addrs: Vec<String>, name: impl Into<String>) -> Self {
        ClientConfig {
            addrs,
            name: name.into(),
            tls: None,
            connect_timeout: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(35),
            first_sync_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Watcher {
    id: u64,
    prefix: String,
    /// Only changes at or after this revision.
    from: i64,
    tx: SyncSender<DsResult<Event>>,
}

#[derive(Debug, Default)]
struct Mirror {
    map: BTreeMap<String, KeyValue>,
    revision: i64,
    synced: bool,
    log: VecDeque<Event>,
    /// Watches from this revision on can be served from `log`.
    log_start: i64,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    connected_to: Option<String>,
}

impl Mirror {
    fn publish(&mut self, events: &[Event]) {
        for e in events {
            self.log.push_back(e.clone());
        }
        while self.log.len() > LOG_MAX {
            if let Some(old) = self.log.pop_front() {
                self.log_start = self.log_start.max(old.revision() + 1);
            }
        }
        self.watchers.retain(|w| {
            events
                .iter()
                .filter(|e| e.revision() >= w.from && e.key().starts_with(&w.prefix))
                .all(|e| match w.tx.try_send(Ok(e.clone())) {
                    Ok(()) => true,
                    // A consumer this far behind re-lists (its watch ends).
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
                })
        });
    }

    /// Loads a snapshot. When it cannot be reconciled with open watches (the server is
    /// behind us), they are ended with `Compacted`.
    fn snapshot(&mut self, revision: i64, kvs: Vec<KeyValue>) {
        let fresh = hub::by_key(kvs);
        if self.synced && revision >= self.revision {
            // Same history, later point: the difference is a set of changes.
            let events = hub::changes(&self.map, &fresh, revision);
            self.map = fresh;
            self.revision = revision;
            self.publish(&events);
        } else {
            if self.synced {
                // The new server is behind what we served: consumers must re-list.
                for w in self.watchers.drain(..) {
                    let _ = w.tx.try_send(Err(DsError::Compacted {
                        requested: self.revision + 1,
                        compact_revision: revision + 1,
                    }));
                }
            }
            self.map = fresh;
            self.revision = revision;
            self.synced = true;
        }
        // Intermediate versions were skipped: older watches cannot be served.
        self.log.clear();
        self.log_start = revision + 1;
    }

    fn deltas(&mut self, from: i64, revision: i64, changes: Vec<Change>) -> Result<(), String> {
        if from > self.revision {
            return Err(format!(
                "gap: delta from revision {from}, the mirror is at {}",
                self.revision
            ));
        }
        let events: Vec<Event> = changes.into_iter().map(Event::from).collect();
        for e in &events {
            match e {
                Event::Put(kv) => {
                    self.map.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { key, .. } => {
                    self.map.remove(key);
                }
            }
        }
        self.revision = self.revision.max(revision);
        self.publish(&events);
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    mirror: Mutex<Mirror>,
    synced: Condvar,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn mirror(&self) -> MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A read-only datastore fed by fan-out servers (see the module docs).
#[derive(Debug)]
pub struct FanoutStore {
    shared: Arc<Shared>,
    cfg: ClientConfig,
}

impl Drop for FanoutStore {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

fn read_only(op: &'static str) -> DsError {
    DsError::InvalidArgument {
        op,
        reason: "the fan-out client is read-only: write to the datastore itself".into(),
    }
}

fn unavailable(op: &'static str, reason: impl Into<String>) -> DsError {
    DsError::Unavailable {
        backend: BACKEND,
        op,
        reason: reason.into(),
    }
}

impl FanoutStore {
    /// Starts the background connection and returns at once; `list` waits for the first
    /// snapshot. Fails only on a bad configuration (no address, unreadable TLS files).
    pub fn connect(cfg: ClientConfig) -> Result<Arc<FanoutStore>, Error> {
        if cfg.addrs.is_empty() {
            return Err(Error::Client("no fan-out server address".into()));
        }
        let tls = cfg.tls.as_ref().map(tls::connector).transpose()?;
        let shared = Arc::new(Shared {
            mirror: Mutex::new(Mirror::default()),
            synced: Condvar::new(),
            stop: watch::channel(false).0,
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Client(format!("runtime: {e}")))?;
        let s = shared.clone();
        let c = cfg.clone();
        std::thread::Builder::new()
            .name("fanout-client".into())
            .spawn(move || rt.block_on(run(s, c, tls)))
            .map_err(|e| Error::Client(format!("thread: {e}")))?;
        Ok(Arc::new(FanoutStore { shared, cfg }))
    }

    /// The server currently streaming to this client.
    pub fn connected_to(&self) -> Option<String> {
        self.shared.mirror().connected_to.clone()
    }

    fn synced_mirror(&self, op: &'static str) -> DsResult<MutexGuard<'_, Mirror>> {
        let deadline = Instant::now() + self.cfg.first_sync_timeout;
        let mut m = self.shared.mirror();
        while !m.synced {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unavailable(
                    op,
                    format!(
                        "no snapshot from the fan-out servers {} yet",
                        self.cfg.addrs.join(",")
                    ),
                ));
            }
            m = self
                .shared
                .synced
                .wait_timeout(m, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        Ok(m)
    }
}

impl Datastore for FanoutStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get(&self, key: &str) -> DsResult<Option<KeyValue>> {
        Ok(self.synced_mirror("get")?.map.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> DsResult<(Vec<KeyValue>, i64)> {
        let m = self.synced_mirror("list")?;
        let kvs = m
            .map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((kvs, m.revision))
    }

    fn create(&self, _: &str, _: &[u8], _: Option<i64>) -> DsResult<i64> {
        Err(read_only("create"))
    }

    fn update(&self, _: &str, _: &[u8], _: i64) -> DsResult<i64> {
        Err(read_only("update"))
    }

    fn delete(&self, _: &str, _: Option<i64>) -> DsResult<i64> {
        Err(read_only("delete"))
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> DsResult<Watch> {
        let mut m = self.synced_mirror("watch")?;
        let from = if from_revision <= 0 {
            m.revision + 1
        } else {
            from_revision
        };
        let (tx, rx) = sync_channel(WATCH_BUFFER);
        let id = m.next_watcher;
        m.next_watcher += 1;
        let shared = self.shared.clone();
        let stop = move || shared.mirror().watchers.retain(|w| w.id != id);
        if from < m.log_start && from <= m.revision {
            let _ = tx.try_send(Err(DsError::Compacted {
                requested: from,
                compact_revision: m.log_start,
            }));
            return Ok(Watch::from_channel(BACKEND, rx, stop));
        }
        for e in m
            .log
            .iter()
            .filter(|e| e.revision() >= from && e.key().starts_with(prefix))
        {
            if tx.try_send(Ok(e.clone())).is_err() {
                break;
            }
        }
        m.watchers.push(Watcher {
            id,
            prefix: prefix.to_string(),
            from,
            tx,
        });
        Ok(Watch::from_channel(BACKEND, rx, stop))
    }

    fn compact(&self, _: i64) -> DsResult<()> {
        Err(read_only("compact"))
    }

    fn grant_lease(&self, _: Duration) -> DsResult<i64> {
        Err(read_only("grant_lease"))
    }

    fn keep_alive(&self, _: i64) -> DsResult<()> {
        Err(read_only("keep_alive"))
    }

    fn revoke_lease(&self, _: i64) -> DsResult<()> {
        Err(read_only("revoke_lease"))
    }

    fn current_revision(&self) -> DsResult<i64> {
        Ok(self.synced_mirror("current_revision")?.revision)
    }

    fn health(&self) -> DsResult<()> {
        let m = self.shared.mirror();
        match (&m.connected_to, m.synced) {
            (Some(_), true) => Ok(()),
            _ => Err(unavailable(
                "health",
                format!(
                    "not streaming from any of the fan-out servers {}",
                    self.cfg.addrs.join(",")
                ),
            )),
        }
    }
}

/// How a session ended.
enum End {
    /// The server cut us off (we fell behind, it stops): reconnect, same server first.
    Cutoff,
    /// The store was dropped.
    Stopped,
}

async fn run(shared: Arc<Shared>, cfg: ClientConfig, tls: Option<Tls>) {
    let mut stop = shared.stop.subscribe();
    let mut i = 0usize;
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let addr = &cfg.addrs[i % cfg.addrs.len()];
        let res = session(&shared, &cfg, tls.as_ref(), addr, &mut stop).await;
        shared.mirror().connected_to = None;
        match res {
            Ok(End::Stopped) => return,
            Ok(End::Cutoff) => {
                tracing::info!(server = %addr, "cut off by the fan-out server; reconnecting");
                failures = 0;
            }
            Err(e) => {
                tracing::warn!(server = %addr, error = %e, "fan-out server lost; trying the next");
                i += 1;
                failures += 1;
                // A pause once every server has been tried.
                if failures as usize >= cfg.addrs.len() {
                    let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {},
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }
}

async fn session(
    shared: &Shared,
    cfg: &ClientConfig,
    tls: Option<&Tls>,
    addr: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, String> {
    let resume_from = {
        let m = shared.mirror();
        m.synced.then_some(m.revision)
    };
    let (mut rd, mut wr, start, revision) =
        open(addr, tls, cfg.connect_timeout, &cfg.name, resume_from)
            .await
            .map_err(|e| e.to_string())?;
    if start == Start::Resume && Some(revision) != resume_from {
        return Err(format!(
            "server resumed at {revision}, we hold {resume_from:?}"
        ));
    }
    let mut asm = SnapshotAssembler::default();
    let mut streaming = start == Start::Resume;
    if streaming {
        shared.mirror().connected_to = Some(addr.to_string());
        tracing::info!(server = %addr, revision, "resumed from the fan-out server");
    }
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(cfg.silence_timeout, proto::read_msg(&mut rd)) => m,
            _ = stop.changed() => return Ok(End::Stopped),
        };
        let msg = msg
            .map_err(|_| format!("silent for {:?}", cfg.silence_timeout))?
            .map_err(|e| e.to_string())?;
        match msg {
            Some(Msg::Snapshot {
                revision,
                part,
                parts,
                data,
            }) if !streaming => {
                if let Some((rev, kvs)) = asm
                    .add(revision, part, parts, &data)
                    .map_err(|e| e.to_string())?
                {
                    let mut m = shared.mirror();
                    m.snapshot(rev, kvs);
                    m.connected_to = Some(addr.to_string());
                    shared.synced.notify_all();
                    streaming = true;
                    tracing::info!(server = %addr, revision = rev, keys = m.map.len(), "snapshot from the fan-out server");
                }
            }
            Some(Msg::Deltas {
                from,
                revision,
                changes,
                ..
            }) if streaming => shared.mirror().deltas(from, revision, changes)?,
            Some(Msg::Ping { id }) => {
                wr.write_all(&proto::encode(&Msg::Pong { id }))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(Msg::Cutoff { reason }) => {
                tracing::debug!(%reason, "cutoff");
                return Ok(End::Cutoff);
            }
            Some(Msg::Error { message }) => return Err(message),
            Some(other) => return Err(format!("unexpected message {other:?}")),
            None => return Err("the server closed the connection".into()),
        }
    }
}
