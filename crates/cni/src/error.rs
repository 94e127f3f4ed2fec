//! CNI errors: the spec's error object on stdout, with the spec's codes and ours (100+).

use serde_json::{json, Value};

/// Error codes. 1–99 are the CNI spec's well-known codes; 100+ are furynet's own.
pub mod code {
    /// The config's `cniVersion` is not one this plugin speaks (or the verb needs a newer one).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A `CNI_*` environment variable is missing or invalid; the message names it.
    pub const INVALID_ENV: u32 = 4;
    /// Reading the configuration from stdin failed.
    pub const IO: u32 = 5;
    /// The configuration on stdin is not a JSON object.
    pub const DECODE: u32 = 6;
    /// The configuration is JSON but invalid; details list every problem.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition (datastore busy or unreachable): the runtime should retry.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs (datastore unusable, pool exhausted).
    pub const NOT_AVAILABLE: u32 = 50;
    /// ADD: no free address left in the configured pools.
    pub const IPAM_EXHAUSTED: u32 = 100;
    /// The datastore (IPAM state) failed in a way retrying will not fix.
    pub const DATASTORE: u32 = 101;
    /// A kernel operation (netlink, netns, sysctl) failed.
    pub const DATAPLANE: u32 = 102;
    /// CHECK: the attachment differs from `prevResult`; details list every difference.
    pub const CHECK_FAILED: u32 = 103;
    /// ADD: `CNI_IFNAME` already exists in the container's namespace.
    pub const INTERFACE_EXISTS: u32 = 104;
}

/// An error as the CNI spec prints it: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code}): {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The spec's error object, stamped with the protocol version in use.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "x; y",
        );
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion":"1.1.0","code":7,"msg":"invalid network configuration","details":"x; y"})
        );
        let e = CniError::new(code::TRY_AGAIN, "busy", "");
        assert!(e.to_json("0.4.0").get("details").is_none());
    }
}
