//! The `--datastore` argument shared by subcommands that talk to cluster state.

use std::path::PathBuf;
use std::sync::Arc;

use furynet_datastore::{open, Datastore, DatastoreConfig};

/// Parses `--datastore`: a directory (embedded store), `embedded:DIR`, or etcd client URLs
/// (`etcd://HOST:PORT[,HOST:PORT]`, or `http://HOST:PORT[,...]`), or the Kubernetes API
/// (`kubernetes` for the in-cluster config or `$KUBECONFIG`, `kubernetes:KUBECONFIG`).
pub fn parse(s: &str) -> Result<DatastoreConfig, String> {
    if let Some(rest) = s.strip_prefix("etcd://") {
        let endpoints: Vec<String> = rest
            .split(',')
            .filter(|e| !e.is_empty())
            .map(|e| format!("http://{e}"))
            .collect();
        if endpoints.is_empty() {
            return Err(format!("{s:?}: no etcd endpoint after etcd://"));
        }
        return Ok(DatastoreConfig::Etcd { endpoints });
    }
    if s == "kubernetes" {
        return Ok(DatastoreConfig::Kubernetes {
            kubeconfig: None,
            lease_namespace: None,
        });
    }
    if let Some(path) = s.strip_prefix("kubernetes:") {
        if path.is_empty() {
            return Err(format!("{s:?}: no kubeconfig path after kubernetes:"));
        }
        return Ok(DatastoreConfig::Kubernetes {
            kubeconfig: Some(PathBuf::from(path)),
            lease_namespace: None,
        });
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(DatastoreConfig::Etcd {
            endpoints: s.split(',').map(str::to_string).collect(),
        });
    }
    let path = s.strip_prefix("embedded:").unwrap_or(s);
    if path.is_empty() {
        return Err("empty datastore path".to_string());
    }
    Ok(DatastoreConfig::Embedded {
        path: PathBuf::from(path),
    })
}

pub fn connect(cfg: &DatastoreConfig) -> Result<Arc<dyn Datastore>, String> {
    open(cfg).map_err(|e| format!("cannot open the datastore: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse("/var/lib/furynet"),
            Ok(DatastoreConfig::Embedded {
                path: "/var/lib/furynet".into()
            })
        );
        assert_eq!(
            parse("embedded:/tmp/x"),
            Ok(DatastoreConfig::Embedded {
                path: "/tmp/x".into()
            })
        );
        assert_eq!(
            parse("etcd://127.0.0.1:2379,127.0.0.2:2379"),
            Ok(DatastoreConfig::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:2379".into(),
                    "http://127.0.0.2:2379".into()
                ]
            })
        );
        assert!(parse("etcd://").is_err());
        assert_eq!(
            parse("kubernetes:/etc/k"),
            Ok(DatastoreConfig::Kubernetes {
                kubeconfig: Some("/etc/k".into()),
                lease_namespace: None
            })
        );
        assert!(matches!(
            parse("kubernetes"),
            Ok(DatastoreConfig::Kubernetes {
                kubeconfig: None,
                ..
            })
        ));
        assert!(parse("kubernetes:").is_err());
        assert!(parse("").is_err());
    }
}
