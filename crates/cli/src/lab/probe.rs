//! Pod servers and probes: real TCP and UDP, and SCTP's INIT / INIT-ACK over raw sockets
//! (see `sctp`), each answering with the peer address it saw.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use furynet_model::Protocol;

use super::netns::{Ns, Res};

const TIMEOUT: Duration = Duration::from_millis(1500);

/// Starts a server for `(port, protocol)` in `ns`; it answers every connection or datagram
/// with the source address it saw. The threads block (idle servers cost no CPU) and notice
/// `stop` only after their next request: the process is expected to exit.
pub fn serve(
    ns: &Ns,
    ip: IpAddr,
    port: u16,
    proto: Protocol,
    stop: Arc<AtomicBool>,
) -> Res<JoinHandle<()>> {
    let addr = SocketAddr::new(ip, port);
    match proto {
        Protocol::Tcp => {
            let l = ns
                .enter(move || TcpListener::bind(addr))?
                .map_err(|e| format!("bind {addr}/TCP: {e}"))?;
            // Blocking: thousands of idle servers must cost nothing. The `lab serve` process
            // exits on SIGTERM without waiting for these threads.
            Ok(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((mut s, peer)) = l.accept() {
                        let _ = s.write_all(format!("{}\n", peer.ip()).as_bytes());
                    }
                }
            }))
        }
        Protocol::Udp => {
            let s = ns
                .enter(move || UdpSocket::bind(addr))?
                .map_err(|e| format!("bind {addr}/UDP: {e}"))?;
            Ok(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((_, peer)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(peer.ip().to_string().as_bytes(), peer);
                    }
                }
            }))
        }
        Protocol::Sctp => {
            let run = ns.enter(move || super::sctp::serve(ip, port, stop))??;
            Ok(std::thread::spawn(run))
        }
    }
}

/// Probes `dst` from `from`: `Some(source address the server saw)` when it answered, `None`
/// when the traffic was dropped (timeout or refusal). UDP and SCTP use `src_port` (when it can
/// be bound): the lab hands out ports that no recent probe used, so a conntrack entry left by
/// an earlier probe — allowed under an earlier policy — never answers for this one.
pub fn probe(from: &Ns, dst: SocketAddr, proto: Protocol, src_port: u16) -> Res<Option<String>> {
    from.enter(move || match proto {
        Protocol::Tcp => {
            let mut c = TcpStream::connect_timeout(&dst, TIMEOUT).ok()?;
            c.set_read_timeout(Some(TIMEOUT)).ok()?;
            let mut seen = String::new();
            c.read_to_string(&mut seen).ok()?;
            Some(seen.trim().to_string())
        }
        Protocol::Udp => {
            let any: IpAddr = if dst.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let s = UdpSocket::bind(SocketAddr::new(any, src_port))
                .or_else(|_| UdpSocket::bind(SocketAddr::new(any, 0)))
                .ok()?;
            s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            let mut buf = [0u8; 64];
            for _ in 0..3 {
                s.send_to(b"furynet", dst).ok()?;
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    return Some(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
            None
        }
        Protocol::Sctp => super::sctp::probe(dst, src_port),
    })
}
