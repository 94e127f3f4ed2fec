//! The real kernel: LinuxKernel against throwaway network namespaces. Needs root; skips loudly
//! otherwise. Each test makes its own uniquely named namespaces and deletes them on drop.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use furynet_dataplane::{
    Family, Kernel, LinuxKernel, Netns, NetnsState, Route, RouteScope, VethSpec, RTPROT_FURYNET,
};
use nix::sched::{setns, CloneFlags};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A named network namespace, deleted on drop (even when the test panics).
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(role: &str) -> TestNs {
        let name = format!(
            "fnyd-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name]);
        TestNs { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a fresh thread that has entered `ns` (namespaces are per thread).
fn inside<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&ns).expect("open netns");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("test thread")
}

#[test]
fn veth_addresses_routes_sysctls() {
    if !is_root() {
        eprintln!("SKIPPED (needs root)");
        return;
    }
    let host = TestNs::new("h");
    let pod = TestNs::new("p");
    let host_path = host.path();
    let pod_path = pod.path();
    let host_name = format!("fnyd{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let hn = host_name.clone();
    inside(&host_path.clone(), move || {
        let k = LinuxKernel::new();
        assert_eq!(k.check_netns(&pod_path).unwrap(), NetnsState::Other);
        assert_eq!(k.check_netns(&host_path).unwrap(), NetnsState::Current);
        assert_eq!(
            k.check_netns(Path::new("/run/netns/fnyd-no-such")).unwrap(),
            NetnsState::Missing
        );
        assert_eq!(
            k.check_netns(Path::new("/proc/self/status")).unwrap(),
            NetnsState::NotNetns
        );
        assert_eq!(k.default_route_mtu().unwrap(), None);

        let spec = VethSpec {
            host_name: hn.clone(),
            host_mac: Some([0xee; 6]),
            peer_name: "eth0".into(),
            peer_netns: pod_path.clone(),
            mtu: 1400,
        };
        k.create_veth(&spec).unwrap();
        assert!(k.create_veth(&spec).unwrap_err().is_exists());
        let h = k.link(Netns::Current, &hn).unwrap().unwrap();
        assert_eq!(h.mac, Some([0xee; 6]));
        assert_eq!(h.mtu, 1400);
        assert_eq!(h.kind.as_deref(), Some("veth"));
        assert!(!h.up);
        let p = k.link(Netns::Path(&pod_path), "eth0").unwrap().unwrap();
        assert_eq!(p.mtu, 1400);
        assert_eq!(p.peer_index, Some(h.index));
        assert_eq!(h.peer_index, Some(p.index));
        assert!(k.link(Netns::Current, "eth0").unwrap().is_none());

        let key = format!("net/ipv4/conf/{hn}/proxy_arp");
        k.write_sysctl(&key, "1").unwrap();
        assert_eq!(k.read_sysctl(&key).unwrap(), "1");
        assert!(k
            .write_sysctl("net/ipv4/conf/fnyd-none/proxy_arp", "1")
            .unwrap_err()
            .is_not_found());
        assert!(k.write_sysctl("../etc/passwd", "x").is_err());

        k.set_link_up(Netns::Current, &hn).unwrap();
        k.set_link_up(Netns::Path(&pod_path), "lo").unwrap();
        k.set_link_up(Netns::Path(&pod_path), "eth0").unwrap();
        let v4: ipnet::IpNet = "10.200.0.7/32".parse().unwrap();
        let v6: ipnet::IpNet = "fd00:200::7/128".parse().unwrap();
        k.add_address(Netns::Path(&pod_path), "eth0", v4).unwrap();
        k.add_address(Netns::Path(&pod_path), "eth0", v6).unwrap();
        assert!(k
            .add_address(Netns::Path(&pod_path), "eth0", v4)
            .unwrap_err()
            .is_exists());
        let addrs = k.addresses(Netns::Path(&pod_path), "eth0").unwrap();
        assert!(addrs.contains(&v4) && addrs.contains(&v6), "{addrs:?}");

        let default4 = Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("169.254.1.1".parse().unwrap()),
            dev: "eth0".into(),
            scope: RouteScope::Universe,
            onlink: true,
            protocol: RTPROT_FURYNET,
        };
        k.add_route(Netns::Path(&pod_path), &default4).unwrap();
        let host4 = Route {
            dst: "10.200.0.7/32".parse().unwrap(),
            gateway: None,
            dev: hn.clone(),
            scope: RouteScope::Link,
            onlink: false,
            protocol: RTPROT_FURYNET,
        };
        k.add_route(Netns::Current, &host4).unwrap();
        assert!(k.add_route(Netns::Current, &host4).unwrap_err().is_exists());
        let host6 = Route {
            dst: "fd00:200::7/128".parse().unwrap(),
            gateway: None,
            dev: hn.clone(),
            scope: RouteScope::Universe,
            onlink: false,
            protocol: RTPROT_FURYNET,
        };
        k.add_route(Netns::Current, &host6).unwrap();

        let pod_routes = k
            .routes(Netns::Path(&pod_path), Family::V4, "eth0")
            .unwrap();
        assert_eq!(pod_routes, vec![default4]);
        assert_eq!(
            k.routes(Netns::Current, Family::V4, &hn).unwrap(),
            vec![host4]
        );
        let r6 = k.routes(Netns::Current, Family::V6, &hn).unwrap();
        assert!(r6.contains(&host6), "{r6:?}");
        let gw: IpAddr = "169.254.1.1".parse().unwrap();
        assert_eq!(
            k.routes(Netns::Path(&pod_path), Family::V4, "eth0")
                .unwrap()[0]
                .gateway,
            Some(gw)
        );

        assert!(k.delete_link(Netns::Current, &hn).unwrap());
        assert!(!k.delete_link(Netns::Current, &hn).unwrap());
        assert!(k.link(Netns::Path(&pod_path), "eth0").unwrap().is_none());
    });
    assert!(host.ip(&["route", "show"]).is_empty());
}

#[test]
fn default_route_mtu_prefers_route_metric_then_device() {
    if !is_root() {
        eprintln!("SKIPPED (needs root)");
        return;
    }
    let host = TestNs::new("m");
    // (no dummy module on every kernel: a veth pair inside the namespace stands in for a NIC)
    host.ip(&[
        "link", "add", "under0", "mtu", "9000", "type", "veth", "peer", "name", "under1",
    ]);
    host.ip(&["link", "set", "under0", "up"]);
    host.ip(&["link", "set", "under1", "up"]);
    host.ip(&["-6", "route", "add", "default", "dev", "under0"]);
    let p = host.path();
    assert_eq!(
        inside(&p, || LinuxKernel::new().default_route_mtu().unwrap()),
        Some((9000, Family::V6))
    );
    host.ip(&["route", "add", "default", "dev", "under0", "mtu", "1500"]);
    assert_eq!(
        inside(&p, || LinuxKernel::new().default_route_mtu().unwrap()),
        Some((1500, Family::V4))
    );
}

#[test]
fn retired_links_lose_their_routes_at_once_and_go_in_one_batch() {
    if !is_root() {
        eprintln!("SKIPPED (needs root)");
        return;
    }
    const GROUP: u32 = 0x6679_6e00;
    let host = TestNs::new("r");
    let pod = TestNs::new("rp");
    let pod_path = pod.path();
    let tag = NEXT.fetch_add(1, Ordering::SeqCst);
    let names: Vec<String> = (0..3).map(|i| format!("fnyr{tag}x{i}")).collect();
    let ns = names.clone();
    let pp = pod_path.clone();
    inside(&host.path(), move || {
        let k = LinuxKernel::new();
        for (i, n) in ns.iter().enumerate() {
            k.create_veth(&VethSpec {
                host_name: n.clone(),
                host_mac: None,
                peer_name: format!("eth{i}"),
                peer_netns: pp.clone(),
                mtu: 1450,
            })
            .unwrap();
            k.set_link_up(Netns::Current, n).unwrap();
            k.set_link_up(Netns::Path(&pp), &format!("eth{i}")).unwrap();
            for dst in [format!("10.201.0.{i}/32"), format!("fd00:201::{i}/128")] {
                k.add_route(
                    Netns::Current,
                    &Route {
                        dst: dst.parse().unwrap(),
                        gateway: None,
                        dev: n.clone(),
                        scope: RouteScope::Link,
                        onlink: false,
                        protocol: RTPROT_FURYNET,
                    },
                )
                .unwrap();
            }
        }
        for n in &ns[..2] {
            assert!(k.retire_link(Netns::Current, n, GROUP).unwrap());
            let l = k.link(Netns::Current, n).unwrap().unwrap();
            assert!(!l.up, "{n} down");
            assert_eq!(l.group, GROUP);
            for f in [Family::V4, Family::V6] {
                assert!(
                    k.routes(Netns::Current, f, n).unwrap().is_empty(),
                    "{n} {f:?}"
                );
            }
        }
        assert!(!k.retire_link(Netns::Current, "fnyr-none", GROUP).unwrap());
        let live = k.link(Netns::Current, &ns[2]).unwrap().unwrap();
        assert!(live.up && live.group == 0);
        assert_eq!(
            k.routes(Netns::Current, Family::V4, &ns[2]).unwrap().len(),
            1
        );
    });
    // The retired pods' sides have no carrier: nothing can leave the pod through them.
    for i in 0..2 {
        let out = pod.ip(&["link", "show", &format!("eth{i}")]);
        assert!(out.contains("NO-CARRIER"), "{out}");
    }
    let ns = names.clone();
    let pp = pod_path.clone();
    inside(&host.path(), move || {
        let k = LinuxKernel::new();
        k.delete_group(Netns::Current, GROUP).unwrap();
        for n in &ns[..2] {
            assert!(k.link(Netns::Current, n).unwrap().is_none(), "{n} deleted");
        }
        assert!(k.link(Netns::Path(&pp), "eth0").unwrap().is_none());
        assert!(
            k.link(Netns::Current, &ns[2]).unwrap().is_some(),
            "live link kept"
        );
        assert!(k.link(Netns::Path(&pp), "eth2").unwrap().is_some());
        // An empty group is not an error.
        k.delete_group(Netns::Current, GROUP).unwrap();
    });
}
