//! Named network namespaces for the lab, always carrying the lab prefix, removed on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;

/// Every namespace the lab creates starts with this, so `lab down` finds them after a crash.
pub const PREFIX: &str = "fnylab-";

pub type Res<T> = Result<T, String>;

pub fn run(cmd: &str, args: &[&str]) -> Res<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[derive(Debug)]
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(name: String) -> Res<Ns> {
        run("ip", &["netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn ip(&self, args: &[&str]) -> Res<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn sysctl(&self, kv: &str) -> Res<String> {
        run("ip", &["netns", "exec", &self.name, "sysctl", "-qw", kv])
    }

    /// Runs `f` on a thread inside this namespace (namespaces are per thread).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Res<T> {
        let file = File::open(self.path()).map_err(|e| format!("{}: {e}", self.name))?;
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))
                .map(|()| f())
        })
        .join()
        .map_err(|_| "lab thread panicked".to_string())?
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Deletes every lab namespace and datastore (after a crash, or a lab from another process).
pub fn down() -> Res<usize> {
    let list = run("ip", &["netns", "list"])?;
    let mut n = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if name.starts_with(PREFIX) {
            run("ip", &["netns", "del", name])?;
            n += 1;
        }
    }
    // The lab's embedded datastores live in the temporary directory under the same prefix.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(n)
}
