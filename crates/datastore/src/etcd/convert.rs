//! Translating etcd-client values and errors, and the watch pump.

use etcd_client::{EventType, ResponseHeader, WatchStream};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::keys::Root;
use crate::types::{Event, KeyValue};
use crate::watch::WatchSender;

use super::BACKEND;

/// Map an etcd-client error to ours: connection trouble and server-side timeouts are
/// retryable [`Error::Unavailable`]; a missing lease is [`Error::LeaseNotFound`] (the caller
/// fills in the lease id); "revision compacted" is [`Error::Compacted`] with unknown (0)
/// revisions (the callers that can meet it handle it).
pub(super) fn map_err(op: &'static str, e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    let unavailable = |reason: String| Error::Unavailable {
        backend: BACKEND,
        op,
        reason,
    };
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("lease not found") {
                return Error::LeaseNotFound { op, lease: 0 };
            }
            if msg.contains("required revision has been compacted") {
                return Error::Compacted {
                    requested: 0,
                    compact_revision: 0,
                };
            }
            if msg.contains("future revision") {
                return Error::InvalidArgument {
                    op,
                    reason: msg.to_owned(),
                };
            }
            match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unknown => unavailable(format!("{:?}: {msg}", status.code())),
                Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument {
                    op,
                    reason: msg.to_owned(),
                },
                code => Error::Backend {
                    backend: BACKEND,
                    op,
                    reason: format!("{code:?}: {msg}"),
                },
            }
        }
        E::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            Error::LeaseNotFound { op, lease: 0 }
        }
        E::TransportError(e) => unavailable(format!("transport: {e}")),
        E::IoError(e) => unavailable(format!("i/o: {e}")),
        E::InvalidArgs(reason) => Error::InvalidArgument { op, reason },
        other => Error::Backend {
            backend: BACKEND,
            op,
            reason: other.to_string(),
        },
    }
}

pub(super) fn header_revision(op: &'static str, header: Option<&ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision()).ok_or_else(|| Error::Corrupt {
        backend: BACKEND,
        op,
        detail: "response has no header (no revision)".into(),
    })
}

fn strip(root: &Root, op: &'static str, key: &[u8]) -> Result<String> {
    root.strip(key).ok_or_else(|| Error::Corrupt {
        backend: BACKEND,
        op,
        detail: format!(
            "key {:?} is not valid UTF-8 under root {}",
            String::from_utf8_lossy(key),
            root.as_str()
        ),
    })
}

pub(super) fn to_kv(root: &Root, op: &'static str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: strip(root, op, kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn to_event(root: &Root, ev: &etcd_client::Event) -> Result<Event> {
    const OP: &str = "watch";
    let kv = ev.kv().ok_or_else(|| Error::Corrupt {
        backend: BACKEND,
        op: OP,
        detail: "watch event without a key".into(),
    })?;
    Ok(match ev.event_type() {
        EventType::Put => Event::Put(to_kv(root, OP, kv)?),
        EventType::Delete => Event::Delete {
            key: strip(root, OP, kv.key())?,
            mod_revision: kv.mod_revision(),
        },
    })
}

/// Forward the gRPC watch stream into the blocking channel until the consumer goes away
/// (`stop` fires or the channel closes) or the watch ends with an error.
pub(super) async fn pump(
    mut stream: WatchStream,
    root: Root,
    from: i64,
    tx: WatchSender,
    mut stop: oneshot::Receiver<()>,
) {
    const OP: &str = "watch";
    let mut next = from;
    loop {
        let msg = tokio::select! {
            _ = &mut stop => return,
            msg = stream.message() => msg,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                let _ = tx.send(Err(Error::Unavailable {
                    backend: BACKEND,
                    op: OP,
                    reason: "the server closed the watch stream; watch again from the last seen revision + 1".into(),
                }));
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(map_err(OP, e)));
                return;
            }
        };
        if resp.compact_revision() > 0 {
            let _ = tx.send(Err(Error::Compacted {
                requested: next,
                compact_revision: resp.compact_revision(),
            }));
            return;
        }
        if resp.canceled() {
            let _ = tx.send(Err(Error::Unavailable {
                backend: BACKEND,
                op: OP,
                reason: format!("the server canceled the watch: {}", resp.cancel_reason()),
            }));
            return;
        }
        for ev in resp.events() {
            let item = to_event(&root, ev);
            if let Ok(event) = &item {
                next = event.revision();
            }
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                return;
            }
        }
    }
}
