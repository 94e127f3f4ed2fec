//! CNI spec versions this plugin speaks, and what differs between them in its output.

use serde_json::{json, Value};

/// A supported CNI spec version. 0.1.0 and 0.2.0 (the pre-0.3 `ip4`/`ip6` result) are not
/// supported: every runtime in use speaks 0.3.0 or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    /// Every supported version, oldest first (the `supportedVersions` list).
    pub const ALL: [SpecVersion; 5] = [
        SpecVersion::V0_3_0,
        SpecVersion::V0_3_1,
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ];
    /// The version this plugin implements.
    pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<SpecVersion> {
        SpecVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// 0.3.x and 0.4.0 results carry `"version": "4"|"6"` in each `ips` entry; 1.0.0 dropped it.
    pub fn ips_have_version(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// 1.1.0 added `mtu` to `interfaces` entries.
    pub fn interfaces_have_mtu(self) -> bool {
        self >= SpecVersion::V1_1_0
    }

    /// CHECK exists since 0.4.0.
    pub fn has_check(self) -> bool {
        self >= SpecVersion::V0_4_0
    }

    /// STATUS and GC exist since 1.1.0.
    pub fn has_status_and_gc(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

/// The VERSION result. `cniVersion` echoes the input's when it is one we speak.
pub fn version_result(input: Option<&str>) -> Value {
    let v = input
        .and_then(SpecVersion::parse)
        .unwrap_or(SpecVersion::LATEST);
    json!({
        "cniVersion": v.as_str(),
        "supportedVersions": SpecVersion::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for v in SpecVersion::ALL {
            assert_eq!(SpecVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.1", "2.0.0", "", "1.1.0 "] {
            assert_eq!(SpecVersion::parse(bad), None, "{bad}");
        }
        assert!(SpecVersion::V0_4_0.ips_have_version());
        assert!(!SpecVersion::V1_0_0.ips_have_version());
        assert!(!SpecVersion::V1_0_0.interfaces_have_mtu());
        assert!(SpecVersion::V1_1_0.interfaces_have_mtu());
        assert!(!SpecVersion::V0_3_1.has_check());
        assert!(!SpecVersion::V1_0_0.has_status_and_gc());
    }

    #[test]
    fn version_output() {
        assert_eq!(
            version_result(Some("0.4.0")),
            json!({"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
        assert_eq!(version_result(Some("9.0.0"))["cniVersion"], "1.1.0");
        assert_eq!(version_result(None)["cniVersion"], "1.1.0");
    }
}
