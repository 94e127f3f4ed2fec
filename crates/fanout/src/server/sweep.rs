//! Every agent's deltas are written by sweeper threads (each with its share of the agents)
//! instead of a task each.
//!
//! When the wake clock announces new frames, a sweeper visits each of its agents in turn
//! and writes what that agent lacks with one non-blocking vectored write of the shared
//! frames. No task is woken and no timer is armed per agent and per change, and every agent is
//! served once per round, in the same order, so a change reaches all of them within one
//! round. An agent whose socket does not take the whole write keeps the rest as its pending
//! bytes (at most one write, as before), is skipped by the sweeper, and its own task finishes
//! the write when the socket drains, catches up, and hands the agent back; a write blocked
//! longer than the write timeout cuts the agent off.
//!
//! Agents on TLS are swept the same way: after the handshake and the snapshot, the agent's
//! rustls connection lives in its [`Member`], under the same lock. The sweeper encrypts the
//! shared frames with it (the one per-agent copy TLS needs) and writes the records with the
//! same non-blocking `sendmsg`; the agent's pong reader ([`tls_pongs`]) reads the socket and
//! decrypts with it. Every byte of the connection is produced under that lock, so records
//! leave in the order rustls made them.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, MsgFlags};
use std::os::fd::AsRawFd;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, Notify};
use tokio_rustls::rustls::ServerConnection;

use super::{stopped, unix_nanos, Shared, WriteFail, MAX_WRITE_BYTES};
use crate::hub::FellBehind;
use crate::proto::{self, Msg};

/// Why an agent can no longer be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// Its cursor fell out of the history: it must resume or re-snapshot.
    Behind,
    /// A write failed: the connection is gone.
    Gone,
}

/// What serving an agent ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    UpToDate,
    /// Bytes are pending; the agent's task finishes them.
    Blocked,
    Fault(Fault),
}

#[derive(Debug, Default)]
struct State {
    /// The next history sequence number this agent needs.
    cursor: u64,
    /// Bytes the socket did not take yet.
    pending: Vec<u8>,
    /// When the pending write started (write latency and timeout count from here).
    since: Option<Instant>,
    fault: Option<Fault>,
    /// The agent's task ended: the sweeper drops it.
    left: bool,
    /// For an agent on TLS: its connection, which encrypts what is written and decrypts
    /// what is read.
    tls: Option<Box<ServerConnection>>,
}

/// Encrypts `plain` with the agent's connection and returns the TLS records to write (with
/// anything the connection had queued before, such as a key update).
fn seal<'a>(
    conn: &mut ServerConnection,
    plain: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    for p in plain {
        conn.writer().write_all(p)?;
    }
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    Ok(out)
}

/// One agent: its socket's write half, its cursor and, on TLS, its connection.
#[derive(Debug)]
pub(super) struct Member {
    io: OwnedWriteHalf,
    state: Mutex<State>,
    /// Wakes the agent's task: bytes are pending or the agent has a fault.
    wake: Notify,
}

/// The frames an agent at some cursor lacks, and when the first was read from the datastore.
type Pending = (Arc<[Arc<[u8]>]>, Option<u64>);

/// Frames per cursor, shared by the agents of a sweep (most have the same cursor) and
/// recomputed when the hub has grown: an agent gets everything up to the newest change when
/// its turn comes, so a change that arrives mid-round still reaches the rest of the round.
#[derive(Default)]
pub(super) struct FrameCache {
    head: u64,
    frames: HashMap<u64, Result<Pending, FellBehind>>,
}

impl FrameCache {
    fn get(&mut self, shared: &Shared, cursor: u64) -> Result<Pending, FellBehind> {
        let head = shared.head.load(Ordering::Acquire);
        if head != self.head {
            self.frames.clear();
            self.head = head;
        }
        self.frames
            .entry(cursor)
            .or_insert_with(|| {
                let hub = shared.hub();
                let frames = hub.frames_from(cursor, 1024, MAX_WRITE_BYTES)?;
                Ok((frames.into(), hub.read_at(cursor)))
            })
            .clone()
    }
}

impl Member {
    /// `tls`: the agent's connection once its handshake and snapshot are done (its own
    /// buffering limit is lifted: what it encrypts is bounded by one write).
    pub(super) fn new(io: OwnedWriteHalf, cursor: u64, tls: Option<ServerConnection>) -> Self {
        let mut st = State {
            cursor,
            ..State::default()
        };
        if let Some(mut conn) = tls {
            conn.set_buffer_limit(None);
            // Whatever the connection still holds goes out first.
            if let Ok(out) = seal(&mut conn, []) {
                if !out.is_empty() {
                    st.pending = out;
                    st.since = Some(Instant::now());
                }
            }
            st.tls = Some(Box::new(conn));
        }
        Member {
            io,
            state: Mutex::new(st),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One non-blocking `sendmsg` straight on the socket (the sweeper's hot path: no vfs
    /// layer, no readiness bookkeeping; a `WouldBlock` hands the rest to the agent's task,
    /// which waits through tokio).
    fn send_now(&self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        let fd = self.io.as_ref().as_raw_fd();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        socket::sendmsg::<()>(fd, slices, &[], flags, None).map_err(std::io::Error::from)
    }

    fn fail(&self, st: &mut State, fault: Fault) -> Served {
        st.fault = Some(fault);
        self.wake.notify_one();
        Served::Fault(fault)
    }

    /// Writes the frames this agent lacks, up to at least sequence `upto`, without blocking.
    pub(super) fn serve(&self, shared: &Shared, cache: &mut FrameCache, upto: u64) -> Served {
        let mut st = self.lock();
        if let Some(f) = st.fault {
            return Served::Fault(f);
        }
        if st.left {
            return Served::Fault(Fault::Gone);
        }
        if !st.pending.is_empty() {
            return Served::Blocked;
        }
        while st.cursor < upto {
            let (frames, read_at) = match cache.get(shared, st.cursor) {
                Ok(f) => f,
                Err(FellBehind) => return self.fail(&mut st, Fault::Behind),
            };
            if frames.is_empty() {
                break;
            }
            let sealed;
            let slices: Vec<IoSlice<'_>> = match st.tls.as_mut() {
                None => frames.iter().map(|f| IoSlice::new(f)).collect(),
                Some(conn) => match seal(conn, frames.iter().map(|f| &f[..])) {
                    Ok(out) => {
                        sealed = out;
                        vec![IoSlice::new(&sealed)]
                    }
                    Err(_) => return self.fail(&mut st, Fault::Gone),
                },
            };
            let total: usize = slices.iter().map(|s| s.len()).sum();
            let start = Instant::now();
            let written = match self.send_now(&slices) {
                Ok(n) => n,
                Err(e) if retry_later(&e) => 0,
                Err(_) => return self.fail(&mut st, Fault::Gone),
            };
            st.cursor += frames.len() as u64;
            if let Some(t) = read_at {
                let age = unix_nanos().saturating_sub(t) as f64 / 1e9;
                shared.metrics.propagation.observe(age);
            }
            if written < total {
                let mut skip = written;
                for s in &slices {
                    let from = skip.min(s.len());
                    st.pending.extend_from_slice(&s[from..]);
                    skip -= from;
                }
                st.since = Some(start);
                shared.metrics.blocked_writes.inc();
                self.wake.notify_one();
                return Served::Blocked;
            }
            shared.write_latency.observe(start.elapsed().as_secs_f64());
        }
        Served::UpToDate
    }

    /// Queues a message after anything pending and writes what the socket takes now.
    pub(super) fn say(&self, msg: &Msg) -> Result<(), Fault> {
        let mut st = self.lock();
        if st.fault == Some(Fault::Gone) {
            return Err(Fault::Gone);
        }
        let mut bytes = proto::encode(msg);
        if let Some(conn) = st.tls.as_mut() {
            match seal(conn, [&bytes[..]]) {
                Ok(out) => bytes = out,
                Err(_) => {
                    self.fail(&mut st, Fault::Gone);
                    return Err(Fault::Gone);
                }
            }
        }
        if st.pending.is_empty() {
            let n = match self.send_now(&[IoSlice::new(&bytes)]) {
                Ok(n) => n,
                Err(e) if retry_later(&e) => 0,
                Err(_) => {
                    self.fail(&mut st, Fault::Gone);
                    return Err(Fault::Gone);
                }
            };
            if n < bytes.len() {
                st.pending.extend_from_slice(&bytes[n..]);
                st.since = Some(Instant::now());
                self.wake.notify_one();
            }
        } else {
            st.pending.extend_from_slice(&bytes);
        }
        Ok(())
    }

    /// Writes the pending bytes as the socket drains, within the write timeout.
    async fn flush(&self, shared: &Shared) -> Result<(), WriteFail> {
        loop {
            let since = {
                let st = self.lock();
                // Behind: nothing more is served (serving reports it), but what is pending
                // (the cutoff message) still goes out.
                if st.fault == Some(Fault::Gone) {
                    return Err(WriteFail::Gone);
                }
                match st.since {
                    Some(t) if !st.pending.is_empty() => t,
                    _ => return Ok(()),
                }
            };
            let deadline = since + shared.cfg.write_timeout;
            match tokio::time::timeout_at(deadline.into(), self.io.writable()).await {
                Err(_) => return Err(WriteFail::Timeout),
                Ok(Err(_)) => return Err(WriteFail::Gone),
                Ok(Ok(())) => {}
            }
            let mut st = self.lock();
            match self.io.try_write(&st.pending) {
                Ok(n) => {
                    st.pending.drain(..n);
                    if st.pending.is_empty() {
                        st.since = None;
                        shared.write_latency.observe(since.elapsed().as_secs_f64());
                    }
                }
                Err(e) if retry_later(&e) => {}
                Err(_) => {
                    st.fault = Some(Fault::Gone);
                    return Err(WriteFail::Gone);
                }
            }
        }
    }

    /// The agent's task: finishes pending bytes and catches up to the newest frame. Ends
    /// with the agent up to date (then the sweeper serves it again), or with why not.
    pub(super) async fn catch_up(&self, shared: &Shared) -> Result<(), Catch> {
        loop {
            self.flush(shared).await.map_err(Catch::Write)?;
            match self.serve(shared, &mut FrameCache::default(), u64::MAX) {
                Served::UpToDate => return Ok(()),
                Served::Blocked => continue,
                Served::Fault(Fault::Behind) => return Err(Catch::Behind),
                Served::Fault(Fault::Gone) => return Err(Catch::Write(WriteFail::Gone)),
            }
        }
    }

    /// Waits until the sweeper (or a ping) leaves work for the agent's task.
    pub(super) async fn woken(&self) {
        self.wake.notified().await
    }

    fn left(&self) -> bool {
        self.lock().left
    }
}

/// Reads an agent on TLS: its socket's bytes go through its connection (under the agent's
/// lock), and the pongs they carry into the channel, which closes when the agent closes its
/// side or breaks the connection. Records the connection has to send back (alerts, key
/// updates) join the agent's pending bytes.
pub(super) fn tls_pongs(
    member: Arc<Member>,
    rd: OwnedReadHalf,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel::<u64>(16);
    let task = tokio::spawn(async move {
        let mut plain = Vec::new();
        loop {
            // What the connection has decrypted already (also what arrived with the
            // handshake), then whole frames out of it.
            let open = member.decrypted(&mut plain);
            while let Some(msg) = next_frame(&mut plain) {
                match msg {
                    Ok(Msg::Pong { id }) => {
                        if tx.send(id).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(()) => return,
                }
            }
            if plain.is_empty() {
                plain = Vec::new();
            }
            if !open {
                return;
            }
            if rd.readable().await.is_err() {
                return;
            }
            // Pongs are small: a small buffer, and none kept between reads (thousands of
            // idle agents would each hold one).
            let mut buf = [0u8; 2048];
            let n = match rd.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if retry_later(&e) => continue,
                Err(_) => return,
            };
            if !member.received(&buf[..n]) {
                return;
            }
        }
    });
    (task, rx)
}

/// The next whole frame at the front of `plain`, removed from it; `Err` for a frame that is
/// too large or does not decode.
fn next_frame(plain: &mut Vec<u8>) -> Option<Result<Msg, ()>> {
    let len: [u8; 4] = plain.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len) as usize;
    if len > proto::MAX_FRAME {
        return Some(Err(()));
    }
    let frame = plain.get(4..4 + len)?;
    let msg = proto::decode(frame).map_err(|_| ());
    plain.drain(..4 + len);
    Some(msg)
}

impl Member {
    /// Moves what the agent's connection has decrypted into `plain`. `false` once the agent
    /// closed its side (or the connection failed).
    fn decrypted(&self, plain: &mut Vec<u8>) -> bool {
        use std::io::Read;
        let mut st = self.lock();
        let Some(conn) = st.tls.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 2048];
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Feeds bytes read from the socket to the agent's connection. `false` if they broke it.
    fn received(&self, mut bytes: &[u8]) -> bool {
        let mut st = self.lock();
        let Some(conn) = st.tls.as_mut() else {
            return false;
        };
        while !bytes.is_empty() {
            match conn.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return false,
            }
            if conn.process_new_packets().is_err() {
                // What it has to say about it (an alert) is not worth waiting for.
                return false;
            }
        }
        let reply = match seal(conn, []) {
            Ok(out) => out,
            Err(_) => return false,
        };
        if !reply.is_empty() {
            st.pending.extend_from_slice(&reply);
            st.since.get_or_insert_with(Instant::now);
            self.wake.notify_one();
        }
        true
    }
}

/// The socket is full (or the call was interrupted): what was not written stays pending.
fn retry_later(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

/// Why an agent's task stopped catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Catch {
    Behind,
    Write(WriteFail),
}

#[derive(Debug, Default)]
struct Agenda {
    /// The newest sequence number announced by the wake clock.
    announced: u64,
    joined: Vec<Arc<Member>>,
    /// An agent left: the sweeper drops its socket now, not at the next change.
    departed: bool,
}

/// The sweeper's inbox: announcements and newly streaming agents.
#[derive(Debug, Default)]
pub(super) struct Sweeper {
    agenda: Mutex<Agenda>,
    cv: Condvar,
}

impl Sweeper {
    fn lock(&self) -> MutexGuard<'_, Agenda> {
        self.agenda.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn announce(&self, seq: u64) {
        self.lock().announced = seq;
        self.cv.notify_one();
    }

    pub(super) fn join(&self, m: Arc<Member>) {
        self.lock().joined.push(m);
    }

    /// Wakes the sweeper (to notice the server stopping).
    pub(super) fn nudge(&self) {
        self.cv.notify_one();
    }

    /// The agent's task is done with it: the sweeper lets go of its socket.
    pub(super) fn leave(&self, m: &Member) {
        m.lock().left = true;
        self.lock().departed = true;
        self.cv.notify_one();
    }
}

/// The sweeper thread: one round over every agent per announcement, until the server stops.
pub(super) fn run(shared: &Shared, index: usize) {
    let inbox = &shared.sweepers[index];
    let mut members: Vec<Arc<Member>> = Vec::new();
    let mut swept = 0u64;
    while !stopped(shared) {
        let (announced, departed) = {
            let mut a = inbox.lock();
            while a.announced == swept && !a.departed && !stopped(shared) {
                a = inbox
                    .cv
                    .wait_timeout(a, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            members.append(&mut a.joined);
            (a.announced, std::mem::take(&mut a.departed))
        };
        if departed {
            members.retain(|m| !m.left());
        }
        if announced != swept {
            let mut cache = FrameCache::default();
            for m in &members {
                m.serve(shared, &mut cache, announced);
            }
            swept = announced;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_whatever_the_reads_cut() {
        let a = proto::encode(&Msg::Pong { id: 7 });
        let b = proto::encode(&Msg::Pong { id: 8 });
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for cut in 0..=stream.len() {
            let mut plain = stream[..cut].to_vec();
            let mut got = Vec::new();
            while let Some(m) = next_frame(&mut plain) {
                got.push(m.expect("decodes"));
            }
            plain.extend_from_slice(&stream[cut..]);
            while let Some(m) = next_frame(&mut plain) {
                got.push(m.expect("decodes"));
            }
            assert_eq!(
                got,
                [Msg::Pong { id: 7 }, Msg::Pong { id: 8 }],
                "cut at {cut}"
            );
            assert!(plain.is_empty());
        }
    }

    #[test]
    fn oversized_or_garbage_frames_are_errors() {
        let mut huge = ((proto::MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        assert_eq!(next_frame(&mut huge), Some(Err(())));
        let mut garbage = vec![0, 0, 0, 2, 0xff, 0xff];
        assert_eq!(next_frame(&mut garbage), Some(Err(())));
        let mut short = vec![0, 0];
        assert_eq!(next_frame(&mut short), None);
    }
}
