//! A throwaway etcd server for tests: loopback only, unique ports, temporary data directory,
//! killed and removed on drop (also when the test fails).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use furynet_datastore::{open_with_root, DatastoreConfig};

/// Endpoints of an etcd to use instead of spawning one (comma-separated URLs).
pub const ENDPOINTS_ENV: &str = "FURYNET_ETCD_ENDPOINTS";

pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `dir` is removed when it drops, after this.
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
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

impl EtcdServer {
    /// Start a server, or `None` (after a loud message) when etcd is not installed.
    /// Under CI (`CI=true`) a missing etcd is a failure, never a skip.
    pub fn start() -> Option<EtcdServer> {
        let Some(bin) = etcd_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("etcd is not installed but CI=true: the etcd conformance tests must run in CI (apt-get install etcd-server)");
            }
            // Straight to stderr, past the test harness's output capture, once per binary.
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED: etcd not installed (apt-get install etcd-server): the etcd conformance tests did not run ***\n"
                );
            });
            return None;
        };
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&bin) {
                Ok(server) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("could not start etcd ({}): {last_error}", bin.display());
    }

    fn try_start(bin: &Path) -> Result<EtcdServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("furynet-etcd-test-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (client, peer) = (free_port(), free_port());
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
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let mut server = EtcdServer {
            child,
            endpoint: client_url,
            dir,
        };
        let config = DatastoreConfig::Etcd {
            endpoints: vec![server.endpoint.clone()],
        };
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
}
