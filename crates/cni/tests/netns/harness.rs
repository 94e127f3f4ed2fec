//! Throwaway network namespaces and a runner for the real `furynet-cni` binary.
//!
//! Every test gets its own "host" namespace (the plugin runs inside it, so the machine's real
//! namespace is never touched) with an uplink (a veth pair standing in for the NIC, addresses
//! from the documentation ranges, default routes through it) and as many "pod" namespaces as
//! it needs. Names are `fnyt-<pid>-<n>-<role>`; everything is deleted on drop, panics included.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_furynet-cni");
/// The host namespace's own addresses (on the uplink).
pub const HOST_V4: &str = "192.0.2.1";
pub const HOST_V6: &str = "2001:db8:ff::1";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// True when the privileged tests can run; prints the skip notice otherwise.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED (needs root)");
        false
    }
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(role: &str) -> Ns {
        let name = format!(
            "fnyt-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run_ok("ip", &["netns", "add", &name]);
        Ns { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn path_str(&self) -> String {
        self.path().display().to_string()
    }

    /// `ip -n NAME ARGS...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(cmd);
        Command::new("ip")
            .args(&full)
            .output()
            .expect("ip netns exec")
    }

    pub fn link_names(&self) -> Vec<String> {
        self.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Pings `addr` from this namespace (a few tries: IPv6 neighbour discovery may need one).
    pub fn ping(&self, addr: &str) -> bool {
        (0..5).any(|_| {
            let out = self.exec(&["ping", "-c1", "-W1", addr]);
            if out.status.code() == Some(127)
                || String::from_utf8_lossy(&out.stderr).contains("No such file")
            {
                panic!("ping is not installed (Debian: iputils-ping)");
            }
            out.status.success()
        })
    }

    pub fn sysctl(&self, key: &str) -> String {
        let out = self.exec(&["cat", &format!("/proc/sys/{key}")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One plugin invocation's outcome.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Success; stdout is exactly one JSON document (or empty); returns it.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
                panic!("stdout is not one JSON document ({e}): {}", self.stdout)
            })
        }
    }

    /// Success with nothing on stdout (DEL, CHECK, STATUS, GC).
    pub fn ok_silent(&self) {
        assert_eq!(self.ok(), Value::Null, "expected empty stdout");
    }

    /// A CNI error with `code`: non-zero exit, stdout exactly one error object.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(self.code, 0, "expected failure: {}", self.stdout);
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout must be exactly one JSON error ({e}): {:?} (stderr {})",
                self.stdout, self.stderr
            )
        });
        assert_eq!(v["code"], code, "{v} / stderr: {}", self.stderr);
        assert!(v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
        v
    }
}

/// A test "node": the host namespace, a datastore directory, a configuration.
pub struct Lab {
    pub host: Ns,
    pub datastore: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let host = Ns::new("h");
        host.ip(&["link", "set", "lo", "up"]);
        host.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        host.ip(&["addr", "add", &format!("{HOST_V4}/24"), "dev", "up0"]);
        host.ip(&[
            "addr",
            "add",
            &format!("{HOST_V6}/64"),
            "dev",
            "up0",
            "nodad",
        ]);
        host.ip(&["link", "set", "up0", "up"]);
        host.ip(&["link", "set", "up1", "up"]);
        host.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            "up0",
            "onlink",
        ]);
        host.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:ff::fe",
            "dev",
            "up0",
            "onlink",
        ]);
        Lab {
            host,
            datastore: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn conf(&self, version: &str) -> Value {
        json!({"cniVersion": version, "name": "k8s-pod-network", "type": "furynet-cni",
               "datastore": {"type": "embedded", "path": self.datastore.path()},
               "nodeName": "node-1",
               "ipam": {"pools": ["10.244.0.0/16", "fd00:10:244::/56"], "blockSize": 26},
               "mtu": 1450})
    }

    /// Runs the plugin inside the host namespace with exactly `env` (plus PATH).
    pub fn cni(&self, env: &[(&str, &str)], stdin: &str) -> Run {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.name, BIN])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn verb(&self, cmd: &str, cid: &str, netns: Option<&Ns>, conf: &Value) -> Run {
        let ns = netns.map(Ns::path_str);
        let mut env = vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u",
            ),
        ];
        if let Some(ns) = &ns {
            env.push(("CNI_NETNS", ns.as_str()));
        }
        self.cni(&env, &conf.to_string())
    }

    pub fn add(&self, cid: &str, pod: &Ns, conf: &Value) -> Run {
        self.verb("ADD", cid, Some(pod), conf)
    }

    pub fn del(&self, cid: &str, pod: Option<&Ns>, conf: &Value) -> Run {
        self.verb("DEL", cid, pod, conf)
    }

    /// Handle keys (`network/containerID/ifname`) of the stand-in allocator's file.
    pub fn allocations(&self) -> BTreeMap<String, Value> {
        // The real IPAM state: handle records in the embedded datastore.
        let ds = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Embedded {
            path: self.datastore.path().to_path_buf(),
        })
        .expect("open the embedded datastore");
        let (records, _) = ds
            .list(furynet_ipam::records::HANDLES_PREFIX)
            .expect("list handles");
        records
            .into_iter()
            .map(|kv| {
                let rec: furynet_ipam::records::HandleRecord =
                    serde_json::from_slice(&kv.value).expect("handle record is JSON");
                let key = format!(
                    "k8s-pod-network/{}/{}",
                    rec.attrs.container_id, rec.attrs.ifname
                );
                let ips: Vec<String> = rec.addresses.iter().map(|a| a.ip.to_string()).collect();
                let v = json!({"podName": rec.attrs.pod, "podNamespace": rec.attrs.namespace,
                               "node": rec.node, "ips": ips});
                (key, v)
            })
            .collect()
    }

    /// The furynet host interfaces in the host namespace, once the reaper has deleted every
    /// veth a DEL retired (fails the test if that takes more than 5 s).
    pub fn host_veths(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let retired = self.retired_veths();
            if retired.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reaper did not delete the retired {retired:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.host
            .link_names()
            .into_iter()
            .filter(|n| n.starts_with("fny"))
            .collect()
    }

    /// Host veths that DEL took out of service and the reaper has not deleted yet (now).
    pub fn retired_veths(&self) -> Vec<String> {
        let group = furynet_cni::wiring::RETIRED_GROUP.to_string();
        self.host
            .ip(&["-o", "link", "show", "group", &group])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    pub fn datastore_path(&self) -> &Path {
        self.datastore.path()
    }
}

/// The pod's addresses from an ADD result, as plain strings (`10.244.0.1`, `fd00:...`).
pub fn result_ips(v: &Value) -> Vec<String> {
    v["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|ip| {
            let a = ip["address"].as_str().expect("address");
            a.split('/').next().unwrap_or(a).to_string()
        })
        .collect()
}
