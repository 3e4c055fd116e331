//! The results: one JSON document with every figure, and a short table on stdout.
use crate::bound::{Bound, PgWork, RedisWork};
use crate::cli::Mode;
use crate::probe::Usage;
use crate::stats::{Histogram, Spread, Tally, is_rpc};
use crate::timeline::Second;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct RpcFigures {
    pub count: u64,
    pub per_second: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The server's own time for the same calls (bench builds tell it in each answer): what is
    /// above it in `p99_ms` was spent outside the handler (sockets, waits for a core, the
    /// harness's thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Spread>,
}

impl RpcFigures {
    fn from(histogram: &Histogram, handled: Option<&Histogram>, seconds: f64) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: histogram.count(),
            per_second: histogram.count() as f64 / seconds,
            mean_ms: histogram.mean_micros() / 1000.0,
            p50_ms: ms(histogram.percentile_micros(50.0)),
            p90_ms: ms(histogram.percentile_micros(90.0)),
            p99_ms: ms(histogram.percentile_micros(99.0)),
            max_ms: ms(histogram.max_micros()),
            server: handled.and_then(Spread::of),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub mode: Mode,
    pub concurrency: usize,
    /// Iterations/s offered to this level; none: as fast as the users could.
    pub offered_per_second: Option<f64>,
    /// With `--rate <n>%`: the share of the previous level's (the peak's) rate offered here.
    pub share_of_peak: Option<f64>,
    pub measured_s: f64,
    /// Finished iterations: step-ups, WhoAmI calls, or send+verify pairs.
    pub completed: u64,
    pub per_second: f64,
    pub error_count: u64,
    pub errors: BTreeMap<String, u64>,
    pub rpcs: BTreeMap<String, RpcFigures>,
    pub usage: Usage,
    /// The longest time in the measured window in which no call or code delivery finished.
    pub longest_pause_ms: f64,
    /// When the measured window began (UTC), so its seconds can be found in other logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_started_at: Option<String>,
    /// The window second by second (see `timeline`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seconds: Vec<Second>,
    pub postgres_per_iteration: Option<PgWork>,
    pub redis_per_iteration: Option<RedisWork>,
    pub bound: Option<Bound>,
}

impl Level {
    pub fn new(mode: Mode, concurrency: usize, seconds: f64, tally: &Tally, usage: Usage) -> Self {
        Self {
            mode,
            concurrency,
            offered_per_second: None,
            share_of_peak: None,
            measured_s: seconds,
            completed: tally.completed,
            per_second: tally.completed as f64 / seconds,
            error_count: tally.error_count(),
            errors: tally.errors.clone(),
            rpcs: tally
                .latency
                .iter()
                .map(|(rpc, histogram)| {
                    let handled = tally.handled.get(rpc);
                    let figures = RpcFigures::from(histogram, handled, seconds);
                    ((*rpc).to_owned(), figures)
                })
                .collect(),
            usage,
            longest_pause_ms: 0.0,
            window_started_at: None,
            seconds: Vec::new(),
            postgres_per_iteration: None,
            redis_per_iteration: None,
            bound: None,
        }
    }

    /// The worst p99 among the real RPCs (not the derived "code delivery"/"step-up" timings).
    pub fn worst_rpc_p99_ms(&self) -> f64 {
        self.rpcs
            .iter()
            .filter(|(name, _)| is_rpc(name))
            .map(|(_, figures)| figures.p99_ms)
            .fold(0.0, f64::max)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub memory_mib: Option<u64>,
    pub kernel: Option<String>,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned()),
            memory_mib: meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib / 1024),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|text| text.trim().to_owned()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub started_at: String,
    pub git_commit: Option<String>,
    pub command: String,
    pub backend: String,
    pub machine: Machine,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// `--rate` as given: `0`, iterations per second, or a share of the peak such as `70%`.
    pub rate: String,
    pub seats: usize,
    pub setup_s: f64,
    /// The server's resident memory after registering the seats, before any load.
    pub server_rss_after_setup_mib: Option<f64>,
    pub levels: Vec<Level>,
}

/// The commit of the build being measured: BENCH_GIT_COMMIT when the caller built it before
/// (`scripts/bench-set.sh` builds once and runs for a quarter of an hour, while the tree may
/// change), else the tree's own, `-dirty` if it has changes.
pub fn git_commit() -> Option<String> {
    if let Some(commit) = std::env::var("BENCH_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
    {
        return Some(commit);
    }
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|status| !status.stdout.is_empty());
    (!commit.is_empty()).then(|| {
        if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        }
    })
}

fn option(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.digits$}"))
}

/// `-` when unpaced, the rate, and the share of the peak it was taken from.
fn offered(level: &Level) -> String {
    match (level.offered_per_second, level.share_of_peak) {
        (None, _) => "-".to_owned(),
        (Some(rate), None) => format!("{rate:.0}"),
        (Some(rate), Some(share)) => format!("{rate:.0} ({:.0}%)", share * 100.0),
    }
}

/// One summary line per level, then per-RPC latencies.
pub fn table(levels: &[Level]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<7} {:>4} {:>12} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9}",
        "mode",
        "vus",
        "offered/s",
        "ops/s",
        "errors",
        "srv cpu",
        "rss MiB",
        "gen cpu",
        "machine",
        "bound/s",
        "ratio",
        "pause ms"
    );
    for level in levels {
        let bound = level.bound.as_ref();
        let _ = writeln!(
            out,
            "{:<7} {:>4} {:>12} {:>9.1} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9.0}",
            level.mode.as_str(),
            level.concurrency,
            offered(level),
            level.per_second,
            level.error_count,
            option(level.usage.server_cpu_cores, 2),
            option(level.usage.server_rss_mib, 1),
            option(level.usage.harness_cpu_cores, 2),
            option(level.usage.machine_cpu_busy.map(|busy| busy * 100.0), 0) + "%",
            option(bound.and_then(|bound| bound.bound_per_s), 0),
            option(bound.and_then(|bound| bound.ratio), 3),
            level.longest_pause_ms,
        );
    }
    let _ = writeln!(
        out,
        "\n{:<7} {:>4} {:>12} {:<16} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "mode",
        "vus",
        "offered/s",
        "rpc (ms)",
        "calls/s",
        "p50",
        "p90",
        "p99",
        "max",
        "server p50",
        "server p99"
    );
    for level in levels {
        for (rpc, figures) in &level.rpcs {
            let _ = writeln!(
                out,
                "{:<7} {:>4} {:>12} {:<16} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>10}",
                level.mode.as_str(),
                level.concurrency,
                offered(level),
                rpc,
                figures.per_second,
                figures.p50_ms,
                figures.p90_ms,
                figures.p99_ms,
                figures.max_ms,
                option(figures.server.as_ref().map(|server| server.p50_ms), 2),
                option(figures.server.as_ref().map(|server| server.p99_ms), 2),
            );
        }
    }
    let errors: Vec<String> = levels
        .iter()
        .flat_map(|level| {
            level.errors.iter().map(move |(reason, count)| {
                format!(
                    "{} x{} offered {}: {reason}: {count}",
                    level.mode.as_str(),
                    level.concurrency,
                    offered(level)
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nerrors:\n  {}", errors.join("\n  "));
    }
    out
}
