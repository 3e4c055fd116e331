//! Latency and outcome counting. The histogram is log-linear (32 sub-buckets per power of two,
//! so a reported percentile is at most ~3 % above the true value), in microseconds, and merges
//! by addition so every virtual user keeps its own without locking.
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this have a bucket each.
const LINEAR: u64 = SUB * 2;
/// Enough buckets for any u64.
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn bucket(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // ≥ SUB_BITS + 1
    let shift = exponent - SUB_BITS;
    let mantissa = value >> shift; // in [SUB, 2·SUB)
    (LINEAR + u64::from(exponent - SUB_BITS - 1) * SUB + (mantissa - SUB)) as usize
}

/// The highest value that falls into `index`.
fn bucket_high(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let group = (index - LINEAR) / SUB;
    let shift = group + 1;
    let mantissa = SUB + (index - LINEAR) % SUB;
    let high = (u128::from(mantissa + 1) << shift) - 1;
    u64::try_from(high).unwrap_or(u64::MAX)
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        self.record_micros(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_micros(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.sum += u128::from(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_micros(&self) -> u64 {
        self.max
    }

    pub fn mean_micros(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The smallest bucket bound that at least `percent` % of the values are at or under,
    /// never above the largest value seen. 0 when empty.
    pub fn percentile_micros(&self, percent: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percent / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_high(index).min(self.max);
            }
        }
        self.max
    }
}

/// Median, 99th percentile and longest of a histogram's values, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    /// None for an empty histogram.
    pub fn of(histogram: &Histogram) -> Option<Self> {
        let ms = |micros: u64| micros as f64 / 1000.0;
        (histogram.count() > 0).then(|| Self {
            p50_ms: ms(histogram.percentile_micros(50.0)),
            p99_ms: ms(histogram.percentile_micros(99.0)),
            max_ms: ms(histogram.max_micros()),
        })
    }
}

/// Everything one virtual user (or, merged, one level) observed in the measured window.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Finished scenario iterations (step-ups, WhoAmI calls, send+verify pairs).
    pub completed: u64,
    pub latency: BTreeMap<&'static str, Histogram>,
    /// The server's own time for each call, as a bench build's server tells it in the answer.
    pub handled: BTreeMap<&'static str, Histogram>,
    /// `"<rpc>: <reason>"` → count.
    pub errors: BTreeMap<String, u64>,
    /// Each call or code delivery that finished in the window, to find the pauses and the slow
    /// seconds.
    pub finished: Vec<Finish>,
}

/// A call or code delivery that finished: when, and for one that was answered without an error,
/// which it was and how long it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish {
    pub at: Instant,
    pub timed: Option<(&'static str, Duration)>,
}

/// Whether a timing is a real RPC's, not one the harness derives ("code delivery", "step-up").
pub fn is_rpc(name: &str) -> bool {
    name.chars().next().is_some_and(char::is_uppercase)
}

impl Tally {
    pub fn record(&mut self, rpc: &'static str, latency: Duration, finished: Instant) {
        self.latency.entry(rpc).or_default().record(latency);
        self.finished.push(Finish {
            at: finished,
            timed: Some((rpc, latency)),
        });
    }

    pub fn record_handled(&mut self, rpc: &'static str, handled: Duration) {
        self.handled.entry(rpc).or_default().record(handled);
    }

    /// An error the server answered with at `finished`: it counts as a finish for the pauses.
    pub fn error_at(&mut self, rpc: &str, reason: &str, finished: Instant) {
        self.error(rpc, reason);
        self.finished.push(Finish {
            at: finished,
            timed: None,
        });
    }

    pub fn error(&mut self, rpc: &str, reason: &str) {
        *self.errors.entry(format!("{rpc}: {reason}")).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) {
        self.completed += other.completed;
        for (rpc, histogram) in &other.latency {
            self.latency.entry(rpc).or_default().merge(histogram);
        }
        for (rpc, histogram) in &other.handled {
            self.handled.entry(rpc).or_default().merge(histogram);
        }
        for (reason, count) in &other.errors {
            *self.errors.entry(reason.clone()).or_default() += count;
        }
        self.finished.extend_from_slice(&other.finished);
    }

    /// The longest stretch of the window in which nothing finished. Under load, calls finish a
    /// millisecond or less apart; a pause of a tenth of a second or more means every user was
    /// waiting on one thing (a stall), which alone can put a p99 over its target.
    pub fn longest_pause(&mut self, window_start: Instant, window_end: Instant) -> Duration {
        self.finished.sort_unstable_by_key(|finish| finish.at);
        let mut longest = Duration::ZERO;
        let mut previous = window_start;
        let finishes = self.finished.iter().map(|finish| finish.at);
        for at in finishes.chain([window_end]) {
            let at = at.clamp(window_start, window_end);
            longest = longest.max(at.saturating_duration_since(previous));
            previous = previous.max(at);
        }
        longest
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_ranks_its_samples() {
        let mut hundred = Histogram::default();
        // Under 64 µs every value has a bucket of its own, so the ranks are exact.
        for micros in (1..=50).rev() {
            hundred.record_micros(micros);
            hundred.record_micros(micros + 10);
        }
        assert_eq!(
            Spread::of(&hundred),
            Some(Spread {
                p50_ms: 0.030,
                p99_ms: 0.059,
                max_ms: 0.060
            })
        );
        assert_eq!(Spread::of(&Histogram::default()), None);
    }

    #[test]
    fn the_longest_pause_is_the_widest_gap_between_finishes_in_the_window() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut first = Tally::default();
        for ms in [5, 10, 400] {
            first.record("a", Duration::from_millis(1), at(ms));
        }
        let mut second = Tally::default();
        for ms in [12, 20, 450] {
            second.record("b", Duration::from_millis(1), at(ms));
        }
        first.merge(&second);
        // Finishes at 5, 10, 12, 20, 400, 450 ms in a window of 0–500 ms: the pause is 20–400.
        assert_eq!(
            first.longest_pause(at(0), at(500)),
            Duration::from_millis(380)
        );
        // Nothing finished at all: the whole window.
        assert_eq!(
            Tally::default().longest_pause(at(0), at(500)),
            Duration::from_millis(500)
        );
        // The window's edges count: nothing after 450 ms in a window that ends at 1 s, and
        // nothing before 5 ms in one that starts 400 ms earlier.
        assert_eq!(
            first.longest_pause(at(0), at(1_000)),
            Duration::from_millis(550)
        );
        let earlier = start.checked_sub(Duration::from_millis(400)).unwrap();
        assert_eq!(
            first.longest_pause(earlier, at(500)),
            Duration::from_millis(405)
        );
        // A finish after the window does not shorten the pause at its end.
        first.record("a", Duration::from_millis(1), at(2_000));
        assert_eq!(
            first.longest_pause(at(0), at(1_000)),
            Duration::from_millis(550)
        );
        // An answer that was an error is a finish too: at 700 ms it splits the 550 ms at the
        // end, which leaves 20–400 ms the longest.
        first.error_at("a", "UNAVAILABLE", at(700));
        assert_eq!(
            first.longest_pause(at(0), at(1_000)),
            Duration::from_millis(380)
        );
    }

    #[test]
    fn buckets_are_ordered_and_contain_their_values() {
        let mut previous = 0;
        for value in (0..200_000u64).chain([u32::MAX as u64, u64::MAX / 3, u64::MAX]) {
            let index = bucket(value);
            assert!(index < BUCKETS, "{value} → {index}");
            assert!(
                index >= previous,
                "buckets must not go backwards at {value}"
            );
            previous = index;
            assert!(
                bucket_high(index) >= value,
                "{value} above its bucket's top"
            );
            if index > 0 {
                assert!(bucket_high(index - 1) < value, "{value} belongs lower");
            }
        }
    }

    #[test]
    fn relative_error_stays_within_a_sub_bucket() {
        for value in [100u64, 1_234, 20_000, 987_654, 12_345_678] {
            let high = bucket_high(bucket(value));
            let error = (high - value) as f64 / value as f64;
            assert!(
                error <= 1.0 / SUB as f64,
                "{value}: {high} is {error:.3} off"
            );
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut histogram = Histogram::default();
        for micros in 1..=10_000 {
            histogram.record_micros(micros);
        }
        assert_eq!(histogram.count(), 10_000);
        let near = |actual: u64, expected: u64| {
            let error = actual.abs_diff(expected) as f64 / expected as f64;
            assert!(error <= 0.035, "{actual} vs {expected}");
        };
        near(histogram.percentile_micros(50.0), 5_000);
        near(histogram.percentile_micros(90.0), 9_000);
        near(histogram.percentile_micros(99.0), 9_900);
        assert_eq!(histogram.percentile_micros(100.0), 10_000);
        assert_eq!(histogram.max_micros(), 10_000);
        assert!((histogram.mean_micros() - 5_000.5).abs() < 1e-9);
    }

    #[test]
    fn a_tail_shows_in_p99_not_in_p50() {
        let mut histogram = Histogram::default();
        for _ in 0..980 {
            histogram.record(Duration::from_micros(800));
        }
        for _ in 0..20 {
            histogram.record(Duration::from_millis(40));
        }
        let p50 = histogram.percentile_micros(50.0);
        assert!(
            (800..=828).contains(&p50),
            "p50 {p50} is the bucket of 800µs"
        );
        assert!(histogram.percentile_micros(99.0) >= 39_000);
        assert_eq!(histogram.max_micros(), 40_000);
    }

    #[test]
    fn empty_histograms_report_zero() {
        let histogram = Histogram::default();
        assert_eq!(histogram.percentile_micros(99.0), 0);
        assert_eq!(histogram.mean_micros(), 0.0);
    }

    #[test]
    fn merging_adds_counts_errors_and_keeps_the_max() {
        let now = Instant::now();
        let mut first = Tally {
            completed: 3,
            ..Tally::default()
        };
        first.record("WhoAmI", Duration::from_micros(100), now);
        first.record_handled("WhoAmI", Duration::from_micros(40));
        first.error("WhoAmI", "SESSION_INACTIVE");
        let mut second = Tally {
            completed: 2,
            ..Tally::default()
        };
        second.record("WhoAmI", Duration::from_micros(5_000), now);
        second.record("SubmitLoginCode", Duration::from_micros(700), now);
        second.record_handled("WhoAmI", Duration::from_micros(3_000));
        second.error("WhoAmI", "SESSION_INACTIVE");
        second.error("SubmitLoginCode", "CODE_INVALID");
        first.merge(&second);
        assert_eq!(first.completed, 5);
        assert_eq!(first.latency["WhoAmI"].count(), 2);
        assert_eq!(first.latency["WhoAmI"].max_micros(), 5_000);
        assert_eq!(first.latency["SubmitLoginCode"].count(), 1);
        assert_eq!(first.errors["WhoAmI: SESSION_INACTIVE"], 2);
        assert_eq!(first.error_count(), 3);
        assert_eq!(first.finished.len(), 3);
        assert_eq!(first.handled["WhoAmI"].count(), 2);
        assert_eq!(first.handled["WhoAmI"].max_micros(), 3_000);
        assert!(!first.handled.contains_key("SubmitLoginCode"));
    }
}
