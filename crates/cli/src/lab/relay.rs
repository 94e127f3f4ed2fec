//! `furynet lab relay`: makes an etcd that the host reaches available on 127.0.0.1 inside
//! every node namespace (agents and the CNI plugin run there, with their own loopback). One
//! process in the host namespace: each listener is created inside a node namespace (a socket
//! keeps the namespace it was created in), each accepted connection is forwarded from the
//! host namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::netns::{Ns, Res};

/// Parses `LISTEN_PORT=HOST:PORT`.
pub fn parse_route(r: &str) -> Res<(u16, String)> {
    let (port, to) = r
        .split_once('=')
        .ok_or_else(|| format!("--route {r:?}: expected LISTEN_PORT=HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("--route {r:?}: bad listen port"))?;
    if to.is_empty() || !to.contains(':') {
        return Err(format!("--route {r:?}: expected HOST:PORT after ="));
    }
    Ok((port, to.to_string()))
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Copies both ways between two connected sockets, one thread per direction.
fn splice(client: TcpStream, upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    std::thread::spawn(move || pipe(client, upstream));
    std::thread::spawn(move || pipe(u2, c2));
}

/// Parses `NETNS=HOST_PORT:TARGET_PORT` (expose 127.0.0.1:TARGET_PORT of a namespace on the
/// host's 127.0.0.1:HOST_PORT).
pub fn parse_expose(e: &str) -> Res<(String, u16, u16)> {
    let bad = || format!("--expose {e:?}: expected NETNS=HOST_PORT:TARGET_PORT");
    let (ns, ports) = e.split_once('=').ok_or_else(bad)?;
    let (h, t) = ports.split_once(':').ok_or_else(bad)?;
    Ok((
        ns.to_string(),
        h.parse().map_err(|_| bad())?,
        t.parse().map_err(|_| bad())?,
    ))
}

/// Accepts on the host and connects from inside `netns` (a thread enters it per connection).
fn expose(netns: String, host_port: u16, target_port: u16) -> Res<()> {
    let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
        .map_err(|e| format!("bind 127.0.0.1:{host_port}: {e}"))?;
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let ns = Ns::existing(&netns);
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
            if let Ok(Ok(up)) = ns.enter(move || TcpStream::connect(target)) {
                splice(c, up);
            }
        }
    });
    Ok(())
}

/// Binds every route in every namespace and every exposed port, prints `ready`, forwards
/// until SIGTERM.
pub fn run(netns: &[String], routes: &[String], exposes: &[String]) -> Res<()> {
    let stop = Arc::new(AtomicBool::new(false));
    furynet_agent::signals::stop_on_term(stop.clone()).map_err(|e| e.to_string())?;
    let routes: Vec<(u16, String)> = routes.iter().map(|r| parse_route(r)).collect::<Res<_>>()?;
    for ns in netns {
        for (port, to) in &routes {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            let l: TcpListener = Ns::existing(ns)
                .enter(move || TcpListener::bind(addr))?
                .map_err(|e| format!("bind {addr} in {ns}: {e}"))?;
            let to = to.clone();
            // Spawned from the main thread: connections upstream leave from the host namespace.
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    if let Ok(up) = TcpStream::connect(&to) {
                        splice(c, up);
                    }
                }
            });
        }
    }
    for e in exposes {
        let (ns, h, t) = parse_expose(e)?;
        expose(ns, h, t)?;
    }
    crate::out::with_stdout(|w| {
        writeln!(w, "ready")?;
        w.flush()
    })
    .map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exposes_parse_or_say_why() {
        assert_eq!(
            parse_expose("fnylab-1-node-0=19100:9099").unwrap(),
            ("fnylab-1-node-0".to_string(), 19100, 9099)
        );
        assert!(parse_expose("x=1").is_err());
        assert!(parse_expose("x").is_err());
    }

    #[test]
    fn routes_parse_or_say_why() {
        assert_eq!(
            parse_route("23790=127.0.0.1:2379").unwrap(),
            (23790, "127.0.0.1:2379".to_string())
        );
        assert!(parse_route("23790")
            .unwrap_err()
            .contains("expected LISTEN_PORT=HOST:PORT"));
        assert!(parse_route("x=a:1")
            .unwrap_err()
            .contains("bad listen port"));
        assert!(parse_route("1=").unwrap_err().contains("HOST:PORT"));
    }
}
