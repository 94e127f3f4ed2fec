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
    /// Leave the namespace in place on drop (long-lived labs).
    keep: bool,
}

impl Ns {
    pub fn new(name: String) -> Res<Ns> {
        run("ip", &["netns", "add", &name])?;
        let ns = Ns { name, keep: false };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace that exists already and outlives this handle.
    pub fn existing(name: &str) -> Ns {
        Ns {
            name: name.to_string(),
            keep: true,
        }
    }

    /// A handle to an existing namespace that deletes it on drop.
    pub fn adopt(name: &str) -> Ns {
        Ns {
            name: name.to_string(),
            keep: false,
        }
    }

    /// Keep the namespace after this handle is dropped; returns its name.
    pub fn keep(mut self) -> String {
        self.keep = true;
        self.name.clone()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn ip(&self, args: &[&str]) -> Res<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a command inside this namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Res<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
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
        if self.keep {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Names of every lab namespace on the machine.
pub fn lab_namespaces() -> Res<Vec<String>> {
    let list = run("ip", &["netns", "list"])?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect())
}

/// Processes running inside lab namespaces (agents, pod servers): all started by the lab.
fn lab_processes(namespaces: &[String]) -> Vec<i32> {
    namespaces
        .iter()
        .filter_map(|ns| run("ip", &["netns", "pids", ns]).ok())
        .flat_map(|out| {
            out.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Lab helper processes in the host namespace: `furynet lab relay --tag fnylab-…` and the
/// lab's Prometheus.
fn lab_host_processes() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let relay = args
                .windows(2)
                .any(|w| w == [b"lab".as_slice(), b"relay".as_slice()])
                && args
                    .windows(2)
                    .any(|w| w[0] == b"--tag" && w[1].starts_with(PREFIX.as_bytes()));
            // The lab's Prometheus: its configuration lives in the lab directory.
            let conf = format!(
                "--config.file={}",
                super::state::dir().join("prometheus.yml").display()
            );
            relay || args.contains(&conf.as_bytes())
        })
        .collect()
}

/// Deletes everything a lab left: its processes (SIGTERM, then SIGKILL after 3 s), every lab
/// namespace, and the lab's temporary datastores. Works from any half-built state.
/// Returns (processes stopped, namespaces removed).
pub fn down() -> Res<(usize, usize)> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let namespaces = lab_namespaces()?;
    let mut pids = lab_processes(&namespaces);
    pids.extend(lab_host_processes());
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let alive = || {
        let mut left = lab_processes(&namespaces);
        left.extend(lab_host_processes());
        left
    };
    while std::time::Instant::now() < deadline && !alive().is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in alive() {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    for name in &namespaces {
        run("ip", &["netns", "del", name])?;
    }
    // The lab's embedded datastores live in the temporary directory under the same prefix.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok((pids.len(), namespaces.len()))
}
