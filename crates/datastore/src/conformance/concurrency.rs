//! Conformance cases with several clients: threads, separate processes, watch latency.
//!
//! Child processes are the current test binary, re-executed with a filter that selects only
//! the generated `conformance_child_entry` test and the job in [`CHILD_ENV`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{ensure, ensure_eq, next_event, Failure, Fixture, Outcome};
use crate::{open_with_root, Datastore, DatastoreConfig, Error, Event};

/// Environment variable carrying a child process's job (JSON).
pub const CHILD_ENV: &str = "FURYNET_DATASTORE_CONFORMANCE_CHILD";
/// The generated test that runs a child's job.
const CHILD_TEST: &str = "conformance_child_entry";
/// What a child prints when its job is done, so the parent knows it really ran.
const CHILD_DONE: &str = "conformance child done";
/// How long a child may run.
const CHILD_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    config: DatastoreConfig,
    root: String,
    /// Wall-clock start time (ms since the epoch), so all children start together.
    start_at_ms: u64,
    job: Job,
}

#[derive(Debug, Serialize, Deserialize)]
enum Job {
    /// Increment the counter at `key` `count` times with a CAS loop.
    Increment { key: String, count: u64 },
    /// Write the wall-clock time (ns since the epoch) to `key` `count` times.
    LatencyWriter {
        key: String,
        count: u64,
        interval_ms: u64,
    },
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Add one to the decimal counter at `key` (creating it at 1), retrying conflicts and
/// transient errors as every CAS user must. Returns how many attempts were retried.
pub fn increment(ds: &dyn Datastore, key: &str) -> Outcome<u64> {
    let mut retries = 0_u64;
    loop {
        let attempt = ds.get(key).and_then(|current| match current {
            None => ds.create(key, b"1", None),
            Some(kv) => {
                let n: u64 = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::InvalidArgument {
                        op: "increment",
                        reason: format!("counter {key} holds {:?}", kv.value),
                    })?;
                ds.update(key, (n + 1).to_string().as_bytes(), kv.mod_revision)
            }
        });
        match attempt {
            Ok(_) => return Ok(retries),
            Err(e) if e.is_retryable() || matches!(e, Error::AlreadyExists { .. }) => {
                retries += 1;
                ensure!(retries < 100_000, "gave up after {retries} retries: {e}");
                if !matches!(e, Error::Conflict { .. } | Error::AlreadyExists { .. }) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The decimal counter at `key`.
pub fn counter_value(ds: &dyn Datastore, key: &str) -> Outcome<u64> {
    let kv = ds
        .get(key)?
        .ok_or_else(|| Failure::new(format!("counter {key} missing")))?;
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::new(format!("counter holds {:?}", kv.value)))
}

/// Every increment must appear in the watch exactly once, in order: 1, 2, ..., total.
fn check_counter_history(watch: &mut crate::Watch, total: u64) -> Outcome {
    let mut previous_rev = 0;
    for expected in 1..=total {
        let Event::Put(kv) = next_event(watch)? else {
            return Err(Failure::new("the counter was deleted"));
        };
        ensure_eq!(
            kv.value,
            expected.to_string().into_bytes(),
            "counter history"
        );
        ensure!(kv.mod_revision > previous_rev, "revisions not increasing");
        previous_rev = kv.mod_revision;
    }
    Ok(())
}

/// Several threads CAS-increment one counter; no update may be lost.
pub fn concurrent_threads(fx: &Fixture) -> Outcome {
    const THREADS: u64 = 4;
    const EACH: u64 = 50;
    let ds = &*fx.store;
    let mut watch = ds.watch("threads/", 0)?;
    let retries = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(move || -> Outcome<u64> {
                    let mut retries = 0;
                    for _ in 0..EACH {
                        retries += increment(ds, "threads/counter")?;
                    }
                    Ok(retries)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w
                .join()
                .map_err(|_| Failure::new("worker thread panicked"))??;
        }
        Outcome::Ok(total)
    })?;
    ensure_eq!(
        counter_value(ds, "threads/counter")?,
        THREADS * EACH,
        "final counter"
    );
    check_counter_history(&mut watch, THREADS * EACH)?;
    eprintln!("concurrent_threads: {THREADS}x{EACH} increments, {retries} CAS retries");
    Ok(())
}

fn spawn_child(
    config: &DatastoreConfig,
    root: &str,
    start_at_ms: u64,
    job: Job,
) -> Outcome<std::process::Child> {
    let spec = ChildSpec {
        config: config.clone(),
        root: root.to_owned(),
        start_at_ms,
        job,
    };
    let json = serde_json::to_string(&spec).map_err(|e| Failure::new(e.to_string()))?;
    let exe = std::env::current_exe()?;
    Ok(Command::new(exe)
        .args([CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Wait for a child (killing it after [`CHILD_LIMIT`]) and check it did its job.
fn finish_child(mut child: std::process::Child) -> Outcome {
    let deadline = Instant::now() + CHILD_LIMIT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::new(format!(
                "child did not finish within {CHILD_LIMIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.contains(CHILD_DONE),
        "child failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    Ok(())
}

fn start_time_ms(delay: Duration) -> u64 {
    u64::try_from((now_ns() / 1_000_000) + delay.as_millis()).unwrap_or(u64::MAX)
}

/// Start `processes` child processes that each CAS-increment the counter at `key` `each`
/// times, all starting at the same moment, and wait for them.
pub fn run_increment_children(
    config: &DatastoreConfig,
    root: &str,
    key: &str,
    processes: u64,
    each: u64,
) -> Outcome {
    let start = start_time_ms(Duration::from_millis(500));
    let children = (0..processes)
        .map(|_| {
            let job = Job::Increment {
                key: key.into(),
                count: each,
            };
            spawn_child(config, root, start, job)
        })
        .collect::<Outcome<Vec<_>>>()?;
    let mut failures = Vec::new();
    for child in children {
        if let Err(e) = finish_child(child) {
            failures.push(e.to_string());
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Several processes CAS-increment one counter at once; no update may be lost, and a
/// watch sees every increment in order.
pub fn concurrent_processes(fx: &Fixture) -> Outcome {
    const PROCESSES: u64 = 4;
    const EACH: u64 = 50;
    let key = "procs/counter";
    let mut watch = fx.store.watch("procs/", 0)?;
    run_increment_children(&fx.config, &fx.root, key, PROCESSES, EACH)?;
    ensure_eq!(
        counter_value(&*fx.store, key)?,
        PROCESSES * EACH,
        "final counter"
    );
    check_counter_history(&mut watch, PROCESSES * EACH)?;
    Ok(())
}

/// Watch latency samples, summarised.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    /// The samples, sorted.
    pub samples: Vec<Duration>,
}

impl LatencyReport {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        LatencyReport { samples }
    }

    /// The q-quantile (0.0..=1.0) of the samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let last = self.samples.len() - 1;
        // Truncation is the intended rounding for a sample index.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((last as f64) * q.clamp(0.0, 1.0)).round() as usize;
        self.samples[i.min(last)]
    }
}

impl std::fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} median={:?} p90={:?} max={:?}",
            self.samples.len(),
            self.quantile(0.5),
            self.quantile(0.9),
            self.quantile(1.0)
        )
    }
}

/// Watch latency between two clients in one process (two connections to one store).
pub fn watch_latency_in_process(fx: &Fixture) -> Outcome {
    const SAMPLES: usize = 40;
    let watcher = open_with_root(&fx.config, &fx.root)?;
    let mut watch = watcher.watch("latency/", 0)?;
    let ds = &*fx.store;
    let (mut end_to_end, mut after_commit) = (Vec::new(), Vec::new());
    let mut rev = None;
    for i in 0..SAMPLES {
        std::thread::sleep(Duration::from_millis(20));
        let t0 = Instant::now();
        let value = i.to_string();
        let written = match rev {
            None => ds.create("latency/k", value.as_bytes(), None)?,
            Some(r) => ds.update("latency/k", value.as_bytes(), r)?,
        };
        let t1 = Instant::now();
        rev = Some(written);
        let event = next_event(&mut watch)?;
        let t2 = Instant::now();
        ensure_eq!(event.revision(), written, "latency event");
        end_to_end.push(t2 - t0);
        after_commit.push(t2 - t1);
    }
    let e2e = LatencyReport::new(end_to_end);
    let notify = LatencyReport::new(after_commit);
    eprintln!(
        "watch latency ({} backend, same process, separate connection):\n  write start -> event: {e2e}\n  write returned -> event: {notify}",
        ds.backend()
    );
    ensure!(
        e2e.quantile(0.5) < Duration::from_secs(1),
        "median latency {e2e}"
    );
    Ok(())
}

/// Watch latency to a change made by another process (wall clock, same machine).
pub fn watch_latency_cross_process(fx: &Fixture) -> Outcome {
    const SAMPLES: u64 = 40;
    let mut watch = fx.store.watch("xlatency/", 0)?;
    let job = Job::LatencyWriter {
        key: "xlatency/k".into(),
        count: SAMPLES,
        interval_ms: 20,
    };
    let child = spawn_child(&fx.config, &fx.root, start_time_ms(Duration::ZERO), job)?;
    let mut samples = Vec::new();
    for _ in 0..SAMPLES {
        let event = match next_event(&mut watch) {
            Ok(e) => e,
            Err(e) => {
                let child_result = finish_child(child);
                return Err(Failure::new(format!("{e}; child: {child_result:?}")));
            }
        };
        let received = now_ns();
        let Event::Put(kv) = event else {
            return Err(Failure::new("expected a put"));
        };
        let sent: u128 = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::new("latency value is not a timestamp"))?;
        let ns = u64::try_from(received.saturating_sub(sent)).unwrap_or(u64::MAX);
        samples.push(Duration::from_nanos(ns));
    }
    finish_child(child)?;
    let report = LatencyReport::new(samples);
    eprintln!(
        "watch latency ({} backend, writer in another process): write start -> event: {report}",
        fx.store.backend()
    );
    ensure!(
        report.quantile(0.5) < Duration::from_secs(1),
        "median latency {report}"
    );
    Ok(())
}

/// The body of the generated `conformance_child_entry` test: runs the job in [`CHILD_ENV`],
/// or does nothing when it is unset (a normal test run).
pub fn child_entry() -> Outcome {
    let Ok(json) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let spec: ChildSpec =
        serde_json::from_str(&json).map_err(|e| Failure::new(format!("bad {CHILD_ENV}: {e}")))?;
    let store = open_with_root(&spec.config, &spec.root)?;
    let now_ms = u64::try_from(now_ns() / 1_000_000).unwrap_or(0);
    if spec.start_at_ms > now_ms {
        std::thread::sleep(Duration::from_millis(spec.start_at_ms - now_ms));
    }
    match &spec.job {
        Job::Increment { key, count } => {
            let mut retries = 0;
            for _ in 0..*count {
                retries += increment(&*store, key)?;
            }
            eprintln!("{CHILD_DONE}: {count} increments of {key}, {retries} CAS retries");
        }
        Job::LatencyWriter {
            key,
            count,
            interval_ms,
        } => {
            let mut rev = None;
            for _ in 0..*count {
                std::thread::sleep(Duration::from_millis(*interval_ms));
                let value = now_ns().to_string();
                rev = Some(match rev {
                    None => store.create(key, value.as_bytes(), None)?,
                    Some(r) => store.update(key, value.as_bytes(), r)?,
                });
            }
            eprintln!("{CHILD_DONE}: {count} timestamped writes to {key}");
        }
    }
    Ok(())
}
