//! Errors from kernel operations: what failed, on which object, and the errno class callers
//! branch on (`already exists`, `not found`).

use std::io;

/// Result of a kernel operation.
pub type Result<T> = std::result::Result<T, Error>;

/// A failed kernel operation. `op` names the operation (`create veth`, `add route`, ...) and
/// `object` the interface, address, route, namespace or sysctl it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object already exists (`EEXIST`).
    #[error("{op} {object}: already exists")]
    Exists { op: &'static str, object: String },
    /// The object, or something it refers to, does not exist (`ENODEV`, `ENOENT`, `ESRCH`).
    #[error("{op} {object}: not found")]
    NotFound { op: &'static str, object: String },
    /// Any other operating-system error.
    #[error("{op} {object}: {source}")]
    Os {
        op: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },
    /// The kernel answered something this crate did not expect (a bug here or a very odd kernel).
    #[error("{op} {object}: unexpected netlink reply: {detail}")]
    Protocol {
        op: &'static str,
        object: String,
        detail: String,
    },
    /// Switching back to the plugin's own network namespace failed. The process is in an unknown
    /// namespace and must stop touching the kernel.
    #[error("returning to the original network namespace failed: {0}")]
    NamespaceLost(#[source] io::Error),
}

impl Error {
    /// Classifies an `io::Error` by errno.
    pub(crate) fn from_io(op: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        let object = object.into();
        match source.raw_os_error() {
            Some(e) if e == nix::errno::Errno::EEXIST as i32 => Error::Exists { op, object },
            Some(e)
                if e == nix::errno::Errno::ENODEV as i32
                    || e == nix::errno::Errno::ENOENT as i32
                    || e == nix::errno::Errno::ESRCH as i32 =>
            {
                Error::NotFound { op, object }
            }
            _ => Error::Os { op, object, source },
        }
    }

    /// The object already existed.
    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Exists { .. })
    }

    /// The object (or what it refers to) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        let e = Error::from_io("add route", "x", io::Error::from_raw_os_error(17));
        assert!(e.is_exists());
        let e = Error::from_io("get link", "eth9", io::Error::from_raw_os_error(19));
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "get link eth9: not found");
        let e = Error::from_io("add address", "eth0", io::Error::from_raw_os_error(13));
        assert!(!e.is_exists() && !e.is_not_found());
        assert!(e.to_string().starts_with("add address eth0: "));
    }
}
