//! The fan-out server and client over real TCP (and TLS) on loopback, on the embedded
//! datastore: convergence of many clients under churn, a slow client cut off with bounded
//! memory, a slow reader on TCP and on TLS, failover with resume between two servers, mutual
//! TLS, version mismatch, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use furynet_datastore::{open_with_root, Datastore, DatastoreConfig, Event, KeyValue};
use furynet_fanout::proto::{self, Msg};
use furynet_fanout::{
    ClientConfig, ClientTls, FanoutMetrics, FanoutStore, Server, ServerConfig, ServerTls,
};
use tokio::io::AsyncWriteExt;

struct Env {
    _dir: tempfile::TempDir,
    ds: Arc<dyn Datastore>,
    rt: tokio::runtime::Runtime,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ds = open_with_root(
        &DatastoreConfig::Embedded {
            path: dir.path().join("db"),
        },
        "/furynet/",
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Env { _dir: dir, ds, rt }
}

fn local() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

impl Env {
    fn server(&self, cfg: ServerConfig) -> (Server, prometheus_client::registry::Registry) {
        let mut reg = prometheus_client::registry::Registry::default();
        let m = FanoutMetrics::register(&mut reg);
        let s = self
            .rt
            .block_on(Server::start(cfg, self.ds.clone(), m))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !s.in_sync() {
            assert!(Instant::now() < deadline, "server never in sync");
            std::thread::sleep(Duration::from_millis(10));
        }
        (s, reg)
    }
}

fn client(addrs: &[SocketAddr], name: &str) -> Arc<FanoutStore> {
    let mut cfg = ClientConfig::new(addrs.iter().map(|a| a.to_string()).collect(), name);
    cfg.connect_timeout = Duration::from_secs(2);
    FanoutStore::connect(cfg).unwrap()
}

fn put(ds: &dyn Datastore, key: &str, value: &[u8]) {
    furynet_datastore::put(ds, key, value, None).unwrap();
}

/// Waits until the client's list equals the datastore's (keys, values, revisions).
fn converges(ds: &dyn Datastore, c: &dyn Datastore, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (want, rev) = ds.list("").unwrap();
        let got = c.list("");
        if let Ok((got, crev)) = &got {
            if *got == want && *crev >= rev {
                return;
            }
        }
        if Instant::now() > deadline {
            let got = got.map(|(g, r)| (g.len(), r));
            panic!(
                "{what}: never converged: datastore {} keys at {rev}, client {got:?}",
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw agent connection with a small receive buffer (the server's writes to it block soon)
/// that has said hello.
async fn small_buffer_agent(addr: SocketAddr, name: &str) -> tokio::net::TcpStream {
    let mut s = small_buffer_socket(addr).await;
    say_hello(&mut s, name).await;
    s
}

async fn small_buffer_socket(addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(addr).await.unwrap()
}

async fn say_hello<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, name: &str) {
    let hello = Msg::Hello {
        protocol: proto::PROTOCOL,
        name: name.into(),
        capabilities: vec![],
        resume_from: None,
    };
    w.write_all(&proto::encode(&hello)).await.unwrap();
    w.flush().await.unwrap();
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn many_clients_converge_under_churn() {
    let e = env();
    for i in 0..200 {
        put(&*e.ds, &format!("cluster/pods/ns/p{i}"), b"v0");
    }
    let (server, _) = e.server(local());
    let addr = [server.local_addr()];
    let early: Vec<_> = (0..60).map(|i| client(&addr, &format!("n{i}"))).collect();
    // One client also follows a watch from its first list: list + events = final state.
    let (base, rev) = early[0].list("").unwrap();
    let mut watch = early[0].watch("", rev + 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let ds = e.ds.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut x = 7u64;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 600 {
                let k = format!("cluster/pods/ns/p{}", xorshift(&mut x) % 260);
                if xorshift(&mut x).is_multiple_of(4) {
                    let _ = ds
                        .get(&k)
                        .unwrap()
                        .map(|kv| ds.delete(&k, Some(kv.mod_revision)));
                } else {
                    put(&*ds, &k, format!("v{n}").as_bytes());
                }
                n += 1;
            }
        })
    };
    // More clients join during the churn (snapshots at moving revisions).
    std::thread::sleep(Duration::from_millis(100));
    let late: Vec<_> = (0..60)
        .map(|i| client(&addr, &format!("late{i}")))
        .collect();
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for (i, c) in early.iter().chain(late.iter()).enumerate() {
        converges(&*e.ds, c.as_ref(), &format!("client {i}"));
    }
    // Replay the watch onto the first list.
    let (want, want_rev) = e.ds.list("").unwrap();
    let mut state: std::collections::BTreeMap<String, KeyValue> =
        base.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let mut last = rev;
    while last < want_rev {
        let ev = watch
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .expect("watch stalled");
        assert!(ev.revision() >= last, "events out of order");
        last = ev.revision();
        match ev {
            Event::Put(kv) => {
                state.insert(kv.key.clone(), kv);
            }
            Event::Delete { key, .. } => {
                state.remove(&key);
            }
        }
    }
    assert_eq!(state.into_values().collect::<Vec<_>>(), want);
    let stats = server.stats();
    assert_eq!(stats.connections, 120);
    assert!(stats.snapshots_sent >= 120);
    e.rt.block_on(server.shutdown());
}

#[test]
fn slow_client_is_cut_off_and_history_stays_bounded() {
    let e = env();
    let cfg = ServerConfig {
        history_max_entries: 64,
        history_max_bytes: 256 << 10,
        write_timeout: Duration::from_millis(500),
        ..local()
    };
    let (server, _) = e.server(cfg);
    let addr = server.local_addr();
    let good = client(&[addr], "good");
    // A client that says hello and then never reads.
    let slow = e.rt.block_on(small_buffer_agent(addr, "slow"));
    for i in 0..1000 {
        // Each write differs (an identical value would be no write at all).
        let mut big = vec![b'x'; 16 << 10];
        big[..8].copy_from_slice(&(i as u64).to_be_bytes());
        put(&*e.ds, &format!("cluster/blob/{}", i % 50), &big);
        let st = server.stats();
        // Bounded by entries, and by bytes except for the newest frame, always kept.
        assert!(st.history_entries <= 64, "{st:?}");
        assert!(
            st.history_bytes <= 256 << 10 || st.history_entries == 1,
            "{st:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().cutoffs == 0 {
        assert!(
            Instant::now() < deadline,
            "slow client never cut off: {:?}",
            server.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    converges(&*e.ds, good.as_ref(), "the well-behaved client");
    drop(slow);
    e.rt.block_on(server.shutdown());
}

/// An agent that reads slowly through a small receive buffer: the server's writes to it are
/// cut short and finished later (the sweeper hands them to the agent's task), and the agent
/// must still receive every delta, whole and in order, without being cut off.
const SLOW_END: &str = "cluster/zz-end";

/// Reads an agent's stream slowly (the socket fills up while it dawdles) and checks every
/// delta: no gap, no repeat, no value cut short. Returns the last revision and the puts seen.
async fn read_slowly<R: tokio::io::AsyncRead + Unpin>(
    s: R,
    go: tokio::sync::oneshot::Receiver<()>,
) -> (i64, usize) {
    // Nothing is read before all changes are written: 9.6 MB of deltas against at most 4 MB
    // of send buffer (Linux's tcp_wmem maximum) and a 4 KiB receive buffer, so the server's
    // writes are sure to fall short, however fast this machine is.
    let _ = go.await;
    let mut rd = tokio::io::BufReader::with_capacity(1024, s);
    let mut at = None;
    let mut puts = 0usize;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), proto::read_msg(&mut rd))
            .await
            .expect("stream stalled")
            .expect("undecodable frame")
            .expect("the server closed the stream");
        match msg {
            Msg::Welcome { revision, .. } | Msg::Snapshot { revision, .. } => at = Some(revision),
            Msg::Deltas {
                from,
                revision,
                changes,
                ..
            } => {
                assert_eq!(Some(from), at, "a gap or a repeat in the deltas");
                at = Some(revision);
                for c in &changes {
                    match c {
                        proto::Change::Put(kv) if kv.key == SLOW_END => return (revision, puts),
                        proto::Change::Put(kv) => {
                            assert_eq!(kv.value.len(), 16 << 10, "a value cut short");
                            puts += 1;
                        }
                        proto::Change::Delete { .. } => panic!("no deletes here"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Msg::Ping { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// 600 changes of 16 KiB to one agent reading slowly through a 4 KiB receive buffer, on plain
/// TCP or on mutual TLS (where what stays pending is the rest of encrypted records).
fn slow_reader_gets_every_delta(tls: bool) {
    let e = env();
    let pki = Pki::new();
    let server_tls = tls.then(|| {
        let (cert, key) = pki.issue("furynet-fanout");
        ServerTls {
            cert_pem: cert,
            key_pem: key,
            client_ca_pem: Some(pki.ca()),
            allowed_client_cns: vec![],
        }
    });
    let cfg = ServerConfig {
        write_timeout: Duration::from_secs(20),
        tls: server_tls,
        ..local()
    };
    let (server, _) = e.server(cfg);
    let addr = server.local_addr();
    let connector = tls.then(|| {
        let (cert, key) = pki.issue("slow-reader");
        furynet_fanout::tls::connector(&ClientTls {
            ca_pem: pki.ca(),
            cert_pem: Some(cert),
            key_pem: Some(key),
            server_name: "furynet-fanout".into(),
        })
        .unwrap()
    });
    // Connected (and greeted) before the changes start, so they come as deltas.
    type Stream = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
    let stream: Stream = e.rt.block_on(async move {
        let mut s = small_buffer_socket(addr).await;
        match connector {
            None => {
                say_hello(&mut s, "slow-reader").await;
                Box::new(s) as Stream
            }
            Some((c, name)) => {
                let mut t = c.connect(name, s).await.expect("TLS handshake");
                say_hello(&mut t, "slow-reader").await;
                Box::new(t) as Stream
            }
        }
    });
    let (go, wait) = tokio::sync::oneshot::channel();
    let reader = e.rt.spawn(read_slowly(stream, wait));
    for i in 0..600u64 {
        let mut big = vec![b'y'; 16 << 10];
        big[..8].copy_from_slice(&i.to_be_bytes());
        put(&*e.ds, &format!("cluster/blob/{}", i % 40), &big);
    }
    put(&*e.ds, SLOW_END, b"end");
    let _ = go.send(());
    let (last, puts) = e.rt.block_on(reader).unwrap();
    assert_eq!(last, e.ds.current_revision().unwrap());
    assert_eq!(puts, 600, "every change arrived once");
    let st = server.stats();
    assert!(
        st.blocked_writes > 0,
        "the reader never filled its socket: {st:?}"
    );
    assert_eq!(st.cutoffs, 0, "the slow reader was cut off: {st:?}");
    e.rt.block_on(server.shutdown());
}

#[test]
fn a_slow_reader_gets_every_delta_whole_and_in_order() {
    slow_reader_gets_every_delta(false);
}

#[test]
fn a_slow_tls_reader_gets_every_delta_whole_and_in_order() {
    slow_reader_gets_every_delta(true);
}

#[test]
fn failover_resumes_and_keeps_watches() {
    let e = env();
    put(&*e.ds, "cluster/namespaces/a", b"1");
    let (first, _) = e.server(local());
    let (second, _) = e.server(local());
    let c = client(&[first.local_addr(), second.local_addr()], "n1");
    let (_, rev) = c.list("").unwrap();
    assert_eq!(c.connected_to(), Some(first.local_addr().to_string()));
    let mut watch = c.watch("cluster/", rev + 1).unwrap();
    e.rt.block_on(first.shutdown());
    put(&*e.ds, "cluster/namespaces/b", b"2");
    converges(&*e.ds, c.as_ref(), "after failover");
    assert_eq!(c.connected_to(), Some(second.local_addr().to_string()));
    // The change made while failing over reaches the watch opened before.
    let ev = watch.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(ev.key(), "cluster/namespaces/b");
    // The second server resumed the client: no second snapshot was needed.
    let st = second.stats();
    assert_eq!(st.resumes, 1, "{st:?}");
    assert_eq!(st.snapshots_sent, 0, "{st:?}");
    // A watch from a future revision sees nothing before it.
    let now = c.current_revision().unwrap();
    let mut later = c.watch("cluster/", now + 2).unwrap();
    put(&*e.ds, "cluster/namespaces/c", b"3");
    put(&*e.ds, "cluster/namespaces/d", b"4");
    let ev = later.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(ev.key(), "cluster/namespaces/d");
    // Writes are refused: the fan-out client is read-only.
    assert!(c.create("x", b"y", None).is_err());
    e.rt.block_on(second.shutdown());
}

#[test]
fn version_mismatch_is_refused_with_a_message() {
    let e = env();
    let (server, _) = e.server(local());
    let addr = server.local_addr();
    let msg = e.rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let hello = Msg::Hello {
            protocol: 99,
            name: "future".into(),
            capabilities: vec![],
            resume_from: None,
        };
        s.write_all(&proto::encode(&hello)).await.unwrap();
        proto::read_msg(&mut s).await.unwrap()
    });
    match msg {
        Some(Msg::Error { message }) => {
            assert!(message.contains("protocol version 99"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    e.rt.block_on(server.shutdown());
}

#[test]
fn pings_are_measured_and_metrics_use_the_typha_names() {
    let e = env();
    put(&*e.ds, "cluster/namespaces/a", b"1");
    let cfg = ServerConfig {
        ping_interval: Duration::from_millis(50),
        ..local()
    };
    let (server, reg) = e.server(cfg);
    let c = client(&[server.local_addr()], "n1");
    converges(&*e.ds, c.as_ref(), "client");
    std::thread::sleep(Duration::from_millis(400));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert!(sample("typha_ping_latency_count{syncer=\"felix\"}") >= 2.0);
    assert!(sample("typha_client_write_latency_secs_count{syncer=\"felix\"}") >= 1.0);
    assert_eq!(sample("typha_log_errors"), 0.0);
    assert_eq!(sample("furynet_fanout_connections"), 1.0);
    assert!(sample("furynet_fanout_snapshot_bytes") > 0.0);
    assert!(sample("furynet_fanout_snapshots_sent_total") >= 1.0);
    // Every series docs/metrics.md lists for the fan-out server exists from the start.
    for name in [
        "furynet_fanout_deltas_total",
        "furynet_fanout_resumes_total",
        "furynet_fanout_blocked_writes_total",
        "furynet_fanout_cutoffs_total{reason=\"behind\"}",
        "furynet_fanout_cutoffs_total{reason=\"write_timeout\"}",
        "furynet_fanout_cutoffs_total{reason=\"ping_timeout\"}",
        "furynet_fanout_refused_total{reason=\"tls\"}",
        "furynet_fanout_history_entries",
        "furynet_fanout_history_bytes",
        "furynet_fanout_revision",
        "furynet_fanout_objects",
        "furynet_fanout_datastore_errors_total",
        "typha_ping_latency_sum{syncer=\"felix\"}",
        "typha_client_write_latency_secs_sum{syncer=\"felix\"}",
    ] {
        sample(name);
    }
    e.rt.block_on(server.shutdown());
}

/// A CA, and certificates it signs for the given DNS names.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes NAME.pem and NAME.key for a certificate valid for `name`.
    fn issue(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn tls_client(
    addr: SocketAddr,
    ca: &Pki,
    cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> Arc<FanoutStore> {
    let mut cfg = ClientConfig::new(vec![addr.to_string()], "n1");
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.first_sync_timeout = Duration::from_secs(2);
    cfg.tls = Some(ClientTls {
        ca_pem: ca.ca(),
        cert_pem: cert.as_ref().map(|c| c.0.clone()),
        key_pem: cert.map(|c| c.1),
        server_name: "furynet-fanout".into(),
    });
    FanoutStore::connect(cfg).unwrap()
}

#[test]
fn mutual_tls_admits_only_signed_and_allowed_clients() {
    let e = env();
    put(&*e.ds, "cluster/namespaces/a", b"1");
    let pki = Pki::new();
    let other = Pki::new();
    let (cert, key) = pki.issue("furynet-fanout");
    let cfg = ServerConfig {
        tls: Some(ServerTls {
            cert_pem: cert,
            key_pem: key,
            client_ca_pem: Some(pki.ca()),
            allowed_client_cns: vec!["node-1".into()],
        }),
        ping_interval: Duration::from_millis(50),
        ..local()
    };
    let (server, reg) = e.server(cfg);
    let addr = server.local_addr();
    let good = tls_client(addr, &pki, Some(pki.issue("node-1")));
    converges(&*e.ds, good.as_ref(), "client with a valid certificate");
    // Deltas reach a TLS agent through the sweeper (encrypted with its connection): small
    // ones, then 8 MiB of 64 KiB values, more than a socket takes at once.
    for i in 0..20 {
        put(&*e.ds, &format!("cluster/namespaces/t{i}"), b"2");
    }
    converges(&*e.ds, good.as_ref(), "TLS client after changes");
    for i in 0..128u32 {
        let mut big = vec![b'z'; 64 << 10];
        big[..4].copy_from_slice(&i.to_be_bytes());
        put(&*e.ds, &format!("cluster/blobs/b{}", i % 50), &big);
    }
    converges(&*e.ds, good.as_ref(), "TLS client after large changes");
    // Pings go out and pongs come back decrypted through the same connection.
    std::thread::sleep(Duration::from_millis(400));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    let pings = text
        .lines()
        .find(|l| l.starts_with("typha_ping_latency_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(pings >= 2.0, "pongs over TLS: {pings}");
    assert_eq!(server.stats().cutoffs, 0);
    for (what, c) in [
        ("no client certificate", tls_client(addr, &pki, None)),
        (
            "a certificate from another CA",
            tls_client(addr, &pki, Some(other.issue("node-1"))),
        ),
        (
            "a name not allowed",
            tls_client(addr, &pki, Some(pki.issue("node-2"))),
        ),
    ] {
        let err = c.list("").expect_err(what);
        assert!(err.to_string().contains("no snapshot"), "{what}: {err}");
        assert!(c.connected_to().is_none(), "{what}");
    }
    // A server certificate for another name is refused by the client.
    let wrong = {
        let mut cfg = ClientConfig::new(vec![addr.to_string()], "n1");
        cfg.first_sync_timeout = Duration::from_secs(2);
        let (c, k) = pki.issue("node-1");
        cfg.tls = Some(ClientTls {
            ca_pem: pki.ca(),
            cert_pem: Some(c),
            key_pem: Some(k),
            server_name: "some-other-server".into(),
        });
        FanoutStore::connect(cfg).unwrap()
    };
    assert!(wrong.list("").is_err());
    assert_eq!(server.stats().connections, 1);
    e.rt.block_on(server.shutdown());
}
