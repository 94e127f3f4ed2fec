//! Small helpers: metadata access, rendering, names, time, patches, continue tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::resources::ResourceDef;
use crate::status::ApiError;

pub(crate) fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn set_meta(obj: &mut Value, key: &str, v: Value) {
    if let Some(o) = obj.as_object_mut() {
        let meta = o
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Some(m) = meta.as_object_mut() {
            m.insert(key.to_string(), v);
        }
    }
}

/// The object as served at `version`: with kind/apiVersion (`typed`), or without them (built-in
/// list items, as kube-apiserver serialises typed lists).
pub(crate) fn render(def: &ResourceDef, version: &str, obj: &Value, typed: bool) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        if typed || def.custom {
            m.insert("apiVersion".into(), Value::String(def.api_version(version)));
            m.insert("kind".into(), Value::String(def.kind.clone()));
        } else {
            m.remove("apiVersion");
            m.remove("kind");
        }
    }
    o
}

pub(crate) fn seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Five characters from kube's generateName alphabet.
pub(crate) fn suffix(mut x: u64) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut s = String::new();
    x ^= seed();
    for _ in 0..5 {
        s.push(ALPHA[(x % ALPHA.len() as u64) as usize] as char);
        x /= ALPHA.len() as u64;
    }
    s
}

/// RFC 3339 UTC timestamp with second precision, as metav1.Time serialises.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// DNS-1123 subdomain (or label, for namespaces) validation; Err is kube's message.
pub(crate) fn validate_name(name: &str, label: bool) -> Result<(), String> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let max = if label { 63 } else { 253 };
    if name.len() > max {
        return Err(format!("must be no more than {max} characters"));
    }
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(if label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into()
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into()
        });
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

/// Parent container and last token of a JSON pointer.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {path:?}"));
    };
    let mut toks: Vec<String> = rest.split('/').map(unescape).collect();
    let last = toks.pop().unwrap_or_default();
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok((cur, last))
}

/// RFC 6902 JSON patch: add, remove, replace, test (no move/copy).
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array"))?;
    let err = |m: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {m}"),
        )
    };
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        if path.is_empty() {
            if kind == "replace" || kind == "add" {
                *doc = value;
                continue;
            }
            return Err(err(format!(
                "unsupported op {kind:?} on the whole document"
            )));
        }
        let (p, last) = parent(doc, path).map_err(err)?;
        match (kind, p) {
            ("add", Value::Object(m)) | ("replace", Value::Object(m)) => {
                if kind == "replace" && !m.contains_key(&last) {
                    return Err(err(format!(
                        "replace operation does not apply: doc is missing key: {path}"
                    )));
                }
                m.insert(last, value);
            }
            ("add", Value::Array(a)) => {
                let i = if last == "-" {
                    a.len()
                } else {
                    last.parse()
                        .map_err(|_| err(format!("bad index in {path}")))?
                };
                if i > a.len() {
                    return Err(err(format!("index out of range in {path}")));
                }
                a.insert(i, value);
            }
            ("replace", Value::Array(a)) => {
                let slot = last
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| err(format!("bad index in {path}")))?;
                *slot = value;
            }
            ("remove", Value::Object(m)) => {
                m.remove(&last).ok_or_else(|| {
                    err(format!(
                        "remove operation does not apply: doc is missing path: {path}"
                    ))
                })?;
            }
            ("remove", Value::Array(a)) => {
                let i = last
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < a.len())
                    .ok_or_else(|| err(format!("bad index in {path}")))?;
                a.remove(i);
            }
            ("test", p) => {
                let got = match p {
                    Value::Object(m) => m.get(&last),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                if got != Some(&value) {
                    return Err(err(format!("testing value {path} failed")));
                }
            }
            (k, _) => return Err(err(format!("unsupported json patch op {k:?} at {path}"))),
        }
    }
    Ok(())
}

/// Continue token: `<revision>:<namespace>/<name>` of the last item, hex-encoded (opaque).
pub(crate) fn encode_continue(rev: i64, ns: &str, name: &str) -> String {
    format!("{rev}:{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn decode_continue(tok: &str) -> Option<(i64, String, String)> {
    let bytes: Option<Vec<u8>> = (0..tok.len())
        .step_by(2)
        .map(|i| {
            tok.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let s = String::from_utf8(bytes?).ok()?;
    let (rev, key) = s.split_once(':')?;
    let (ns, name) = key.split_once('/')?;
    Some((rev.parse().ok()?, ns.to_string(), name.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1]});
        merge_patch(&mut d, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}, "l": [1]}));
        json_patch(&mut d, &json!([{"op": "add", "path": "/l/-", "value": 2}, {"op": "replace", "path": "/a/c", "value": 5},
            {"op": "remove", "path": "/a/d"}, {"op": "test", "path": "/l/1", "value": 2}])).unwrap();
        assert_eq!(d, json!({"a": {"c": 5}, "l": [1, 2]}));
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/l/0", "value": 9}])).is_err());
    }

    #[test]
    fn names_tokens_time() {
        assert!(validate_name("a.b-c", false).is_ok());
        assert!(validate_name("a.b", true).is_err());
        assert!(validate_name("Bad", false).is_err());
        assert!(validate_name("-a", false).is_err());
        let t = encode_continue(42, "ns", "x.y");
        assert_eq!(decode_continue(&t), Some((42, "ns".into(), "x.y".into())));
        assert_eq!(now_rfc3339().len(), 20);
    }
}
