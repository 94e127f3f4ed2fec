//! Helpers shared by the lab test binaries (each uses what it needs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Lab tests need root; others skip loudly.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED (needs root)");
        false
    }
}

/// Lab tests run one at a time within a binary: there is one lab per machine (cargo runs the
/// test binaries one after another).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lab finds `furynet-cni` next to `furynet`: make sure it is built there.
pub fn ensure_cni_built(furynet_exe: &str) {
    let exe = PathBuf::from(furynet_exe);
    if !exe.with_file_name("furynet-cni").is_file() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "furynet-cni"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert!(
        exe.with_file_name("furynet-cni").is_file(),
        "furynet-cni must sit next to furynet"
    );
}

/// Runs the `furynet` binary: (exit code, stdout, stderr).
pub fn run(furynet_exe: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(furynet_exe)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `furynet` binary, expects exit 0, returns stdout.
pub fn ok(furynet_exe: &str, args: &[&str]) -> String {
    let (code, out, err) = run(furynet_exe, args);
    assert_eq!(
        code,
        0,
        "furynet {}:\nstdout: {out}\nstderr: {err}",
        args.join(" ")
    );
    out
}

/// Tears the lab down when dropped, also when the test fails.
pub struct LabGuard(pub &'static str);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = run(self.0, &["lab", "down"]);
    }
}

/// No lab namespace is left (`fnylab-*`).
pub fn no_lab_left() {
    let leftovers: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with("fnylab-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "lab namespaces left behind: {leftovers:?}"
    );
}

/// A lab test's own lab: serialised with the binary's other lab tests, `furynet-cni` built next
/// to `furynet`, any earlier lab removed, and this one removed when the value drops (also when
/// the test panics), before the next test may start.
pub struct FreshLab {
    _guard: LabGuard,
    _serial: std::sync::MutexGuard<'static, ()>,
}

pub fn fresh_lab(furynet_exe: &'static str) -> FreshLab {
    let serial = serial();
    ensure_cni_built(furynet_exe);
    let _ = run(furynet_exe, &["lab", "down"]);
    FreshLab {
        _guard: LabGuard(furynet_exe),
        _serial: serial,
    }
}

/// The names `ip netns list` shows.
pub fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
