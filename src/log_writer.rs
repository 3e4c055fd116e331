//! A log sink that never makes a request wait for the log's reader.
//!
//! A formatted line is appended to a buffer under a short lock; a thread of its own writes what
//! has gathered in one `write` every [`GATHER`]. Written line by line, a busy server made a
//! `write(2)` per line, and its reader (a pipe to a collector, or the load harness) woke for
//! each: at 1,000 step-ups/s, four lines each, that was 3–4 points of a two-core machine
//! (docs/performance.md, "After the fourteenth pass"). And a reader that stops reading no longer
//! stops the server once the pipe is full: lines beyond [`MAX_PENDING`] bytes are dropped and
//! counted, and the count is reported once the sink takes writes again. The durable record of
//! what happened is the audit trail in the store, not the log.
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long the writer lets lines gather after the first one before writing them together.
pub const GATHER: Duration = Duration::from_millis(10);
/// Bytes waiting to be written beyond which new lines are dropped (about four seconds of a
/// server logging at full load).
pub const MAX_PENDING: usize = 4 << 20;
/// How long [`BatchedLog::flush`] waits for a sink that takes no writes.
const FLUSH_PATIENCE: Duration = Duration::from_secs(2);
const THREAD_NAME: &str = "log-writer";

/// Told how many lines were dropped since it was last told, after the next write that worked.
pub type DropReport = Box<dyn Fn(u64) + Send>;

/// The shared buffer; cloning gives another handle to the same one.
#[derive(Clone)]
pub struct BatchedLog {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    gather: Duration,
    /// The writer thread waits here for lines or a flush.
    lines_waiting: Condvar,
    /// [`BatchedLog::flush`] waits here for the writer to catch up.
    written: Condvar,
    max_pending: usize,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// Lines appended so far, and of those how many the sink has taken: a flush waits until the
    /// second reaches what the first was when it began.
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
        on_dropped: DropReport,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            gather,
            lines_waiting: Condvar::new(),
            written: Condvar::new(),
            max_pending,
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || write_forever(&writer, sink, &on_dropped))?;
        Ok(Self { shared })
    }

    /// Waits until every line appended before the call has been handed to the sink, or
    /// [`FLUSH_PATIENCE`] has passed. The process calls this before it exits.
    pub fn flush(&self) {
        if std::thread::current().name() == Some(THREAD_NAME) {
            // The writer cannot wait for itself (a panic while writing).
            return;
        }
        let deadline = Instant::now() + FLUSH_PATIENCE;
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

fn write_forever(shared: &Shared, mut sink: impl Write, on_dropped: &DropReport) {
    let mut spare = Vec::new();
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
        std::mem::swap(&mut state.pending, &mut spare);
        let handing_over = state.appended;
        let dropped = std::mem::take(&mut state.dropped);
        drop(state);

        // A sink that fails (a closed pipe) loses these lines; there is nowhere to say so.
        let written = sink.write_all(&spare).and_then(|()| sink.flush()).is_ok();
        spare.clear();
        if spare.capacity() > shared.max_pending {
            // One burst should not keep its buffer for the life of the process.
            spare = Vec::new();
        }

        shared.lock().handed_over = handing_over;
        shared.written.notify_all();
        if dropped > 0 && written {
            on_dropped(dropped);
        }
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
    use std::sync::mpsc;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink that records each `write` call apart, and can be held shut like a pipe whose reader
    /// stopped reading.
    #[derive(Clone, Default)]
    struct RecordingSink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for RecordingSink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
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

    fn started(
        sink: &RecordingSink,
        gather: Duration,
        max_pending: usize,
    ) -> (BatchedLog, mpsc::Receiver<u64>) {
        let (reports, reported) = mpsc::channel();
        let log = BatchedLog::start(
            sink.clone(),
            gather,
            max_pending,
            Box::new(move |dropped| {
                let _ = reports.send(dropped);
            }),
        )
        .unwrap();
        (log, reported)
    }

    #[test]
    fn lines_reach_the_sink_whole_and_in_order_by_the_time_flush_returns() {
        let sink = RecordingSink::default();
        let (log, _reported) = started(&sink, GATHER, MAX_PENDING);
        let expected: String = (0..500).map(|n| format!("line {n}\n")).collect();
        for n in 0..500 {
            log_line(&log, &format!("line {n}\n"));
        }
        log.flush();
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn lines_logged_together_go_out_in_few_writes() {
        let sink = RecordingSink::default();
        let (log, _reported) = started(&sink, GATHER, MAX_PENDING);
        for n in 0..1_000 {
            log_line(&log, &format!("line {n}\n"));
        }
        log.flush();
        assert_eq!(sink.text().lines().count(), 1_000);
        // Appending 1,000 short lines takes far less than one gathering interval, and a flush
        // ends the gathering: one or two writes, a few more if this thread is held up for whole
        // intervals on a busy machine; written line by line it would be 1,000.
        assert!(sink.write_calls() < 50, "{} writes", sink.write_calls());
    }

    #[test]
    fn lines_that_come_within_the_gathering_interval_share_a_write() {
        let sink = RecordingSink::default();
        let (log, _reported) = started(&sink, Duration::from_millis(500), MAX_PENDING);
        // 20 lines 5 ms apart: each would find the writer idle and go alone if it did not wait.
        for n in 0..20 {
            log_line(&log, &format!("line {n}\n"));
            std::thread::sleep(Duration::from_millis(5));
        }
        log.flush();
        assert_eq!(sink.text().lines().count(), 20);
        // One write, a second or third only if this thread was held up for a quarter second.
        assert!(sink.write_calls() <= 3, "{} writes", sink.write_calls());
    }

    #[test]
    fn a_sink_that_takes_nothing_does_not_block_logging_and_drops_are_reported() {
        let sink = RecordingSink::default();
        let held_shut = sink.gate.lock().unwrap();
        let (log, reported) = started(&sink, GATHER, 64);
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
        assert!(
            reported.try_recv().is_err(),
            "reported before anything was written"
        );

        drop(held_shut);
        log.flush();
        assert_eq!(
            reported.recv_timeout(Duration::from_secs(5)).unwrap(),
            6,
            "the drop count is reported once the sink takes writes"
        );
        let text = sink.text();
        assert!(text.starts_with("first\nwaiting     0\n"), "{text}");
        assert!(text.ends_with("waiting     3\n"), "{text}");
    }

    #[test]
    fn flush_gives_up_on_a_sink_that_takes_nothing() {
        let sink = RecordingSink::default();
        let _held_shut = sink.gate.lock().unwrap();
        let (log, _reported) = started(&sink, GATHER, MAX_PENDING);
        log_line(&log, "stuck\n");
        let began = Instant::now();
        log.flush();
        let waited = began.elapsed();
        assert!(waited >= FLUSH_PATIENCE, "returned after {waited:?}");
        assert!(waited < FLUSH_PATIENCE * 3, "returned after {waited:?}");
    }
}
