//! A throwaway etcd server for tests (see `furynet_datastore::etcd::process`): a missing etcd
//! is a loud skip, or a failure under CI.

use furynet_datastore::etcd::process::{etcd_binary, EtcdProcess};

/// Endpoints of an etcd to use instead of spawning one (comma-separated URLs).
pub const ENDPOINTS_ENV: &str = "FURYNET_ETCD_ENDPOINTS";

/// Start a server, or `None` (after a loud message) when etcd is not installed.
/// Under CI (`CI=true`) a missing etcd is a failure, never a skip.
pub fn start_etcd() -> Option<EtcdProcess> {
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
    Some(EtcdProcess::start(&bin).unwrap())
}
