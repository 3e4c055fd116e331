//! Command-line options.
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The seed scenario: CreateLoginFlow(aal2, via) → code → SubmitLoginCode → WhoAmI.
    Stepup,
    /// WhoAmI alone on AAL2 sessions.
    Whoami,
    /// CodeService SendCode → code → VerifyCode (admin listener).
    Code,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stepup => "stepup",
            Mode::Whoami => "whoami",
            Mode::Code => "code",
        }
    }
}

/// Load generator for Twofold: N virtual users on loopback, each repeating one scenario.
#[derive(Debug, Clone, Parser)]
#[command(name = "twofold-bench", version)]
pub struct Args {
    /// Scenarios to run, in this order, each over the whole concurrency sweep.
    #[arg(long, value_delimiter = ',', default_value = "stepup,whoami,code")]
    pub mode: Vec<Mode>,
    /// Virtual users per level of the sweep. A user's step-ups follow one another, each waiting
    /// for its code, so 64 users are held back by latency as much as by the machine; with 128
    /// more writes wait together and the peak is higher (docs/performance.md).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,128")]
    pub concurrency: Vec<usize>,
    /// Measured time per level.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time per level before the measurement starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Identities with a session each, shared out among the virtual users (at least the
    /// highest concurrency). More seats keep each session's refresh history short.
    #[arg(long, default_value_t = 256)]
    pub seats: usize,
    /// Where the JSON goes; the SVG plot and the server log go next to it.
    #[arg(long, default_value = "bench-results/bench.json")]
    pub out: PathBuf,

    /// Start `twofold serve` with a generated bench configuration and stop it at the end.
    #[arg(long)]
    pub spawn: bool,
    /// The server binary to spawn (default: `twofold` next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// With --spawn: the server's `dsn` (postgres://… for Postgres; default: an embedded SQLite
    /// file in a temporary folder, as the embedded default uses).
    #[arg(long)]
    pub dsn: Option<String>,
    /// With --spawn: the server's `redis.url` (default: the in-process store).
    #[arg(long)]
    pub redis: Option<String>,

    /// Without --spawn: the running server's public listener (http://host:port).
    #[arg(long)]
    pub public: Option<String>,
    /// Without --spawn: the running server's admin listener.
    #[arg(long)]
    pub admin: Option<String>,
    /// Without --spawn: an admin API key of the running server.
    #[arg(long, env = "TWOFOLD_BENCH_ADMIN_KEY")]
    pub admin_key: Option<String>,
    /// Without --spawn: the server's pid, for CPU and memory figures.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The Unix datagram socket the server's bench sender writes codes to (its
    /// `courier.bench.socket`). Default with --spawn: a fresh path in a temporary folder.
    #[arg(long)]
    pub codes: Option<PathBuf>,

    /// Iterations per second to offer across all virtual users (each user paces itself to its
    /// share, starting the next iteration on schedule or at once when late); 0 = as fast as
    /// they can. A percentage, e.g. `70%`, runs each level twice: as fast as the users can, then
    /// at that share of the rate they reached, for "p99 at 70 % of peak" against a peak taken
    /// seconds before (a peak from an earlier sweep may come from a faster hour of a shared
    /// machine, putting its 70 % near this hour's peak).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate: Rate,
    /// Measure the machine's bound with pgbench and redis-benchmark after each level (needs a
    /// postgres dsn and a redis url; without them there is no bound to measure).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub bound: bool,
    /// Time pgbench runs per level.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub bound_duration: Duration,
}

impl Args {
    pub fn max_concurrency(&self) -> usize {
        self.concurrency.iter().copied().max().unwrap_or(1)
    }

    /// `--rate` as the report records it.
    pub fn rate_text(&self) -> String {
        match self.rate {
            Rate::Unpaced => "0".to_owned(),
            Rate::PerSecond(rate) => format!("{rate}"),
            Rate::OfPeak { percent } => format!("{percent}%"),
        }
    }

    pub fn seat_count(&self) -> usize {
        self.seats.max(self.max_concurrency())
    }

    pub fn check(&self) -> Result<(), String> {
        if self.concurrency.contains(&0) {
            return Err("--concurrency: every level needs at least one virtual user".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0s".into());
        }
        if !self.spawn && (self.public.is_none() || self.admin.is_none() || self.codes.is_none()) {
            return Err(
                "without --spawn, --public, --admin, --admin-key and --codes name the running server"
                    .into(),
            );
        }
        Ok(())
    }
}

/// What each level offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Every user starts its next iteration as soon as the last one ends.
    Unpaced,
    /// Iterations per second across all users.
    PerSecond(f64),
    /// A percentage (0, 100] of the unpaced rate the same level reaches just before, kept as
    /// given so the report repeats it exactly.
    OfPeak { percent: f64 },
}

/// `0`, a rate per second such as `774`, or a share of the peak such as `70%`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        return match percent.trim().parse::<f64>() {
            Ok(percent) if percent > 0.0 && percent <= 100.0 => Ok(Rate::OfPeak { percent }),
            _ => Err(format!(
                "{text:?}: a share of the peak is more than 0% and at most 100%"
            )),
        };
    }
    match text.parse::<f64>() {
        Ok(0.0) => Ok(Rate::Unpaced),
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate::PerSecond(rate)),
        _ => Err(format!(
            "{text:?}: the rate is 0 (unpaced), iterations per second, or a share like 70%"
        )),
    }
}

/// `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn rates_are_unpaced_per_second_or_a_share_of_the_peak() {
        assert_eq!(parse_rate("0"), Ok(Rate::Unpaced));
        assert_eq!(parse_rate("774"), Ok(Rate::PerSecond(774.0)));
        assert_eq!(parse_rate("12.5"), Ok(Rate::PerSecond(12.5)));
        assert_eq!(parse_rate("70%"), Ok(Rate::OfPeak { percent: 70.0 }));
        assert_eq!(parse_rate("100%"), Ok(Rate::OfPeak { percent: 100.0 }));
        let with_rate = |rate: &str| Args::parse_from(["twofold-bench", "--spawn", "--rate", rate]);
        assert_eq!(with_rate("29%").rate_text(), "29%");
        assert_eq!(with_rate("774").rate_text(), "774");
        assert_eq!(with_rate("0").rate_text(), "0");
        for wrong in ["-1", "inf", "NaN", "fast", "0%", "101%", "-5%", "%"] {
            assert!(parse_rate(wrong).is_err(), "{wrong}");
        }
    }
}
