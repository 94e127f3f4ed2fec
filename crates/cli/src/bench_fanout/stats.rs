//! Latency bookkeeping for the fan-out benchmark: when each change was written, when each
//! client saw it, and the figures derived from that (median, p99, to the last client).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Quantiles {
    pub samples: usize,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Quantiles {
    pub fn of(mut samples: Vec<Duration>) -> Quantiles {
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().map_or(0.0, ms)
        };
        Quantiles {
            samples: samples.len(),
            median_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: samples.last().copied().map_or(0.0, ms),
        }
    }
}

/// When each revision was written (the instant before the write was sent).
#[derive(Debug, Default)]
pub struct Writes(Mutex<HashMap<i64, Instant>>);

impl Writes {
    pub fn record(&self, revision: i64, at: Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(revision, at);
        }
    }

    pub fn snapshot(&self) -> HashMap<i64, Instant> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// What one simulated client saw of the churn: (revision, when it arrived).
pub type Seen = Vec<(i64, Instant)>;

/// Propagation figures over every client's receptions of the benchmark's writes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Propagation {
    /// Every (client, change) pair: write sent → change received by that client.
    pub per_client: Quantiles,
    /// Per change, the slowest client: write sent → the LAST client has it.
    pub to_last_client: Quantiles,
    /// Changes written during the churn phase.
    pub changes: usize,
    /// (client, change) pairs that never arrived before the end of the phase.
    pub missing: usize,
}

pub fn propagation(writes: &HashMap<i64, Instant>, clients: &[Seen]) -> Propagation {
    let mut all = Vec::new();
    let mut last: HashMap<i64, Duration> = HashMap::new();
    let mut received = 0usize;
    for seen in clients {
        for (rev, at) in seen {
            let Some(sent) = writes.get(rev) else {
                continue;
            };
            received += 1;
            let d = at.saturating_duration_since(*sent);
            all.push(d);
            let e = last.entry(*rev).or_default();
            *e = (*e).max(d);
        }
    }
    Propagation {
        per_client: Quantiles::of(all),
        to_last_client: Quantiles::of(last.into_values().collect()),
        changes: writes.len(),
        missing: (writes.len() * clients.len()).saturating_sub(received),
    }
}

/// Median and p99 (ms) of a Prometheus histogram in a text exposition, interpolated
/// linearly inside the bucket where the quantile falls (as `histogram_quantile` does).
pub fn histogram_quantiles(text: &str, name: &str) -> Option<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let q = |q: f64| {
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, c) in &buckets {
            if c >= rank {
                if le.is_infinite() {
                    return prev.0 * 1e3;
                }
                let span = c - prev.1;
                let frac = if span > 0.0 {
                    (rank - prev.1) / span
                } else {
                    1.0
                };
                return (prev.0 + (le - prev.0) * frac) * 1e3;
            }
            prev = (le, c);
        }
        prev.0 * 1e3
    };
    Some((q(0.5), q(0.99)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate() {
        let text = "# TYPE x histogram\n\
            x_bucket{le=\"0.01\"} 50\n\
            x_bucket{le=\"0.1\"} 99\n\
            x_bucket{le=\"1\"} 100\n\
            x_bucket{le=\"+Inf\"} 100\n";
        let (p50, p99) = histogram_quantiles(text, "x").unwrap();
        assert!((p50 - 10.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 100.0).abs() < 1e-9, "{p99}");
        assert!(histogram_quantiles("", "x").is_none());
    }

    #[test]
    fn quantiles_and_last_client() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let writes: HashMap<i64, Instant> = [(10, t0), (11, t0 + ms(100))].into();
        let clients = vec![
            vec![(10, t0 + ms(2)), (11, t0 + ms(103))],
            vec![(10, t0 + ms(8)), (99, t0)],
        ];
        let p = propagation(&writes, &clients);
        assert_eq!(p.changes, 2);
        assert_eq!(p.missing, 1);
        assert_eq!(p.per_client.samples, 3);
        assert!((p.per_client.median_ms - 3.0).abs() < 1e-6);
        assert_eq!(p.to_last_client.samples, 2);
        assert!((p.to_last_client.max_ms - 8.0).abs() < 1e-6);
        assert_eq!(Quantiles::of(vec![]).samples, 0);
    }
}
