//! What a run measured: outcomes by code, acknowledgement latency, and the server's CPU and
//! memory read from `/proc`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, with three significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

/// Outcomes and latencies of one worker; merged at the end of a run.
pub(super) struct Tally {
    /// Orders the server accepted (a 2xx answer).
    pub(super) accepted: u64,
    /// Orders refused, by error code.
    pub(super) refused: BTreeMap<String, u64>,
    /// Requests that got no answer (connection errors).
    pub(super) failed: u64,
    pub(super) latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            accepted: 0,
            refused: BTreeMap::new(),
            failed: 0,
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl Tally {
    /// A tally with two significant digits of latency: small enough to keep one for each of
    /// thousands of subscribers.
    pub(super) fn coarse() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 2)
                .expect("valid histogram bounds"),
            ..Tally::default()
        }
    }

    pub(super) fn latency(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(micros.clamp(1, LATENCY_US_MAX));
    }

    pub(super) fn refused(&mut self, code: &str) {
        *self.refused.entry(code.to_owned()).or_default() += 1;
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.failed += other.failed;
        for (code, count) in other.refused {
            *self.refused.entry(code).or_default() += count;
        }
        // Both histograms share bounds, so adding cannot fail; a finer one takes a coarser.
        let _ = self.latency_us.add(&other.latency_us);
    }

    pub(super) fn orders(&self) -> u64 {
        self.accepted + self.refused.values().sum::<u64>()
    }

    pub(super) fn latency_summary(&self) -> LatencySummary {
        let at = |quantile: f64| self.latency_us.value_at_quantile(quantile);
        LatencySummary {
            samples: self.latency_us.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.latency_us.max(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// CPU and memory of the server over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerUsage {
    /// CPU time over wall time, in percent of one core (200 is both cores of the machine).
    pub cpu_percent: f64,
    /// CPU time, user and system, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory at the end of the run.
    pub rss_kib: u64,
    /// The most resident memory the process ever had.
    pub rss_peak_kib: u64,
}

/// Reads a process's CPU time and memory from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct ProcessSampler {
    pid: u32,
    /// CPU ticks used when the sampler started.
    start_ticks: u64,
    start: tokio::time::Instant,
}

/// Clock ticks per second of `/proc/<pid>/stat`: 100 on every Linux the tool runs on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl ProcessSampler {
    /// `None` when the process cannot be read (not Linux, or gone).
    pub fn start(pid: u32) -> Option<Self> {
        Some(ProcessSampler {
            pid,
            start_ticks: cpu_ticks(pid)?,
            start: tokio::time::Instant::now(),
        })
    }

    /// A sampler of this process (the load generator itself).
    pub fn own() -> Option<Self> {
        ProcessSampler::start(std::process::id())
    }

    /// A sampler of the same process starting now, so set-up is not counted.
    pub fn restarted(&self) -> ProcessSampler {
        ProcessSampler::start(self.pid).unwrap_or(*self)
    }

    pub fn usage(&self) -> ServerUsage {
        let seconds = self.start.elapsed().as_secs_f64().max(1e-9);
        let ticks = cpu_ticks(self.pid).unwrap_or(self.start_ticks) - self.start_ticks;
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        ServerUsage {
            cpu_percent: ticks as f64 / CLOCK_TICKS_PER_SECOND / seconds * 100.0,
            cpu_seconds: ticks as f64 / CLOCK_TICKS_PER_SECOND,
            rss_kib: status_kib(&status, "VmRSS:"),
            rss_peak_kib: status_kib(&status, "VmHWM:"),
        }
    }
}

/// User plus system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

impl ServerUsage {
    /// CPU time per operation, in microseconds.
    pub fn cpu_us_per(&self, operations: u64) -> f64 {
        self.cpu_seconds * 1e6 / operations.max(1) as f64
    }
}

/// Formats rows of two columns as a table.
pub(super) fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(key, value)| format!("  {key:<width$}  {value}\n"))
        .collect()
}
