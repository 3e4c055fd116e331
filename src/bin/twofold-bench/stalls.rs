//! What the machine made every process wait for through a load level, sampled on threads of the
//! harness's own: the disk's flush of a small write, and a sleeping thread's wake-up.
//!
//! Postgres's commits wait for the first (the flush of its WAL), as SQLite's checkpoints do for
//! theirs; every hop of a call, between the harness, the server and the stores, waits for the
//! second. A slow spell of either slows every call at once, which a run's p99 shows and the
//! machine's loop (`probe::machine_loop_ms`, a measure of speed, not of waiting) does not.
use crate::stats::{Histogram, Spread};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Between two flushes: a hundred in a 10 s level, against the hundreds of commits a second the
/// stores flush meanwhile.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The sleep whose overrun is a wake-up's lateness: a hundred wake-ups a second, beside the
/// machine's thousands under load.
const WAKE_UP_SLEEP: Duration = Duration::from_millis(10);

/// One sample: when it began, and how long it took (or how late it was).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub took: Duration,
}

/// Takes samples on a thread of its own, `pause` apart, until finished.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(
        name: &str,
        pause: Duration,
        mut sample: impl FnMut() -> std::io::Result<Duration> + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let mut samples = Vec::new();
                while !stopped.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    // A sample that fails ends the sampling; the level reports what it has.
                    let Ok(took) = sample() else { break };
                    samples.push(Sample { at, took });
                    std::thread::park_timeout(pause);
                }
                samples
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the sampling (a sample under way still ends) and hands back the samples.
    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        self.thread.join().unwrap_or_default()
    }
}

/// p50/p99/max of the samples; none if there are none.
fn spread(samples: &[Sample]) -> Option<Spread> {
    let mut histogram = Histogram::default();
    for sample in samples {
        histogram.record(sample.took);
    }
    Spread::of(&histogram)
}

/// Both samplers of one level.
pub struct Stalls {
    disk_flushes: Option<Sampler>,
    wake_ups: Option<Sampler>,
}

/// What [`Stalls`] measured, sample by sample (none from a sampler that could not run).
#[derive(Debug, Clone)]
pub struct Measured {
    /// How long `fdatasync` of a rewritten 4 KiB block took.
    pub disk_flushes: Vec<Sample>,
    /// How much later than asked a sleeping thread woke up.
    pub wake_ups: Vec<Sample>,
}

impl Measured {
    pub fn disk_flush(&self) -> Option<Spread> {
        spread(&self.disk_flushes)
    }

    pub fn wake_up_late(&self) -> Option<Spread> {
        spread(&self.wake_ups)
    }
}

impl Stalls {
    /// Starts both; the flushes go to a file in `folder`, which should be on the stores' disk.
    /// A sampler that cannot start is said so and left out: the level runs without it.
    pub fn start(folder: &Path) -> Self {
        let disk_flushes = File::create(folder.join("disk-flushes")).and_then(|file| {
            let block = [0x5a_u8; 4096];
            Sampler::start("bench-disk-flushes", FLUSH_EVERY, move || {
                let started = Instant::now();
                // The same block each time: a rewrite, as of a WAL page, not a file growing.
                file.write_all_at(&block, 0)?;
                file.sync_data()?;
                Ok(started.elapsed())
            })
        });
        let wake_ups = Sampler::start("bench-wake-ups", Duration::ZERO, || {
            let started = Instant::now();
            std::thread::sleep(WAKE_UP_SLEEP);
            Ok(started.elapsed().saturating_sub(WAKE_UP_SLEEP))
        });
        let started = |sampler: std::io::Result<Sampler>, what: &str| {
            sampler
                .inspect_err(|error| eprintln!("twofold-bench: no {what} measured: {error}"))
                .ok()
        };
        Self {
            disk_flushes: started(disk_flushes, "disk flushes"),
            wake_ups: started(wake_ups, "wake-ups"),
        }
    }

    pub fn finish(self) -> Measured {
        Measured {
            disk_flushes: self.disk_flushes.map(Sampler::finish).unwrap_or_default(),
            wake_ups: self.wake_ups.map(Sampler::finish).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_are_sampled_until_finished() {
        let folder = tempfile::tempdir().expect("tempdir");
        let stalls = Stalls::start(folder.path());
        std::thread::sleep(FLUSH_EVERY * 3);
        let begun = Instant::now();
        let measured = stalls.finish();
        // Woken, not left to sleep out its pause; a flush under way still has to end.
        assert!(begun.elapsed() < FLUSH_EVERY * 20, "{:?}", begun.elapsed());
        let flush = measured.disk_flush().expect("flushes were made");
        assert!(
            flush.max_ms > 0.0 && flush.p50_ms <= flush.max_ms,
            "{flush:?}"
        );
        let late = measured.wake_up_late().expect("wake-ups were timed");
        assert!(late.p50_ms >= 0.0 && late.p50_ms <= late.max_ms, "{late:?}");
        assert!(late.max_ms < 10_000.0, "{late:?}");
        // The samples behind the spreads, in the order taken, each after the one before.
        assert!(
            measured.disk_flushes.len() >= 2,
            "{:?}",
            measured.disk_flushes
        );
        assert!(
            measured
                .disk_flushes
                .windows(2)
                .all(|pair| pair[0].at < pair[1].at)
        );
        let slowest = measured.disk_flushes.iter().map(|sample| sample.took).max();
        assert_eq!(
            slowest.map(|took| took.as_micros() as f64 / 1000.0),
            Some(flush.max_ms)
        );
        assert!(measured.wake_ups.len() >= measured.disk_flushes.len());
        let flushed = std::fs::metadata(folder.path().join("disk-flushes")).expect("the file");
        assert_eq!(flushed.len(), 4096, "one block, rewritten");
    }

    #[test]
    fn wake_ups_are_measured_without_a_folder_for_the_flushes() {
        let folder = tempfile::tempdir().expect("tempdir");
        let stalls = Stalls::start(&folder.path().join("missing"));
        std::thread::sleep(WAKE_UP_SLEEP * 5);
        let measured = stalls.finish();
        assert_eq!(measured.disk_flush(), None);
        assert!(measured.disk_flushes.is_empty());
        assert!(measured.wake_up_late().is_some());
        assert!(!measured.wake_ups.is_empty());
    }
}
