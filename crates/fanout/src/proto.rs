//! The wire protocol: length-prefixed frames, each one postcard-encoded [`Msg`].
//!
//! A frame is a 4-byte big-endian payload length followed by the payload. Frames are built
//! once by the server and the same bytes are written to every client (deltas, snapshot
//! parts), so nothing here is per client. The snapshot is the postcard encoding of every
//! entry, deflate-compressed, cut into parts of at most [`SNAPSHOT_PART`] bytes.

use std::io::{Read, Write};
use std::sync::Arc;

use furynet_datastore::{Event, KeyValue};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version this build speaks.
pub const PROTOCOL: u32 = 1;
/// Frames larger than this are refused (a snapshot is sent in parts well below it).
pub const MAX_FRAME: usize = 16 << 20;
/// Compressed snapshot bytes per `Snapshot` frame.
pub const SNAPSHOT_PART: usize = 1 << 20;
/// Capabilities this build offers.
pub const CAPABILITIES: [&str; 2] = ["snapshot-deflate", "resume"];

/// What can go wrong reading or decoding frames.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("undecodable snapshot: {0}")]
    Snapshot(String),
}

/// One stored entry on the wire (a [`KeyValue`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    /// As bytes, not a sequence of `u8` (same postcard encoding; decoding a sequence goes byte
    /// by byte and was the simulated agents' main cost in `furynet bench fanout`).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: Option<i64>,
}

impl From<&KeyValue> for Kv {
    fn from(kv: &KeyValue) -> Self {
        Kv {
            key: kv.key.clone(),
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

impl From<Kv> for KeyValue {
    fn from(kv: Kv) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

/// One change (a datastore [`Event`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

impl From<&Event> for Change {
    fn from(e: &Event) -> Self {
        match e {
            Event::Put(kv) => Change::Put(kv.into()),
            Event::Delete { key, mod_revision } => Change::Delete {
                key: key.clone(),
                mod_revision: *mod_revision,
            },
        }
    }
}

impl From<Change> for Event {
    fn from(c: Change) -> Self {
        match c {
            Change::Put(kv) => Event::Put(kv.into()),
            Change::Delete { key, mod_revision } => Event::Delete { key, mod_revision },
        }
    }
}

/// How the server starts a client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// A full snapshot follows, then deltas after its revision.
    Snapshot,
    /// Only the deltas after the client's `resume_from` follow.
    Resume,
}

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// Client → server, first frame.
    Hello {
        protocol: u32,
        /// The client's name (its node), for logs.
        name: String,
        capabilities: Vec<String>,
        /// The last revision the client holds completely, if it holds a state.
        resume_from: Option<i64>,
    },
    /// Server → client, answer to `Hello`.
    Welcome {
        protocol: u32,
        server_id: String,
        capabilities: Vec<String>,
        /// The datastore backend the server reads.
        backend: String,
        start: Start,
        /// The snapshot's revision (`Snapshot`) or the client's `resume_from` (`Resume`).
        revision: i64,
    },
    /// Part `part` of `parts` of the compressed snapshot at `revision`.
    Snapshot {
        revision: i64,
        part: u32,
        parts: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Changes that took the state from revision `from` to `revision`.
    Deltas {
        from: i64,
        revision: i64,
        /// When the server read them from the datastore (Unix time, nanoseconds).
        read_at_unix_nanos: u64,
        changes: Vec<Change>,
    },
    Ping {
        id: u64,
    },
    Pong {
        id: u64,
    },
    /// The server ends the stream (the client fell behind, the server stops): reconnect.
    Cutoff {
        reason: String,
    },
    /// The server refuses the client (version, capacity): try another server.
    Error {
        message: String,
    },
}

/// `msg` as one frame: length prefix + payload.
pub fn encode(msg: &Msg) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail (postcard only fails on writers and
    // unsupported types, and `Msg` has none).
    let payload = postcard::to_stdvec(msg).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Decodes one frame's payload.
pub fn decode(payload: &[u8]) -> Result<Msg, ProtoError> {
    postcard::from_bytes(payload).map_err(|e| ProtoError::Decode(e.to_string()))
}

/// Reads one frame. `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Msg>, ProtoError> {
    let mut len = [0u8; 4];
    // End of stream before a frame is a clean end; inside one it is an error.
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    decode(&payload).map(Some)
}

/// The snapshot of `entries` (in key order) at `revision`, as ready-to-send frames.
pub fn snapshot_frames<'a>(
    revision: i64,
    entries: impl Iterator<Item = &'a KeyValue>,
) -> Vec<Arc<[u8]>> {
    let kvs: Vec<Kv> = entries.map(Kv::from).collect();
    let raw = postcard::to_stdvec(&kvs).unwrap_or_default();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(&raw);
    let packed = z.finish().unwrap_or_default();
    let chunks: Vec<&[u8]> = if packed.is_empty() {
        vec![&[]]
    } else {
        packed.chunks(SNAPSHOT_PART).collect()
    };
    let parts = chunks.len() as u32;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Arc::from(encode(&Msg::Snapshot {
                revision,
                part: i as u32,
                parts,
                data: c.to_vec(),
            }))
        })
        .collect()
}

/// Collects snapshot parts and decodes them once all have arrived.
#[derive(Debug, Default)]
pub struct SnapshotAssembler {
    revision: i64,
    parts: u32,
    next: u32,
    data: Vec<u8>,
}

impl SnapshotAssembler {
    /// Adds a part; returns the entries when it was the last one.
    pub fn add(
        &mut self,
        revision: i64,
        part: u32,
        parts: u32,
        data: &[u8],
    ) -> Result<Option<(i64, Vec<KeyValue>)>, ProtoError> {
        if part == 0 {
            *self = SnapshotAssembler {
                revision,
                parts,
                next: 0,
                data: Vec::new(),
            };
        }
        if part != self.next || revision != self.revision || parts != self.parts || parts == 0 {
            return Err(ProtoError::Snapshot(format!(
                "part {part}/{parts} at revision {revision} out of order (expected {}/{} at {})",
                self.next, self.parts, self.revision
            )));
        }
        if self.data.len() + data.len() > 64 * MAX_FRAME {
            return Err(ProtoError::Snapshot("snapshot too large".into()));
        }
        self.data.extend_from_slice(data);
        self.next += 1;
        if self.next < self.parts {
            return Ok(None);
        }
        let mut raw = Vec::new();
        flate2::read::DeflateDecoder::new(&self.data[..])
            .take(1 << 34)
            .read_to_end(&mut raw)
            .map_err(|e| ProtoError::Snapshot(e.to_string()))?;
        let kvs: Vec<Kv> =
            postcard::from_bytes(&raw).map_err(|e| ProtoError::Snapshot(e.to_string()))?;
        self.data = Vec::new();
        Ok(Some((
            self.revision,
            kvs.into_iter().map(Into::into).collect(),
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// Values as bytes are the same wire format as the earlier sequence of `u8`: protocol 1
    /// peers of either build understand each other.
    #[test]
    fn byte_values_keep_the_wire_format() {
        #[derive(Serialize)]
        struct SeqKv {
            key: String,
            value: Vec<u8>,
            create_revision: i64,
            mod_revision: i64,
            lease: Option<i64>,
        }
        let old = SeqKv {
            key: "k".into(),
            value: vec![0, 1, 200, 255],
            create_revision: 3,
            mod_revision: 4,
            lease: Some(9),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        let new: Kv = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(new.value, old.value);
        assert_eq!(postcard::to_stdvec(&new).unwrap(), bytes);
    }

    fn kv(k: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: format!("value of {k}").into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            lease: (rev % 2 == 0).then_some(7),
        }
    }

    async fn roundtrip(frame: &[u8]) -> Result<Option<Msg>, ProtoError> {
        let mut r = frame;
        read_msg(&mut r).await
    }

    #[tokio::test]
    async fn every_message_round_trips() {
        let msgs = vec![
            Msg::Hello {
                protocol: PROTOCOL,
                name: "node-1".into(),
                capabilities: vec!["resume".into()],
                resume_from: Some(42),
            },
            Msg::Welcome {
                protocol: PROTOCOL,
                server_id: "s".into(),
                capabilities: vec![],
                backend: "etcd".into(),
                start: Start::Resume,
                revision: 42,
            },
            Msg::Deltas {
                from: 41,
                revision: 43,
                read_at_unix_nanos: 5,
                changes: vec![
                    Change::Put((&kv("a", 42)).into()),
                    Change::Delete {
                        key: "b".into(),
                        mod_revision: 43,
                    },
                ],
            },
            Msg::Ping { id: 9 },
            Msg::Pong { id: 9 },
            Msg::Cutoff { reason: "r".into() },
            Msg::Error {
                message: "m".into(),
            },
        ];
        for m in msgs {
            assert_eq!(roundtrip(&encode(&m)).await.unwrap(), Some(m));
        }
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        // Empty stream: clean end.
        assert!(roundtrip(&[]).await.unwrap().is_none());
        // Truncated length, truncated payload.
        assert!(roundtrip(&[0, 0]).await.is_err());
        let mut f = encode(&Msg::Ping { id: 1 });
        f.pop();
        assert!(roundtrip(&f).await.is_err());
        // Oversized.
        let big = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            roundtrip(&big).await,
            Err(ProtoError::TooLarge(_))
        ));
        // Garbage payload.
        let mut g = 3u32.to_be_bytes().to_vec();
        g.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(roundtrip(&g).await, Err(ProtoError::Decode(_))));
    }

    #[tokio::test]
    async fn snapshot_in_parts_round_trips() {
        // Incompressible values so the snapshot needs several parts.
        let mut x: u64 = 1;
        let entries: Vec<KeyValue> = (0..3000)
            .map(|i| {
                let value = (0..800)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                KeyValue {
                    value,
                    ..kv(&format!("k{i:05}"), i + 1)
                }
            })
            .collect();
        let frames = snapshot_frames(3000, entries.iter());
        assert!(frames.len() >= 2, "{} parts", frames.len());
        let mut asm = SnapshotAssembler::default();
        let mut out = None;
        for f in &frames {
            let Some(Msg::Snapshot {
                revision,
                part,
                parts,
                data,
            }) = roundtrip(f).await.unwrap()
            else {
                panic!("not a snapshot part")
            };
            if let Some(done) = asm.add(revision, part, parts, &data).unwrap() {
                out = Some(done);
            }
        }
        let (rev, got) = out.unwrap();
        assert_eq!(rev, 3000);
        assert_eq!(got, entries);
        // An empty state is one empty part.
        let empty = snapshot_frames(7, [].iter());
        assert_eq!(empty.len(), 1);
        // Parts out of order are refused.
        let mut asm = SnapshotAssembler::default();
        assert!(asm.add(5, 1, 2, b"x").is_err());
    }
}
