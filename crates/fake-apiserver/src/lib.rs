//! A faithful fake Kubernetes API server for tests: a real HTTP/1.1 server on 127.0.0.1 that
//! speaks the Kubernetes REST API the way an etcd-backed kube-apiserver does, so the real
//! client (kube-rs) can be pointed at it through a kubeconfig.
//!
//! What is faithful:
//! - Paths `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced and cluster-scoped,
//!   collections, items, all-namespaces lists and watches, the `status` subresource; discovery
//!   documents at `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>` and `/version`.
//! - One global revision (etcd's), bumped by every write; `metadata.resourceVersion` is its
//!   decimal string. Server-set `uid`, `creationTimestamp`, `generation` (+1 when `spec` changes),
//!   `namespace`. Namespaces `default`, `kube-system`, `kube-public`, `kube-node-lease` exist.
//! - Built-ins: pods, namespaces, nodes, services, configmaps (core v1), networkpolicies,
//!   endpointslices, leases, customresourcedefinitions. Creating a CRD registers its served
//!   versions/plural/kind/scope and sets `status.conditions` (NamesAccepted, Established = True)
//!   and `status.acceptedNames`; deleting it removes its objects and the registration.
//! - Errors are `Status` objects with kube's reasons and codes: 400 BadRequest, 401 Unauthorized,
//!   404 NotFound, 405 MethodNotAllowed, 409 AlreadyExists / Conflict (kube's messages), 410
//!   Expired, 415 UnsupportedMediaType, 422 Invalid, 504 Timeout ("Too large resource version").
//! - Lists: sorted by namespace/name, items without kind/apiVersion for built-ins (custom resources
//!   keep them), label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`), field selectors
//!   `metadata.name` / `metadata.namespace`, `limit` + `continue` pages of one snapshot,
//!   `resourceVersion` + `resourceVersionMatch` (`NotOlderThan`, `Exact` answered from history);
//!   `resourceVersion=0` ignores `limit`, as kube-apiserver's watch cache does.
//! - Watches: chunked `application/json`, one `{"type":..,"object":..}` per line; replay of the
//!   history after `resourceVersion`, or synthetic ADDED of the current state for unset/"0";
//!   `ERROR` 410 Expired for a compacted revision; bookmarks; `timeoutSeconds`; selectors (with
//!   ADDED/DELETED on selector transitions); a watcher whose bounded queue fills is cut off.
//!
//! Where this fake simplifies (documented, never a fake success):
//! - No admission, defaulting, schema validation (CRD `openAPIV3Schema` is not enforced) or
//!   version conversion: custom resources are stored once and served at every served version with
//!   only `apiVersion` rewritten.
//! - Deletion is immediate: finalizers and graceful deletion are ignored; deleting a namespace
//!   deletes its objects at once (no Terminating phase).
//! - `strategic-merge-patch+json` is applied as a JSON merge patch (RFC 7386), so lists are
//!   replaced, not merged by key; JSON patch supports add/remove/replace/test; no server-side apply.
//! - Writes to the main resource of a kind with a status subresource keep the stored status (as
//!   kube does); pods get no defaulted status on create.
//! - History is kept until [`FakeApiServer::compact`], or until it holds 200,000 events, when the
//!   oldest half is compacted away (kube-apiserver compacts etcd every 5 minutes); a watch at a
//!   future revision and a list at one get 504 at once instead of after kube's 3 s wait.
//! - PUT creates a missing object only for leases (their AllowCreateOnUpdate); other kinds 404.
//! - `dryRun` is rejected with 400 (never silently written); `fieldManager`, `fieldValidation`
//!   and `managedFields` are ignored.
//! - `sendInitialEvents` is rejected with 422, as kube 1.28 does without the WatchList gate.
//! - No authorization (RBAC): any request with the bearer token is allowed. HTTP only (no TLS),
//!   JSON only (no protobuf), no deprecated `/api/v1/watch/...` paths.
//! - The status subresource exists for pods, namespaces, nodes, services, CRDs and custom
//!   resources whose CRD version declares `subresources.status`.
//! - A watcher whose queue of 1024 undelivered events is full is cut off at once (kube-apiserver
//!   waits a short budget first); the client re-watches from its last revision, as after a timeout.
//!
//! Usage: `FakeApiServer::start()?`, then `write_kubeconfig(path)` (or `kubeconfig_yaml()`) for
//! kube-rs; `compact`, `fail_next`, `set_bookmark_interval` and `requests` steer and observe it.

mod history;
mod http;
mod resources;
mod selector;
mod status;
mod store;
#[cfg(test)]
mod store_tests;
mod util;
mod watch;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http::{lock, Failure, Shared};
use crate::store::State;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "binding the fake API server to 127.0.0.1:0 failed: {0}; is the loopback interface up?"
    )]
    Bind(#[source] std::io::Error),
    #[error("building the fake API server's tokio runtime failed: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("spawning the fake API server's thread failed: {0}")]
    Thread(#[source] std::io::Error),
}

/// One request as the server answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Raw query string (percent-encoded), empty when none.
    pub query: String,
    pub status: u16,
}

/// The running fake API server; dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Bind 127.0.0.1:0 and serve on an own thread with its own tokio runtime.
    pub fn start() -> Result<FakeApiServer, Error> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::Bind)?;
        listener.set_nonblocking(true).map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let s = util::seed();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            token: format!("fake-{:016x}{:016x}", s, s.rotate_left(29) ^ 0x5bd1_e995),
            bookmark_ms: AtomicU64::new(1000),
            failures: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-apiserver-rt")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "fake API server: adopting the listener failed");
                            return;
                        }
                    };
                    tokio::select! {
                        r = axum::serve(listener, app) => {
                            if let Err(e) = r {
                                tracing::error!(error = %e, "fake API server stopped serving");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(Error::Thread)?;
        tracing::info!(%addr, "fake Kubernetes API server started");
        Ok(FakeApiServer {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig (cluster `fake` at [`url`](Self::url), user token, current context `fake`,
    /// namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n    token: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\npreferences: {{}}\n",
            self.url(),
            self.token()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A kube-rs client for this server through its kubeconfig, without kube's default
    /// retries of 429/503/504 (which would hide injected failures and wait for minutes).
    /// Call it inside a tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, String> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let kc = Kubeconfig::from_yaml(&self.kubeconfig_yaml()).map_err(|e| e.to_string())?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        cfg.default_retry = false;
        kube::Client::try_from(cfg).map_err(|e| e.to_string())
    }

    /// The latest revision (the resourceVersion of the last write).
    pub fn current_revision(&self) -> i64 {
        lock(&self.shared.state).rev
    }

    /// Forget history below `revision` (etcd compaction): Exact lists and watches from older
    /// revisions get 410 Expired.
    pub fn compact(&self, revision: i64) {
        lock(&self.shared.state).compact(revision);
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 1 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.shared.bookmark_ms.store(ms, Ordering::Relaxed);
    }

    /// Make the next `count` requests whose path contains `path_contains` fail with a `Status` of
    /// code `status` (429 carries `Retry-After: 1`).
    pub fn fail_next(&self, path_contains: &str, status: u16, count: usize) {
        lock(&self.shared.failures).push(Failure {
            path: path_contains.to_string(),
            status,
            count,
        });
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
