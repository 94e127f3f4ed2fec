//! A throwaway etcd server on loopback: unique ports, a temporary data directory, killed and
//! removed on drop. Used by the tests and by `furynet bench` (which compares against etcd in
//! the same run); never for production.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{open_with_root, DatastoreConfig};

/// A running etcd; stopped and its data removed when dropped.
#[derive(Debug)]
pub struct EtcdProcess {
    child: Child,
    /// Its client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `dir` is removed when it drops, after this.
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The etcd binary: $FURYNET_ETCD_BIN, else `etcd` on PATH, else /usr/bin/etcd.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("FURYNET_ETCD_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    log.get(start..).unwrap_or(&log).to_owned()
}

impl EtcdProcess {
    /// The client URL as the `--datastore` flag spells it (`etcd://127.0.0.1:PORT`).
    pub fn datastore_arg(&self) -> String {
        format!("etcd://{}", self.endpoint.trim_start_matches("http://"))
    }

    /// The datastore configuration that reaches it.
    pub fn config(&self) -> DatastoreConfig {
        DatastoreConfig::Etcd {
            endpoints: vec![self.endpoint.clone()],
        }
    }

    /// Starts `bin` (3 attempts: a free port can be taken between probing and binding) and
    /// waits until it answers.
    pub fn start(bin: &Path) -> Result<EtcdProcess, String> {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(bin) {
                Ok(server) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        Err(format!(
            "could not start etcd ({}): {last_error}",
            bin.display()
        ))
    }

    fn try_start(bin: &Path) -> Result<EtcdProcess, String> {
        let dir = tempfile::Builder::new()
            .prefix("furynet-etcd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (client, peer) = (
            free_port().map_err(|e| e.to_string())?,
            free_port().map_err(|e| e.to_string())?,
        );
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            // Fast election on start and a 1 s minimum lease TTL.
            .args(["--heartbeat-interval=50", "--election-timeout=500"])
            // Room for large benchmark states (the default quota is 2 GiB).
            .arg("--quota-backend-bytes=8589934592")
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut server = EtcdProcess {
            child,
            endpoint: client_url,
            dir,
        };
        let config = server.config();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "etcd exited ({status}):\n{}",
                    log_tail(server.dir.path())
                ));
            }
            let healthy = open_with_root(&config, "/health-check/").and_then(|s| s.health());
            match healthy {
                Ok(()) => return Ok(server),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "etcd not healthy after 30 s: {e}\n{}",
                        log_tail(server.dir.path())
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The process id (for resource accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
