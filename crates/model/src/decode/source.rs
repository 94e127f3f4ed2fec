//! Reading input (files, directories, stdin) and splitting it into documents.
//!
//! YAML streams are split at `---` lines *before* parsing and each piece is parsed on its own,
//! so a syntax error in one document does not lose the documents after it (libyaml cannot
//! resume after an error). Each document becomes a `serde_json::Value` (after YAML merge keys
//! are applied), which the decoder walks by hand to track exact field paths.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// One input file's text, or why it could not be read.
#[derive(Debug)]
pub(crate) enum Input {
    Text { file: String, text: String },
    Unreadable { file: String, message: String },
}

pub(crate) const STDIN_NAME: &str = "<stdin>";

/// Reads every path: `-` is stdin, directories are walked recursively for `*.yaml`, `*.yml`
/// and `*.json` (sorted), other paths are read as given.
pub(crate) fn read_inputs<P: AsRef<Path>>(paths: &[P]) -> Vec<Input> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        if p.as_os_str() == "-" {
            let mut buf = Vec::new();
            out.push(match std::io::stdin().read_to_end(&mut buf) {
                Ok(_) => text_input(STDIN_NAME.to_string(), buf),
                Err(e) => Input::Unreadable {
                    file: STDIN_NAME.to_string(),
                    message: e.to_string(),
                },
            });
        } else if p.is_dir() {
            let mut files = Vec::new();
            let mut visited = HashSet::new();
            walk(p, &mut files, &mut out, &mut visited);
            files.sort();
            out.extend(files.into_iter().map(|f| read_file(&f)));
        } else {
            out.push(read_file(p));
        }
    }
    out
}

fn is_manifest(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// Collects manifest files under `dir`; unreadable directories become diagnostics. Symlinks are
/// followed, but every directory is visited once (no symlink loops).
fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    out: &mut Vec<Input>,
    visited: &mut HashSet<PathBuf>,
) {
    if let Ok(canon) = dir.canonicalize() {
        if !visited.insert(canon) {
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.push(Input::Unreadable {
                file: dir.display().to_string(),
                message: e.to_string(),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => paths.push(e.path()),
            Err(e) => out.push(Input::Unreadable {
                file: dir.display().to_string(),
                message: e.to_string(),
            }),
        }
    }
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, files, out, visited);
        } else if is_manifest(&p) {
            files.push(p);
        }
    }
}

fn read_file(p: &Path) -> Input {
    let file = p.display().to_string();
    match std::fs::read(p) {
        Ok(bytes) => text_input(file, bytes),
        Err(e) => Input::Unreadable {
            file,
            message: e.to_string(),
        },
    }
}

fn text_input(file: String, bytes: Vec<u8>) -> Input {
    match String::from_utf8(bytes) {
        Ok(text) => Input::Text { file, text },
        Err(e) => Input::Unreadable {
            file,
            message: format!("not valid UTF-8: {}", e.utf8_error()),
        },
    }
}

/// One parsed document, or its syntax error.
pub(crate) type Doc = (usize, Result<Value, String>);

/// Splits and parses `text`. JSON is used for `*.json` files, and for other input that is a
/// valid JSON stream; everything else is YAML.
pub(crate) fn parse_documents(file: &str, text: &str) -> Vec<Doc> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if file.ends_with(".json") {
        return parse_json(text);
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let docs = parse_json(text);
        if docs.iter().all(|(_, d)| d.is_ok()) {
            return docs;
        }
    }
    parse_yaml(text)
}

/// A stream of JSON values (usually one).
fn parse_json(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    for (i, v) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        match v {
            Ok(v) => docs.push((i, Ok(v))),
            Err(e) => {
                docs.push((i, Err(format!("JSON syntax error: {e}"))));
                break;
            }
        }
    }
    if docs.is_empty() {
        docs.push((0, Ok(Value::Null)));
    }
    docs
}

/// A piece of a YAML stream that starts at a document marker (or at the start of the text).
struct Chunk<'a> {
    text: &'a str,
    first_line: usize,
}

fn is_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Whether a line holds nothing that makes a document (blank, comment or directive).
fn is_prelude(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || line.starts_with('%')
}

/// Splits at `---` lines. A first piece with no content (only comments or directives) is
/// merged into the next, as it is not a document of its own.
fn split_chunks(text: &str) -> Vec<Chunk<'_>> {
    let mut starts: Vec<(usize, usize)> = vec![(0, 0)];
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if n > 0 && is_marker(line) {
            starts.push((offset, n));
        }
        offset += line.len();
    }
    if starts.len() > 1 {
        let first_end = starts.get(1).map_or(0, |s| s.0);
        if text[..first_end].split_inclusive('\n').all(is_prelude) {
            starts.remove(1);
        }
    }
    let mut chunks = Vec::new();
    for (i, &(start, line)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |s| s.0);
        chunks.push(Chunk {
            text: &text[start..end],
            first_line: line,
        });
    }
    chunks
}

/// Adds `offset` to every `line N` in a libyaml message, so it names lines of the whole file.
fn shift_lines(msg: &str, offset: usize) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(pos) = rest.find("line ") {
        let (before, after) = rest.split_at(pos + "line ".len());
        out.push_str(before);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
        rest = &after[digits.len()..];
    }
    out.push_str(rest);
    out
}

fn parse_yaml(text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut n = 0;
    for chunk in split_chunks(text) {
        for de in serde_yaml_ng::Deserializer::from_str(chunk.text) {
            let parsed = serde_yaml_ng::Value::deserialize(de).and_then(|mut v| {
                v.apply_merge()?;
                Ok(v)
            });
            match parsed {
                Ok(v) => {
                    docs.push((n, yaml_to_json(v)));
                    n += 1;
                }
                Err(e) => {
                    let msg = shift_lines(&e.to_string(), chunk.first_line);
                    docs.push((n, Err(format!("YAML syntax error: {msg}"))));
                    n += 1;
                    // libyaml cannot continue after an error; the next chunk starts afresh.
                    break;
                }
            }
        }
    }
    docs
}

/// Converts a YAML value to JSON as `sigs.k8s.io/yaml` does: tags are dropped, scalar keys
/// become strings, non-finite floats and collection keys are errors.
fn yaml_to_json(v: serde_yaml_ng::Value) -> Result<Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                Value::Number(i.into())
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                Value::Number(Number::from_f64(f).ok_or_else(|| format!("unsupported number {n}"))?)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_string(),
                    Y::Tagged(t) => match t.value {
                        Y::String(s) => s,
                        _ => return Err("unsupported mapping key (not a scalar)".to_string()),
                    },
                    Y::Sequence(_) | Y::Mapping(_) => {
                        return Err("unsupported mapping key (not a scalar)".to_string())
                    }
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(t.value)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(docs: &[Doc]) -> Vec<Result<Value, String>> {
        docs.iter().map(|(_, d)| d.clone()).collect()
    }

    #[test]
    fn splits_documents_and_keeps_going_after_errors() {
        let text = "# header\n---\na: 1\n---\nb: [\n---\nc: 3\n";
        let docs = parse_documents("x.yaml", text);
        let idx: Vec<usize> = docs.iter().map(|d| d.0).collect();
        assert_eq!(idx, vec![0, 1, 2]);
        let v = values(&docs);
        assert_eq!(v[0], Ok(serde_json::json!({"a": 1})));
        assert!(v[1].is_err());
        assert_eq!(v[2], Ok(serde_json::json!({"c": 3})));
    }

    #[test]
    fn syntax_error_names_the_file_line() {
        let text = "a: 1\n---\nb: 2\nc: [\n";
        let docs = parse_documents("x.yaml", text);
        let err = docs[1].1.clone().err().unwrap_or_default();
        assert!(err.contains("line 5") || err.contains("line 4"), "{err}");
    }

    #[test]
    fn no_leading_marker_and_inline_marker_content() {
        let docs = parse_documents("x.yaml", "a: 1\n--- {b: 2}\n...\n");
        let v = values(&docs);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1], Ok(serde_json::json!({"b": 2})));
    }

    #[test]
    fn marker_like_text_inside_values_is_not_split() {
        let docs = parse_documents("x.yaml", "a: |\n  ---\n  x\nb: '---'\n");
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn merge_keys_and_odd_keys() {
        let docs = parse_documents(
            "x.yaml",
            "base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\n1: one\ntrue: yes\n",
        );
        assert_eq!(
            values(&docs)[0],
            Ok(
                serde_json::json!({"base": {"x": 1}, "m": {"x": 1, "y": 2}, "1": "one", "true": "yes"})
            )
        );
        let docs = parse_documents("x.yaml", "? [a]\n: 1\n");
        assert!(docs[0].1.is_err());
        let docs = parse_documents("x.yaml", "a: .nan\n");
        assert!(docs[0].1.is_err());
    }

    #[test]
    fn json_files_and_streams() {
        let docs = parse_documents("x.json", "{\"a\": 1} {\"b\": 2}");
        assert_eq!(docs.len(), 2);
        let docs = parse_documents("x.json", "{\"a\": ");
        assert!(docs[0].1.is_err());
        let docs = parse_documents("x.json", "");
        assert_eq!(values(&docs), vec![Ok(Value::Null)]);
        // Not a .json name, but JSON content: read as JSON.
        let docs = parse_documents("<stdin>", "{\"a\":\t1}");
        assert_eq!(values(&docs), vec![Ok(serde_json::json!({"a": 1}))]);
        // Flow YAML that is not JSON falls back to YAML.
        let docs = parse_documents("<stdin>", "{a: 1}");
        assert_eq!(values(&docs), vec![Ok(serde_json::json!({"a": 1}))]);
    }

    #[test]
    fn shifting_line_numbers() {
        assert_eq!(
            shift_lines("x at line 2 column 3, while parsing at line 1 column 1", 10),
            "x at line 12 column 3, while parsing at line 11 column 1"
        );
        assert_eq!(shift_lines("line x", 3), "line x");
    }
}
