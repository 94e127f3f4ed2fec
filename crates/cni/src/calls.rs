//! The record of one plugin call, appended by `furynet-cni` to its `metricsFile` (one JSON
//! object per line) and folded into `furynet_cni_*` metrics by the node agent. An append-only
//! file keeps every call, also those made while the agent is down.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The node the call ran on (`nodeName`, else the hostname).
    pub node: String,
    /// `CNI_COMMAND` as given (`ADD`, `DEL`, ...; `none` when unset).
    pub verb: String,
    /// The plugin printed a result (not an error).
    pub ok: bool,
    /// Wall time of the call.
    pub seconds: f64,
}

impl CallRecord {
    /// One line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses one line; `None` for anything else (a torn or foreign line is skipped).
    pub fn parse(line: &str) -> Option<CallRecord> {
        serde_json::from_str(line.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let r = CallRecord {
            node: "n1".into(),
            verb: "ADD".into(),
            ok: false,
            seconds: 0.004,
        };
        let line = r.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(CallRecord::parse(&line), Some(r));
        assert_eq!(CallRecord::parse("{\"node\":\"n1\""), None);
        assert_eq!(CallRecord::parse(""), None);
    }
}
