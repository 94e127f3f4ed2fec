//! The benchmark's datastore side, on a real etcd: filling it, the churn writer, and the
//! baseline clients that watch etcd directly (what every agent would do without a fan-out).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};

use super::stats::{Seen, Writes};

/// Every benchmark object lives under this etcd prefix (the fan-out server's root is
/// `/furynet/`, so it serves them as `cluster/pods/bench/...`).
pub const PREFIX: &str = "/furynet/cluster/pods/bench/";

pub fn key(i: usize) -> String {
    format!("{PREFIX}pod-{i:06}")
}

/// A pod-like JSON value of about `bytes` bytes; `generation` changes with every write. Like
/// real objects it mixes structure that repeats across objects (field names, label and image
/// vocabularies) with fields that do not (a random uid, an address, an annotation of random
/// hex filling the rest), so compression is neither flattered nor defeated.
pub fn value(i: usize, generation: u64, bytes: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let uid = format!("{:016x}{:016x}", next(), next());
    let head = format!(
        r#"{{"kind":"Pod","name":"pod-{i:06}","namespace":"bench-{}","uid":"{uid}","generation":{generation},"labels":{{"app":"bench-{}","tier":"t{}","version":"v{}"}},"nodeName":"node-{}","ips":["10.{}.{}.{}"],"containers":[{{"name":"app","image":"registry.example/bench/app-{}:1.{}","ports":[{{"containerPort":8080,"protocol":"TCP"}}]}}],"annotations":{{"note":""#,
        i % 10,
        i % 97,
        i % 7,
        i % 3,
        i % 500,
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255,
        i % 13,
        generation % 5,
    );
    let mut v = head.into_bytes();
    while v.len() + 3 < bytes {
        v.push(b"0123456789abcdef"[(next() % 16) as usize]);
    }
    v.extend_from_slice(b"\"}}");
    v
}

pub async fn connect(endpoint: &str) -> Result<Client, String> {
    Client::connect([endpoint], None)
        .await
        .map_err(|e| format!("etcd {endpoint}: {e}"))
}

/// Writes `objects` objects, `parallel` writes in flight, with progress on stderr.
pub async fn fill(endpoint: &str, objects: usize, bytes: usize) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = connect(endpoint).await?;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects {
                    return Ok::<(), String>(());
                }
                c.put(key(i), value(i, 0, bytes), None)
                    .await
                    .map_err(|e| format!("put {}: {e}", key(i)))?;
                if i > 0 && i.is_multiple_of(10_000) {
                    eprintln!("  {i}/{objects} objects written");
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Updates random objects at `rate` per second for `duration`, recording when each write
/// (by its revision) was sent. Writes are pipelined so a slow commit does not lower the rate.
pub async fn churn(
    endpoint: &str,
    objects: usize,
    bytes: usize,
    rate: u32,
    duration: Duration,
    writes: Arc<Writes>,
) -> Result<usize, String> {
    let client = connect(endpoint).await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + duration;
    let mut n: u64 = 0;
    let mut inflight = tokio::task::JoinSet::new();
    // A small deterministic generator: the same run writes the same keys.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while Instant::now() < end {
        tick.tick().await;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % objects.max(1) as u64) as usize;
        n += 1;
        let mut c = client.clone();
        let writes = writes.clone();
        inflight.spawn(async move {
            let sent = Instant::now();
            let r = c
                .put(key(i), value(i, n, bytes), Some(PutOptions::new()))
                .await
                .map_err(|e| format!("put {}: {e}", key(i)))?;
            if let Some(h) = r.header() {
                writes.record(h.revision(), sent);
            }
            Ok::<(), String>(())
        });
    }
    let mut done = 0;
    while let Some(r) = inflight.join_next().await {
        r.map_err(|e| e.to_string())??;
        done += 1;
    }
    Ok(done)
}

/// One agent watching etcd directly: its own connection, a full read of the prefix (the
/// snapshot), then a watch from the next revision. Returns the time its snapshot took and
/// the revisions it saw until `stop`.
pub async fn direct_client(
    endpoint: String,
    expect: usize,
    snapshot_done: Arc<AtomicUsize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(Duration, Seen), String> {
    let start = Instant::now();
    let mut c = connect(&endpoint).await?;
    // Paginated at one revision, as an agent lists a large store (gRPC caps messages at
    // 4 MiB).
    let end = {
        let mut e = PREFIX.as_bytes().to_vec();
        if let Some(last) = e.last_mut() {
            *last += 1;
        }
        e
    };
    let mut from = PREFIX.as_bytes().to_vec();
    let mut rev = 0;
    let mut count = 0;
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let resp = c
            .get(from.clone(), Some(opts))
            .await
            .map_err(|e| format!("get: {e}"))?;
        if rev == 0 {
            rev = resp.header().map_or(0, |h| h.revision());
        }
        count += resp.kvs().len();
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    if count != expect {
        return Err(format!(
            "direct client read {count} objects, expected {expect}"
        ));
    }
    let took = start.elapsed();
    let mut stream = c
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .map_err(|e| format!("watch: {e}"))?;
    snapshot_done.fetch_add(1, Ordering::SeqCst);
    let mut seen = Seen::new();
    while !*stop.borrow() {
        match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
            Ok(Ok(Some(m))) => {
                let now = Instant::now();
                seen.extend(
                    m.events()
                        .iter()
                        .filter_map(|e| Some((e.kv()?.mod_revision(), now))),
                );
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(format!("watch: {e}")),
            Err(_) => {}
        }
    }
    Ok((took, seen))
}
