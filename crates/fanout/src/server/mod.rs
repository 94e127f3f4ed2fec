//! The fan-out server: one reader following the datastore into the [`Hub`], sweeper threads
//! writing the hub's shared frames to every agent from its cursor, one task per agent for
//! its handshake, snapshot, pings and the writes its socket did not take at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use furynet_datastore::{Datastore, Error as DsError, Event};
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::hub::{Hub, Limits, Plan};
use crate::metrics::{syncer, Cutoff, FanoutMetrics};
use crate::proto::{self, Msg, Start, CAPABILITIES, PROTOCOL};
use crate::tls::{self, ServerTls};
use crate::Error;

mod sweep;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls: Option<ServerTls>,
    /// How often each agent is pinged (round trip in `typha_ping_latency`).
    pub ping_interval: Duration,
    /// An agent that has not answered a ping for this long is disconnected.
    pub ping_timeout: Duration,
    /// A write to one agent that blocks this long disconnects that agent.
    pub write_timeout: Duration,
    /// Delta frames kept for agents to catch up or resume from.
    pub history_max_entries: usize,
    /// Bytes the delta history may hold.
    pub history_max_bytes: usize,
    /// Agents served at once; more are refused (they try another replica).
    pub max_clients: usize,
    /// How long a new connection may take to say hello (and finish TLS).
    pub handshake_timeout: Duration,
    /// Agents are woken to write new changes at most once per this interval, all on one
    /// shared clock: changes arriving meanwhile go out in one write per agent, and every
    /// agent is served once per round in wake-up order. An isolated change goes out at once;
    /// under churn, when a round of writes takes longer than this, rounds follow each other
    /// as fast as the machine writes them (0: wake agents on every change). The floor: with
    /// many agents the interval is longer (see `wake_interval`).
    pub write_coalesce: Duration,
    /// Threads writing deltas to the agents (plain TCP and TLS), each serving its share of them in
    /// rounds (see `sweep`). Default: half the CPUs, 1 to 4.
    pub sweepers: usize,
    /// Snapshots streamed at once; agents beyond wait their turn (pinged meanwhile), so a
    /// thousand agents starting together do not each get a thousandth of the machine.
    pub max_concurrent_snapshots: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 5473)),
            tls: None,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            history_max_entries: 100_000,
            history_max_bytes: 64 << 20,
            max_clients: 20_000,
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_snapshots: 64,
            write_coalesce: Duration::from_millis(10),
            // Half the CPUs: writes are kernel work, and the runtime (pings, snapshots, TLS
            // agents) and the datastore reader need the rest.
            sweepers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).clamp(1, 4)),
        }
    }
}

/// A point-in-time view of the server, for tests and the command's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub connections: usize,
    pub history_entries: usize,
    pub history_bytes: usize,
    pub snapshot_bytes: usize,
    pub revision: i64,
    pub objects: usize,
    pub snapshots_sent: u64,
    pub resumes: u64,
    pub cutoffs: u64,
    /// Writes an agent's socket did not take at once.
    pub blocked_writes: u64,
}

#[derive(Debug)]
struct Shared {
    hub: RwLock<Hub>,
    stop: watch::Sender<bool>,
    cfg: ServerConfig,
    metrics: FanoutMetrics,
    server_id: String,
    backend: String,
    watching: AtomicBool,
    snapshot_slots: tokio::sync::Semaphore,
    /// The sweeper threads' inboxes; agents are dealt to them in turn.
    sweepers: Vec<sweep::Sweeper>,
    next_sweeper: AtomicUsize,
    /// The hub's next sequence number (as `published`), readable without the hub's lock.
    head: AtomicU64,
    connections: AtomicUsize,
    cutoffs: AtomicU64,
    /// `typha_client_write_latency_secs` and `typha_ping_latency`, looked up once.
    write_latency: Histogram,
    ping_latency: Histogram,
}

impl Shared {
    fn hub(&self) -> RwLockReadGuard<'_, Hub> {
        self.hub.read().unwrap_or_else(|e| e.into_inner())
    }

    fn hub_mut(&self) -> RwLockWriteGuard<'_, Hub> {
        self.hub.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the hub's new state to the gauges; agents are woken by [`WakeClock`].
    fn published(&self, hub: &Hub) {
        let (entries, bytes) = hub.ring_usage();
        self.metrics.history_entries.set(entries as i64);
        self.metrics.history_bytes.set(bytes as i64);
        self.metrics.revision.set(hub.revision());
        self.metrics.objects.set(hub.len() as i64);
        self.head.store(hub.next_seq(), Ordering::Release);
    }

    fn cutoff(&self, why: Cutoff) {
        self.metrics.cutoff(why);
        self.cutoffs.fetch_add(1, Ordering::Relaxed);
    }
}

/// The one clock that wakes agents (kept by the datastore reader): at most one wake-up per
/// `interval`, the first change after a quiet spell at once. One shared clock instead of a
/// timer per agent means one timer in the process, and agents served in rounds: a change
/// reaches every agent within one round of writes.
#[derive(Debug)]
struct WakeClock {
    interval: Duration,
    last: Option<Instant>,
    /// The hub's next sequence number not yet announced.
    due: Option<u64>,
}

impl WakeClock {
    fn new(interval: Duration) -> Self {
        WakeClock {
            interval,
            last: None,
            due: None,
        }
    }

    /// The hub changed up to `next_seq`: what to announce now, if the interval allows.
    fn changed(&mut self, next_seq: u64, now: Instant) -> Option<u64> {
        self.due = Some(next_seq);
        self.tick(now)
    }

    /// The pending sequence number to announce, when its turn has come.
    fn tick(&mut self, now: Instant) -> Option<u64> {
        let seq = self.due?;
        if self.last.is_some_and(|t| now < t + self.interval) {
            return None;
        }
        self.last = Some(now);
        self.due = None;
        Some(seq)
    }

    /// How long the reader may block before the pending change is due (at most `max`).
    fn wait(&self, now: Instant, max: Duration) -> Duration {
        match (self.due, self.last) {
            (Some(_), Some(t)) => (t + self.interval).saturating_duration_since(now).min(max),
            (Some(_), None) => Duration::ZERO,
            _ => max,
        }
    }
}

/// Interval added to the wake clock per connected agent.
const WAKE_PER_AGENT: Duration = Duration::from_micros(5);

/// The wake clock's interval with `agents` connected: `--write-coalesce-ms`, or
/// [`WAKE_PER_AGENT`] per agent when that is longer (25 ms at 5,000 agents, unchanged up to
/// 2,000 with the 10 ms default). A round's cost grows with the agents (one write each, and
/// one wake-up of each agent); spacing rounds in proportion lets each write carry more
/// changes instead of paying that cost for one or two. Measured on the benchmark's 2-CPU VM,
/// 5,000 agents: p99 74–92 ms at 25 ms against 82–106 ms at 10 ms; 1,000 agents: 16 ms at
/// 10 ms against 33 ms at 25 ms (BENCHMARKS.md).
fn wake_interval(floor: Duration, agents: usize) -> Duration {
    floor.max(WAKE_PER_AGENT.saturating_mul(u32::try_from(agents).unwrap_or(u32::MAX)))
}

/// A running fan-out server.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Largest delta batch, in events and in value bytes (whole revisions are never split, so
/// frames stay far below `proto::MAX_FRAME`).
const MAX_BATCH: usize = 5000;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Bytes of frames one write to an agent carries at most (an agent catching up goes in
/// steps, never holding a copy of the whole history).
const MAX_WRITE_BYTES: usize = 1 << 20;
/// Snapshot parts may take this many write timeouts each.
const SNAPSHOT_TIMEOUT_FACTOR: u32 = 6;

fn event_bytes(e: &Event) -> usize {
    match e {
        Event::Put(kv) => kv.key.len() + kv.value.len(),
        Event::Delete { key, .. } => key.len(),
    }
}

impl Server {
    /// Binds, starts the datastore reader and the acceptor on the current tokio runtime;
    /// returns once listening (the first list may still be running: see [`Server::in_sync`]).
    pub async fn start(
        cfg: ServerConfig,
        ds: Arc<dyn Datastore>,
        metrics: FanoutMetrics,
    ) -> Result<Server, Error> {
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::Listen(cfg.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Listen(cfg.listen, e))?;
        let write_latency = metrics
            .client_write_latency
            .get_or_create(&syncer())
            .clone();
        let ping_latency = metrics.ping_latency.get_or_create(&syncer()).clone();
        let shared = Arc::new(Shared {
            hub: RwLock::new(Hub::new(Limits {
                max_entries: cfg.history_max_entries,
                max_bytes: cfg.history_max_bytes,
            })),
            stop: watch::channel(false).0,
            server_id: format!("{}-{}", addr, std::process::id()),
            backend: ds.backend().to_string(),
            snapshot_slots: tokio::sync::Semaphore::new(cfg.max_concurrent_snapshots.max(1)),
            sweepers: (0..cfg.sweepers.max(1))
                .map(|_| sweep::Sweeper::default())
                .collect(),
            next_sweeper: AtomicUsize::new(0),
            head: AtomicU64::new(0),
            cfg,
            metrics,
            watching: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            cutoffs: AtomicU64::new(0),
            write_latency,
            ping_latency,
        });
        let s = shared.clone();
        let reader = std::thread::Builder::new()
            .name("fanout-reader".into())
            .spawn(move || read_loop(&s, ds.as_ref()))
            .map_err(|e| Error::Listen(addr, e))?;
        for i in 0..shared.sweepers.len() {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("fanout-sweep-{i}"))
                .spawn(move || sweep::run(&s, i))
                .map_err(|e| Error::Listen(addr, e))?;
        }
        let s = shared.clone();
        let acceptor = tokio::spawn(accept_loop(s, listener, tls));
        tracing::info!(%addr, "fan-out server listening");
        Ok(Server {
            shared,
            addr,
            acceptor,
            reader: Some(reader),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Revision of the in-memory state.
    pub fn revision(&self) -> i64 {
        self.shared.hub().revision()
    }

    /// The first list is done and the watch is running.
    pub fn in_sync(&self) -> bool {
        self.shared.hub().synced() && self.shared.watching.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ServerStats {
        let hub = self.shared.hub();
        let (history_entries, history_bytes) = hub.ring_usage();
        ServerStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            history_entries,
            history_bytes,
            snapshot_bytes: hub.snapshot_bytes(),
            revision: hub.revision(),
            objects: hub.len(),
            snapshots_sent: self.shared.metrics.snapshots_sent.get(),
            resumes: self.shared.metrics.resumes.get(),
            cutoffs: self.shared.cutoffs.load(Ordering::Relaxed),
            blocked_writes: self.shared.metrics.blocked_writes.get(),
        }
    }

    /// Stops accepting, tells every agent (Cutoff) and stops the reader.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        self.shared.sweepers.iter().for_each(sweep::Sweeper::nudge);
        self.acceptor.abort();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.shared.connections.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(r) = self.reader.take() {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        self.shared.sweepers.iter().for_each(sweep::Sweeper::nudge);
        self.acceptor.abort();
    }
}

fn stopped(shared: &Shared) -> bool {
    *shared.stop.borrow()
}

/// Follows the datastore until the server stops, re-listing after any error.
fn read_loop(shared: &Shared, ds: &dyn Datastore) {
    let mut backoff = Duration::from_millis(100);
    while !stopped(shared) {
        match follow(shared, ds) {
            Ok(()) => return,
            Err(e) => {
                shared.watching.store(false, Ordering::Relaxed);
                shared.metrics.datastore_errors.inc();
                tracing::warn!(error = %e, "datastore; re-listing");
                let end = Instant::now() + backoff;
                while !stopped(shared) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Starts a round of every sweeper, up to `seq` at least.
fn announce(shared: &Shared, seq: Option<u64>) {
    if let Some(seq) = seq {
        for sw in &shared.sweepers {
            sw.announce(seq);
        }
    }
}

/// One list + watch session: `Ok` when the server stops, `Err` to re-list.
fn follow(shared: &Shared, ds: &dyn Datastore) -> Result<(), DsError> {
    let (kvs, rev) = ds.list("")?;
    let mut watch = ds.watch("", rev + 1)?;
    let mut clock = WakeClock::new(shared.cfg.write_coalesce);
    {
        let mut hub = shared.hub_mut();
        if hub.reset(kvs, rev, unix_nanos()).is_some() {
            shared.metrics.deltas.inc();
        }
        shared.published(&hub);
        announce(shared, clock.changed(hub.next_seq(), Instant::now()));
    }
    shared.watching.store(true, Ordering::Relaxed);
    tracing::info!(revision = rev, "listed the datastore; watching");
    let mut pending: Option<Event> = None;
    while !stopped(shared) {
        let first = match pending.take() {
            Some(e) => e,
            None => {
                let wait = clock.wait(Instant::now(), Duration::from_millis(200));
                match watch.recv_timeout(wait)? {
                    Some(e) => e,
                    None => {
                        announce(shared, clock.tick(Instant::now()));
                        continue;
                    }
                }
            }
        };
        let mut bytes = event_bytes(&first);
        let mut batch = vec![first];
        // Take what is ready, keeping every revision whole: a revision's events may trail
        // by a moment, so wait a millisecond for more of the last revision.
        loop {
            let next = match watch.recv_timeout(Duration::ZERO)? {
                Some(e) => Some(e),
                None => watch.recv_timeout(Duration::from_millis(1))?,
            };
            let Some(e) = next else { break };
            let last = batch.last().map_or(0, Event::revision);
            if (batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES) && e.revision() != last {
                pending = Some(e);
                break;
            }
            bytes += event_bytes(&e);
            batch.push(e);
        }
        let next_seq = {
            let mut hub = shared.hub_mut();
            if hub.apply(&batch, unix_nanos()).is_some() {
                shared.metrics.deltas.inc();
            }
            shared.published(&hub);
            hub.next_seq()
        };
        clock.interval = wake_interval(
            shared.cfg.write_coalesce,
            shared.connections.load(Ordering::Relaxed),
        );
        announce(shared, clock.changed(next_seq, Instant::now()));
    }
    Ok(())
}

/// Count a refused agent under `reason`, tell it why (best effort), and return the message.
async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
    shared: &Shared,
    wr: &mut W,
    reason: &str,
    message: String,
) -> String {
    shared.metrics.refuse(reason);
    let _ = send(
        wr,
        &Msg::Error {
            message: message.clone(),
        },
    )
    .await;
    message
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let s = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(&s, tcp, tls).await {
                        tracing::debug!(%peer, error = %e, "agent connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// TLS, checking the client certificate's names.
async fn secure(
    shared: &Shared,
    tcp: TcpStream,
    acceptor: TlsAcceptor,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    let s = tokio::time::timeout(shared.cfg.handshake_timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let allowed = shared
        .cfg
        .tls
        .as_ref()
        .map_or(&[][..], |t| &t.allowed_client_cns[..]);
    let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
    if !tls::client_name_allowed(cert, allowed) {
        return Err("client certificate not valid for any allowed name".into());
    }
    Ok(s)
}

/// Counts a connection while it streams.
struct Streaming<'a>(&'a Shared);

impl<'a> Streaming<'a> {
    fn new(s: &'a Shared) -> Self {
        let n = s.connections.fetch_add(1, Ordering::Relaxed) + 1;
        s.metrics.connections.set(n as i64);
        Streaming(s)
    }
}

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        let n = self.0.connections.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.metrics.connections.set(n as i64);
    }
}

/// The cutoff reason for an agent whose cursor fell out of the history.
const BEHIND: &str = "fell behind the server's history; reconnect";

/// Why a write to an agent failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFail {
    /// The connection is gone (the agent closed it or it broke).
    Gone,
    /// The write blocked longer than the write timeout: a slow agent.
    Timeout,
}

/// Writes frames as one buffer, within `timeout`; records the write latency.
async fn write_frames<W: AsyncWrite + Unpin>(
    latency: &Histogram,
    w: &mut W,
    frames: &[Arc<[u8]>],
    timeout: Duration,
) -> Result<(), WriteFail> {
    let start = Instant::now();
    let res = tokio::time::timeout(timeout, async {
        if let [one] = frames {
            w.write_all(one).await?;
        } else {
            let mut buf = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
            for f in frames {
                buf.extend_from_slice(f);
            }
            w.write_all(&buf).await?;
        }
        w.flush().await
    })
    .await;
    latency.observe(start.elapsed().as_secs_f64());
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFail::Gone),
        Err(_) => Err(WriteFail::Timeout),
    }
}

async fn send(w: &mut (impl AsyncWrite + Unpin), msg: &Msg) -> std::io::Result<()> {
    w.write_all(&proto::encode(msg)).await?;
    w.flush().await
}

async fn connection(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
) -> Result<(), String> {
    let _ = tcp.set_nodelay(true);
    // After the snapshot, the sweeper writes this agent's deltas (see `sweep`).
    let Some(acceptor) = tls else {
        let (mut rd, mut wr) = tcp.into_split();
        let (name, cursor, _streaming) = open(shared, &mut rd, &mut wr).await?;
        let member = Arc::new(sweep::Member::new(wr, cursor, None));
        let (reader, mut pong_rx) = pongs(rd);
        let res = stream_swept(shared, member, &mut pong_rx, &name).await;
        reader.abort();
        return res;
    };
    let stream = match secure(shared, tcp, acceptor).await {
        Ok(s) => s,
        Err(e) => {
            shared.metrics.refuse("tls");
            return Err(e);
        }
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (name, cursor, _streaming) = open(shared, &mut rd, &mut wr).await?;
    // From here on the agent's rustls connection encrypts what the sweeper writes and
    // decrypts the pongs, under the agent's lock; the socket is used directly.
    let (tcp, conn) = rd.unsplit(wr).into_inner();
    let (rd, wr) = tcp.into_split();
    let member = Arc::new(sweep::Member::new(wr, cursor, Some(conn)));
    let (reader, mut pong_rx) = sweep::tls_pongs(member.clone(), rd);
    let res = stream_swept(shared, member, &mut pong_rx, &name).await;
    reader.abort();
    res
}

/// Reads the agent's pongs into a channel (a task, so no read is ever cut in half).
fn pongs<R: AsyncRead + Unpin + Send + 'static>(
    mut rd: R,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<u64>) {
    let (pong_tx, pong_rx) = mpsc::channel::<u64>(16);
    let reader = tokio::spawn(async move {
        while let Ok(Some(Msg::Pong { id })) = proto::read_msg(&mut rd).await {
            if pong_tx.send(id).await.is_err() {
                break;
            }
        }
    });
    (reader, pong_rx)
}

/// The handshake and the snapshot (or resume): the agent's name, its cursor into the
/// history, and its place in the connection count.
async fn open<'a, R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    shared: &'a Shared,
    rd: &mut R,
    wr: &mut W,
) -> Result<(String, u64, Streaming<'a>), String> {
    let hello = tokio::time::timeout(shared.cfg.handshake_timeout, proto::read_msg(rd))
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| e.to_string())?;
    let (name, resume_from) = match hello {
        Some(Msg::Hello {
            protocol: PROTOCOL,
            name,
            resume_from,
            ..
        }) => (name, resume_from),
        Some(Msg::Hello { protocol, .. }) => {
            let message = format!(
                "protocol version {protocol} is not supported: this server speaks {PROTOCOL}; upgrade the agent or the fan-out server"
            );
            return Err(refuse(shared, wr, "protocol", message).await);
        }
        other => {
            shared.metrics.refuse("protocol");
            return Err(format!("expected a hello, got {other:?}"));
        }
    };
    if shared.connections.load(Ordering::Relaxed) >= shared.cfg.max_clients {
        let message = format!(
            "server full ({} agents): try another fan-out server",
            shared.cfg.max_clients
        );
        return Err(refuse(shared, wr, "capacity", message).await);
    }
    // Before the first complete list of the datastore there is nothing true to send (a
    // snapshot of nothing would leave the agent believing the cluster empty): wait for it a
    // while, then send the agent elsewhere.
    let deadline = Instant::now() + shared.cfg.handshake_timeout;
    while !shared.hub().synced() {
        if Instant::now() >= deadline || stopped(shared) {
            let message =
                "this fan-out server has not read the datastore yet; try again or another server";
            return Err(refuse(shared, wr, "not_synced", message.into()).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let streaming = Streaming::new(shared);
    let plan = shared.hub_mut().plan(resume_from);
    let (start, revision, cursor, snapshot) = match plan {
        Plan::Resume { seq, revision } => (Start::Resume, revision, seq, None),
        Plan::Snapshot(s) => (Start::Snapshot, s.revision, s.seq, Some(s)),
    };
    let welcome = Msg::Welcome {
        protocol: PROTOCOL,
        server_id: shared.server_id.clone(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        backend: shared.backend.clone(),
        start,
        revision,
    };
    send(wr, &welcome).await.map_err(|e| e.to_string())?;
    if let Some(s) = snapshot {
        let _slot = snapshot_slot(shared, wr).await?;
        shared.metrics.snapshot_bytes.set(s.bytes as i64);
        // A snapshot is shared, so a slow reader of it costs no memory: it gets more time per
        // part than a delta write (thousands of agents starting at once share the machine).
        let timeout = shared.cfg.write_timeout * SNAPSHOT_TIMEOUT_FACTOR;
        for f in &s.frames {
            if let Err(why) =
                write_frames(&shared.write_latency, wr, std::slice::from_ref(f), timeout).await
            {
                if why == WriteFail::Timeout {
                    shared.cutoff(Cutoff::WriteTimeout);
                }
                return Err(format!("{name}: snapshot write: {why:?}"));
            }
        }
        shared.metrics.snapshots_sent.inc();
    } else {
        shared.metrics.resumes.inc();
    }
    tracing::debug!(agent = %name, ?start, revision, "agent streaming");
    Ok((name, cursor, streaming))
}

/// Waits for a snapshot slot, pinging the agent meanwhile so it knows the server is alive.
async fn snapshot_slot<'a, W: AsyncWrite + Unpin>(
    shared: &'a Shared,
    wr: &mut W,
) -> Result<tokio::sync::SemaphorePermit<'a>, String> {
    let acquire = shared.snapshot_slots.acquire();
    tokio::pin!(acquire);
    let mut ping = tokio::time::interval(shared.cfg.ping_interval);
    ping.tick().await;
    let mut id = u64::MAX / 2;
    loop {
        tokio::select! {
            p = &mut acquire => return p.map_err(|e| e.to_string()),
            _ = ping.tick() => {
                id += 1;
                send(wr, &Msg::Ping { id }).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// The application-level ping of one agent: one ping outstanding at a time, its round trip
/// observed in `typha_ping_latency`, no pong within the ping timeout cuts the agent off.
#[derive(Debug, Default)]
struct Pinger {
    next_id: u64,
    outstanding: Option<(u64, Instant)>,
}

impl Pinger {
    /// On the ping interval: the ping to send, if none is outstanding.
    fn tick(&mut self, shared: &Shared, name: &str) -> Result<Option<Msg>, String> {
        match self.outstanding {
            Some((_, sent)) if sent.elapsed() > shared.cfg.ping_timeout => {
                shared.cutoff(Cutoff::PingTimeout);
                Err(format!("{name}: no pong in {:?}", shared.cfg.ping_timeout))
            }
            Some(_) => Ok(None),
            None => {
                self.next_id += 1;
                self.outstanding = Some((self.next_id, Instant::now()));
                Ok(Some(Msg::Ping { id: self.next_id }))
            }
        }
    }

    /// A pong arrived (`None`: the agent closed its side).
    fn pong(&mut self, shared: &Shared, id: Option<u64>, name: &str) -> Result<(), String> {
        let Some(id) = id else {
            return Err(format!("{name}: closed the connection"));
        };
        if let Some((want, sent)) = self.outstanding {
            if id == want {
                shared.ping_latency.observe(sent.elapsed().as_secs_f64());
                self.outstanding = None;
            }
        }
        Ok(())
    }
}

fn ping_interval(shared: &Shared) -> tokio::time::Interval {
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.cfg.ping_interval,
        shared.cfg.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping
}

/// Streams deltas to an agent: the sweeper writes them; this task finishes writes the
/// socket did not take, catches the agent up, pings it and cuts it off.
async fn stream_swept(
    shared: &Shared,
    member: Arc<sweep::Member>,
    pong_rx: &mut mpsc::Receiver<u64>,
    name: &str,
) -> Result<(), String> {
    let turn = shared.next_sweeper.fetch_add(1, Ordering::Relaxed);
    let sweeper = &shared.sweepers[turn % shared.sweepers.len()];
    struct Leave<'a>(&'a sweep::Sweeper, Arc<sweep::Member>);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.leave(&self.1);
        }
    }
    let _leave = Leave(sweeper, member.clone());
    let mut stop = shared.stop.subscribe();
    let mut ping = ping_interval(shared);
    let mut pinger = Pinger::default();
    // Joined first, then caught up: an announcement in between finds the agent either way.
    sweeper.join(member.clone());
    let mut res = member.catch_up(shared).await;
    loop {
        match res {
            Ok(()) => {}
            Err(sweep::Catch::Behind) => {
                shared.cutoff(Cutoff::Behind);
                if member
                    .say(&Msg::Cutoff {
                        reason: BEHIND.into(),
                    })
                    .is_ok()
                {
                    let _ = member.catch_up(shared).await;
                }
                return Err(format!("{name}: cut off (behind)"));
            }
            Err(sweep::Catch::Write(why)) => {
                if why == WriteFail::Timeout {
                    shared.cutoff(Cutoff::WriteTimeout);
                }
                return Err(format!("{name}: write: {why:?}"));
            }
        }
        res = tokio::select! {
            _ = member.woken() => member.catch_up(shared).await,
            _ = stop.changed() => {
                let reason = "server stopping".into();
                if member.say(&Msg::Cutoff { reason }).is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), member.catch_up(shared)).await;
                }
                return Ok(());
            }
            _ = ping.tick() => match pinger.tick(shared, name)? {
                Some(ping) => match member.say(&ping) {
                    Ok(()) => Ok(()),
                    Err(_) => Err(sweep::Catch::Write(WriteFail::Gone)),
                },
                None => Ok(()),
            },
            p = pong_rx.recv() => pinger.pong(shared, p, name).map(|()| Ok(()))?,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_interval_grows_with_the_agents_past_the_floor() {
        let ms = Duration::from_millis;
        assert_eq!(wake_interval(ms(10), 0), ms(10));
        assert_eq!(wake_interval(ms(10), 2000), ms(10));
        assert_eq!(wake_interval(ms(10), 5000), ms(25));
        assert_eq!(wake_interval(ms(40), 5000), ms(40));
        assert_eq!(wake_interval(Duration::ZERO, 10), Duration::from_micros(50));
        assert_eq!(wake_interval(ms(10), usize::MAX), WAKE_PER_AGENT * u32::MAX);
    }

    #[test]
    fn wake_clock_announces_at_once_then_once_per_interval() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut c = WakeClock::new(ms(10));
        assert_eq!(
            c.wait(t0, ms(200)),
            ms(200),
            "nothing pending: block as long as allowed"
        );
        // The first change after a quiet spell goes out at once.
        assert_eq!(c.changed(5, t0), Some(5));
        // Changes within the interval wait, and are announced up to the latest one.
        assert_eq!(c.changed(6, t0 + ms(2)), None);
        assert_eq!(c.changed(8, t0 + ms(4)), None);
        assert_eq!(c.wait(t0 + ms(4), ms(200)), ms(6));
        assert_eq!(c.tick(t0 + ms(9)), None);
        assert_eq!(c.tick(t0 + ms(10)), Some(8));
        assert_eq!(c.tick(t0 + ms(30)), None, "announced once");
        // After a quiet spell longer than the interval, at once again.
        assert_eq!(c.changed(9, t0 + ms(40)), Some(9));
        // A zero interval announces every change.
        let mut z = WakeClock::new(Duration::ZERO);
        assert_eq!(z.changed(1, t0), Some(1));
        assert_eq!(z.changed(2, t0), Some(2));
        assert_eq!(z.wait(t0, ms(200)), ms(200));
    }
}
