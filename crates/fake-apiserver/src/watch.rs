//! Watches: replay from history (or synthetic ADDED of the current state), then live events
//! through a bounded per-watcher channel, bookmarks, `timeoutSeconds`, 410 Expired.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::http::{filter_of, lock, Shared, Target};
use crate::status::ApiError;
use crate::store::{event_line, State, Watcher};
use crate::util;

/// Events a watcher may have queued before it counts as too slow and is cut off.
const WATCHER_QUEUE: usize = 1024;

fn streaming(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Start a watch (called with the state locked, so nothing is missed between replay and live).
pub(crate) fn start(
    shared: Arc<Shared>,
    st: &mut State,
    t: &Target,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let filter = filter_of(t, q)?;
    if matches!(
        q.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    ) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        ));
    }
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0);
    let rv = q
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty() && *s != "0");
    let render = |v: &Value| util::render(&t.def, &t.version, v, true);
    let mut initial = Vec::new();
    let start_rev = match rv {
        None => {
            for obj in st
                .list_at(&t.def.id(), None)
                .iter()
                .filter(|o| filter.matches(o))
            {
                initial.push(event_line("ADDED", &render(obj)));
            }
            st.rev
        }
        Some(s) => {
            let x = s
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{s}\"")))?;
            if x > st.rev {
                return Err(ApiError::too_large_rv(x, st.rev));
            }
            if st.too_old(x) {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {x} ({})", st.compacted),
                );
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(event_line("ERROR", &status.to_status()));
                return Ok(streaming(rx));
            }
            for ev in st.history.iter().filter(|e| e.rev > x) {
                if let Some(ty) = filter.translate(ev) {
                    initial.push(event_line(ty.name(), &render(&ev.object)));
                }
            }
            st.rev
        }
    };
    let (live_tx, live_rx) = mpsc::channel(WATCHER_QUEUE);
    let id = st.next_watcher;
    st.next_watcher += 1;
    st.watchers.push(Watcher {
        id,
        filter,
        def: t.def.clone(),
        version: t.version.clone(),
        tx: live_tx,
    });
    let (out_tx, out_rx) = mpsc::channel(16);
    let bookmark_obj = json!({"kind": t.def.kind, "apiVersion": t.def.api_version(&t.version)});
    tokio::spawn(pump(
        shared,
        id,
        initial,
        live_rx,
        out_tx,
        start_rev,
        bookmarks.then_some(bookmark_obj),
        timeout,
    ));
    Ok(streaming(out_rx))
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    shared: Arc<Shared>,
    id: u64,
    initial: Vec<Bytes>,
    mut live: mpsc::Receiver<(i64, Bytes)>,
    out: mpsc::Sender<Bytes>,
    start_rev: i64,
    bookmark: Option<Value>,
    timeout: Option<u64>,
) {
    let far = Duration::from_secs(86_400 * 365);
    let deadline = Instant::now() + timeout.map(Duration::from_secs).unwrap_or(far);
    let interval = || Duration::from_millis(shared.bookmark_ms.load(Ordering::Relaxed).max(1));
    let mut next_bookmark = Instant::now() + interval();
    let mut last_rev = start_rev;
    let mut ok = true;
    for line in initial {
        if out.send(line).await.is_err() {
            ok = false;
            break;
        }
    }
    while ok {
        tokio::select! {
            m = live.recv() => match m {
                Some((rev, line)) => {
                    last_rev = last_rev.max(rev);
                    ok = out.send(line).await.is_ok();
                }
                // Dropped as too slow (or the server stops): end the stream, as kube-apiserver does.
                None => break,
            },
            _ = sleep_until(next_bookmark), if bookmark.is_some() => {
                next_bookmark = Instant::now() + interval();
                {
                    // Every event up to the current revision is sent under the state lock, so an
                    // empty queue means this watcher has seen all of them.
                    let st = lock(&shared.state);
                    if live.is_empty() {
                        last_rev = last_rev.max(st.rev);
                    }
                }
                let mut obj = bookmark.clone().unwrap_or(Value::Null);
                util::set_meta(&mut obj, "resourceVersion", Value::String(last_rev.to_string()));
                ok = out.send(event_line("BOOKMARK", &obj)).await.is_ok();
            }
            _ = sleep_until(deadline) => break,
            _ = out.closed() => break,
        }
    }
    lock(&shared.state).watchers.retain(|w| w.id != id);
}
