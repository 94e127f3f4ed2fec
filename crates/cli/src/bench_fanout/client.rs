//! A simulated agent on the fan-out server: receives the snapshot and the deltas, answers
//! pings, and records when each change arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_fanout::{RawClient, RawEvent, Tls};

use super::stats::Seen;

/// Streams until `stop`. With `expect` set, this client also decompresses and decodes the
/// snapshot and checks it holds that many objects (the others only receive it: decoding
/// thousands of snapshots in one process would measure the benchmark, not the server).
pub async fn fanout_client(
    addr: SocketAddr,
    expect: Option<usize>,
    changes: usize,
    tls: Option<Arc<Tls>>,
    snapshot_done: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Duration, Seen), String> {
    let start = Instant::now();
    let mut took = None;
    let mut seen = Seen::with_capacity(changes);
    let mut wrong = None;
    let res = RawClient::run(
        &addr.to_string(),
        "bench",
        expect.is_some(),
        tls.as_deref(),
        stop,
        |e| match e {
            RawEvent::Snapshot { entries, .. } => {
                if let (Some(want), Some(got)) = (expect, entries) {
                    if want != got {
                        wrong = Some(format!("snapshot held {got} objects, expected {want}"));
                    }
                }
                took = Some(start.elapsed());
                snapshot_done.fetch_add(1, Ordering::SeqCst);
            }
            RawEvent::Deltas { changes, .. } => {
                let now = Instant::now();
                seen.extend(changes.into_iter().map(|r| (r, now)));
            }
        },
    )
    .await;
    res.map_err(|e| e.to_string())?;
    if let Some(w) = wrong {
        return Err(w);
    }
    Ok((took.ok_or("no snapshot")?, seen))
}
