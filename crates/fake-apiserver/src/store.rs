//! The etcd-like store: one global revision, objects as JSON, an event history for
//! `resourceVersionMatch=Exact` lists and watch replay, compaction, and the live watchers.

use std::collections::{BTreeMap, HashMap, VecDeque};

use axum::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::resources::{self, ResourceDef, CRD_ID, NS_ID};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::util;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvType {
    Added,
    Modified,
    Deleted,
}

impl EvType {
    pub fn name(self) -> &'static str {
        match self {
            EvType::Added => "ADDED",
            EvType::Modified => "MODIFIED",
            EvType::Deleted => "DELETED",
        }
    }
}

/// Events kept before the oldest half is compacted away automatically.
pub(crate) const MAX_HISTORY: usize = 200_000;

/// One write in the history: the object after it (for a delete: the last state, with the
/// delete revision) and the object before it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub rev: i64,
    pub res_id: String,
    pub ty: EvType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// What a watch (or list) is interested in.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub res_id: String,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if util::namespace_of(obj) != ns.as_str() {
                return false;
            }
        }
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event a watcher with this filter sees for `ev`, if any (selector transitions
    /// become ADDED / DELETED, as kube-apiserver's watch cache does).
    pub fn translate(&self, ev: &Event) -> Option<EvType> {
        if ev.res_id != self.res_id {
            return None;
        }
        let now = self.matches(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
        match ev.ty {
            EvType::Added => now.then_some(EvType::Added),
            EvType::Deleted => now.then_some(EvType::Deleted),
            EvType::Modified => match (before, now) {
                (true, true) => Some(EvType::Modified),
                (false, true) => Some(EvType::Added),
                (true, false) => Some(EvType::Deleted),
                (false, false) => None,
            },
        }
    }
}

/// A live watch: its filter, the def/version to render with, and a bounded channel.
#[derive(Debug)]
pub(crate) struct Watcher {
    pub id: u64,
    pub filter: Filter,
    pub def: ResourceDef,
    pub version: String,
    pub tx: mpsc::Sender<(i64, Bytes)>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub rev: i64,
    /// History below this revision is forgotten.
    pub compacted: i64,
    pub defs: Vec<ResourceDef>,
    pub objects: HashMap<String, BTreeMap<(String, String), Value>>,
    pub history: VecDeque<Event>,
    pub watchers: Vec<Watcher>,
    pub next_watcher: u64,
    uid_seed: u64,
    uid_count: u64,
}

/// One watch-event line: `{"type":..,"object":..}\n`.
pub(crate) fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

impl State {
    pub fn new() -> Self {
        let mut st = State {
            rev: 1,
            compacted: 0,
            defs: resources::builtins(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            watchers: Vec::new(),
            next_watcher: 1,
            uid_seed: util::seed(),
            uid_count: 0,
        };
        if let Some(def) = st.def_by_id(NS_ID) {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let obj = json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}});
                if let Err(e) = st.create(&def, "", obj) {
                    tracing::error!(namespace = ns, error = %e.message, "pre-creating a namespace failed");
                }
            }
        }
        st
    }

    pub fn def_by_id(&self, id: &str) -> Option<ResourceDef> {
        self.defs.iter().find(|d| d.id() == id).cloned()
    }

    pub fn find_def(&self, group: &str, version: &str, plural: &str) -> Option<ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.plural == plural && d.serves(version))
            .cloned()
    }

    pub fn get(&self, def: &ResourceDef, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&def.id())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    fn uid(&mut self) -> String {
        self.uid_count += 1;
        let a = self.uid_seed;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (self.uid_count >> 48) & 0xfff,
            self.uid_count & 0xffff_ffff_ffff
        )
    }

    /// Store `object` at a new revision, record the event and notify the watchers.
    fn commit(
        &mut self,
        def: &ResourceDef,
        ty: EvType,
        mut object: Value,
        prev: Option<Value>,
    ) -> Value {
        self.rev += 1;
        let rev = self.rev;
        util::set_meta(
            &mut object,
            "resourceVersion",
            Value::String(rev.to_string()),
        );
        let key = (
            util::namespace_of(&object).to_string(),
            util::name_of(&object).to_string(),
        );
        let map = self.objects.entry(def.id()).or_default();
        if ty == EvType::Deleted {
            map.remove(&key);
        } else {
            map.insert(key, object.clone());
        }
        let ev = Event {
            rev,
            res_id: def.id(),
            ty,
            object: object.clone(),
            prev,
        };
        self.notify(&ev);
        self.history.push_back(ev);
        if self.history.len() > MAX_HISTORY {
            // Like kube-apiserver's periodic etcd compaction: keep the newest half.
            let keep_from = self
                .history
                .get(self.history.len() - MAX_HISTORY / 2)
                .map(|e| e.rev);
            if let Some(r) = keep_from {
                self.compact(r);
            }
        }
        object
    }

    fn notify(&mut self, ev: &Event) {
        self.watchers.retain(|w| {
            let Some(ty) = w.filter.translate(ev) else { return true };
            let obj = util::render(&w.def, &w.version, &ev.object, true);
            match w.tx.try_send((ev.rev, event_line(ty.name(), &obj))) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(watcher = w.id, resource = %w.filter.res_id, "watcher too slow, closing its stream");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        let body_ns = util::namespace_of(&obj).to_string();
        if def.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        let mut name = util::name_of(&obj).to_string();
        if name.is_empty() {
            let gen = obj
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if gen.is_empty() {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = format!(
                "{gen}{}",
                util::suffix(self.uid_seed ^ (self.rev as u64).wrapping_mul(0x9e37_79b9))
            );
            util::set_meta(&mut obj, "name", Value::String(name.clone()));
        }
        let label_only = def.id() == NS_ID;
        if let Err(why) = util::validate_name(&name, label_only) {
            return Err(ApiError::invalid(
                &def.group,
                &def.kind,
                &name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": {why}"),
            ));
        }
        if def.namespaced {
            util::set_meta(&mut obj, "namespace", Value::String(ns.to_string()));
            let ns_def = self.def_by_id(NS_ID);
            if ns_def.is_some_and(|d| self.get(&d, "", ns).is_none()) {
                return Err(ApiError::not_found("", "namespaces", ns));
            }
        }
        if self.get(def, ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        let mut extra_status = None;
        if def.id() == CRD_ID {
            let new_def = resources::from_crd(&obj)?;
            if self
                .defs
                .iter()
                .any(|d| d.group == new_def.group && d.plural == new_def.plural)
            {
                return Err(ApiError::already_exists(&def.group, &def.plural, &name));
            }
            extra_status = Some(resources::crd_status(&obj, &util::now_rfc3339()));
            self.defs.push(new_def);
        }
        if let Some(o) = obj.as_object_mut() {
            o.insert(
                "apiVersion".into(),
                Value::String(def.api_version(&def.versions[0])),
            );
            o.insert("kind".into(), Value::String(def.kind.clone()));
            if def.status_sub {
                o.remove("status");
            }
            if let Some(s) = extra_status {
                o.insert("status".into(), s);
            }
            if def.id() == NS_ID {
                o.insert("status".into(), json!({"phase": "Active"}));
            }
        }
        let uid = self.uid();
        util::set_meta(&mut obj, "uid", Value::String(uid));
        util::set_meta(
            &mut obj,
            "creationTimestamp",
            Value::String(util::now_rfc3339()),
        );
        util::set_meta(&mut obj, "generation", json!(1));
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["deletionTimestamp", "selfLink", "resourceVersion"] {
                m.remove(k);
            }
        }
        Ok(self.commit(def, EvType::Added, obj, None))
    }

    /// Replace an object (`status_only`: the /status subresource). `obj`'s resourceVersion,
    /// when set, is a precondition.
    pub fn replace(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was in an unknown format",
            ));
        }
        let ns = if def.namespaced { ns } else { "" };
        let body_name = util::name_of(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let Some(old) = self.get(def, ns, name).cloned() else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        let want_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cur_rv = old
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !want_rv.is_empty() && want_rv != cur_rv {
            return Err(ApiError::modified(&def.group, &def.plural, name));
        }
        let new = if status_only {
            let mut n = old.clone();
            if let Some(o) = n.as_object_mut() {
                o.insert(
                    "status".into(),
                    obj.get("status").cloned().unwrap_or(Value::Null),
                );
            }
            n
        } else {
            if let Some(o) = obj.as_object_mut() {
                o.insert(
                    "apiVersion".into(),
                    old.get("apiVersion").cloned().unwrap_or(Value::Null),
                );
                o.insert("kind".into(), Value::String(def.kind.clone()));
                if def.status_sub {
                    match old.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
            }
            // Server-owned metadata survives a replace.
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "name",
                "namespace",
            ] {
                match old.pointer(&format!("/metadata/{k}")) {
                    Some(v) => util::set_meta(&mut obj, k, v.clone()),
                    None => {
                        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove(k);
                        }
                    }
                }
            }
            if obj.get("spec") != old.get("spec") {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                util::set_meta(&mut obj, "generation", json!(g + 1));
            }
            obj
        };
        if def.id() == CRD_ID && !status_only {
            let new_def = resources::from_crd(&new)?;
            if let Some(d) = self
                .defs
                .iter_mut()
                .find(|d| d.custom && d.id() == new_def.id())
            {
                *d = new_def;
            }
        }
        Ok(self.commit(def, EvType::Modified, new, Some(old)))
    }

    /// Delete one object; `pre_rv` / `pre_uid` are DeleteOptions preconditions.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        pre_rv: Option<&str>,
        pre_uid: Option<&str>,
    ) -> Result<Value, ApiError> {
        let ns = if def.namespaced { ns } else { "" };
        let Some(old) = self.get(def, ns, name).cloned() else {
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        if let Some(want) = pre_uid {
            let uid = old
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if want != uid {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.plural,
                    name,
                    &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
                ));
            }
        }
        if let Some(want) = pre_rv {
            let rv = old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if want != rv {
                return Err(ApiError::conflict(&def.group, &def.plural, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                )));
            }
        }
        // Cascades: a namespace takes its objects, a CRD its custom resources and registration.
        if def.id() == NS_ID {
            let defs: Vec<ResourceDef> =
                self.defs.iter().filter(|d| d.namespaced).cloned().collect();
            for d in defs {
                let names: Vec<String> = self
                    .objects
                    .get(&d.id())
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|(n, _)| n == name)
                    .map(|(_, x)| x.clone())
                    .collect();
                for n in names {
                    self.delete(&d, name, &n, None, None)?;
                }
            }
        }
        if def.id() == CRD_ID {
            if let Ok(cdef) = resources::from_crd(&old) {
                let keys: Vec<(String, String)> = self
                    .objects
                    .get(&cdef.id())
                    .into_iter()
                    .flat_map(|m| m.keys().cloned())
                    .collect();
                for (n, x) in keys {
                    self.delete(&cdef, &n, &x, None, None)?;
                }
                self.defs.retain(|d| !(d.custom && d.id() == cdef.id()));
            }
        }
        Ok(self.commit(def, EvType::Deleted, old.clone(), Some(old)))
    }
}
