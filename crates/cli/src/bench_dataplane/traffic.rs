//! Part of `furynet bench dataplane` (see `mod.rs`).

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Traffic

/// The TCP sink/echo server in a pod; stops on drop.
#[derive(Debug)]
pub(super) struct Sink {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) handle: Option<JoinHandle<()>>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// First byte of a connection: `T` throughput (read to EOF, answer the byte count as u64 BE),
/// `R` request/response (echo every byte).
pub(super) fn serve_conn(mut s: TcpStream) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'T' => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total: u64 = 0;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            s.write_all(&total.to_be_bytes())
        }
        b'R' => {
            let mut b = [0u8; 1];
            while s.read(&mut b)? == 1 {
                s.write_all(&b)?;
            }
            Ok(())
        }
        b'S' => {
            s.set_nonblocking(true)?;
            let mut b = [0u8; 1];
            while spin_read(&mut s, &mut b)? {
                s.write_all(&b)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(super) fn sink(ns: &Ns, addr: SocketAddr) -> Res<Sink> {
    let l = ns
        .enter(move || TcpListener::bind(addr))?
        .map_err(|e| format!("bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) && !STOP.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || serve_conn(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    Ok(Sink {
        stop,
        handle: Some(handle),
    })
}

pub(super) fn connect(ns: &Ns, addr: SocketAddr) -> Res<TcpStream> {
    ns.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?
        .map_err(|e| format!("connect {addr} from {}: {e}", ns.name))
}

/// One stream for `secs`: Gbit/s received by the server (until it confirmed the byte count).
pub(super) fn throughput(ns: &Ns, addr: SocketAddr, secs: f64) -> Res<f64> {
    let mut s = connect(ns, addr)?;
    let e = |e: io::Error| format!("throughput to {addr}: {e}");
    s.write_all(b"T").map_err(e)?;
    let buf = vec![0x5au8; 128 * 1024];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        check_stop()?;
        s.write_all(&buf).map_err(e)?;
    }
    s.shutdown(Shutdown::Write).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(e)?;
    let mut n = [0u8; 8];
    s.read_exact(&mut n).map_err(e)?;
    let took = start.elapsed().as_secs_f64().max(1e-9);
    Ok(u64::from_be_bytes(n) as f64 * 8.0 / took / 1e9)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(super) struct RrRun {
    pub(super) tps: f64,
    pub(super) median_us: f64,
    pub(super) p99_us: f64,
}

/// Reads one byte from a non-blocking socket, spinning (never sleeping) until it comes;
/// `Ok(false)` at end of stream. Gives up after 5 s without data.
pub(super) fn spin_read(s: &mut TcpStream, b: &mut [u8; 1]) -> io::Result<bool> {
    let since = Instant::now();
    loop {
        match s.read(b) {
            Ok(n) => return Ok(n == 1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if since.elapsed() > Duration::from_secs(5) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 5 s"));
                }
                std::hint::spin_loop();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// 1-byte ping-pong for `secs` on one TCP_NODELAY connection. With `spin`, both ends poll
/// their non-blocking sockets instead of sleeping in `recv`: a round trip then costs what the
/// path costs in CPU, without the wake-ups of idle CPUs (tens of microseconds on this VM when
/// the machine is quiet, which hide a sub-microsecond difference).
pub(super) fn request_response(ns: &Ns, addr: SocketAddr, secs: f64, spin: bool) -> Res<RrRun> {
    let mut s = connect(ns, addr)?;
    let e = |e: io::Error| format!("request/response to {addr}: {e}");
    s.set_nodelay(true).map_err(e)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(e)?;
    s.write_all(if spin { b"S" } else { b"R" }).map_err(e)?;
    if spin {
        s.set_nonblocking(true).map_err(e)?;
    }
    let mut b = [1u8; 1];
    let mut lat: Vec<f64> = Vec::with_capacity(1 << 18);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut now = start;
    while now < end {
        if lat.len().is_multiple_of(1024) {
            check_stop()?;
        }
        s.write_all(&b).map_err(e)?;
        if spin {
            if !spin_read(&mut s, &mut b).map_err(e)? {
                return Err(format!("request/response to {addr}: closed"));
            }
        } else {
            s.read_exact(&mut b).map_err(e)?;
        }
        let t = Instant::now();
        lat.push((t - now).as_secs_f64() * 1e6);
        now = t;
    }
    let took = start.elapsed().as_secs_f64().max(1e-9);
    let tps = lat.len() as f64 / took;
    lat.sort_by(f64::total_cmp);
    Ok(RrRun {
        tps,
        median_us: quantile(&lat, 0.5),
        p99_us: quantile(&lat, 0.99),
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank quantile of sorted samples (0 when empty).
pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(idx).copied().unwrap_or(0.0)
}

/// Median (mean of the two middle values for an even count; 0 when empty).
pub(super) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(super) fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Which side runs first in each round: A B, B A, A B, ... (ABBA), so drift cancels.
pub(super) fn round_order(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Measure {
    /// Median over rounds.
    pub(super) gbps: f64,
    pub(super) rr_tps: f64,
    pub(super) rr_median_us: f64,
    pub(super) rr_p99_us: f64,
    /// The same with both ends spinning (see [`request_response`]).
    pub(super) spin_rr_tps: f64,
    pub(super) spin_rr_median_us: f64,
    pub(super) spin_rr_p99_us: f64,
    pub(super) gbps_runs: Vec<f64>,
    pub(super) rr_runs: Vec<RrRun>,
    pub(super) spin_rr_runs: Vec<RrRun>,
}

impl Measure {
    pub(super) fn finish(&mut self) {
        self.gbps = median(&self.gbps_runs);
        (self.rr_tps, self.rr_median_us, self.rr_p99_us) = medians(&self.rr_runs);
        (
            self.spin_rr_tps,
            self.spin_rr_median_us,
            self.spin_rr_p99_us,
        ) = medians(&self.spin_rr_runs);
    }
}

/// Medians over rounds of transactions/s, median latency and p99 latency.
fn medians(runs: &[RrRun]) -> (f64, f64, f64) {
    let col = |f: fn(&RrRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    (col(|r| r.tps), col(|r| r.median_us), col(|r| r.p99_us))
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Ratios {
    /// B / A throughput.
    pub(super) throughput: f64,
    /// B / A transactions per second.
    pub(super) rr_tps: f64,
    /// A / B median latency (above 1: B is faster).
    pub(super) rr_median_latency: f64,
    /// The same two with both ends spinning.
    pub(super) spin_rr_tps: f64,
    pub(super) spin_rr_median_latency: f64,
}

impl Ratios {
    pub(super) fn of(a: &Measure, b: &Measure) -> Ratios {
        Ratios {
            throughput: ratio(b.gbps, a.gbps),
            rr_tps: ratio(b.rr_tps, a.rr_tps),
            rr_median_latency: ratio(a.rr_median_us, b.rr_median_us),
            spin_rr_tps: ratio(b.spin_rr_tps, a.spin_rr_tps),
            spin_rr_median_latency: ratio(a.spin_rr_median_us, b.spin_rr_median_us),
        }
    }
}

/// Measures A (`false`) and B (`true`) alternately; `switch(b)` configures the dataplane.
pub(super) fn compare(
    args: &DataplaneBench,
    label: [&str; 2],
    from: &Ns,
    to: SocketAddr,
    switch: &mut dyn FnMut(bool) -> Res<()>,
) -> Res<(Measure, Measure)> {
    let secs = args.seconds.max(1) as f64;
    let mut m = [Measure::default(), Measure::default()];
    let mut current = None;
    for round in 0..args.rounds.max(1) {
        for side in round_order(round) {
            check_stop()?;
            if current != Some(side) {
                switch(side)?;
                current = Some(side);
            }
            let name = label[usize::from(side)];
            if round == 0 && side == round_order(0)[0] {
                // Warm-up (neighbours, caches, CPU frequency); not recorded.
                throughput(from, to, 1.0)?;
            }
            let g = throughput(from, to, secs)?;
            let r = request_response(from, to, secs, false)?;
            let sr = request_response(from, to, secs, true)?;
            eprintln!(
                "  round {} {name:<14} {g:>7.2} Gbit/s | RR {:>8.0}/s median {:>6.1} us p99 {:>6.1} us | spinning RR {:>8.0}/s median {:>6.2} us p99 {:>6.2} us",
                round + 1,
                r.tps,
                r.median_us,
                r.p99_us,
                sr.tps,
                sr.median_us,
                sr.p99_us
            );
            let slot = &mut m[usize::from(side)];
            slot.gbps_runs.push(g);
            slot.rr_runs.push(r);
            slot.spin_rr_runs.push(sr);
        }
    }
    let [mut a, mut b] = m;
    a.finish();
    b.finish();
    Ok((a, b))
}
