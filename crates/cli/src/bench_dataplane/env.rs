//! Part of `furynet bench dataplane` (see `mod.rs`).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Guards

pub(super) fn check_stop() -> Res<()> {
    if STOP.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// The lab's namespace handle (deleted on drop, with every link inside it).
pub(super) use crate::lab::netns::Ns;

/// A new namespace, unless the bench was interrupted.
pub(super) fn new_ns(name: String) -> Res<Ns> {
    check_stop()?;
    Ns::new(name)
}

/// A temporary directory (the embedded datastore), removed on drop.
#[derive(Debug)]
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: String) -> Res<TempDir> {
        let p = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Turns SIGINT/SIGTERM/SIGHUP into [`STOP`]: blocked here (inherited by every thread started
/// later) and awaited on a dedicated thread. Child processes start with an empty mask.
pub(super) fn stop_on_signals() -> Res<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().map_err(|e| format!("sigmask: {e}"))?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            eprintln!("bench dataplane: {sig}, stopping and cleaning up");
            STOP.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pods

/// A node namespace: forwarding on, and a default route (over a spare veth; no `dummy` module needed) so proxy ARP
/// answers the pods' `169.254.1.1` next hop, as it does on a real node with a default route.
pub(super) fn node_ns(name: String) -> Res<Ns> {
    let ns = new_ns(name)?;
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    ns.ip(&[
        "link", "add", "dflt0", "type", "veth", "peer", "name", "dflt1",
    ])?;
    ns.ip(&["link", "set", "dflt1", "up"])?;
    ns.ip(&["link", "set", "dflt0", "up"])?;
    ns.ip(&["route", "add", "default", "dev", "dflt0"])?;
    Ok(ns)
}

pub(super) fn cni_binary() -> Res<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cni = exe.with_file_name("furynet-cni");
    if cni.is_file() {
        Ok(cni)
    } else {
        Err(format!(
            "{} not found next to furynet: build both (`cargo build --release -p furynet-cli -p furynet-cni`)",
            cni.display()
        ))
    }
}

/// CNI ADD inside the node's namespace, as a runtime does; returns the pod's address.
pub(super) fn cni_add(cni: &Path, node: &Ns, node_name: &str, ds: &Path, pod: &Ns) -> Res<IpAddr> {
    check_stop()?;
    let conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "k8s-pod-network", "type": "furynet-cni",
        "datastore": {"type": "embedded", "path": ds},
        "nodeName": node_name, "ipam": {"pools": ["10.244.0.0/16"]}, "mtu": MTU,
    })
    .to_string();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.name])
        .arg(cni)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &pod.name)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni.parent().unwrap_or(cni))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAME={}", pod.name),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cni.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "furynet-cni ADD {}: {} {}",
            pod.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    v["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or_else(|| format!("no address in the ADD result for {}", pod.name))
}
