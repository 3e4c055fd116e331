//! A level second by second: which seconds made its p99, and what the machine made every call
//! wait for in them.
//!
//! A level's p99 is its slowest 1 % of calls, a hundred or so in a ten-second level. A stall of a
//! twentieth of a second that holds every call makes that many slow calls on its own, in one
//! second, while the other seconds stay fast; a machine that is slow all through makes every
//! second's p99 high. The level's figures cannot tell the two apart; its seconds can, and the
//! samplers' slowest flush and latest wake-up in the same second say whether the disk or the
//! cores were holding calls then.
use crate::stalls::Sample;
use crate::stats::{Finish, Histogram, is_rpc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    /// Whole seconds since the window started.
    pub second: u64,
    /// Calls and code deliveries that finished in it, errors included.
    pub finished: u64,
    /// The worst p99 among the RPCs answered in it without an error, as the level's worst p99
    /// is over the whole window; 0 if none was.
    pub worst_p99_ms: f64,
    /// The slowest flush and the latest wake-up that began in it; none when no sample did.
    pub disk_flush_max_ms: Option<f64>,
    pub wake_up_late_max_ms: Option<f64>,
}

/// The window's seconds, the last one shorter if the window is not whole seconds long.
/// Finishes and samples outside the window are left out.
pub fn seconds(
    window_start: Instant,
    window_end: Instant,
    finished: &[Finish],
    disk_flushes: &[Sample],
    wake_ups: &[Sample],
) -> Vec<Second> {
    let length = window_end.saturating_duration_since(window_start);
    let count = length.as_secs() + u64::from(length.subsec_nanos() > 0);
    let second_of = |at: Instant| {
        (window_start..=window_end)
            .contains(&at)
            .then(|| (at - window_start).as_secs().min(count.saturating_sub(1)) as usize)
    };
    let mut seconds: Vec<Gathered> = (0..count).map(|_| Gathered::default()).collect();
    for finish in finished {
        let Some(index) = second_of(finish.at) else {
            continue;
        };
        let gathered = &mut seconds[index];
        gathered.finished += 1;
        if let Some((name, took)) = finish.timed
            && is_rpc(name)
        {
            gathered.rpcs.entry(name).or_default().record(took);
        }
    }
    for sample in disk_flushes {
        if let Some(index) = second_of(sample.at) {
            keep_slowest(&mut seconds[index].disk_flush, sample.took);
        }
    }
    for sample in wake_ups {
        if let Some(index) = second_of(sample.at) {
            keep_slowest(&mut seconds[index].wake_up_late, sample.took);
        }
    }
    seconds
        .into_iter()
        .enumerate()
        .map(|(index, gathered)| gathered.into_second(index as u64))
        .collect()
}

/// How many of `seconds` had a worst p99 over `limit_ms`.
pub fn over(seconds: &[Second], limit_ms: f64) -> usize {
    seconds
        .iter()
        .filter(|second| second.worst_p99_ms > limit_ms)
        .count()
}

#[derive(Default)]
struct Gathered {
    finished: u64,
    /// Each RPC's latencies in this second, counted as the level counts them, so that a second's
    /// p99 and the level's are the same figure over different calls.
    rpcs: BTreeMap<&'static str, Histogram>,
    disk_flush: Option<Duration>,
    wake_up_late: Option<Duration>,
}

impl Gathered {
    fn into_second(self, second: u64) -> Second {
        let ms = |took: Duration| took.as_secs_f64() * 1000.0;
        let worst = self
            .rpcs
            .values()
            .map(|latencies| latencies.percentile_micros(99.0) as f64 / 1000.0)
            .fold(0.0, f64::max);
        Second {
            second,
            finished: self.finished,
            worst_p99_ms: worst,
            disk_flush_max_ms: self.disk_flush.map(ms),
            wake_up_late_max_ms: self.wake_up_late.map(ms),
        }
    }
}

fn keep_slowest(kept: &mut Option<Duration>, took: Duration) {
    *kept = Some(kept.map_or(took, |kept| kept.max(took)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn a_stall_shows_in_its_own_second() {
        let start = Instant::now();
        let at = |millis: u64| start + ms(millis);
        let timed = |millis: u64, name: &'static str, took: u64| Finish {
            at: at(millis),
            timed: Some((name, ms(took))),
        };
        let mut finished = Vec::new();
        // Second 0: a hundred fast calls of each RPC. Second 1: the same, and three slow
        // `SubmitLoginCode`s, which make its p99. Second 2: one error and a slow derived timing,
        // which are counted as finishes but are not RPC latencies.
        for (second, slow) in [(0, 0), (1, 3)] {
            for index in 0..100 {
                finished.push(timed(second * 1000 + index, "CreateLoginFlow", 2));
                let took = if index < slow { 80 } else { 3 };
                finished.push(timed(second * 1000 + index, "SubmitLoginCode", took));
            }
        }
        finished.push(Finish {
            at: at(2_100),
            timed: None,
        });
        finished.push(timed(2_200, "code delivery", 500));
        // Outside the window: left out.
        finished.push(timed(3_500, "SubmitLoginCode", 900));
        let flush = |millis: u64, took: u64| Sample {
            at: at(millis),
            took: ms(took),
        };
        let disk_flushes = [flush(100, 1), flush(1_100, 40), flush(1_600, 2)];
        let wake_ups = [flush(50, 1), flush(1_050, 3)];

        let seconds = seconds(at(0), at(2_500), &finished, &disk_flushes, &wake_ups);

        let second =
            |second, finished, worst_p99_ms, disk: Option<f64>, wake: Option<f64>| Second {
                second,
                finished,
                worst_p99_ms,
                disk_flush_max_ms: disk,
                wake_up_late_max_ms: wake,
            };
        assert_eq!(
            seconds,
            vec![
                second(0, 200, 3.0, Some(1.0), Some(1.0)),
                second(1, 200, 80.0, Some(40.0), Some(3.0)),
                second(2, 2, 0.0, None, None),
            ]
        );
        assert_eq!(over(&seconds, 20.0), 1);
        assert_eq!(over(&seconds, 80.0), 0);
    }

    #[test]
    fn a_window_of_whole_seconds_has_no_empty_last_second() {
        let start = Instant::now();
        let end = start + ms(2_000);
        let finish = Finish {
            at: end,
            timed: Some(("WhoAmI", ms(1))),
        };
        let seconds = seconds(start, end, &[finish], &[], &[]);
        assert_eq!(seconds.len(), 2);
        assert_eq!(
            seconds[1].finished, 1,
            "the window's last instant is in its last second"
        );
    }
}
