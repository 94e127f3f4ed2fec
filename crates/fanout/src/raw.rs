//! Connecting to a fan-out server, and a lightweight client for benchmarks.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::proto::{self, Msg, SnapshotAssembler, Start, CAPABILITIES, PROTOCOL};
use crate::tls::Tls;
use crate::Error;

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Buffered: a frame is read as length + payload, and a coalesced write carries many frames;
/// unbuffered, that is three read system calls per frame (measured: it made the simulated
/// agents of `furynet bench fanout` the bottleneck).
pub(crate) type Reader = BufReader<ReadHalf<Box<dyn Stream>>>;

/// Read buffer of a client connection.
const READ_BUFFER: usize = 16 * 1024;
pub(crate) type Writer = WriteHalf<Box<dyn Stream>>;

fn fail(addr: &str, reason: impl std::fmt::Display) -> Error {
    Error::Connect {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
}

/// Connects (and secures) a stream to `addr`, sends the hello and reads the welcome.
pub(crate) async fn open(
    addr: &str,
    tls: Option<&Tls>,
    timeout: Duration,
    name: &str,
    resume_from: Option<i64>,
) -> Result<(Reader, Writer, Start, i64), Error> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| fail(addr, "connect timed out"))?
        .map_err(|e| fail(addr, e))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = match tls {
        Some((connector, server_name)) => Box::new(
            tokio::time::timeout(timeout, connector.connect(server_name.clone(), tcp))
                .await
                .map_err(|_| fail(addr, "TLS handshake timed out"))?
                .map_err(|e| fail(addr, format!("TLS: {e}")))?,
        ),
        None => Box::new(tcp),
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
    let hello = Msg::Hello {
        protocol: PROTOCOL,
        name: name.to_string(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        resume_from,
    };
    wr.write_all(&proto::encode(&hello))
        .await
        .map_err(|e| fail(addr, e))?;
    wr.flush().await.map_err(|e| fail(addr, e))?;
    let welcome = tokio::time::timeout(timeout, proto::read_msg(&mut rd))
        .await
        .map_err(|_| fail(addr, "no welcome in time"))?
        .map_err(|e| fail(addr, e))?;
    match welcome {
        Some(Msg::Welcome {
            protocol: PROTOCOL,
            start,
            revision,
            ..
        }) => Ok((rd, wr, start, revision)),
        Some(Msg::Welcome { protocol, .. }) => Err(fail(
            addr,
            format!("server speaks protocol {protocol}, this client {PROTOCOL}"),
        )),
        Some(Msg::Error { message }) => Err(fail(addr, message)),
        other => Err(fail(addr, format!("expected a welcome, got {other:?}"))),
    }
}

/// What a [`RawClient`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// The whole snapshot arrived (`entries` when decoded).
    Snapshot {
        revision: i64,
        bytes: usize,
        entries: Option<usize>,
    },
    /// A delta frame arrived.
    Deltas {
        revision: i64,
        /// The revision of each change in the frame (a frame can carry several).
        changes: Vec<i64>,
        read_at_unix_nanos: u64,
    },
}

/// A client that keeps no state: it receives the stream, answers pings and reports each
/// snapshot and delta, so one process can stand in for thousands of agents.
#[derive(Debug)]
pub struct RawClient;

impl RawClient {
    /// Streams from `addr` until `stop` turns true (Ok) or the stream ends or fails (Err).
    /// With `decode_snapshot` false, snapshot parts are received but not decompressed. With
    /// `tls`, over TLS (see [`crate::tls::connector`]).
    pub async fn run(
        addr: &str,
        name: &str,
        decode_snapshot: bool,
        tls: Option<&Tls>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        mut on_event: impl FnMut(RawEvent),
    ) -> Result<(), Error> {
        let (mut rd, mut wr, _, _) = open(addr, tls, Duration::from_secs(30), name, None).await?;
        let mut asm = SnapshotAssembler::default();
        let mut snapshot_bytes = 0usize;
        let stopped = stop.wait_for(|s| *s);
        tokio::pin!(stopped);
        loop {
            let msg = tokio::select! {
                biased;
                m = proto::read_msg(&mut rd) => m.map_err(|e| fail(addr, e))?,
                _ = &mut stopped => return Ok(()),
            };
            match msg {
                Some(Msg::Snapshot {
                    revision,
                    part,
                    parts,
                    data,
                }) => {
                    snapshot_bytes += data.len();
                    if decode_snapshot {
                        if let Some((rev, kvs)) = asm
                            .add(revision, part, parts, &data)
                            .map_err(|e| fail(addr, e))?
                        {
                            on_event(RawEvent::Snapshot {
                                revision: rev,
                                bytes: snapshot_bytes,
                                entries: Some(kvs.len()),
                            });
                        }
                    } else if part + 1 == parts {
                        on_event(RawEvent::Snapshot {
                            revision,
                            bytes: snapshot_bytes,
                            entries: None,
                        });
                    }
                }
                Some(Msg::Deltas {
                    revision,
                    read_at_unix_nanos,
                    changes,
                    ..
                }) => on_event(RawEvent::Deltas {
                    revision,
                    changes: changes
                        .iter()
                        .map(|c| match c {
                            proto::Change::Put(kv) => kv.mod_revision,
                            proto::Change::Delete { mod_revision, .. } => *mod_revision,
                        })
                        .collect(),
                    read_at_unix_nanos,
                }),
                Some(Msg::Ping { id }) => {
                    wr.write_all(&proto::encode(&Msg::Pong { id }))
                        .await
                        .map_err(|e| fail(addr, e))?;
                }
                Some(Msg::Cutoff { reason }) => {
                    return Err(fail(addr, format!("cut off: {reason}")))
                }
                Some(Msg::Error { message }) => return Err(fail(addr, message)),
                Some(other) => return Err(fail(addr, format!("unexpected {other:?}"))),
                None => return Err(fail(addr, "the server closed the stream")),
            }
        }
    }
}
