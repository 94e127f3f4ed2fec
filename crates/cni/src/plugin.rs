//! Entry point of the plugin logic: environment + stdin in, stdout + exit code out. No I/O of
//! its own: the kernel and the allocator come in through [`Deps`], so every verb runs in unit
//! tests against fakes.

use furynet_dataplane::Kernel;
use serde_json::Value;
use tracing::{error, info_span, warn};

use crate::alloc::{AllocError, Allocator};
use crate::config::{self, LogConf, NetConf};
use crate::env::{self, Command};
use crate::error::{code, CniError};
use crate::version::{version_result, SpecVersion};
use crate::{add, check, teardown};

/// Opens the allocator for a configuration and node.
pub type AllocatorFactory<'a> =
    &'a dyn Fn(&NetConf, &str) -> Result<Box<dyn Allocator>, AllocError>;

/// What the plugin logic needs from the outside world.
pub struct Deps<'a> {
    pub kernel: &'a dyn Kernel,
    pub allocator: AllocatorFactory<'a>,
    /// The host name (the default `nodeName`).
    pub hostname: &'a dyn Fn() -> Option<String>,
    /// Starts deleting the retired host veths ([`crate::wiring::reap`]) without waiting for
    /// it: the binary spawns a detached `furynet-cni --reap-retired`.
    pub start_reaper: &'a dyn Fn(),
}

impl std::fmt::Debug for Deps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deps")
    }
}

/// What to print on stdout and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A result, the VERSION answer, an error object, or nothing.
    pub stdout: String,
    pub exit_code: u8,
}

/// Runs one plugin invocation.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8], deps: &Deps<'_>) -> Outcome {
    let mut version = SpecVersion::LATEST;
    match dispatch(get, stdin, deps, &mut version) {
        Ok(None) => Outcome {
            stdout: String::new(),
            exit_code: 0,
        },
        Ok(Some(v)) => Outcome {
            stdout: format!("{v}\n"),
            exit_code: 0,
        },
        Err(e) => {
            error!(code = e.code, msg = %e.msg, details = %e.details, "CNI request failed");
            Outcome {
                stdout: format!("{}\n", e.to_json(version.as_str())),
                exit_code: 1,
            }
        }
    }
}

fn dispatch(
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &[u8],
    deps: &Deps<'_>,
    version: &mut SpecVersion,
) -> Result<Option<Value>, CniError> {
    let cmd = env::command(get)?;
    if cmd == Command::Version {
        let input = serde_json::from_slice::<Value>(stdin).ok();
        let v = input
            .as_ref()
            .and_then(|v| v.get("cniVersion"))
            .and_then(Value::as_str);
        return Ok(Some(version_result(v)));
    }
    let attach = if cmd.is_attachment() {
        Some(env::attachment(cmd, get)?)
    } else {
        None
    };
    let raw = config::decode(stdin)?;
    *version = config::version_of(&raw)?;
    let too_old = match cmd {
        Command::Check => !version.has_check(),
        Command::Status | Command::Gc => !version.has_status_and_gc(),
        _ => false,
    };
    if too_old {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "{} needs cniVersion {} or later; the configuration says {}",
                cmd.as_str(),
                if cmd == Command::Check {
                    "0.4.0"
                } else {
                    "1.1.0"
                },
                version.as_str()
            ),
        ));
    }
    let conf = config::parse(&raw, *version)?;
    let node = match conf.node_name.clone().or_else(|| (deps.hostname)()) {
        Some(n) => n,
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "nodeName is not set and the host name is unknown",
            ))
        }
    };

    let a = attach.as_ref();
    let span = info_span!(
        "cni",
        command = cmd.as_str(),
        network = %conf.name,
        node = %node,
        container_id = a.map(|a| a.container_id.as_str()),
        ifname = a.map(|a| a.ifname.as_str()),
        namespace = a.and_then(|a| a.args.pod_namespace.as_deref()),
        pod = a.and_then(|a| a.args.pod_name.as_deref()),
    );
    let _entered = span.enter();
    for k in &conf.unknown_keys {
        warn!(key = %k, "unknown configuration key ignored");
    }

    match (cmd, attach) {
        (Command::Add, Some(a)) => add::add(&conf, &node, &a, deps).map(Some),
        (Command::Del, Some(a)) => teardown::del(&conf, &node, &a, deps).map(|()| None),
        (Command::Check, Some(a)) => check::check(&conf, &node, &a, deps).map(|()| None),
        (Command::Status, _) => teardown::status(&conf, &node, deps).map(|()| None),
        (Command::Gc, _) => teardown::gc(&conf, &node, deps).map(|()| None),
        _ => Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment variables: CNI_COMMAND",
            format!("unexpected command {}", cmd.as_str()),
        )),
    }
}

/// A string field of the configuration on stdin, read without validating anything else.
struct Lenient(Option<Value>);

impl Lenient {
    fn new(stdin: &[u8]) -> Self {
        Lenient(serde_json::from_slice(stdin).ok())
    }

    fn get(&self, k: &str) -> Option<String> {
        self.0
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn absolute_path(&self, k: &str) -> Option<std::path::PathBuf> {
        self.get(k)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    }
}

/// Reads `logFile`/`logLevel` from a configuration without validating anything else, so
/// logging can start before the configuration is fully parsed.
pub fn log_conf_hint(stdin: &[u8]) -> LogConf {
    let conf = Lenient::new(stdin);
    let level = conf
        .get("logLevel")
        .filter(|l| ["error", "warn", "info", "debug", "trace"].contains(&l.as_str()))
        .unwrap_or_else(|| "info".into());
    LogConf {
        file: conf.absolute_path("logFile"),
        level,
    }
}

/// Where to record this call for the node agent's metrics (`metricsFile`, absolute paths only)
/// and the node name to record it under (`nodeName`), read leniently: a bad configuration is
/// still recorded (as an error).
pub fn metrics_hint(stdin: &[u8]) -> (Option<std::path::PathBuf>, Option<String>) {
    let conf = Lenient::new(stdin);
    (conf.absolute_path("metricsFile"), conf.get("nodeName"))
}

/// Allocator errors as CNI errors (ADD, DEL, GC).
pub(crate) fn alloc_error(e: AllocError) -> CniError {
    match e {
        AllocError::Transient(d) => CniError::new(
            code::TRY_AGAIN,
            "datastore temporarily unavailable, try again later",
            d,
        ),
        AllocError::Exhausted(d) => CniError::new(code::IPAM_EXHAUSTED, "IP pool exhausted", d),
        AllocError::Failed(d) => CniError::new(code::DATASTORE, "datastore failure", d),
    }
}

/// Kernel errors as CNI errors.
pub(crate) fn kernel_error(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::DATAPLANE, what.to_string(), e.to_string())
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn metrics_hint_is_lenient_and_wants_absolute_paths() {
        let (f, n) =
            metrics_hint(br#"{"metricsFile":"/run/x/calls.log","nodeName":"n1","mtu":"bad"}"#);
        assert_eq!(f, Some(std::path::PathBuf::from("/run/x/calls.log")));
        assert_eq!(n.as_deref(), Some("n1"));
        assert_eq!(metrics_hint(br#"{"metricsFile":"relative.log"}"#).0, None);
        assert_eq!(metrics_hint(b"not json"), (None, None));
    }
}
