//! Which backend to use, as written in the CNI config and the agent config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The datastore a component connects to.
///
/// JSON forms: `{"type":"embedded","path":"/var/lib/furynet"}` and
/// `{"type":"etcd","endpoints":["http://127.0.0.1:2379"]}` and
/// `{"type":"kubernetes","kubeconfig":"/etc/cni/net.d/furynet-kubeconfig"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DatastoreConfig {
    /// A local SQLite database shared by every process on this machine (the default).
    Embedded {
        /// A directory; the database file `furynet.db` lives inside (created if needed).
        path: PathBuf,
    },
    /// An etcd v3 cluster.
    Etcd {
        /// Client URLs, e.g. `http://127.0.0.1:2379`.
        endpoints: Vec<String>,
    },
    /// The Kubernetes API (custom resources for furynet's own state).
    Kubernetes {
        /// A kubeconfig file; absent: in-cluster config, then `$KUBECONFIG`, then
        /// `~/.kube/config` (as kubectl).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kubeconfig: Option<PathBuf>,
        /// Namespace of the Lease objects behind datastore leases (default `kube-system`).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            rename = "leaseNamespace"
        )]
        lease_namespace: Option<String>,
    },
}

impl DatastoreConfig {
    /// The default directory of the embedded datastore.
    pub const DEFAULT_EMBEDDED_PATH: &'static str = "/var/lib/furynet";
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        DatastoreConfig::Embedded {
            path: PathBuf::from(Self::DEFAULT_EMBEDDED_PATH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cni_forms() {
        let e: DatastoreConfig =
            serde_json::from_str(r#"{"type":"embedded","path":"/var/lib/furynet"}"#).unwrap();
        assert_eq!(e, DatastoreConfig::default());
        let c: DatastoreConfig =
            serde_json::from_str(r#"{"type":"etcd","endpoints":["http://127.0.0.1:2379"]}"#)
                .unwrap();
        assert_eq!(
            c,
            DatastoreConfig::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()]
            }
        );
        let round = serde_json::to_string(&c).unwrap();
        assert!(round.contains(r#""type":"etcd""#));
        let k: DatastoreConfig = serde_json::from_str(
            r#"{"type":"kubernetes","kubeconfig":"/k","leaseNamespace":"furynet"}"#,
        )
        .unwrap();
        assert_eq!(
            k,
            DatastoreConfig::Kubernetes {
                kubeconfig: Some("/k".into()),
                lease_namespace: Some("furynet".into())
            }
        );
        assert!(matches!(
            serde_json::from_str::<DatastoreConfig>(r#"{"type":"kubernetes"}"#).unwrap(),
            DatastoreConfig::Kubernetes {
                kubeconfig: None,
                lease_namespace: None
            }
        ));
        assert!(serde_json::from_str::<DatastoreConfig>(r#"{"type":"zookeeper"}"#).is_err());
        assert!(serde_json::from_str::<DatastoreConfig>(r#"{"type":"embedded"}"#).is_err());
    }
}
