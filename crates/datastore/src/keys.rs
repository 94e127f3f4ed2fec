//! The root prefix every backend stores its keys under, and key validation.

use crate::error::{Error, Result};

/// The root prefix used when none is given: all furynet state lives under `/furynet/`.
pub const DEFAULT_ROOT: &str = "/furynet/";

/// A normalised root prefix: starts and ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root(String);

impl Root {
    pub(crate) fn new(root: &str) -> Result<Self> {
        if root.is_empty() || root.contains('\0') {
            return Err(Error::Config {
                reason: format!("root prefix {root:?} must be a non-empty path like \"/furynet/\""),
            });
        }
        let mut r = String::with_capacity(root.len() + 2);
        if !root.starts_with('/') {
            r.push('/');
        }
        r.push_str(root);
        if !r.ends_with('/') {
            r.push('/');
        }
        Ok(Root(r))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored (full) key of a caller key.
    pub(crate) fn full(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + key.len());
        k.extend_from_slice(self.0.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The caller key of a stored key; `None` if it is not under this root or not UTF-8.
    pub(crate) fn strip(&self, full: &[u8]) -> Option<String> {
        let rest = full.strip_prefix(self.0.as_bytes())?;
        String::from_utf8(rest.to_vec()).ok()
    }
}

/// The exclusive end of the key range covering every key that starts with `prefix`
/// (etcd's rule: increment the last byte that is not 0xff). `None` means "no upper bound",
/// which only happens for an all-0xff prefix, never for UTF-8 text.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Keys for single-key operations must be non-empty.
pub(crate) fn check_key(op: &'static str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument {
            op,
            reason: "key is empty".into(),
        });
    }
    Ok(())
}

/// Expected revisions for compare-and-swap are positive (a key's mod revision always is).
pub(crate) fn check_revision(op: &'static str, key: &str, revision: i64) -> Result<()> {
    if revision <= 0 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "expected mod revision {revision} for key {key:?} is not positive; pass the mod_revision read from the store"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_normalised() {
        assert_eq!(Root::new("furynet").unwrap().as_str(), "/furynet/");
        assert_eq!(Root::new("/a/b/").unwrap().as_str(), "/a/b/");
        assert!(Root::new("").is_err());
        let r = Root::new(DEFAULT_ROOT).unwrap();
        assert_eq!(r.full("ipam/x"), b"/furynet/ipam/x".to_vec());
        assert_eq!(r.strip(b"/furynet/ipam/x").as_deref(), Some("ipam/x"));
        assert_eq!(r.strip(b"/other/ipam/x"), None);
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(vec![b'b']));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
