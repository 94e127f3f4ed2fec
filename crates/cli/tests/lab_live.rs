//! A long-lived lab with one agent per node: `up`, `status`, `probe`, `apply` / `delete` of
//! policies while a TCP connection stays open, agent restarts, drift repair, `down`.
//! Needs root (skips loudly otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{fresh_lab, privileged, run};

fn furynet(args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_furynet"), args)
}

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

fn ok(args: &[&str]) -> String {
    let (code, out, err) = furynet(args);
    assert_eq!(
        code,
        0,
        "furynet {}:\nstdout: {out}\nstderr: {err}",
        args.join(" ")
    );
    out
}

/// Runs `f` on a thread inside the named network namespace (sockets keep their namespace).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn echo(conn: &mut (TcpStream, BufReader<TcpStream>), msg: &str) -> Result<(), String> {
    conn.0
        .write_all(format!("{msg}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    conn.1.read_line(&mut line).map_err(|e| e.to_string())?;
    if line.trim() == msg {
        Ok(())
    } else {
        Err(format!("echo returned {line:?}"))
    }
}

struct Lab {
    status: serde_json::Value,
}

impl Lab {
    fn read() -> Lab {
        Lab {
            status: serde_json::from_str(&ok(&["lab", "status", "-o", "json"])).unwrap(),
        }
    }
    fn pod(&self, ns: &str, name: &str) -> (String, IpAddr) {
        let p = self.status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["namespace"] == ns && p["name"] == name)
            .unwrap_or_else(|| panic!("pod {ns}/{name} not in {}", self.status));
        let node = p["node"].as_str().unwrap().to_string();
        (node, p["ips"][0].as_str().unwrap().parse().unwrap())
    }
    fn netns_of_node(&self, node: &str) -> String {
        self.status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == node)
            .unwrap()["netns"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// The pod namespace: the lab names pods' namespaces; find it by the pod's address.
fn pod_netns(ip: IpAddr) -> String {
    for ns in common::netns_names() {
        if !ns.contains("-pod-") {
            continue;
        }
        let out = Command::new("ip")
            .args(["-n", &ns, "-o", "addr"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/")) {
            return ns;
        }
    }
    panic!("no pod namespace holds {ip}");
}

fn connect_from(ns: &str, dst: SocketAddr) -> std::io::Result<TcpStream> {
    in_netns(ns, move || {
        TcpStream::connect_timeout(&dst, Duration::from_millis(1500))
    })
}

fn probe_json(from: &str, to: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&[
        "lab", "probe", "--from", from, "--to", to, "-o", "json",
    ]))
    .unwrap()
}

#[test]
fn long_lived_lab_with_agents() {
    if !privileged() {
        return;
    }
    let _lab = fresh_lab(env!("CARGO_BIN_EXE_furynet"));
    let data = "crates/cli/tests/data/lab";
    ok(&[
        "lab",
        "up",
        "--nodes",
        "2",
        "--resync-interval",
        "2",
        "-f",
        &format!("{data}/workloads.yaml"),
    ]);
    let (code, _, err) = furynet(&["lab", "up"]);
    assert_eq!(code, 1, "a second lab up is refused");
    assert!(err.contains("already running"), "{err}");

    // Status: every node in sync, every pod placed as asked, unique addresses.
    let lab = Lab::read();
    for n in lab.status["nodes"].as_array().unwrap() {
        assert_eq!(n["inSync"], true, "{n}");
    }
    let (client_node, client_ip) = lab.pod("a", "client");
    let (server_node, server_ip) = lab.pod("b", "server-b");
    let (_, server_a_ip) = lab.pod("a", "server-a");
    assert_eq!(
        (client_node.as_str(), server_node.as_str()),
        ("node-0", "node-1")
    );
    let mut ips: Vec<IpAddr> = vec![client_ip, server_ip, server_a_ip];
    ips.dedup();
    assert_eq!(ips.len(), 3, "unique pod addresses");

    // No policy yet: the measured matrix is analyze's, everything allowed.
    let measured: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["lab", "probe", "-o", "json"])).unwrap();
    let predicted: Vec<serde_json::Value> = serde_json::from_str(&ok(&[
        "analyze",
        &format!("{data}/workloads.yaml"),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(measured, predicted);
    assert!(measured.iter().all(|e| e["allowed"] == true));

    // The node reaches its own pods (kubelet probes).
    let node0 = lab.netns_of_node("node-0");
    let reply = in_netns(&node0, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(server_a_ip, 80), Duration::from_secs(2))
                .unwrap();
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).unwrap();
        line
    });
    assert!(!reply.trim().is_empty());

    // A long-lived connection client -> server-b:7777 (cross-node), echoing lines.
    let (client_ns, server_ns) = (pod_netns(client_ip), pod_netns(server_ip));
    let listener = in_netns(&server_ns, move || {
        TcpListener::bind(SocketAddr::new(server_ip, 7777)).unwrap()
    });
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let s = connect_from(&client_ns, SocketAddr::new(server_ip, 7777)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut held = (s.try_clone().unwrap(), BufReader::new(s));
    echo(&mut held, "before").unwrap();

    // Policy added while the connection is open: it stays allowed and keeps working; port 80
    // is now denied; only the client may open new connections to 7777.
    ok(&["lab", "apply", "-f", &format!("{data}/policy.yaml")]);
    echo(&mut held, "after-apply").unwrap();
    ok(&["lab", "verify"]);
    let p = probe_json("a/client", "b/server-b");
    assert!(
        p.iter().any(|e| e["port"] == 80 && e["allowed"] == false),
        "80/TCP denied: {p:?}"
    );
    assert!(
        p.iter().any(|e| e["port"] == 53 && e["allowed"] == true),
        "53/UDP allowed: {p:?}"
    );
    assert!(connect_from(&client_ns, SocketAddr::new(server_ip, 7777)).is_ok());
    let server_a_ns = pod_netns(server_a_ip);
    assert!(
        connect_from(&server_a_ns, SocketAddr::new(server_ip, 7777)).is_err(),
        "a/server-a is not a client: new connections to 7777 are dropped"
    );

    // Policy changed: 80 allowed too.
    ok(&["lab", "apply", "-f", &format!("{data}/policy-changed.yaml")]);
    echo(&mut held, "after-change").unwrap();
    ok(&["lab", "verify"]);
    let p = probe_json("a/client", "b/server-b");
    assert!(
        p.iter().any(|e| e["port"] == 80 && e["allowed"] == true),
        "{p:?}"
    );

    // Agents restarted one by one: the connection never notices.
    ok(&["lab", "restart-agents"]);
    echo(&mut held, "after-restart").unwrap();
    ok(&["lab", "verify"]);

    // Someone deletes our table on node-1: the periodic resync (2 s here) rebuilds it.
    let node1 = lab.netns_of_node(&server_node);
    assert!(Command::new("ip")
        .args(["netns", "exec", &node1, "nft", "delete", "table", "inet", "furynet"])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let back = Command::new("ip")
            .args([
                "netns", "exec", &node1, "nft", "list", "table", "inet", "furynet",
            ])
            .output()
            .unwrap();
        if back.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not repair the deleted table"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(&["lab", "verify"]);

    // Policies removed (policy.yaml names both): everything allowed again.
    ok(&["lab", "delete", "-f", &format!("{data}/policy.yaml")]);
    echo(&mut held, "after-delete").unwrap();
    ok(&["lab", "verify"]);
    assert!(probe_json("a/server-a", "b/server-b")
        .iter()
        .all(|e| e["allowed"] == true));

    // Down: no namespace, no agent, no state left.
    let pids: Vec<u64> = Lab::read().status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["agentPid"].as_u64().unwrap())
        .collect();
    drop(held);
    ok(&["lab", "down"]);
    let list = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!list.contains("fnylab-"), "{list}");
    for pid in pids {
        // Gone, or a zombie waiting for init to reap it.
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!running(), "agent {pid} still running");
    }
    let (code, _, err) = furynet(&["lab", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no lab is running"), "{err}");
}

#[path = "../../datastore/tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

/// The same lab on a real etcd: agents and the CNI plugin in the node namespaces reach it
/// through the lab's relay; `lab down` removes the lab's keys and the relay.
#[test]
fn lab_on_etcd() {
    if !privileged() {
        return;
    }
    let Some(etcd) = support::start_etcd() else {
        return;
    };
    let _lab = fresh_lab(env!("CARGO_BIN_EXE_furynet"));
    let data = "crates/cli/tests/data/lab";
    let store = format!("etcd://{}", etcd.endpoint.trim_start_matches("http://"));
    ok(&[
        "lab",
        "up",
        "--nodes",
        "2",
        "--datastore",
        &store,
        "-f",
        &format!("{data}/workloads.yaml"),
        "-f",
        &format!("{data}/policy.yaml"),
    ]);
    let lab = Lab::read();
    for n in lab.status["nodes"].as_array().unwrap() {
        assert_eq!(n["inSync"], true, "{n}");
    }
    let out = ok(&["lab", "verify"]);
    assert!(out.contains("VERIFIED"), "{out}");
    let ds = furynet_datastore::open(&furynet_datastore::DatastoreConfig::Etcd {
        endpoints: vec![etcd.endpoint.clone()],
    })
    .unwrap();
    let (kvs, _) = ds.list("").unwrap();
    assert!(kvs.iter().any(|kv| kv.key.starts_with("cluster/pods/")));
    assert!(kvs.iter().any(|kv| kv.key.starts_with("ipam/blocks/")));
    ok(&["lab", "down"]);
    let (kvs, _) = ds.list("").unwrap();
    assert!(
        kvs.is_empty(),
        "lab down removes the lab's keys: {:?}",
        kvs.iter().map(|k| &k.key).collect::<Vec<_>>()
    );
    let relays = Command::new("pgrep")
        .args(["-f", "lab relay --tag fnylab-"])
        .output()
        .unwrap();
    assert!(relays.stdout.is_empty(), "relay left running");
}
