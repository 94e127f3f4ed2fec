//! SCTP over raw IPv4 and IPv6 sockets (protocol 132): the lab only needs the INIT / INIT-ACK exchange,
//! which nftables and conntrack see like a real association set-up, and the kernel needs no
//! SCTP stack for it. The server's INIT-ACK carries a State Cookie holding the source address
//! it saw, so the prober can check there was no NAT.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol as SockProto, Socket, Type};

const IPPROTO_SCTP: i32 = 132;
const INIT: u8 = 1;
const INIT_ACK: u8 = 2;
const STATE_COOKIE: u16 = 7;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as SCTP's checksum uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet with one INIT (or INIT-ACK) chunk; `cookie` becomes a State Cookie parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
    pub chunk: u8,
    pub initiate_tag: u32,
    pub cookie: Option<Vec<u8>>,
}

impl Init {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(64);
        p.extend_from_slice(&self.src_port.to_be_bytes());
        p.extend_from_slice(&self.dst_port.to_be_bytes());
        p.extend_from_slice(&self.vtag.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        let param_len = self.cookie.as_ref().map_or(0, |c| 4 + c.len());
        let chunk_len = 20 + param_len;
        p.push(self.chunk);
        p.push(0);
        p.extend_from_slice(&u16::try_from(chunk_len).unwrap_or(u16::MAX).to_be_bytes());
        p.extend_from_slice(&self.initiate_tag.to_be_bytes());
        p.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
        p.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
        p.extend_from_slice(&10u16.to_be_bytes()); // max inbound streams
        p.extend_from_slice(&self.initiate_tag.to_be_bytes()); // initial TSN
        if let Some(c) = &self.cookie {
            p.extend_from_slice(&STATE_COOKIE.to_be_bytes());
            p.extend_from_slice(&u16::try_from(4 + c.len()).unwrap_or(u16::MAX).to_be_bytes());
            p.extend_from_slice(c);
            while p.len() % 4 != 0 {
                p.push(0);
            }
        }
        // The checksum is stored least significant byte first (RFC 4960 appendix B, Linux).
        let sum = crc32c(&p);
        p[8..12].copy_from_slice(&sum.to_le_bytes());
        p
    }

    /// Parses an SCTP packet whose first chunk is INIT or INIT-ACK (checksum verified).
    pub fn decode(p: &[u8]) -> Option<Init> {
        if p.len() < 32 {
            return None;
        }
        let be16 = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let mut zeroed = p.to_vec();
        zeroed[8..12].fill(0);
        if crc32c(&zeroed).to_le_bytes() != p[8..12] {
            return None;
        }
        let chunk = p[12];
        if chunk != INIT && chunk != INIT_ACK {
            return None;
        }
        let end = (12 + usize::from(be16(14))).min(p.len());
        let mut cookie = None;
        let mut i = 32;
        while i + 4 <= end {
            let (ty, len) = (be16(i), usize::from(be16(i + 2)));
            if len < 4 || i + len > end {
                break;
            }
            if ty == STATE_COOKIE {
                cookie = Some(p[i + 4..i + len].to_vec());
            }
            i += len.div_ceil(4) * 4;
        }
        Some(Init {
            src_port: be16(0),
            dst_port: be16(2),
            vtag: be32(4),
            chunk,
            initiate_tag: be32(16),
            cookie,
        })
    }
}

/// Splits a received IPv4 packet into (source, destination, payload) when it carries SCTP.
pub fn ipv4_payload(b: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    let ihl = usize::from(b.first()? & 0x0f) * 4;
    if b.first()? >> 4 != 4 || ihl < 20 || b.len() < ihl || b[9] != 132 {
        return None;
    }
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    Some((src, dst, &b[ihl..]))
}

/// A raw SCTP socket of one family. IPv4 raw sockets deliver each packet with its IP header;
/// IPv6 raw sockets deliver the payload alone (the source comes from `recvfrom`, and the
/// destination is the bound address). Kept as a `UdpSocket` for its safe `recv_from`.
struct Raw {
    s: std::net::UdpSocket,
    v4: bool,
}

/// A received SCTP packet: source, destination (IPv4 only), payload.
type Received<'a> = (IpAddr, Option<IpAddr>, &'a [u8]);

impl Raw {
    /// A raw socket for `ip`'s family, bound to `ip` when given.
    fn new(family_of: IpAddr, bind: bool) -> std::io::Result<Raw> {
        let v4 = family_of.is_ipv4();
        let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
        let s = Socket::new(domain, Type::RAW, Some(SockProto::from(IPPROTO_SCTP)))?;
        if bind {
            s.bind(&SocketAddr::new(family_of, 0).into())?;
        }
        Ok(Raw { s: s.into(), v4 })
    }

    fn send(&self, pkt: &[u8], to: IpAddr) -> std::io::Result<usize> {
        self.s.send_to(pkt, SocketAddr::new(to, 0))
    }

    fn recv<'a>(&self, buf: &'a mut [u8]) -> std::io::Result<Option<Received<'a>>> {
        let (n, from) = self.s.recv_from(buf)?;
        let got = &buf[..n];
        Ok(if self.v4 {
            ipv4_payload(got).map(|(s, d, p)| (IpAddr::V4(s), Some(IpAddr::V4(d)), p))
        } else {
            Some((from.ip(), None, got))
        })
    }
}

/// Something different for every probe: ephemeral-ish ports and initiate tags.
fn fresh() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = N.fetch_add(1, Ordering::Relaxed);
    crc32c(
        &[
            t.to_le_bytes(),
            n.to_le_bytes(),
            std::process::id().to_le_bytes(),
        ]
        .concat(),
    )
}

/// A raw-socket SCTP server for `ip:port` (call inside the pod's namespace); the thread
/// answers every INIT with an INIT-ACK whose cookie is the source address it saw.
pub fn serve(
    ip: IpAddr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> Result<impl FnOnce() + Send + 'static, String> {
    let s = Raw::new(ip, true).map_err(|e| format!("raw SCTP socket on {ip}: {e}"))?;
    // A long timeout: idle servers wake once a second to check `stop`.
    s.s.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    Ok(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::SeqCst) {
            let Ok(Some((src, dst, payload))) = s.recv(&mut buf) else {
                continue;
            };
            let Some(init) = Init::decode(payload) else {
                continue;
            };
            if dst.is_some_and(|d| d != ip)
                || init.dst_port != port
                || init.chunk != INIT
                || init.vtag != 0
            {
                continue;
            }
            let ack = Init {
                src_port: port,
                dst_port: init.src_port,
                vtag: init.initiate_tag,
                chunk: INIT_ACK,
                initiate_tag: fresh() | 1,
                cookie: Some(src.to_string().into_bytes()),
            };
            let _ = s.send(&ack.encode(), src);
        }
    })
}

/// Sends an INIT to `dst` (call inside the source namespace) and waits for the INIT-ACK:
/// `Some(address in its cookie)`, or `None` when nothing came back.
pub fn probe(dst: SocketAddr, src_port: u16) -> Option<String> {
    let s = Raw::new(dst.ip(), false).ok()?;
    let tag = fresh() | 1;
    let init = Init {
        src_port,
        dst_port: dst.port(),
        vtag: 0,
        chunk: INIT,
        initiate_tag: tag,
        cookie: None,
    }
    .encode();
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        s.send(&init, dst.ip()).ok()?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            s.s.set_read_timeout(Some(left)).ok()?;
            let Ok(got) = s.recv(&mut buf) else { break };
            let Some((src, _, payload)) = got else {
                continue;
            };
            let Some(ack) = Init::decode(payload) else {
                continue;
            };
            if src == dst.ip()
                && ack.chunk == INIT_ACK
                && ack.src_port == dst.port()
                && ack.dst_port == src_port
                && ack.vtag == tag
            {
                return ack.cookie.map(|c| String::from_utf8_lossy(&c).into_owned());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 B.4 (iSCSI) vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn init_and_init_ack_round_trip() {
        let init = Init {
            src_port: 40000,
            dst_port: 80,
            vtag: 0,
            chunk: INIT,
            initiate_tag: 0xdead_beef,
            cookie: None,
        };
        let b = init.encode();
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..4], &[0x9c, 0x40, 0, 80]);
        assert_eq!(b[12], INIT);
        assert_eq!(u16::from_be_bytes([b[14], b[15]]), 20);
        assert_eq!(Init::decode(&b), Some(init));

        let ack = Init {
            src_port: 80,
            dst_port: 40000,
            vtag: 0xdead_beef,
            chunk: INIT_ACK,
            initiate_tag: 7,
            cookie: Some(b"10.1.2.3".to_vec()),
        };
        let b = ack.encode();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(u16::from_be_bytes([b[14], b[15]]), 20 + 4 + 8);
        assert_eq!(Init::decode(&b), Some(ack));

        let mut bad = b.clone();
        bad[20] ^= 1;
        assert_eq!(
            Init::decode(&bad),
            None,
            "a corrupted packet fails the checksum"
        );
    }

    #[test]
    fn ipv4_header_is_stripped() {
        let mut pkt = vec![
            0x45, 0, 0, 52, 0, 0, 0, 0, 64, 132, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        pkt.extend_from_slice(&[1, 2, 3]);
        let (s, d, p) = ipv4_payload(&pkt).unwrap();
        assert_eq!(
            (s, d, p),
            (
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
                &[1u8, 2, 3][..]
            )
        );
        pkt[9] = 6;
        assert!(ipv4_payload(&pkt).is_none());
    }

    /// Two namespaces joined by a veth, no policy: INIT -> INIT-ACK carrying the client's
    /// address; a port nobody serves stays silent (the kernel has no SCTP stack to ABORT).
    /// Over IPv4 and over IPv6.
    fn init_ack_through_a_veth(a_ip: &str, b_ip: &str, prefix: u8, tag: &str) {
        use crate::lab::netns::{Ns, PREFIX};
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED (needs root)");
            return;
        }
        let id = std::process::id();
        let a = Ns::new(format!("{PREFIX}{id}-s{tag}a")).unwrap();
        let b = Ns::new(format!("{PREFIX}{id}-s{tag}b")).unwrap();
        let (va, vb) = (format!("fs{tag}a{id}"), format!("fs{tag}b{id}"));
        a.ip(&[
            "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &b.name,
        ])
        .unwrap();
        let (pa, pb) = (format!("{a_ip}/{prefix}"), format!("{b_ip}/{prefix}"));
        a.ip(&["addr", "add", &pa, "dev", &va, "nodad"]).unwrap();
        b.ip(&["addr", "add", &pb, "dev", &vb, "nodad"]).unwrap();
        a.ip(&["link", "set", &va, "up"]).unwrap();
        b.ip(&["link", "set", &vb, "up"]).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let server_ip: IpAddr = b_ip.parse().unwrap();
        let run = b
            .enter({
                let stop = stop.clone();
                move || serve(server_ip, 80, stop)
            })
            .unwrap()
            .unwrap();
        let server = std::thread::spawn(run);

        let got = a
            .enter(move || probe(SocketAddr::new(server_ip, 80), 40000))
            .unwrap();
        assert_eq!(got.as_deref(), Some(a_ip));
        let got = a
            .enter(move || probe(SocketAddr::new(server_ip, 81), 40001))
            .unwrap();
        assert_eq!(got, None, "nothing serves port 81");
        // Nothing but our INIT-ACKs came back: no ABORT from the kernel for port 81.
        let silent = a
            .enter(move || {
                let s = Raw::new(server_ip, false).unwrap();
                let init = Init {
                    src_port: 40001,
                    dst_port: 81,
                    vtag: 0,
                    chunk: INIT,
                    initiate_tag: 99,
                    cookie: None,
                };
                s.send(&init.encode(), server_ip).unwrap();
                s.s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                loop {
                    match s.recv(&mut buf) {
                        Err(_) => return true,
                        Ok(Some((src, _, p)))
                            if src == server_ip
                                && p.len() >= 4
                                && p[2..4] == 40001u16.to_be_bytes() =>
                        {
                            return false
                        }
                        Ok(_) => {}
                    }
                }
            })
            .unwrap();
        assert!(silent, "the kernel answered an INIT to an unserved port");
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
    }

    #[test]
    fn init_ack_through_a_veth_ipv4() {
        init_ack_through_a_veth("10.99.0.1", "10.99.0.2", 24, "4");
    }

    #[test]
    fn init_ack_through_a_veth_ipv6() {
        init_ack_through_a_veth("fd00:99::1", "fd00:99::2", 64, "6");
    }
}
