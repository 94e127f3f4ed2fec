//! A minimal synchronous rtnetlink client: one request, then read until the ACK, the error or
//! the end of the dump. No async runtime: the CNI plugin is short-lived and single-threaded.

use std::cell::Cell;
use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Netlink message header length (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;

/// A NETLINK_ROUTE socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub(crate) struct NlSocket {
    socket: Socket,
    seq: Cell<u32>,
}

impl NlSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(NlSocket {
            socket,
            seq: Cell::new(0),
        })
    }

    /// Sends a request that changes something and waits for its ACK.
    pub(crate) fn change(&self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// Sends a `GET` for one object and returns the kernel's answer (usually one message).
    pub(crate) fn get(&self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_ACK)
    }

    /// Sends a dump request and returns every message until `NLMSG_DONE`.
    pub(crate) fn dump(&self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_DUMP)
    }

    fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let data = self.recv_datagram()?;
            let mut offset = 0;
            while offset + NLMSG_HDRLEN <= data.len() {
                let len = read_len(&data[offset..])?;
                if len < NLMSG_HDRLEN || offset + len > data.len() {
                    return Err(invalid(format!("bad netlink message length {len}")));
                }
                let msg =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..offset + len])
                        .map_err(|e| invalid(format!("cannot decode netlink message: {e}")))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a stale answer to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out), // the ACK
                        Some(_) => return Err(e.to_io()),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
            if !is_dump && flags & NLM_F_ACK == 0 && !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Reads one whole datagram, however large (peek its size first).
    fn recv_datagram(&self) -> io::Result<Vec<u8>> {
        let mut probe: Vec<u8> = Vec::new();
        let size = self
            .socket
            .recv(&mut probe, nix::libc::MSG_PEEK | nix::libc::MSG_TRUNC)?;
        let mut buf: Vec<u8> = Vec::with_capacity(size.max(NLMSG_HDRLEN));
        let n = self.socket.recv(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    }
}

fn read_len(data: &[u8]) -> io::Result<usize> {
    let bytes: [u8; 4] = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("truncated netlink header".to_string()))?;
    Ok(u32::from_ne_bytes(bytes) as usize)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
