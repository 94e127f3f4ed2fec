//! Memory and CPU of a process, from /proc (Linux).

use serde::Serialize;

/// Resident memory now and at peak, in MiB.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

fn status_kib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn memory(pid: u32) -> Option<Memory> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Memory {
        rss_mib: status_kib(&s, "VmRSS:")? / 1024.0,
        peak_rss_mib: status_kib(&s, "VmHWM:")? / 1024.0,
    })
}

/// User + system CPU time the process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ: 100 on every Linux architecture the kernel ABI exposes to user space.
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss_mib > 0.0 && m.peak_rss_mib >= m.rss_mib);
        let before = cpu_seconds(me).unwrap();
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(me).unwrap() >= before);
    }
}
