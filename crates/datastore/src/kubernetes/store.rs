//! `KubeStore`: the [`Datastore`] trait over the Kubernetes API (kube-rs).
//!
//! Revisions are the API server's resourceVersions, which an etcd-backed API server takes
//! from etcd's store-wide revision (see [`super::status::parse_revision`]). So:
//! - `get` is a GET; `list` lists the first resource (a consistent read) and every other
//!   resource the prefix touches at exactly that resourceVersion (`resourceVersionMatch=Exact`),
//!   so the result is one snapshot;
//! - `create` is a POST, `update` a PUT carrying the expected resourceVersion, `delete` a DELETE
//!   with a resourceVersion precondition (409 → [`Error::Conflict`]);
//! - `watch` is one Kubernetes watch per resource, with bookmarks, re-opened from the last seen
//!   resourceVersion when the server ends it; `410 Gone` becomes [`Error::Compacted`];
//! - leases are `coordination.k8s.io/v1` Lease objects; a key's lease is a label; every store
//!   runs a sweeper that deletes expired leases and their keys (Kubernetes has no TTLs).
//!
//! Failed requests are retried with capped exponential backoff when retrying is safe (reads;
//! 429/503 for writes), each attempt bounded by the request timeout.

use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    VersionMatch, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::codec::{self, LEASE_LABEL};
use super::names::{object_name, Resource};
use super::status::{backoff, classify, read_only, Retry, TokenBucket, BACKEND};
use crate::error::{Error, Result};
use crate::keys::{check_key, check_revision, DEFAULT_ROOT};
use crate::runtime::OwnedRuntime;
use crate::types::{Event, KeyValue};
use crate::watch::{Watch, WATCH_BUFFER};
use crate::Datastore;

/// Label on the Lease objects furynet manages.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "furynet");
/// Objects per page when listing.
const LIST_PAGE: u32 = 500;
/// Attempts of one request (first try included) before its error is returned.
const MAX_ATTEMPTS: u32 = 6;

/// Options of the kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// A kubeconfig file; `None` infers the config as kubectl does (in-cluster service
    /// account, then `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the Lease objects behind datastore leases.
    pub lease_namespace: String,
    /// How long one request attempt may take.
    pub request_timeout: Duration,
    /// How often this store looks for expired leases.
    pub sweep_interval: Duration,
    /// How long a watch over several resources holds an event back waiting for the other
    /// resources' streams to pass its revision (they are separate HTTP streams).
    pub merge_hold: Duration,
    /// Client-side rate limit: sustained requests per second (watch streams excluded).
    pub qps: f64,
    /// Client-side rate limit: requests allowed at once above `qps`.
    pub burst: u32,
}

impl KubeOptions {
    /// The defaults, with the config read from the kubeconfig file `path`.
    pub fn with_kubeconfig(path: impl Into<PathBuf>) -> Self {
        KubeOptions {
            kubeconfig: Some(path.into()),
            ..KubeOptions::default()
        }
    }
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            kubeconfig: None,
            lease_namespace: "kube-system".into(),
            request_timeout: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(10),
            merge_hold: Duration::from_millis(50),
            qps: 50.0,
            burst: 100,
        }
    }
}

struct Inner {
    client: Client,
    options: KubeOptions,
    limiter: std::sync::Mutex<TokenBucket>,
}

/// A datastore in the Kubernetes API.
pub struct KubeStore {
    inner: Arc<Inner>,
    runtime: Arc<OwnedRuntime>,
    stop_sweeper: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("kubeconfig", &self.inner.options.kubeconfig)
            .field("lease_namespace", &self.inner.options.lease_namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_sweeper.take() {
            let _ = stop.send(());
        }
    }
}

fn unavailable(op: &'static str, reason: impl Into<String>) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        op,
        reason: reason.into(),
    }
}

/// Map a final request error to a datastore error (404/409 are handled by callers first).
fn map_err(op: &'static str, what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) => {
            let reason = format!("{what}: {} ({} {})", s.message, s.code, s.reason);
            match s.code {
                404 if s.details.as_ref().is_some_and(|d| d.group == codec::GROUP) || s.message.contains("could not find the requested resource") => Error::Config {
                    reason: format!(
                        "{what}: the furynet CRDs are not installed in this cluster ({}); install them with `kubectl apply -k deploy/crds`",
                        s.message
                    ),
                },
                400 | 422 => Error::InvalidArgument { op, reason },
                401 | 403 => Error::Backend {
                    backend: BACKEND,
                    op,
                    reason: format!("{reason}; check the credentials and RBAC of the kubeconfig or service account"),
                },
                408 | 429 | 500..=599 => unavailable(op, reason),
                _ => Error::Backend {
                    backend: BACKEND,
                    op,
                    reason,
                },
            }
        }
        other => unavailable(op, format!("{what}: {other}")),
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl Inner {
    fn api(&self, r: Resource) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &codec::api_resource(r))
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.options.lease_namespace)
    }

    /// Run one request with timeout and retries. `idempotent`: repeating it is always safe.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        idempotent: bool,
        mut f: F,
    ) -> std::result::Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            let wait = self
                .limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let res = match tokio::time::timeout(self.options.request_timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(kube::Error::Service(
                    format!("{op}: no answer within {:?}", self.options.request_timeout).into(),
                )),
            };
            let err = match res {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            let retry = match api_code(&err) {
                Some(code) => classify(code, idempotent, None, attempt - 1),
                // Transport errors: the request may or may not have been applied.
                None if idempotent => Retry::After(backoff(attempt - 1)),
                None => Retry::Never,
            };
            match retry {
                Retry::After(d) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(op, attempt, error = %err, "kubernetes request failed; retrying");
                    tokio::time::sleep(d).await;
                }
                _ => return Err(err),
            }
        }
    }

    /// The object `name` of `r`; for namespaced core kinds `name` is `namespace/name`.
    async fn get_obj(&self, r: Resource, name: &str) -> Result<Option<Value>> {
        let (api, name) = match name.split_once('/') {
            Some((ns, n)) if codec::namespaced(r) => (
                Api::namespaced_with(self.client.clone(), ns, &codec::api_resource(r)),
                n,
            ),
            _ => (self.api(r), name),
        };
        match self.call("get", true, || api.get(name)).await {
            Ok(o) => Ok(Some(to_value(o)?)),
            Err(e) if api_code(&e) == Some(404) && !is_missing_kind(&e) => Ok(None),
            Err(e) => Err(map_err(
                "get",
                &format!("get {} {name}", codec::resource_name(r)),
                e,
            )),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let r = Resource::of_key(key);
        let name = if codec::is_custom(r) {
            object_name(r, key)
        } else {
            // Core objects are named by their key: `<prefix>[<namespace>/]<name>`.
            let rest = r
                .prefix()
                .and_then(|p| key.strip_prefix(p))
                .unwrap_or_default();
            let parts = rest.split('/').count();
            let valid = if codec::namespaced(r) {
                parts == 2
            } else {
                parts == 1
            };
            if !valid
                || rest
                    .split('/')
                    .any(|p| !super::names::is_dns1123_subdomain(p))
            {
                return Ok(None);
            }
            rest.to_string()
        };
        let Some(obj) = self.get_obj(r, &name).await? else {
            return Ok(None);
        };
        Ok(codec::decode(r, &obj)?.filter(|kv| kv.key == key))
    }

    /// Every object of `r`, at `at` exactly (or a fresh consistent read), and the list revision.
    async fn list_resource(&self, r: Resource, at: Option<i64>) -> Result<(Vec<Value>, i64)> {
        let api = self.api(r);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = ListParams::default().limit(LIST_PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            } else if let Some(rev) = at {
                lp.resource_version = Some(rev.to_string());
                lp.version_match = Some(VersionMatch::Exact);
            }
            let page =
                self.call("list", true, || api.list(&lp))
                    .await
                    .map_err(|e| match api_code(&e) {
                        Some(410) => Error::Unavailable {
                            backend: BACKEND,
                            op: "list",
                            reason: format!(
                                "list of {} at revision {at:?} expired; list again",
                                codec::resource_name(r)
                            ),
                        },
                        _ => map_err("list", &format!("list {}", codec::resource_name(r)), e),
                    })?;
            let rev = super::status::parse_revision(
                "list",
                page.metadata.resource_version.as_deref().unwrap_or(""),
            )?;
            for item in page.items {
                out.push(to_value(item)?);
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok((out, at.unwrap_or(rev)));
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let mut revision = None;
        let mut kvs = Vec::new();
        for r in Resource::for_prefix(prefix) {
            let (objs, rev) = self.list_resource(r, revision).await?;
            revision = Some(rev);
            for o in objs {
                if let Some(kv) = codec::decode(r, &o)? {
                    if kv.key.starts_with(prefix) {
                        kvs.push(kv);
                    }
                }
            }
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((kvs, revision.unwrap_or(0)))
    }

    async fn current_revision(&self) -> Result<i64> {
        let api = self.api(Resource::Entries);
        let lp = ListParams::default().limit(1);
        let page = self
            .call("current_revision", true, || api.list_metadata(&lp))
            .await
            .map_err(|e| {
                map_err(
                    "current_revision",
                    "list datastoreentries.crd.furynet.io",
                    e,
                )
            })?;
        super::status::parse_revision(
            "current_revision",
            page.metadata.resource_version.as_deref().unwrap_or(""),
        )
    }

    /// The current mod revision of `key` for a conflict report (0 when it vanished meanwhile).
    async fn current_of(&self, key: &str) -> Result<i64> {
        Ok(self.get(key).await?.map(|kv| kv.mod_revision).unwrap_or(0))
    }

    async fn lease(&self, id: i64) -> Result<Option<Lease>> {
        let api = self.leases();
        let name = lease_name(id);
        match self.call("lease", true, || api.get(&name)).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if api_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err("lease", &format!("get lease {name}"), e)),
        }
    }

    /// The lease if it exists and has not expired; an expired one is ended on the spot.
    async fn live_lease(&self, op: &'static str, id: i64) -> Result<Lease> {
        match self.lease(id).await? {
            Some(l) if !expired(&l, k8s_openapi::jiff::Timestamp::now()) => Ok(l),
            Some(_) => {
                self.end_lease(id).await?;
                Err(Error::LeaseNotFound { op, lease: id })
            }
            None => Err(Error::LeaseNotFound { op, lease: id }),
        }
    }

    async fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64> {
        check_key("create", key)?;
        if Resource::of_key(key) == Resource::Nodes && lease.is_none() {
            return self.create_node(key, value).await;
        }
        let r = writable("create", key)?;
        let obj = codec::new_object(r, key, value, lease)?;
        if let Some(id) = lease {
            self.live_lease("create", id).await?;
        }
        let obj: DynamicObject =
            serde_json::from_value(obj).map_err(|e| Error::InvalidArgument {
                op: "create",
                reason: format!("{key}: {e}"),
            })?;
        let api = self.api(r);
        let pp = PostParams::default();
        match self.call("create", false, || api.create(&pp, &obj)).await {
            Ok(o) => codec::revision_of(&to_value(o)?),
            Err(e) if api_code(&e) == Some(409) => Err(Error::AlreadyExists {
                key: key.into(),
                mod_revision: self.current_of(key).await?,
            }),
            Err(e) => Err(map_err("create", key, e)),
        }
    }

    async fn update(&self, key: &str, value: &[u8], expected: i64) -> Result<i64> {
        check_key("update", key)?;
        check_revision("update", key, expected)?;
        let r = Resource::of_key(key);
        if r == Resource::Nodes {
            return self.patch_underlay("update", key, value, expected).await;
        }
        let r = writable("update", key)?;
        let name = object_name(r, key);
        let current = match self.get_obj(r, &name).await? {
            Some(o) if codec::key_of(r, &o).as_deref() == Some(key) => o,
            _ => {
                return Err(Error::NotFound {
                    op: "update",
                    key: key.into(),
                })
            }
        };
        let now = codec::revision_of(&current)?;
        if now != expected {
            return Err(conflict("update", key, expected, now));
        }
        let obj: DynamicObject =
            serde_json::from_value(codec::updated_object(r, &current, key, value, expected)?)
                .map_err(|e| Error::InvalidArgument {
                    op: "update",
                    reason: format!("{key}: {e}"),
                })?;
        let api = self.api(r);
        // A PUT with a resourceVersion is refused (409) unless nothing changed: safe to repeat.
        let pp = PostParams::default();
        match self
            .call("update", true, || api.replace(&name, &pp, &obj))
            .await
        {
            Ok(o) => codec::revision_of(&to_value(o)?),
            Err(e) => match api_code(&e) {
                Some(409) => match self.current_of(key).await? {
                    0 => Err(Error::NotFound {
                        op: "update",
                        key: key.into(),
                    }),
                    cur => Err(conflict("update", key, expected, cur)),
                },
                Some(404) => Err(Error::NotFound {
                    op: "update",
                    key: key.into(),
                }),
                _ => Err(map_err("update", key, e)),
            },
        }
    }

    /// `nodes/<name>` of a Node that exists but has no usable address yet (so the key does
    /// not exist): the registration sets its underlay annotation. A Node that is missing is the
    /// kubelet's to create; one that already stands for the key is `AlreadyExists`.
    async fn create_node(&self, key: &str, value: &[u8]) -> Result<i64> {
        let name = object_name(Resource::Nodes, key);
        let Some(node) = self.get_obj(Resource::Nodes, &name).await? else {
            return Err(kubelet_owns("create", key));
        };
        let rev = codec::revision_of(&node)?;
        if codec::decode(Resource::Nodes, &node)?.is_some() {
            return Err(Error::AlreadyExists {
                key: key.into(),
                mod_revision: rev,
            });
        }
        self.patch_underlay("create", key, value, rev).await
    }

    /// Set the Node's underlay annotation from a node record, if the Node is still at
    /// resourceVersion `expected`.
    async fn patch_underlay(
        &self,
        op: &'static str,
        key: &str,
        value: &[u8],
        expected: i64,
    ) -> Result<i64> {
        let rec: Value = serde_json::from_slice(value).map_err(|e| Error::InvalidArgument {
            op,
            reason: format!(
                "{key}: a node record must be JSON {{\"name\":..,\"underlay\":..}}: {e}"
            ),
        })?;
        let name = object_name(Resource::Nodes, key);
        let underlay = rec
            .get("underlay")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
        let (Some(underlay), true) = (
            underlay,
            rec.get("name").and_then(Value::as_str) == Some(name.as_str()),
        ) else {
            return Err(Error::InvalidArgument {
                op,
                reason: format!(
                    "{key}: a node record needs \"name\": {name:?} and an IPv4 \"underlay\""
                ),
            });
        };
        let patch = json!({"metadata": {"resourceVersion": expected.to_string(),
            "annotations": {super::core_objects::UNDERLAY_ANNOTATION: underlay.to_string()}}});
        let api = self.api(Resource::Nodes);
        let pp = PatchParams::default();
        let patch = Patch::Merge(&patch);
        match self.call(op, true, || api.patch(&name, &pp, &patch)).await {
            Ok(o) => codec::revision_of(&to_value(o)?),
            Err(e) => match api_code(&e) {
                Some(409) => Err(conflict(op, key, expected, self.current_of(key).await?)),
                Some(404) => Err(Error::NotFound {
                    op,
                    key: key.into(),
                }),
                _ => Err(map_err(op, key, e)),
            },
        }
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<i64> {
        check_key("delete", key)?;
        if let Some(rev) = expected {
            check_revision("delete", key, rev)?;
        }
        let r = writable("delete", key)?;
        let name = object_name(r, key);
        let dp = DeleteParams {
            preconditions: expected.map(|rev| Preconditions {
                resource_version: Some(rev.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let api = self.api(r);
        // Not retried blindly: a lost answer may hide a delete that happened.
        match self.call("delete", false, || api.delete(&name, &dp)).await {
            Ok(either) => match either.left() {
                // The answer carries the object at the delete's revision.
                Some(o) => codec::revision_of(&to_value(o)?),
                None => self.current_revision().await,
            },
            Err(e) => match api_code(&e) {
                Some(404) => Err(Error::NotFound {
                    op: "delete",
                    key: key.into(),
                }),
                Some(409) => match self.current_of(key).await? {
                    0 => Err(Error::NotFound {
                        op: "delete",
                        key: key.into(),
                    }),
                    cur => Err(conflict("delete", key, expected.unwrap_or(0), cur)),
                },
                _ => Err(map_err("delete", key, e)),
            },
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i32::try_from(secs.max(1)).map_err(|_| Error::InvalidArgument {
            op: "grant_lease",
            reason: format!("TTL {ttl:?} is too long"),
        })?;
        let api = self.leases();
        loop {
            let id = new_lease_id();
            let mut lease = Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some(holder()),
                    lease_duration_seconds: Some(secs),
                    renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                    ..LeaseSpec::default()
                }),
                ..Lease::default()
            };
            lease.metadata.name = Some(lease_name(id));
            lease.metadata.labels = Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )]));
            let pp = PostParams::default();
            match self
                .call("grant_lease", false, || api.create(&pp, &lease))
                .await
            {
                Ok(_) => return Ok(id),
                Err(e) if api_code(&e) == Some(409) => continue,
                Err(e) => return Err(map_err("grant_lease", &lease_name(id), e)),
            }
        }
    }

    async fn keep_alive(&self, id: i64) -> Result<()> {
        self.live_lease("keep_alive", id).await?;
        let patch = json!({"spec": {"renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
        let api = self.leases();
        let name = lease_name(id);
        let pp = PatchParams::default();
        let patch = Patch::Merge(&patch);
        match self
            .call("keep_alive", true, || api.patch(&name, &pp, &patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Err(Error::LeaseNotFound {
                op: "keep_alive",
                lease: id,
            }),
            Err(e) => Err(map_err("keep_alive", &name, e)),
        }
    }

    async fn revoke_lease(&self, id: i64) -> Result<()> {
        if self.lease(id).await?.is_none() {
            return Err(Error::LeaseNotFound {
                op: "revoke_lease",
                lease: id,
            });
        }
        if self.end_lease(id).await? {
            Ok(())
        } else {
            Err(Error::LeaseNotFound {
                op: "revoke_lease",
                lease: id,
            })
        }
    }

    /// Delete the lease's keys, then the lease. Returns whether the lease was still there.
    async fn end_lease(&self, id: i64) -> Result<bool> {
        let selector = format!("{LEASE_LABEL}={id}");
        self.delete_labelled(&selector).await?;
        let api = self.leases();
        let name = lease_name(id);
        let dp = DeleteParams::default();
        match self
            .call("revoke_lease", true, || api.delete(&name, &dp))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if api_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(map_err("revoke_lease", &name, e)),
        }
    }

    /// Delete every custom resource matching `selector` (each with its resourceVersion as a
    /// precondition, so a key re-created meanwhile survives).
    async fn delete_labelled(&self, selector: &str) -> Result<()> {
        for r in Resource::ALL.into_iter().filter(|r| codec::is_custom(*r)) {
            let api = self.api(r);
            let lp = ListParams::default().labels(selector);
            let list = self
                .call("revoke_lease", true, || api.list(&lp))
                .await
                .map_err(|e| {
                    map_err(
                        "revoke_lease",
                        &format!("list {}", codec::resource_name(r)),
                        e,
                    )
                })?;
            for o in list.items {
                let Some(name) = o.metadata.name.clone() else {
                    continue;
                };
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: o.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match self
                    .call("revoke_lease", false, || api.delete(&name, &dp))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
                    Err(e) => return Err(map_err("revoke_lease", &name, e)),
                }
            }
        }
        Ok(())
    }

    /// One sweep: end every expired furynet lease; every `orphans` sweep, also delete keys
    /// whose lease no longer exists (a key created just as its lease was swept).
    async fn sweep(&self, orphans: bool) -> Result<()> {
        let api = self.leases();
        let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        let leases = self
            .call("sweep", true, || api.list(&lp))
            .await
            .map_err(|e| map_err("sweep", "list leases", e))?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut live = std::collections::HashSet::new();
        for l in &leases.items {
            let Some(id) = l.metadata.name.as_deref().and_then(lease_id) else {
                continue;
            };
            if expired(l, now) {
                tracing::debug!(lease = id, "lease expired; deleting its keys");
                self.end_lease(id).await?;
            } else {
                live.insert(id);
            }
        }
        if orphans {
            // Lease ids on keys but not among the live leases, each checked once below.
            let mut suspects = std::collections::BTreeSet::new();
            for r in Resource::ALL.into_iter().filter(|r| codec::is_custom(*r)) {
                let api = self.api(r);
                let lp = ListParams::default().labels(LEASE_LABEL);
                let list = self
                    .call("sweep", true, || api.list_metadata(&lp))
                    .await
                    .map_err(|e| map_err("sweep", "list leased keys", e))?;
                for o in list.items {
                    let id = o
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(LEASE_LABEL))
                        .and_then(|v| v.parse::<i64>().ok());
                    if let Some(id) = id.filter(|id| !live.contains(id)) {
                        suspects.insert(id);
                    }
                }
            }
            for id in suspects {
                if self.lease(id).await?.is_none() {
                    self.delete_labelled(&format!("{LEASE_LABEL}={id}")).await?;
                }
            }
        }
        Ok(())
    }
}

fn conflict(op: &'static str, key: &str, expected: i64, current: i64) -> Error {
    Error::Conflict {
        op,
        key: key.into(),
        expected,
        current,
    }
}

/// The writable resource of `key`, or why it cannot be written.
fn writable(op: &'static str, key: &str) -> Result<Resource> {
    match Resource::of_key(key) {
        Resource::Nodes => Err(kubelet_owns(op, key)),
        r if r.writable() => Ok(r),
        _ => Err(read_only(op, key)),
    }
}

/// The error for creating a Node or deleting one: only its underlay annotation is ours.
fn kubelet_owns(op: &'static str, key: &str) -> Error {
    Error::InvalidArgument {
        op,
        reason: format!("{key:?} is a Kubernetes Node: nodes are registered by the kubelet; furynet only updates their underlay annotation"),
    }
}

/// A 404 that means "this kind is not served" (CRDs missing), not "this object is absent".
fn is_missing_kind(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 404 && s.message.contains("could not find the requested resource")
        }
        _ => false,
    }
}

fn to_value(o: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(o).map_err(|e| Error::Corrupt {
        backend: BACKEND,
        op: "read",
        detail: e.to_string(),
    })
}

fn lease_name(id: i64) -> String {
    format!("furynet-lease-{id}")
}

fn lease_id(name: &str) -> Option<i64> {
    name.strip_prefix("furynet-lease-")?.parse().ok()
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}", host.trim(), std::process::id())
}

/// A fresh lease id: positive, below 2^53 (exact in JSON numbers), unpredictable enough that
/// two processes do not pick the same one (a clash is retried on 409 anyway).
fn new_lease_id() -> i64 {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = format!(
        "{}/{}/{:?}/{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now(),
        holder()
    );
    let d = Sha256::digest(seed.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let id = (u64::from_be_bytes(b) >> 11) as i64;
    id.max(1)
}

/// Whether a lease's renew time plus duration is past `now`.
fn expired(l: &Lease, now: k8s_openapi::jiff::Timestamp) -> bool {
    let Some(spec) = &l.spec else { return true };
    let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let end = renew.0.as_second().saturating_add(secs);
    // Compare with sub-second precision.
    let end_nanos = i128::from(end) * 1_000_000_000 + i128::from(renew.0.subsec_nanosecond());
    now.as_nanosecond() > end_nanos
}

impl KubeStore {
    /// Connect with `options`. Keys live in the cluster's one key space: `root` must be the
    /// default root (`/furynet/`), since object names derive from keys.
    pub fn connect(root: &str, options: KubeOptions) -> Result<Self> {
        let norm = crate::keys::Root::new(root)?;
        if norm.as_str() != DEFAULT_ROOT {
            return Err(Error::Config {
                reason: format!("the kubernetes datastore has one key space per cluster; root {root:?} must be {DEFAULT_ROOT:?}"),
            });
        }
        let location = options
            .kubeconfig
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "in-cluster config or $KUBECONFIG".into());
        let open_err = |reason: String| Error::Open {
            backend: BACKEND,
            location: location.clone(),
            reason,
        };
        let runtime = Arc::new(OwnedRuntime::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("furynet-kube")
                .enable_all()
                .build()
                .map_err(|e| open_err(format!("cannot start the client runtime: {e}")))?,
        ));
        let path = options.kubeconfig.clone();
        let config = runtime
            .run(async move {
                let mut config = match path {
                    Some(p) => {
                        let kc = Kubeconfig::read_from(&p).map_err(|e| e.to_string())?;
                        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                            .await
                            .map_err(|e| e.to_string())?
                    }
                    None => Config::infer().await.map_err(|e| e.to_string())?,
                };
                // Retries are ours (bounded, and never for writes that may have applied).
                config.default_retry = false;
                Ok::<_, String>(config)
            })
            .map_err(&open_err)?
            .map_err(&open_err)?;
        let client = {
            let _guard = runtime.handle().enter();
            Client::try_from(config).map_err(|e| open_err(e.to_string()))?
        };
        let limiter =
            std::sync::Mutex::new(TokenBucket::new(options.qps, options.burst, Instant::now()));
        let inner = Arc::new(Inner {
            client,
            options,
            limiter,
        });
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let sweeper = inner.clone();
        runtime.handle().spawn(async move {
            let mut pass: u64 = 0;
            // Stores started together (a DaemonSet rollout) spread their sweeps over the interval.
            let interval_ms = sweeper.options.sweep_interval.as_millis().max(1) as u64;
            let mut next = Duration::from_millis(interval_ms + new_lease_id() as u64 % interval_ms);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return,
                    _ = tokio::time::sleep(next) => {}
                }
                next = sweeper.options.sweep_interval;
                pass += 1;
                if let Err(e) = sweeper.sweep(pass.is_multiple_of(10)).await {
                    tracing::debug!(error = %e, "lease sweep failed; retrying next interval");
                }
            }
        });
        Ok(KubeStore {
            inner,
            runtime,
            stop_sweeper: Some(stop_tx),
        })
    }

    fn run<T, F>(&self, op: &'static str, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(f(self.inner.clone()))
            .map_err(|e| unavailable(op, e))?
    }
}

impl Datastore for KubeStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key("get", key)?;
        let key = key.to_string();
        self.run("get", |i| async move { i.get(&key).await })
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let prefix = prefix.to_string();
        self.run("list", |i| async move { i.list(&prefix).await })
    }

    fn create(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(
            "create",
            |i| async move { i.create(&key, &value, lease).await },
        )
    }

    fn update(&self, key: &str, value: &[u8], expected_mod_revision: i64) -> Result<i64> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.run("update", |i| async move {
            i.update(&key, &value, expected_mod_revision).await
        })
    }

    fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<i64> {
        let key = key.to_string();
        self.run("delete", |i| async move {
            i.delete(&key, expected_mod_revision).await
        })
    }

    fn watch(&self, prefix: &str, from_revision: i64) -> Result<Watch> {
        let start = if from_revision <= 0 {
            self.current_revision()?
        } else {
            // Kubernetes watches return changes after the given resourceVersion.
            (from_revision - 1).max(1)
        };
        // The watch thread keeps the runtime alive: a watch may outlive its store.
        let rt = self.runtime.clone();
        let (tx, rx) = sync_channel(WATCH_BUFFER);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        let from = from_revision.max(start + 1);
        std::thread::Builder::new()
            .name("furynet-kube-watch".into())
            .spawn(move || {
                let (ev_tx, ev_rx) = mpsc::channel(WATCH_BUFFER);
                let resources = Resource::for_prefix(&prefix);
                let n = resources.len();
                let tasks: Vec<_> = resources
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        rt.handle().spawn(watch_resource(
                            inner.clone(),
                            r,
                            i,
                            prefix.clone(),
                            start,
                            ev_tx.clone(),
                        ))
                    })
                    .collect();
                drop(ev_tx);
                let merged = merge(ev_rx, n, from, inner.options.merge_hold, tx);
                rt.handle().block_on(async move {
                    tokio::select! {
                        _ = stop_rx => {},
                        _ = merged => {},
                    }
                });
                for t in tasks {
                    t.abort();
                }
            })
            .map_err(|e| unavailable("watch", format!("cannot start the watch thread: {e}")))?;
        Ok(Watch::new(BACKEND, rx, move || {
            let _ = stop_tx.send(());
        }))
    }

    fn compact(&self, revision: i64) -> Result<()> {
        // Kubernetes has no compaction API: the API server compacts etcd itself (every 5
        // minutes by default), and watches from before that get 410 → Compacted.
        let current = self.current_revision()?;
        if revision > current {
            return Err(Error::InvalidArgument {
                op: "compact",
                reason: format!("revision {revision} is beyond the current revision {current}"),
            });
        }
        Ok(())
    }

    fn grant_lease(&self, ttl: Duration) -> Result<i64> {
        self.run("grant_lease", |i| async move { i.grant_lease(ttl).await })
    }

    fn keep_alive(&self, lease: i64) -> Result<()> {
        self.run("keep_alive", |i| async move { i.keep_alive(lease).await })
    }

    fn revoke_lease(&self, lease: i64) -> Result<()> {
        self.run(
            "revoke_lease",
            |i| async move { i.revoke_lease(lease).await },
        )
    }

    fn current_revision(&self) -> Result<i64> {
        self.run(
            "current_revision",
            |i| async move { i.current_revision().await },
        )
    }

    fn health(&self) -> Result<()> {
        self.current_revision().map(|_| ())
    }
}

/// What one resource's watch stream reports to the merger.
enum Item {
    /// A change (or several at one revision, in stream order).
    Event(usize, Event),
    /// The stream has seen everything up to this revision (bookmark or event).
    Progress(usize, i64),
    /// The watch must end with this error.
    End(Error),
}

/// Watch one resource from `start` (exclusive) until told to stop, re-opening the Kubernetes
/// watch whenever the server ends it.
async fn watch_resource(
    inner: Arc<Inner>,
    r: Resource,
    idx: usize,
    prefix: String,
    start: i64,
    out: mpsc::Sender<Item>,
) {
    let api = inner.api(r);
    let mut rv = start;
    let mut failures = 0u32;
    loop {
        let mut wp = WatchParams::default().timeout(290);
        wp.bookmarks = true;
        let stream = match api.watch(&wp, &rv.to_string()).await {
            Ok(s) => s,
            Err(e) => {
                let err = match api_code(&e) {
                    Some(410) => Some(Error::Compacted {
                        requested: rv + 1,
                        compact_revision: rv + 1,
                    }),
                    // Unknown kind (CRDs missing), bad request: final.
                    Some(400 | 401 | 403 | 404 | 422) => Some(map_err(
                        "watch",
                        &format!("watch {}", codec::resource_name(r)),
                        e,
                    )),
                    // The API server stays unreachable: end the watch so that the consumer
                    // learns it (an agent reports itself out of sync and re-lists).
                    _ if failures + 1 >= MAX_ATTEMPTS => Some(map_err(
                        "watch",
                        &format!(
                            "watch {} ({} attempts)",
                            codec::resource_name(r),
                            failures + 1
                        ),
                        e,
                    )),
                    _ => None,
                };
                if let Some(err) = err {
                    let _ = out.send(Item::End(err)).await;
                    return;
                }
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        futures_util::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let (obj, deleted) = match ev {
                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => (o, false),
                Ok(WatchEvent::Deleted(o)) => (o, true),
                Ok(WatchEvent::Bookmark(b)) => {
                    if let Ok(b) = b.metadata.resource_version.parse::<i64>() {
                        rv = rv.max(b);
                        if out.send(Item::Progress(idx, rv)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Ok(WatchEvent::Error(s)) => {
                    if s.code == 410 {
                        let compact = codec::compacted_at(&s.message).unwrap_or(rv + 1);
                        let _ = out
                            .send(Item::End(Error::Compacted {
                                requested: rv + 1,
                                compact_revision: compact,
                            }))
                            .await;
                        return;
                    }
                    tracing::debug!(resource = %codec::resource_name(r), error = %s.message, "watch error; re-watching");
                    break;
                }
                Err(e) => {
                    tracing::debug!(resource = %codec::resource_name(r), error = %e, "watch stream ended; re-watching");
                    break;
                }
            };
            let obj = match to_value(obj) {
                Ok(o) => o,
                Err(e) => {
                    let _ = out.send(Item::End(e)).await;
                    return;
                }
            };
            let rev = match codec::revision_of(&obj) {
                Ok(rev) => rev,
                Err(e) => {
                    let _ = out.send(Item::End(e)).await;
                    return;
                }
            };
            rv = rv.max(rev);
            let event = if deleted {
                codec::key_of(r, &obj).map(|key| Event::Delete {
                    key,
                    mod_revision: rev,
                })
            } else {
                match codec::decode(r, &obj) {
                    Ok(Some(kv)) => Some(Event::Put(kv)),
                    // A core object that no longer stands for an entry is gone for readers.
                    Ok(None) => codec::key_of(r, &obj).map(|key| Event::Delete {
                        key,
                        mod_revision: rev,
                    }),
                    Err(e) => {
                        let _ = out.send(Item::End(e)).await;
                        return;
                    }
                }
            };
            let item = match event {
                Some(ev) if ev.key().starts_with(&prefix) => Item::Event(idx, ev),
                _ => Item::Progress(idx, rev),
            };
            if out.send(item).await.is_err() {
                return;
            }
        }
    }
}

/// A held event, ordered by (revision, arrival).
struct Held {
    rev: i64,
    seq: u64,
    at: Instant,
    event: Event,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.rev, self.seq) == (o.rev, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the oldest first.
        (o.rev, o.seq).cmp(&(self.rev, self.seq))
    }
}

/// Merge per-resource streams into one stream in revision order. An event is released once
/// every other stream has passed its revision, or after `hold` (streams are independent HTTP
/// responses; a stream that lags more than `hold` can reorder across resources, never within
/// one). Events before `from` are dropped (a re-watch replays nothing older).
async fn merge(
    mut rx: mpsc::Receiver<Item>,
    n: usize,
    from: i64,
    hold: Duration,
    tx: std::sync::mpsc::SyncSender<Result<Event>>,
) {
    let mut progress = vec![from - 1; n];
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    let send = |ev: Result<Event>| {
        let tx = tx.clone();
        async move {
            match tx.try_send(ev) {
                Ok(()) => true,
                // The consumer is behind: wait for it without blocking the runtime.
                Err(std::sync::mpsc::TrySendError::Full(ev)) => {
                    tokio::task::spawn_blocking(move || tx.send(ev).is_ok())
                        .await
                        .unwrap_or(false)
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
            }
        }
    };
    loop {
        // Release what is safe (or held long enough).
        while let Some(top) = heap.peek() {
            let others_past = progress.iter().all(|p| *p >= top.rev);
            if n == 1 || others_past || top.at.elapsed() >= hold {
                let Some(h) = heap.pop() else { break };
                if !send(Ok(h.event)).await {
                    return;
                }
            } else {
                break;
            }
        }
        let wait = heap.peek().map(|h| hold.saturating_sub(h.at.elapsed()));
        let item = match wait {
            Some(d) => match tokio::time::timeout(d, rx.recv()).await {
                Ok(i) => i,
                Err(_) => continue,
            },
            None => rx.recv().await,
        };
        match item {
            Some(Item::Event(i, ev)) => {
                let rev = ev.revision();
                progress[i] = progress[i].max(rev);
                if rev >= from {
                    seq += 1;
                    heap.push(Held {
                        rev,
                        seq,
                        at: Instant::now(),
                        event: ev,
                    });
                }
            }
            Some(Item::Progress(i, rev)) => progress[i] = progress[i].max(rev),
            Some(Item::End(e)) => {
                while let Some(h) = heap.pop() {
                    if !send(Ok(h.event)).await {
                        return;
                    }
                }
                let _ = send(Err(e)).await;
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn lease_ids_and_names() {
        let a = new_lease_id();
        let b = new_lease_id();
        assert!(a > 0 && b > 0 && a != b && a < (1 << 53));
        assert_eq!(lease_id(&lease_name(a)), Some(a));
        assert_eq!(lease_id("other"), None);
    }

    #[test]
    fn lease_expiry_uses_renew_time_and_duration() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let lease = |ago: i64, dur: i32| Lease {
            spec: Some(LeaseSpec {
                lease_duration_seconds: Some(dur),
                renew_time: Some(MicroTime(
                    now - k8s_openapi::jiff::SignedDuration::from_secs(ago),
                )),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(!expired(&lease(1, 5), now));
        assert!(expired(&lease(6, 5), now));
        assert!(expired(&Lease::default(), now));
    }

    #[tokio::test]
    async fn merge_orders_across_streams_and_drops_older_events() {
        let (itx, irx) = mpsc::channel(16);
        let (tx, rx) = sync_channel(16);
        let put = |rev: i64| Event::Delete {
            key: format!("k{rev}"),
            mod_revision: rev,
        };
        itx.send(Item::Event(1, put(7))).await.unwrap();
        itx.send(Item::Event(0, put(4))).await.unwrap();
        itx.send(Item::Event(0, put(2))).await.unwrap(); // before `from`: dropped
        itx.send(Item::Progress(0, 9)).await.unwrap();
        itx.send(Item::Event(1, put(8))).await.unwrap();
        itx.send(Item::End(Error::Compacted {
            requested: 1,
            compact_revision: 3,
        }))
        .await
        .unwrap();
        drop(itx);
        merge(irx, 2, 3, Duration::from_secs(5), tx).await;
        let got: Vec<_> = rx.try_iter().collect();
        let revs: Vec<i64> = got
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(Event::revision)
            .collect();
        assert_eq!(revs, [4, 7, 8]);
        assert!(got.last().unwrap().as_ref().unwrap_err().is_compacted());
    }
}
