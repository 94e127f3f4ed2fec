//! Request handling: authentication, injected failures, recording, path routing and the verbs.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Request, State as AxState};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::{self, ResourceDef};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{json_response, reason_for, ApiError};
use crate::store::{Filter, State};
use crate::{util, watch, RecordedRequest};

/// An injected failure: the next `count` requests whose path contains `path` fail with `status`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub path: String,
    pub status: u16,
    pub count: usize,
}

/// Everything the server threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub token: String,
    pub bookmark_ms: AtomicU64,
    pub failures: Mutex<Vec<Failure>>,
    pub requests: Mutex<Vec<RecordedRequest>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const MAX_BODY: usize = 64 << 20;

/// The single axum handler: everything is routed here.
pub(crate) async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let resp = match route(&shared, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = resp.status().as_u16();
    tracing::debug!(%method, %path, %query, status, "fake apiserver request");
    lock(&shared.requests).push(RecordedRequest {
        method,
        path,
        query,
        status,
    });
    resp
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
    .with_details(json!({}))
}

/// Where a request points: resource, version, namespace, name, subresource.
#[derive(Debug)]
pub(crate) struct Target {
    pub def: ResourceDef,
    pub version: String,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub status: bool,
}

fn resolve(st: &State, segs: &[&str]) -> Result<Result<Target, Value>, ApiError> {
    let (group, version, rest) = match segs {
        ["api"] => {
            return Ok(Err(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})))
        }
        ["apis"] => return Ok(Err(resources::group_list(&st.defs))),
        ["version"] => {
            return Ok(Err(
                json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0-furynet-fake",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"}),
            ))
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path()),
    };
    if rest.is_empty() {
        let list = resources::resource_list(&st.defs, group, version);
        if list["resources"].as_array().is_none_or(Vec::is_empty) {
            return Err(not_found_path());
        }
        return Ok(Err(list));
    }
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && st
            .find_def(group, version, rest[2])
            .is_some_and(|d| d.namespaced);
    let (ns, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.len() > 3 {
        return Err(not_found_path());
    }
    let def = st
        .find_def(group, version, rest[0])
        .ok_or_else(not_found_path)?;
    let name = rest.get(1).map(|s| percent_decode(s));
    let status = match rest.get(2) {
        None => false,
        Some(&"status") if def.status_sub => true,
        Some(_) => return Err(not_found_path()),
    };
    if def.namespaced && ns.is_none() && name.is_some() {
        return Err(not_found_path());
    }
    Ok(Ok(Target {
        def,
        version: version.to_string(),
        ns,
        name,
        status,
    }))
}

fn injected(shared: &Shared, path: &str) -> Option<ApiError> {
    let mut fails = lock(&shared.failures);
    let f = fails
        .iter_mut()
        .find(|f| f.count > 0 && path.contains(&f.path))?;
    f.count -= 1;
    let code = f.status;
    fails.retain(|f| f.count > 0);
    let msg = match code {
        429 => "Too many requests, please try again later.".to_string(),
        503 => "the server is currently unable to handle the request".to_string(),
        _ => format!("injected failure {code} (FakeApiServer::fail_next)"),
    };
    let mut e = ApiError::new(code, reason_for(code), msg);
    if code == 429 {
        e = e.with_details(json!({"retryAfterSeconds": 1}));
    }
    Some(e)
}

async fn route(shared: &Arc<Shared>, req: Request) -> Result<Response, ApiError> {
    let expected = format!("Bearer {}", shared.token);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    if !authorized {
        return Err(ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let path = req.uri().path().to_string();
    if let Some(e) = injected(shared, &path) {
        return Err(e);
    }
    let q = parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().clone();
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?;
    if method != Method::GET && q.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this fake API server (it would have written the object)",
        ));
    }
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let mut st = lock(&shared.state);
    let t = match resolve(&st, &segs)? {
        Ok(t) => t,
        Err(doc) if method == Method::GET => return Ok(json_response(200, &doc)),
        Err(_) => return Err(method_not_allowed()),
    };
    let ns = t.ns.clone().unwrap_or_default();
    let parse_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    };
    let item =
        |code: u16, v: &Value| json_response(code, &util::render(&t.def, &t.version, v, true));
    match (&method, &t.name) {
        (&Method::GET, None)
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch::start(shared.clone(), &mut st, &t, &q)
        }
        (&Method::GET, None) => Ok(json_response(200, &list(&st, &t, &q)?)),
        (&Method::GET, Some(name)) => {
            let obj = st
                .get(&t.def, &ns, name)
                .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
            Ok(item(200, obj))
        }
        (&Method::POST, None) => {
            let obj = parse_body()?;
            Ok(item(201, &st.create(&t.def, &ns, obj)?))
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_body()?;
            // Leases allow create-on-update (their REST strategy's AllowCreateOnUpdate), the rest 404.
            if !t.status
                && t.def.id() == "coordination.k8s.io/leases"
                && st.get(&t.def, &ns, name).is_none()
            {
                if util::name_of(&obj) != name.as_str() {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object does not match the name on the URL ({name})"
                    )));
                }
                return Ok(item(201, &st.create(&t.def, &ns, obj)?));
            }
            Ok(item(200, &st.replace(&t.def, &ns, name, obj, t.status)?))
        }
        (&Method::PATCH, Some(name)) => {
            let patch = parse_body()?;
            let mut obj = st
                .get(&t.def, &ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, name))?;
            let cur_rv = obj.pointer("/metadata/resourceVersion").cloned();
            let mime = ctype.split(';').next().unwrap_or("").trim();
            match mime {
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    util::merge_patch(&mut obj, &patch);
                }
                "application/json-patch+json" => util::json_patch(&mut obj, &patch)?,
                other => {
                    return Err(ApiError::new(415, "UnsupportedMediaType", format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (this fake has no server-side apply), got {other:?}"
                    )))
                }
            }
            // A resourceVersion in the patch is a precondition; otherwise the patch applies to the latest.
            if patch.pointer("/metadata/resourceVersion").is_none() {
                if let Some(rv) = cur_rv {
                    util::set_meta(&mut obj, "resourceVersion", rv);
                }
            }
            Ok(item(200, &st.replace(&t.def, &ns, name, obj, t.status)?))
        }
        (&Method::DELETE, Some(name)) => {
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                parse_body()?
            };
            let pre_rv = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str);
            let pre_uid = opts.pointer("/preconditions/uid").and_then(Value::as_str);
            Ok(item(200, &st.delete(&t.def, &ns, name, pre_rv, pre_uid)?))
        }
        (&Method::DELETE, None) => {
            let filter = filter_of(&t, &q)?;
            let victims: Vec<Value> = st
                .list_at(&t.def.id(), None)
                .into_iter()
                .filter(|o| filter.matches(o))
                .collect();
            let mut items = Vec::new();
            for v in victims {
                let d = st.delete(
                    &t.def,
                    util::namespace_of(&v),
                    util::name_of(&v),
                    None,
                    None,
                )?;
                items.push(util::render(&t.def, &t.version, &d, false));
            }
            Ok(json_response(
                200,
                &json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(&t.version),
                "metadata": {"resourceVersion": st.rev.to_string()}, "items": items}),
            ))
        }
        _ => Err(method_not_allowed()),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )
}

pub(crate) fn filter_of(t: &Target, q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    Ok(Filter {
        res_id: t.def.id(),
        namespace: t.ns.clone(),
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?,
    })
}

fn parse_rv(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{s}\"")))
}

fn list(st: &State, t: &Target, q: &HashMap<String, String>) -> Result<Value, ApiError> {
    let filter = filter_of(t, q)?;
    let rv = q
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let rvm = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let (at, after) = if let Some(tok) = q.get("continue").filter(|s| !s.is_empty()) {
        let (rev, ns, name) = util::decode_continue(tok)
            .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        if st.too_old(rev) {
            return Err(ApiError::new(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
        }
        (Some(rev), Some((ns, name)))
    } else {
        match (rv, rvm) {
            (None, Some(_)) => {
                return Err(ApiError::new(422, "Invalid", "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"))
            }
            (None, None) | (Some("0"), None | Some("NotOlderThan")) => (None, None),
            (Some(r), Some("Exact")) => {
                let r = parse_rv(r)?;
                if r > st.rev {
                    return Err(ApiError::too_large_rv(r, st.rev));
                }
                if st.too_old(r) {
                    return Err(ApiError::gone_list());
                }
                (Some(r), None)
            }
            (Some(r), None | Some("NotOlderThan")) => {
                let r = parse_rv(r)?;
                if r > st.rev {
                    return Err(ApiError::too_large_rv(r, st.rev));
                }
                (None, None)
            }
            (Some(_), Some(other)) => {
                return Err(ApiError::new(422, "Invalid", format!("resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\"")))
            }
        }
    };
    let list_rev = at.unwrap_or(st.rev);
    // resourceVersion=0 is served from the watch cache, which ignores limit (kube-apiserver).
    let from_cache = rv == Some("0") && after.is_none();
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0 && !from_cache);
    let (items, more) = st.list_page(&t.def.id(), at, after.as_ref(), &filter, limit);
    let cont = items
        .last()
        .filter(|_| more)
        .map(|last| util::encode_continue(list_rev, util::namespace_of(last), util::name_of(last)));
    let items: Vec<Value> = items
        .iter()
        .map(|o| util::render(&t.def, &t.version, o, false))
        .collect();
    let mut meta = json!({"resourceVersion": list_rev.to_string()});
    if let (Some(c), Some(m)) = (cont, meta.as_object_mut()) {
        m.insert("continue".into(), Value::String(c));
    }
    Ok(
        json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(&t.version), "metadata": meta, "items": items}),
    )
}
