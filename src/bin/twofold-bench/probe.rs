//! CPU and memory of the server process and of the whole machine, from /proc.
use crate::stats::Spread;
use serde::Serialize;
use std::time::Instant;

/// Linux reports process times in USER_HZ ticks, 100 per second on every mainstream platform.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    process_ticks: Option<u64>,
    harness_ticks: Option<u64>,
    /// (busy, total) jiffies over all CPUs.
    machine: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    /// Cores the server kept busy on average (1.0 = one core).
    pub server_cpu_cores: Option<f64>,
    pub server_rss_mib: Option<f64>,
    /// Peak resident memory since the server started (VmHWM).
    pub server_peak_rss_mib: Option<f64>,
    /// Share of all cores busy, machine-wide (server, databases and this harness together).
    pub machine_cpu_busy: Option<f64>,
    /// Cores the load generator itself used: it shares the machine with the server.
    pub harness_cpu_cores: Option<f64>,
    /// [`machine_loop_ms`] just before the level's users started.
    pub machine_loop_ms: Option<f64>,
    /// How long the disk took to flush a small write through the level (`stalls`).
    pub disk_flush_ms: Option<Spread>,
    /// How much later than asked a sleeping thread woke up through the level (`stalls`).
    pub wake_up_late_ms: Option<Spread>,
}

/// Iterations of [`machine_loop_ms`]'s loop: a few milliseconds on a current core.
const LOOP_ITERATIONS: u64 = 4_000_000;

/// How long a fixed loop takes on one core now, in milliseconds (the median of five rounds):
/// how fast this machine runs at the time. A shared virtual machine's speed changes by the hour
/// and its steal time may read 0, so runs compare only when their loops agree.
pub fn machine_loop_ms() -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            for _ in 0..LOOP_ITERATIONS {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state = std::hint::black_box(state);
            }
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn status_kib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(key)?
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub fn snapshot(pid: Option<u32>) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        process_ticks: pid.and_then(process_ticks),
        harness_ticks: process_ticks(std::process::id()),
        machine: machine_jiffies(),
    }
}

pub fn usage(pid: Option<u32>, start: &Snapshot, end: &Snapshot) -> Usage {
    let seconds = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let cores = |start: Option<u64>, end: Option<u64>| match (start, end) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / TICKS_PER_SECOND / seconds),
        _ => None,
    };
    let machine_cpu_busy = match (start.machine, end.machine) {
        (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => {
            Some((busy_b - busy_a) as f64 / (total_b - total_a) as f64)
        }
        _ => None,
    };
    Usage {
        server_cpu_cores: cores(start.process_ticks, end.process_ticks),
        harness_cpu_cores: cores(start.harness_ticks, end.harness_ticks),
        server_rss_mib: pid
            .and_then(|pid| status_kib(pid, "VmRSS"))
            .map(|kib| kib / 1024.0),
        server_peak_rss_mib: pid
            .and_then(|pid| status_kib(pid, "VmHWM"))
            .map(|kib| kib / 1024.0),
        machine_cpu_busy,
        machine_loop_ms: None,
        disk_flush_ms: None,
        wake_up_late_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by tests that spin a core: the one that measures this process's CPU must not see
    /// another's.
    static SPINNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_machine_loop_takes_a_measurable_time() {
        let _alone = SPINNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let loop_ms = machine_loop_ms();
        assert!(loop_ms.is_finite() && loop_ms > 0.0, "{loop_ms}");
        // Four million rounds of a few instructions each cannot take a whole second on any
        // machine this runs on, nor finish in a microsecond.
        assert!((0.001..1000.0).contains(&loop_ms), "{loop_ms}");
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let _alone = SPINNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let pid = std::process::id();
        let start = snapshot(Some(pid));
        let mut spin = 0u64;
        let begun = Instant::now();
        while begun.elapsed().as_millis() < 200 {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        let end = snapshot(Some(pid));
        let usage = usage(Some(pid), &start, &end);
        assert!(spin > 0);
        let cores = usage.server_cpu_cores.unwrap();
        assert!(
            cores > 0.05 && cores < 1.5,
            "a busy loop uses at most one core: {cores}"
        );
        assert!(usage.server_rss_mib.unwrap() > 1.0);
        assert!(usage.server_peak_rss_mib.unwrap() >= usage.server_rss_mib.unwrap());
        let busy = usage.machine_cpu_busy.unwrap();
        assert!((0.0..=1.0).contains(&busy));
    }
}
