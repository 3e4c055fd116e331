//! A log sink that never makes a request wait for the log's reader.
//!
//! A formatted line is appended to a buffer under a short lock; a thread of its own writes what
//! has gathered since the first line in one `write`, [`GATHER`] after that line. Written line by
//! line, a busy server made a `write(2)` per line and its reader (a pipe to a collector, or the
//! load harness) woke for each: at 1,000 step-ups/s, four lines each, that cost about 5 points of
//! a two-core machine (docs/performance.md, "After the fourteenth pass"). And a reader that
//! stops reading no longer stops the server once the pipe is full: lines beyond [`MAX_PENDING`]
//! bytes waiting are dropped, counted, and the count is written as a line of its own once the
//! sink takes writes again. The durable record of what happened is the audit trail in the store,
//! not the log.
//!
//! Lines still gathering when the process ends are written by [`BatchedLog::flush`], which the
//! binary calls before it exits and from its panic hook; a process killed outright (SIGKILL, an
//! abort, a signal it does not handle) loses up to [`GATHER`] of lines.
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How long the writer lets lines gather after the first one before writing them together.
pub const GATHER: Duration = Duration::from_millis(10);
/// Bytes waiting beyond which new lines are dropped (about four seconds of a server logging at
/// full load). The batch being written is not counted, so up to twice this can be held.
pub const MAX_PENDING: usize = 4 << 20;
/// How long [`BatchedLog::flush`] waits for a sink that takes no writes.
pub const FLUSH_PATIENCE: Duration = Duration::from_secs(2);
/// What a buffer keeps between batches: a burst's larger buffer is given back.
const KEPT_CAPACITY: usize = 64 << 10;

/// Formats the line that says how many lines were dropped, in the log's own format. It is
/// written straight to the sink, whatever the log's level filter says.
pub type DropNotice = Box<dyn Fn(u64) -> String + Send>;

/// The shared buffer; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct BatchedLog {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    gather: Duration,
    max_pending: usize,
    /// The writer thread waits here for lines or a flush.
    lines_waiting: Condvar,
    /// [`BatchedLog::flush`] waits here for the writer to catch up.
    written: Condvar,
    writer: OnceLock<ThreadId>,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// Lines appended so far, and of those how many the writer has been through (written, or
    /// lost to a failing sink): a flush waits until the second reaches what the first was when
    /// it began.
    appended: u64,
    handed_over: u64,
    dropped: u64,
    flush_wanted: bool,
}

impl BatchedLog {
    /// Starts the writer thread, which writes to `sink` for the rest of the process: lines that
    /// come within `gather` of the first go out together, and beyond `max_pending` bytes waiting
    /// lines are dropped.
    pub fn start(
        sink: impl Write + Send + 'static,
        gather: Duration,
        max_pending: usize,
        drop_notice: DropNotice,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            gather,
            max_pending,
            lines_waiting: Condvar::new(),
            written: Condvar::new(),
            writer: OnceLock::new(),
        });
        let writer = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_forever(&writer, sink, &drop_notice))?;
        let _ = shared.writer.set(thread.thread().id());
        Ok(Self { shared })
    }

    /// Waits until every line appended before the call has been through the writer, or
    /// `patience` has passed.
    pub fn flush(&self, patience: Duration) {
        if self.shared.writer.get() == Some(&std::thread::current().id()) {
            // The writer cannot wait for itself.
            return;
        }
        let deadline = Instant::now() + patience;
        let mut state = self.shared.lock();
        let target = state.appended;
        state.flush_wanted = true;
        self.shared.lines_waiting.notify_one();
        while state.handed_over < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match self.shared.written.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        if state.pending.len() + line.len() > self.shared.max_pending {
            state.dropped += 1;
            // A line too long for even an empty buffer must still get its drop written.
            self.shared.lines_waiting.notify_one();
            return;
        }
        let was_empty = state.pending.is_empty();
        state.pending.extend_from_slice(line);
        state.appended += 1;
        if was_empty {
            self.shared.lines_waiting.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves a consistent buffer: appends and swaps
        // are single steps.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn write_forever(shared: &Shared, mut sink: impl Write, drop_notice: &DropNotice) {
    let mut batch = Vec::new();
    // Drops not yet written down: kept across a failing sink until a write works.
    let mut unreported: u64 = 0;
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && state.dropped == 0 {
            if state.flush_wanted {
                state.flush_wanted = false;
                shared.written.notify_all();
            }
            state = match shared.lines_waiting.wait(state) {
                Ok(state) => state,
                Err(poisoned) => poisoned.into_inner(),
            };
        }
        // Let more lines join this write, unless someone is waiting for it.
        let gather_until = Instant::now() + shared.gather;
        while !state.flush_wanted {
            let left = gather_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = match shared.lines_waiting.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        std::mem::swap(&mut state.pending, &mut batch);
        let handing_over = state.appended;
        unreported += std::mem::take(&mut state.dropped);
        // This batch holds every line a waiting flush asked for.
        state.flush_wanted = false;
        drop(state);

        // A sink that fails (a closed pipe) loses the batch; there is nowhere to say so.
        let written = sink.write_all(&batch).is_ok();
        if written && unreported > 0 && sink.write_all(drop_notice(unreported).as_bytes()).is_ok() {
            unreported = 0;
        }
        let _ = sink.flush();
        batch.clear();
        batch.shrink_to(KEPT_CAPACITY);

        shared.lock().handed_over = handing_over;
        shared.written.notify_all();
    }
}

/// One line's writer, as `tracing_subscriber::fmt` asks for per event: the formatted event
/// arrives in one `write_all`, so a line is kept or dropped whole.
pub struct LogLine<'a> {
    log: &'a BatchedLog,
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.log.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedLog {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine { log: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// Long enough that only a broken flush waits it out, even on a loaded machine.
    const TEST_PATIENCE: Duration = Duration::from_secs(30);

    /// A sink that records each `write` call apart, can take its time over each, and can be held
    /// shut like a pipe whose reader stopped reading.
    #[derive(Clone, Default)]
    struct RecordingSink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
        delay: Duration,
    }

    impl Write for RecordingSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            std::thread::sleep(self.delay);
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl RecordingSink {
        fn text(&self) -> String {
            String::from_utf8(self.writes.lock().unwrap().concat()).unwrap()
        }

        fn write_calls(&self) -> usize {
            self.writes.lock().unwrap().len()
        }
    }

    fn log_line(log: &BatchedLog, line: &str) {
        log.make_writer().write_all(line.as_bytes()).unwrap();
    }

    fn started(sink: &RecordingSink, gather: Duration, max_pending: usize) -> BatchedLog {
        let notice = Box::new(|dropped| format!("dropped {dropped}\n"));
        BatchedLog::start(sink.clone(), gather, max_pending, notice).unwrap()
    }

    #[test]
    fn lines_reach_the_sink_whole_and_in_order_by_the_time_flush_returns() {
        let sink = RecordingSink::default();
        let log = started(&sink, GATHER, MAX_PENDING);
        let expected: String = (0..500).map(|n| format!("line {n}\n")).collect();
        for n in 0..500 {
            log_line(&log, &format!("line {n}\n"));
        }
        log.flush(TEST_PATIENCE);
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn lines_logged_together_go_out_in_few_writes() {
        let sink = RecordingSink::default();
        let log = started(&sink, GATHER, MAX_PENDING);
        for n in 0..1_000 {
            log_line(&log, &format!("line {n}\n"));
        }
        log.flush(TEST_PATIENCE);
        assert_eq!(sink.text().lines().count(), 1_000);
        // Appending 1,000 short lines takes far less than one gathering interval, and a flush
        // ends the gathering: one or two writes, a few more if this thread is held up for whole
        // intervals on a busy machine; written line by line it would be 1,000.
        assert!(sink.write_calls() < 50, "{} writes", sink.write_calls());
    }

    #[test]
    fn lines_that_come_within_the_gathering_interval_share_a_write() {
        let sink = RecordingSink::default();
        let log = started(&sink, Duration::from_millis(500), MAX_PENDING);
        // 20 lines 5 ms apart: each would find the writer idle and go alone if it did not wait.
        for n in 0..20 {
            log_line(&log, &format!("line {n}\n"));
            std::thread::sleep(Duration::from_millis(5));
        }
        log.flush(TEST_PATIENCE);
        assert_eq!(sink.text().lines().count(), 20);
        // One write, a second or third only if this thread was held up for a quarter second.
        assert!(sink.write_calls() <= 3, "{} writes", sink.write_calls());
    }

    #[test]
    fn after_a_flush_lines_gather_again_while_they_keep_coming() {
        // Each write takes 20 ms, so lines 5 ms apart are waiting whenever the writer looks.
        let sink = RecordingSink {
            delay: Duration::from_millis(20),
            ..RecordingSink::default()
        };
        let log = started(&sink, Duration::from_millis(500), MAX_PENDING);
        let mut flushing = None;
        for n in 0..30 {
            log_line(&log, &format!("line {n}\n"));
            if n == 2 {
                // Flushed from aside while the lines keep coming.
                let log = log.clone();
                flushing = Some(std::thread::spawn(move || log.flush(TEST_PATIENCE)));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        flushing.unwrap().join().unwrap();
        log.flush(TEST_PATIENCE);
        assert_eq!(sink.text().lines().count(), 30);
        // The flush's write, then one for the rest (a third if this thread was held up); still
        // rushing for that flush, the writer would make a write every 20 ms.
        assert!(sink.write_calls() <= 3, "{} writes", sink.write_calls());
    }

    #[test]
    fn a_sink_that_takes_nothing_does_not_block_logging_and_drops_are_written_down() {
        let sink = RecordingSink::default();
        let held_shut = sink.gate.lock().unwrap();
        let log = started(&sink, GATHER, 64);
        // The first line goes to the writer, which then waits on the shut sink.
        log_line(&log, "first\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log.shared.lock().pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the writer never took the first line"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // 14 bytes a line, 64 bytes at most waiting: four are kept, the other six dropped. None
        // of these calls waits for the sink.
        for n in 0..10 {
            log_line(&log, &format!("waiting {n:>5}\n"));
        }
        assert_eq!(log.shared.lock().dropped, 6);

        drop(held_shut);
        log.flush(TEST_PATIENCE);
        let kept: String = (0..4).map(|n| format!("waiting {n:>5}\n")).collect();
        assert_eq!(sink.text(), format!("first\n{kept}dropped 6\n"));
    }

    #[test]
    fn a_line_too_long_for_the_buffer_is_dropped_and_written_down() {
        let sink = RecordingSink::default();
        let log = started(&sink, GATHER, 64);
        log_line(&log, "first\n");
        log.flush(TEST_PATIENCE);
        // Long enough for the writer to be waiting for lines again.
        std::thread::sleep(Duration::from_millis(50));
        log_line(&log, &format!("{}\n", "x".repeat(100)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text() == "first\n" {
            assert!(Instant::now() < deadline, "the drop was never written down");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.text(), "first\ndropped 1\n");
    }

    #[test]
    fn flush_gives_up_on_a_sink_that_takes_nothing() {
        let sink = RecordingSink::default();
        let _held_shut = sink.gate.lock().unwrap();
        let log = started(&sink, GATHER, MAX_PENDING);
        log_line(&log, "stuck\n");
        let patience = Duration::from_millis(300);
        let began = Instant::now();
        log.flush(patience);
        let waited = began.elapsed();
        assert!(waited >= patience, "returned after {waited:?}");
        assert!(
            waited < Duration::from_secs(10),
            "returned after {waited:?}"
        );
    }
}
