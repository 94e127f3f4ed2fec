//! The network configuration on stdin: decoded once into typed values, every problem reported
//! together (error 7), version checked first (error 1), undecodable input error 6.

use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::env::is_cni_name;
use crate::error::{code, CniError};
use crate::version::SpecVersion;

/// Default datastore when the config has none.
pub const DEFAULT_DATASTORE_PATH: &str = "/var/lib/furynet";
/// Default IPv4 block prefix (64 addresses per node block).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default IPv6 block prefix (64 addresses per node block).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// Top-level keys the CNI spec or runtimes may put in a plugin's config; accepted and ignored.
const PASSTHROUGH_KEYS: &[&str] = &[
    "cniVersions",
    "type",
    "capabilities",
    "runtimeConfig",
    "args",
    "disableCheck",
    "disableGC",
    "loadOnlyInlinedPlugins",
    "ipMasq",
];

/// Where IPAM state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreConf {
    /// A local directory (the default, one machine).
    Embedded { path: PathBuf },
    /// A real etcd v3 cluster.
    Etcd { endpoints: Vec<String> },
    /// The Kubernetes API: a kubeconfig file (absent: in-cluster config, then `$KUBECONFIG`),
    /// and the namespace of lease objects.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        lease_namespace: Option<String>,
    },
}

/// An IP pool and the prefix length of the per-node blocks carved from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConf {
    pub cidr: IpNet,
    pub block_prefix: u8,
}

/// Where logs go. Never stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConf {
    /// Append to this file; stderr when `None`.
    pub file: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

/// How DEL takes the pod's interface away (`teardown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Teardown {
    /// DEL takes the veth out of service (down: no traffic, no routes), releases the address
    /// and returns; a detached reaper then deletes every retired veth in one batch. The
    /// default: the kernel's unregistering (an RCU wait, 20-40 ms) is off the DEL's path.
    #[default]
    Background,
    /// DEL deletes the veth itself and returns when the kernel has unregistered it.
    Wait,
}

/// A still-valid attachment named by GC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// The plugin's configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: SpecVersion,
    pub name: String,
    pub datastore: DatastoreConf,
    pub node_name: Option<String>,
    pub pools: Vec<PoolConf>,
    pub mtu: Option<u32>,
    pub teardown: Teardown,
    /// `dns`, copied into the ADD result.
    pub dns: Option<Value>,
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (or the older `cni.dev/attachments`).
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    pub log: LogConf,
    /// Top-level keys we do not know (logged as warnings; typos show up there).
    pub unknown_keys: Vec<String>,
}

impl NetConf {
    /// Whether any pool is IPv6 (the MTU floor is then 1280).
    pub fn has_v6(&self) -> bool {
        self.pools.iter().any(|p| matches!(p.cidr, IpNet::V6(_)))
    }
}

/// Decodes stdin into a JSON object (error 6 otherwise).
pub fn decode(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "cannot decode network configuration",
            format!("stdin is not JSON: {e}"),
        )
    })?;
    match value {
        Value::Object(m) => Ok(m),
        other => Err(CniError::new(
            code::DECODE,
            "cannot decode network configuration",
            format!("expected a JSON object, found {}", json_kind(&other)),
        )),
    }
}

/// The config's `cniVersion`, if it is one we speak (error 1 otherwise).
pub fn version_of(conf: &Map<String, Value>) -> Result<SpecVersion, CniError> {
    let supported = SpecVersion::ALL.map(|v| v.as_str()).join(", ");
    match conf.get("cniVersion") {
        Some(Value::String(s)) => SpecVersion::parse(s).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!("cniVersion {s:?} is not supported; this plugin supports {supported}"),
            )
        }),
        Some(other) => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("cniVersion must be a string, found {}", json_kind(other)),
        )),
        None => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "cniVersion is missing (a pre-0.2.0 config?); this plugin supports {supported}"
            ),
        )),
    }
}

/// Validates the whole configuration (after [`version_of`] succeeded).
pub fn parse(conf: &Map<String, Value>, cni_version: SpecVersion) -> Result<NetConf, CniError> {
    let mut errs: Vec<String> = Vec::new();

    let name = match conf.get("name") {
        Some(Value::String(s)) if is_cni_name(s) => s.clone(),
        Some(Value::String(s)) => {
            errs.push(format!(
                "name {s:?}: must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            ));
            String::new()
        }
        Some(other) => {
            errs.push(format!(
                "name: expected a string, found {}",
                json_kind(other)
            ));
            String::new()
        }
        None => {
            errs.push("name is missing".into());
            String::new()
        }
    };

    let datastore = parse_datastore(conf.get("datastore"), &mut errs);
    let node_name = opt_string(conf, "nodeName", &mut errs);
    if let Some(n) = &node_name {
        if n.is_empty() || n.len() > 253 || n.chars().any(|c| c.is_whitespace() || c == '/') {
            errs.push(format!(
                "nodeName {n:?}: must be 1-253 characters without '/' or whitespace"
            ));
        }
    }
    let pools = parse_ipam(conf.get("ipam"), &mut errs);

    let mtu = match conf.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(m) if (68..=65535).contains(&m) => Some(m as u32),
            _ => {
                errs.push(format!("mtu: expected an integer 68-65535, found {v}"));
                None
            }
        },
    };
    let has_v6 = pools.iter().any(|p| matches!(p.cidr, IpNet::V6(_)));
    if let Some(m) = mtu {
        if has_v6 && m < 1280 {
            errs.push(format!("mtu {m}: IPv6 needs at least 1280"));
        }
    }

    let teardown = match conf.get("teardown") {
        None | Some(Value::Null) => Teardown::default(),
        Some(Value::String(t)) if t == "background" => Teardown::Background,
        Some(Value::String(t)) if t == "wait" => Teardown::Wait,
        Some(other) => {
            errs.push(format!(
                "teardown: expected \"background\" or \"wait\", found {other}"
            ));
            Teardown::default()
        }
    };

    let dns = match conf.get("dns") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            errs.push(format!(
                "dns: expected an object, found {}",
                json_kind(other)
            ));
            None
        }
    };
    let prev_result = match conf.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            errs.push(format!(
                "prevResult: expected an object, found {}",
                json_kind(other)
            ));
            None
        }
    };
    let valid_attachments = parse_attachments(conf, &mut errs);

    let log_file = opt_string(conf, "logFile", &mut errs).map(PathBuf::from);
    if let Some(f) = &log_file {
        if !f.is_absolute() {
            errs.push(format!("logFile {}: must be an absolute path", f.display()));
        }
    }
    let level = opt_string(conf, "logLevel", &mut errs).unwrap_or_else(|| "info".into());
    if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
        errs.push(format!(
            "logLevel {level:?}: expected error, warn, info, debug or trace"
        ));
    }

    const OWN_KEYS: &[&str] = &[
        "cniVersion",
        "name",
        "datastore",
        "nodeName",
        "ipam",
        "mtu",
        "teardown",
        "dns",
        "prevResult",
        "cni.dev/valid-attachments",
        "cni.dev/attachments",
        "logFile",
        "logLevel",
        "metricsFile",
    ];
    let unknown_keys = conf
        .keys()
        .filter(|k| {
            !OWN_KEYS.contains(&k.as_str())
                && !PASSTHROUGH_KEYS.contains(&k.as_str())
                && !k.starts_with("cni.dev/")
        })
        .cloned()
        .collect();

    if !errs.is_empty() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            errs.join("; "),
        ));
    }
    Ok(NetConf {
        cni_version,
        name,
        datastore,
        node_name,
        pools,
        mtu,
        teardown,
        dns,
        prev_result,
        valid_attachments,
        log: LogConf {
            file: log_file,
            level,
        },
        unknown_keys,
    })
}

fn parse_datastore(v: Option<&Value>, errs: &mut Vec<String>) -> DatastoreConf {
    let fallback = DatastoreConf::Embedded {
        path: PathBuf::from(DEFAULT_DATASTORE_PATH),
    };
    let obj = match v {
        None | Some(Value::Null) => return fallback,
        Some(Value::Object(o)) => o,
        Some(other) => {
            errs.push(format!(
                "datastore: expected an object, found {}",
                json_kind(other)
            ));
            return fallback;
        }
    };
    let kind = opt_string(obj, "type", errs);
    match kind.as_deref() {
        Some("embedded") => {
            unknown_fields(obj, "datastore", &["type", "path"], errs);
            let path = opt_string(obj, "path", errs)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATASTORE_PATH));
            if !path.is_absolute() {
                errs.push(format!(
                    "datastore.path {}: must be an absolute path",
                    path.display()
                ));
            }
            DatastoreConf::Embedded { path }
        }
        Some("etcd") => {
            unknown_fields(obj, "datastore", &["type", "endpoints"], errs);
            let endpoints = match obj.get("endpoints") {
                Some(Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .filter_map(|e| match e.as_str() {
                        Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
                            Some(s.to_string())
                        }
                        _ => {
                            errs.push(format!(
                                "datastore.endpoints: {e} is not an http:// or https:// URL"
                            ));
                            None
                        }
                    })
                    .collect(),
                _ => {
                    errs.push("datastore.endpoints: expected a non-empty list of URLs".into());
                    Vec::new()
                }
            };
            DatastoreConf::Etcd { endpoints }
        }
        Some("kubernetes") => {
            unknown_fields(
                obj,
                "datastore",
                &["type", "kubeconfig", "leaseNamespace"],
                errs,
            );
            let kubeconfig = opt_string(obj, "kubeconfig", errs).map(PathBuf::from);
            if let Some(p) = kubeconfig.as_ref().filter(|p| !p.is_absolute()) {
                errs.push(format!(
                    "datastore.kubeconfig {}: must be an absolute path",
                    p.display()
                ));
            }
            let lease_namespace = opt_string(obj, "leaseNamespace", errs);
            DatastoreConf::Kubernetes {
                kubeconfig,
                lease_namespace,
            }
        }
        Some(other) => {
            errs.push(format!(
                "datastore.type {other:?}: expected \"embedded\", \"etcd\" or \"kubernetes\""
            ));
            fallback
        }
        None => {
            errs.push(
                "datastore.type is missing (\"embedded\", \"etcd\" or \"kubernetes\")".into(),
            );
            fallback
        }
    }
}

fn parse_ipam(v: Option<&Value>, errs: &mut Vec<String>) -> Vec<PoolConf> {
    let obj = match v {
        Some(Value::Object(o)) => o,
        None | Some(Value::Null) => {
            errs.push("ipam is missing (it needs \"pools\")".into());
            return Vec::new();
        }
        Some(other) => {
            errs.push(format!(
                "ipam: expected an object, found {}",
                json_kind(other)
            ));
            return Vec::new();
        }
    };
    unknown_fields(
        obj,
        "ipam",
        &["type", "pools", "blockSize", "blockSizeV6"],
        errs,
    );
    if let Some(t) = opt_string(obj, "type", errs) {
        if t != "furynet" {
            errs.push(format!(
                "ipam.type {t:?}: furynet-cni allocates addresses itself; omit ipam.type or set it to \"furynet\""
            ));
        }
    }
    let block_v4 = block_size(obj, "blockSize", 32, errs);
    let block_v6 = block_size(obj, "blockSizeV6", 128, errs);

    let raw = match obj.get("pools") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            errs.push("ipam.pools: expected a non-empty list of CIDRs".into());
            return Vec::new();
        }
    };
    let mut pools: Vec<PoolConf> = Vec::new();
    for p in raw {
        let Some(s) = p.as_str() else {
            errs.push(format!("ipam.pools: {p} is not a CIDR string"));
            continue;
        };
        let cidr: IpNet = match s.parse() {
            Ok(c) => c,
            Err(_) => {
                errs.push(format!("ipam.pools: {s:?} is not a CIDR"));
                continue;
            }
        };
        if cidr != cidr.trunc() {
            errs.push(format!(
                "ipam.pools: {s} has host bits set (did you mean {}?)",
                cidr.trunc()
            ));
            continue;
        }
        let (given, default, label) = match cidr {
            IpNet::V4(_) => (block_v4, DEFAULT_BLOCK_SIZE_V4, "blockSize"),
            IpNet::V6(_) => (block_v6, DEFAULT_BLOCK_SIZE_V6, "blockSizeV6"),
        };
        let block_prefix = match given {
            Some(b) if b < cidr.prefix_len() => {
                errs.push(format!(
                    "ipam.{label} {b}: blocks must fit inside pool {cidr} (use /{} or longer)",
                    cidr.prefix_len()
                ));
                continue;
            }
            Some(b) => b,
            // Without an explicit size, a pool smaller than a default block is one block.
            None => default.max(cidr.prefix_len()),
        };
        if let Some(other) = pools
            .iter()
            .find(|o| o.cidr.contains(&cidr) || cidr.contains(&o.cidr))
        {
            errs.push(format!("ipam.pools: {cidr} overlaps {}", other.cidr));
            continue;
        }
        pools.push(PoolConf { cidr, block_prefix });
    }
    pools
}

fn block_size(obj: &Map<String, Value>, key: &str, max: u8, errs: &mut Vec<String>) -> Option<u8> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(b) if b <= u64::from(max) => Some(b as u8),
            _ => {
                errs.push(format!(
                    "ipam.{key}: expected an integer 0-{max}, found {v}"
                ));
                None
            }
        },
    }
}

fn parse_attachments(
    conf: &Map<String, Value>,
    errs: &mut Vec<String>,
) -> Option<Vec<ValidAttachment>> {
    let (key, v) = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| conf.get(*k).map(|v| (*k, v)))?;
    let Value::Array(items) = v else {
        errs.push(format!("{key}: expected a list, found {}", json_kind(v)));
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        let cid = item.get("containerID").and_then(Value::as_str);
        let ifname = item.get("ifname").and_then(Value::as_str);
        match (cid, ifname) {
            (Some(c), Some(i)) => out.push(ValidAttachment {
                container_id: c.to_string(),
                ifname: i.to_string(),
            }),
            _ => errs.push(format!(
                "{key}: {item} needs string fields containerID and ifname"
            )),
        }
    }
    Some(out)
}

fn opt_string(obj: &Map<String, Value>, key: &str, errs: &mut Vec<String>) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errs.push(format!(
                "{key}: expected a string, found {}",
                json_kind(other)
            ));
            None
        }
    }
}

fn unknown_fields(obj: &Map<String, Value>, ctx: &str, known: &[&str], errs: &mut Vec<String>) {
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            errs.push(format!(
                "{ctx}.{k}: unknown field (known: {})",
                known.join(", ")
            ));
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
