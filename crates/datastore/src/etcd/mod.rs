//! The etcd v3 backend.
//!
//! The trait is synchronous; this backend owns a small tokio runtime (one worker thread)
//! and blocks on it for each call, with a per-request timeout. Compare-and-swap maps to etcd
//! transactions on `mod_revision`/`create_revision`; watches run on a thread of their own that
//! drives the gRPC watch stream and feeds the blocking [`Watch`].

mod convert;
pub mod process;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};

use crate::error::{Error, Result};
use crate::keys::{check_key, check_revision, prefix_end, Root};
use crate::runtime::OwnedRuntime;
use crate::types::KeyValue;
use crate::watch::{Watch, WATCH_BUFFER};
use crate::Datastore;

use convert::{header_revision, map_err, to_kv};

pub(crate) const BACKEND: &str = "etcd";

/// Keys per page when listing (keeps gRPC messages well below their size limits).
const LIST_PAGE: i64 = 1000;

/// Timeouts of the etcd backend.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// How long to wait for a TCP/HTTP2 connection to an endpoint.
    pub connect_timeout: Duration,
    /// How long one request (get, txn, ...) may take before it fails with a retryable
    /// [`Error::Timeout`].
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A datastore in an etcd v3 cluster.
pub struct EtcdStore {
    rt: Arc<OwnedRuntime>,
    client: Client,
    root: Root,
    endpoints: Vec<String>,
    options: EtcdOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to `endpoints` (e.g. `http://127.0.0.1:2379`), with keys under `root`.
    /// Connecting is lazy: an unreachable cluster shows up as a retryable error on the
    /// first operation (use [`Datastore::health`] to check early).
    pub fn connect(endpoints: &[String], root: &str, options: EtcdOptions) -> Result<Self> {
        let root = Root::new(root)?;
        let location = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(Error::Config {
                reason:
                    "etcd datastore needs at least one endpoint, e.g. \"http://127.0.0.1:2379\""
                        .into(),
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("furynet-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Open {
                backend: BACKEND,
                location: location.clone(),
                reason: format!("cannot start the client runtime: {e}"),
            })?;
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let rt = Arc::new(OwnedRuntime::new(rt));
        let client = rt
            .block_on("open", Client::connect(endpoints, Some(connect_options)))?
            .map_err(|e| Error::Open {
                backend: BACKEND,
                location,
                reason: e.to_string(),
            })?;
        Ok(EtcdStore {
            rt,
            client,
            root,
            endpoints: endpoints.to_vec(),
            options,
        })
    }

    /// Run one request on the runtime, with the request timeout.
    fn call<T, F>(&self, op: &'static str, f: impl FnOnce(Client) -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let timeout = self.options.request_timeout;
        let fut = f(self.client.clone());
        self.rt.block_on(op, async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(|e| map_err(op, e)),
                Err(_) => Err(Error::Timeout {
                    backend: BACKEND,
                    op,
                    after: timeout,
                }),
            }
        })?
    }

    fn kv(&self, op: &'static str, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        to_kv(&self.root, op, kv)
    }

    /// One consistent listing, page by page at the first page's revision.
    fn list_pages(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        const OP: &str = "list";
        let start = self.root.full(prefix);
        let end = prefix_end(&start).unwrap_or_else(|| vec![0]);
        let mut out = Vec::new();
        let mut revision = 0;
        let mut from = start;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                // Later pages read the same snapshot as the first.
                opts = opts.with_revision(revision);
            }
            let page_from = from.clone();
            let resp = self.call(
                OP,
                |mut c| async move { c.get(page_from, Some(opts)).await },
            )?;
            if revision == 0 {
                revision = header_revision(OP, resp.header())?;
            }
            for kv in resp.kvs() {
                out.push(self.kv(OP, kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// The current value of a key read in the failure branch of a transaction.
    fn failure_get(
        &self,
        op: &'static str,
        resp: &etcd_client::TxnResponse,
    ) -> Result<Option<KeyValue>> {
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(get) = r {
                return get.kvs().first().map(|kv| self.kv(op, kv)).transpose();
            }
        }
        Err(Error::Corrupt {
            backend: BACKEND,
            op,
            detail: "transaction failure branch returned no read".into(),
        })
    }
}

impl Datastore for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        const OP: &str = "get";
        check_key(OP, key)?;
        let full = self.root.full(key);
        let resp = self.call(OP, |mut c| async move { c.get(full, None).await })?;
        resp.kvs().first().map(|kv| self.kv(OP, kv)).transpose()
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        // A listing spanning several pages reads them all at the first page's revision; if
        // that revision is compacted meanwhile, start over at a newer one.
        for _ in 0..3 {
            match self.list_pages(prefix) {
                Err(Error::Compacted { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::Unavailable {
            backend: BACKEND,
            op: "list",
            reason: "history was compacted under three listings in a row; retry".into(),
        })
    }

    fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64> {
        const OP: &str = "create";
        check_key(OP, key)?;
        let full = self.root.full(key);
        let put_opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.clone(), value.to_vec(), put_opts)])
            .or_else([TxnOp::get(full, None)]);
        let resp = self
            .call(OP, |mut c| async move { c.txn(txn).await })
            .map_err(|e| match (e, lease) {
                (Error::LeaseNotFound { .. }, Some(l)) => Error::LeaseNotFound { op: OP, lease: l },
                (e, _) => e,
            })?;
        if resp.succeeded() {
            return header_revision(OP, resp.header());
        }
        let mod_revision = self.failure_get(OP, &resp)?.map_or(0, |kv| kv.mod_revision);
        Err(Error::AlreadyExists {
            key: key.to_owned(),
            mod_revision,
        })
    }

    fn update(&self, key: &str, value: &[u8], expected_mod_revision: i64) -> Result<i64> {
        const OP: &str = "update";
        check_key(OP, key)?;
        check_revision(OP, key, expected_mod_revision)?;
        let full = self.root.full(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                full.clone(),
                CompareOp::Equal,
                expected_mod_revision,
            )])
            .and_then([TxnOp::put(
                full.clone(),
                value.to_vec(),
                Some(PutOptions::new().with_ignore_lease()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.call(OP, |mut c| async move { c.txn(txn).await })?;
        if resp.succeeded() {
            return header_revision(OP, resp.header());
        }
        Err(match self.failure_get(OP, &resp)? {
            None => Error::NotFound {
                op: OP,
                key: key.to_owned(),
            },
            Some(kv) => Error::Conflict {
                op: OP,
                key: key.to_owned(),
                expected: expected_mod_revision,
                current: kv.mod_revision,
            },
        })
    }

    fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<i64> {
        const OP: &str = "delete";
        check_key(OP, key)?;
        let full = self.root.full(key);
        let compare = match expected_mod_revision {
            Some(expected) => {
                check_revision(OP, key, expected)?;
                Compare::mod_revision(full.clone(), CompareOp::Equal, expected)
            }
            None => Compare::create_revision(full.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::delete(full.clone(), None)])
            .or_else([TxnOp::get(full, None)]);
        let resp = self.call(OP, |mut c| async move { c.txn(txn).await })?;
        if resp.succeeded() {
            return header_revision(OP, resp.header());
        }
        Err(
            match (self.failure_get(OP, &resp)?, expected_mod_revision) {
                (Some(kv), Some(expected)) => Error::Conflict {
                    op: OP,
                    key: key.to_owned(),
                    expected,
                    current: kv.mod_revision,
                },
                _ => Error::NotFound {
                    op: OP,
                    key: key.to_owned(),
                },
            },
        )
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch> {
        const OP: &str = "watch";
        // Resolve "now" here rather than in etcd, so every change after this call returns
        // is delivered even if the server registers the watch a little later.
        let from = if from_revision <= 0 {
            self.current_revision()? + 1
        } else {
            from_revision
        };
        let start = self.root.full(prefix);
        let end = prefix_end(&start).unwrap_or_else(|| vec![0]);
        let opts = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from);
        let stream = self.call(OP, |mut c| async move { c.watch(start, Some(opts)).await })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(WATCH_BUFFER);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = self.rt.clone();
        let root = self.root.clone();
        std::thread::Builder::new()
            .name("furynet-etcd-watch".into())
            .spawn(move || {
                let pump = convert::pump(stream, root, from, tx, stop_rx);
                // A watch thread never runs inside async code, so this cannot be refused.
                let _ = rt.block_on(OP, pump);
            })
            .map_err(|e| Error::Backend {
                backend: BACKEND,
                op: OP,
                reason: format!("cannot start the watch thread: {e}"),
            })?;
        Ok(Watch::new(BACKEND, rx, move || {
            let _ = stop_tx.send(());
        }))
    }

    fn compact(&self, revision: i64) -> Result<()> {
        const OP: &str = "compact";
        let opts = CompactionOptions::new().with_physical();
        match self.call(
            OP,
            |mut c| async move { c.compact(revision, Some(opts)).await },
        ) {
            Ok(_) => Ok(()),
            // Already compacted at or beyond `revision`: nothing to do.
            Err(Error::Compacted { .. }) => Ok(()),
            Err(Error::InvalidArgument { reason, .. }) => Err(Error::InvalidArgument {
                op: OP,
                reason: format!("revision {revision} is in the future ({reason})"),
            }),
            Err(e) => Err(e),
        }
    }

    fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        const OP: &str = "grant_lease";
        if ttl.is_zero() {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: "lease TTL must be positive".into(),
            });
        }
        // etcd counts whole seconds; round up so a lease never ends early.
        let secs =
            i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        let resp = self.call(OP, |mut c| async move { c.lease_grant(secs, None).await })?;
        Ok(resp.id())
    }

    fn keep_alive(&self, lease: i64) -> Result<()> {
        const OP: &str = "keep_alive";
        // etcd-client's keeper sends one keep-alive and checks its answer (TTL > 0).
        self.call(OP, |mut c| async move {
            c.lease_keep_alive(lease).await.map(|_| ())
        })
        .map_err(|e| match e {
            Error::LeaseNotFound { .. } => Error::LeaseNotFound { op: OP, lease },
            e => e,
        })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        const OP: &str = "revoke_lease";
        self.call(OP, |mut c| async move {
            c.lease_revoke(lease).await.map(|_| ())
        })
        .map_err(|e| match e {
            Error::LeaseNotFound { .. } => Error::LeaseNotFound { op: OP, lease },
            e => e,
        })
    }

    fn current_revision(&self) -> Result<i64> {
        const OP: &str = "current_revision";
        let key = self.root.full("");
        let opts = GetOptions::new().with_count_only().with_limit(1);
        let resp = self.call(OP, |mut c| async move { c.get(key, Some(opts)).await })?;
        header_revision(OP, resp.header())
    }

    fn health(&self) -> Result<()> {
        self.current_revision().map(|_| ())
    }
}
