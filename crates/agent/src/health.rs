//! The agent's liveness and readiness, shared between the loop and the HTTP endpoints:
//! `/healthz` (the loop is alive: it ticked recently) and `/readyz` (the kernel is programmed
//! and in sync with the datastore).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// How long the loop may go without ticking before `/healthz` fails.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(30);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Shared health state.
#[derive(Debug, Default)]
pub struct Health {
    last_tick_ms: AtomicU64,
    in_sync: AtomicBool,
    revision: AtomicI64,
    reason: Mutex<String>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        let h = Arc::new(Health::default());
        h.tick();
        if let Ok(mut r) = h.reason.lock() {
            *r = "starting: no complete sync yet".into();
        }
        h
    }

    /// The loop is alive.
    pub fn tick(&self) {
        self.last_tick_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn set_in_sync(&self, revision: i64) {
        self.revision.store(revision, Ordering::Relaxed);
        self.in_sync.store(true, Ordering::Relaxed);
        if let Ok(mut r) = self.reason.lock() {
            r.clear();
        }
    }

    pub fn set_not_in_sync(&self, reason: impl Into<String>) {
        self.in_sync.store(false, Ordering::Relaxed);
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.into();
        }
    }

    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Relaxed)
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Relaxed)
    }

    pub fn live(&self) -> bool {
        now_ms().saturating_sub(self.last_tick_ms.load(Ordering::Relaxed))
            < LIVENESS_WINDOW.as_millis() as u64
    }

    /// `/healthz`: 200 while the loop ticks.
    pub fn healthz(&self) -> (StatusCode, String) {
        if self.live() {
            (StatusCode::OK, "ok\n".into())
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the agent loop has not ticked for {LIVENESS_WINDOW:?}\n"),
            )
        }
    }

    /// `/readyz`: 200 when programmed and in sync, 503 with the reason otherwise.
    pub fn readyz(&self) -> (StatusCode, String) {
        if self.in_sync() && self.live() {
            (
                StatusCode::OK,
                format!("in sync at revision {}\n", self.revision()),
            )
        } else {
            let reason = self.reason.lock().map(|r| r.clone()).unwrap_or_default();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` (the registry, OpenMetrics text) on `addr`
/// from a background thread. Binding happens before this returns, so a bad or busy address is
/// reported to the caller. Returns the bound address.
pub fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Arc<prometheus_client::registry::Registry>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            rt.block_on(async move {
                let h1 = health.clone();
                let app = Router::new()
                    .route("/healthz", get(move || async move { h1.healthz() }))
                    .route("/readyz", get(move || async move { health.readyz() }))
                    .route(
                        "/metrics",
                        get(move || async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                crate::metrics::encode(&registry),
                            )
                        }),
                    );
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(error = %e, "health server stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "health listener"),
                }
            });
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn endpoints_follow_the_state() {
        let h = Health::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let m = crate::metrics::Metrics::register(&mut registry);
        m.felix_log_errors.inc();
        let registry = Arc::new(registry);
        let addr = serve("127.0.0.1:0".parse().unwrap(), h.clone(), registry.clone()).unwrap();
        let metrics = get(addr, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("\nfelix_log_errors 1\n"), "{metrics}");
        assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
        let r = get(addr, "/readyz");
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("no complete sync yet"), "{r}");
        h.set_in_sync(42);
        let r = get(addr, "/readyz");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("revision 42"),
            "{r}"
        );
        h.set_not_in_sync("nftables: boom");
        assert!(get(addr, "/readyz").contains("nftables: boom"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        // A busy address is reported, not swallowed.
        assert!(serve(addr, h, registry).is_err());
    }
}
