//! Typed access to a decoded JSON tree that records every problem with its field path, in the
//! API server's notation (`spec.ingress[0].from[1].ipBlock.cidr`, `metadata.labels[app]`), and
//! the API server's error wording (`Required value`, `Invalid value: "x": ...`).

use std::fmt::Display;

use serde_json::{Map, Value};

use crate::labels::Labels;

pub(crate) type Obj = Map<String, Value>;

/// `path.key` (or `key` at the root).
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path[i]`.
pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `path[key]` (a map entry, as `field.Path.Key`).
pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// A string as Go's `%q` shows it (close enough: Rust's debug escaping).
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// A short description of a JSON value for type errors.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => {
            let short: String = s.chars().take(64).collect();
            if short.len() < s.len() {
                format!("string {}...", quote(&short))
            } else {
                format!("string {}", quote(s))
            }
        }
        Value::Array(_) => "array".to_string(),
        Value::Object(_) => "object".to_string(),
    }
}

/// One field error of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every field error found in one object (all are reported, not just the first).
#[derive(Debug, Default)]
pub(crate) struct Errors {
    pub list: Vec<FieldError>,
}

impl Errors {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn push(&mut self, field: String, message: String) {
        self.list.push(FieldError { field, message });
    }

    /// `field.Required`.
    pub fn required(&mut self, field: String, detail: &str) {
        let msg = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        self.push(field, msg);
    }

    /// `field.Invalid` with an already-rendered value (`"x"` for strings, `5` for numbers).
    pub fn invalid(&mut self, field: String, value: impl Display, detail: &str) {
        self.push(field, format!("Invalid value: {value}: {detail}"));
    }

    /// `field.Invalid` for a string value.
    pub fn invalid_str(&mut self, field: String, value: &str, detail: &str) {
        self.invalid(field, quote(value), detail);
    }

    /// `field.NotSupported`.
    pub fn not_supported(&mut self, field: String, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        self.push(
            field,
            format!(
                "Unsupported value: {}: supported values: {}",
                quote(value),
                list.join(", ")
            ),
        );
    }

    /// `field.Forbidden`.
    pub fn forbidden(&mut self, field: String, detail: &str) {
        self.push(field, format!("Forbidden: {detail}"));
    }

    /// `field.Duplicate`.
    pub fn duplicate(&mut self, field: String, value: &str) {
        self.push(field, format!("Duplicate value: {}", quote(value)));
    }

    /// A value of the wrong JSON type (the API server fails to decode the object).
    pub fn wrong_type(&mut self, field: String, expected: &str, got: &Value) {
        self.push(
            field,
            format!("Invalid type: expected {expected}, got {}", describe(got)),
        );
    }
}

/// Field `k` of `obj`; `null` counts as absent, as in Kubernetes.
pub(crate) fn field<'a>(obj: &'a Obj, k: &str) -> Option<&'a Value> {
    obj.get(k).filter(|v| !v.is_null())
}

pub(crate) fn as_obj<'a>(v: &'a Value, path: &str, errs: &mut Errors) -> Option<&'a Obj> {
    match v {
        Value::Object(m) => Some(m),
        other => {
            errs.wrong_type(path.to_string(), "object", other);
            None
        }
    }
}

pub(crate) fn as_str<'a>(v: &'a Value, path: &str, errs: &mut Errors) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        other => {
            errs.wrong_type(path.to_string(), "string", other);
            None
        }
    }
}

/// An integer that fits Kubernetes' `int32` fields.
pub(crate) fn as_i32(v: &Value, path: &str, errs: &mut Errors) -> Option<i32> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    match n.map(i32::try_from) {
        Some(Ok(n)) => Some(n),
        _ => {
            errs.wrong_type(path.to_string(), "integer (int32)", v);
            None
        }
    }
}

pub(crate) fn opt_obj<'a>(obj: &'a Obj, k: &str, path: &str, errs: &mut Errors) -> Option<&'a Obj> {
    field(obj, k).and_then(|v| as_obj(v, &child(path, k), errs))
}

/// An array field; absent or of the wrong type gives an empty slice (the latter with an error).
pub(crate) fn opt_arr<'a>(obj: &'a Obj, k: &str, path: &str, errs: &mut Errors) -> &'a [Value] {
    match field(obj, k) {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.wrong_type(child(path, k), "array", other);
            &[]
        }
    }
}

pub(crate) fn opt_str<'a>(obj: &'a Obj, k: &str, path: &str, errs: &mut Errors) -> Option<&'a str> {
    field(obj, k).and_then(|v| as_str(v, &child(path, k), errs))
}

pub(crate) fn opt_bool(obj: &Obj, k: &str, path: &str, errs: &mut Errors) -> Option<bool> {
    match field(obj, k) {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errs.wrong_type(child(path, k), "boolean", other);
            None
        }
    }
}

pub(crate) fn opt_i32(obj: &Obj, k: &str, path: &str, errs: &mut Errors) -> Option<i32> {
    field(obj, k).and_then(|v| as_i32(v, &child(path, k), errs))
}

/// `intstr.IntOrString`: decoded by JSON type (a quoted `"80"` is a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IntOrString {
    Int(i32),
    Str(String),
}

pub(crate) fn opt_int_or_string(
    obj: &Obj,
    k: &str,
    path: &str,
    errs: &mut Errors,
) -> Option<IntOrString> {
    match field(obj, k)? {
        Value::String(s) => Some(IntOrString::Str(s.clone())),
        v @ Value::Number(_) => as_i32(v, &child(path, k), errs).map(IntOrString::Int),
        other => {
            errs.wrong_type(child(path, k), "integer or string", other);
            None
        }
    }
}

/// A `map[string]string` field (labels, selectors); `None` when absent.
pub(crate) fn opt_string_map(obj: &Obj, k: &str, path: &str, errs: &mut Errors) -> Option<Labels> {
    let p = child(path, k);
    let m = as_obj(field(obj, k)?, &p, errs)?;
    let mut out = Labels::new();
    for (mk, mv) in m {
        match mv {
            Value::String(s) => {
                out.insert(mk.clone(), s.clone());
            }
            // `null` values are dropped by the API server's JSON decoding into a map.
            Value::Null => {}
            other => errs.wrong_type(key(&p, mk), "string", other),
        }
    }
    Some(out)
}

/// The string entries of an array (with their index); other entries are type errors.
pub(crate) fn str_items<'a>(
    arr: &'a [Value],
    path: &str,
    errs: &mut Errors,
) -> Vec<(usize, &'a str)> {
    arr.iter()
        .enumerate()
        .filter_map(|(i, v)| as_str(v, &index(path, i), errs).map(|s| (i, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        match v {
            Value::Object(m) => m,
            _ => Obj::new(),
        }
    }

    #[test]
    fn paths() {
        assert_eq!(child("", "spec"), "spec");
        assert_eq!(index(&child("spec", "ingress"), 0), "spec.ingress[0]");
        assert_eq!(key("metadata.labels", "app"), "metadata.labels[app]");
    }

    #[test]
    fn typed_access_records_errors() {
        let o = obj(
            json!({"n": "three", "b": 1, "s": 5, "i": 3000000000i64, "ok": 7,
            "m": {"a": "x", "b": 2, "c": null}, "nul": null}),
        );
        let mut e = Errors::default();
        assert_eq!(opt_i32(&o, "n", "spec", &mut e), None);
        assert_eq!(opt_bool(&o, "b", "spec", &mut e), None);
        assert_eq!(opt_str(&o, "s", "spec", &mut e), None);
        assert_eq!(opt_i32(&o, "i", "spec", &mut e), None);
        assert_eq!(opt_i32(&o, "ok", "spec", &mut e), Some(7));
        assert_eq!(opt_str(&o, "nul", "spec", &mut e), None);
        let m = opt_string_map(&o, "m", "spec", &mut e).unwrap_or_default();
        assert_eq!(m.len(), 1);
        let fields: Vec<&str> = e.list.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["spec.n", "spec.b", "spec.s", "spec.i", "spec.m[b]"]
        );
        assert_eq!(
            e.list[0].message,
            "Invalid type: expected integer (int32), got string \"three\""
        );
    }

    #[test]
    fn int_or_string_by_type() {
        let o = obj(json!({"a": 80, "b": "80", "c": 1.5, "d": true}));
        let mut e = Errors::default();
        assert_eq!(
            opt_int_or_string(&o, "a", "", &mut e),
            Some(IntOrString::Int(80))
        );
        assert_eq!(
            opt_int_or_string(&o, "b", "", &mut e),
            Some(IntOrString::Str("80".into()))
        );
        assert_eq!(opt_int_or_string(&o, "c", "", &mut e), None);
        assert_eq!(opt_int_or_string(&o, "d", "", &mut e), None);
        assert_eq!(e.list.len(), 2);
    }
}
