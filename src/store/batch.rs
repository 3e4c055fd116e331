//! Joins writes of one batcher that wait at the same time into one statement.
//!
//! On Postgres most of a step-up's cost is per statement, not per row: the round trip, the
//! executor's start-up and the commit with its WAL flush (docs/performance.md). A write submitted
//! while no statement of its batcher is in flight runs at once, alone, on its caller's task, as it
//! always did. The writes that arrive while one is in flight wait, and the next slot freed takes
//! all of them (up to a limit) as one statement, on a task of its own so that no caller's
//! cancellation can cut another caller's write short. Beside a statement in flight, a free slot
//! takes only a full batch, or writes that have waited [`OVERDUE`]: at a moderate load the writes
//! that arrive during one statement go together in the next, instead of each taking a free slot
//! for a statement of its own; under a heavy load full batches keep every slot busy; and while a
//! slot is free, a statement that is slow (a row lock, a pool connection) holds up the rest for
//! [`OVERDUE`] at most. So one user sees the single-row statement it always had, and many users
//! share commits.
//!
//! Writes may also linger: while they come less than the batcher's linger apart on average, each
//! is queued instead of running at once, and with nothing in flight the queue starts only once a
//! write of the next batch has waited that long, or a batch is full. A write that is
//! quick to run is otherwise rarely joined by anything, and each costs a statement and a commit.
//! Writes that come seldom still run at once. A batcher may mix writes that linger with writes
//! that never do: one of the latter, with nothing in flight, starts a batch at once and takes the
//! lingering ones along, so they share its commit instead of waiting out their linger for one of
//! their own.
//!
//! A batch is all or nothing, like the single statement it stands for. When its statement fails
//! for a reason that may be one write's own (a constraint, bad data, a deadlock with another
//! batch, a row locked elsewhere past the lock timeout), each write runs again alone, one after
//! the other, so only the write at fault sees the error, and each is answered as soon as it has
//! run. The re-runs give the batch's slot back first: a write that waits for a row another
//! transaction holds then holds up the writes of its own batch, not every write after it. They
//! take turns for permits of their own, as many as the slots, so that failed batches re-running
//! at once cannot take more connections than the batches themselves. When the database is
//! unavailable, every write in the batch gets that answer, as a single statement's caller would.
//! Once the statement has committed, nothing runs again: an answer that cannot be read back
//! fails its own caller only.
use super::{StoreError, StoreResult};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

/// How long writes left waiting beside a statement in flight wait before a free slot takes them
/// anyway: longer than most statements take under load, short against a lock wait.
pub(crate) const OVERDUE: Duration = Duration::from_millis(10);

/// One kind of write, alone and as a batch.
pub(crate) trait BatchWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Output: Send + 'static;

    /// The write alone.
    fn one(&self, item: &Self::Item) -> impl Future<Output = StoreResult<Self::Output>> + Send;

    /// Whether `item` may linger for company (see the module's documentation); a write that may
    /// not starts a batch as soon as a slot is free, with whatever waits beside it.
    fn lingers(&self, _item: &Self::Item) -> bool {
        true
    }

    /// Every item's write in one atomic statement. `Err` means the statement failed and wrote
    /// nothing; `Ok` holds one answer per item, in the items' order, each read back from what was
    /// committed.
    fn many(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = StoreResult<Vec<StoreResult<Self::Output>>>> + Send;
}

struct Waiting<W: BatchWrite> {
    item: W::Item,
    answer: oneshot::Sender<StoreResult<W::Output>>,
    queued_at: Instant,
    /// How long it waits for company when nothing of its batcher is in flight: the batcher's
    /// linger while writes that linger come often, else (and for a write that does not linger)
    /// none.
    linger: Duration,
}

struct Shared<W: BatchWrite> {
    writes: W,
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Taken by a failed batch's writes while they run again alone, outside the slots.
    reruns: Semaphore,
    /// A task will look again when the oldest waiting write is [`OVERDUE`].
    overdue_armed: AtomicBool,
    /// A task will look again when the oldest waiting write has lingered.
    linger_armed: AtomicBool,
    waiting: Mutex<VecDeque<Waiting<W>>>,
    most: usize,
    linger: Duration,
    /// When the last write that may linger was submitted, in nanoseconds since `epoch`
    /// ([`NEVER`] before the first).
    last_submitted: AtomicU64,
    /// A moving mean of the gaps between submissions of writes that may linger, in nanoseconds
    /// ([`NEVER`] before the second): whether they come often enough for lingering to gather
    /// company.
    mean_gap: AtomicU64,
    epoch: Instant,
}

const NEVER: u64 = u64::MAX;
/// A longer gap counts as this long, so one quiet minute does not take a minute of writes to
/// forget.
const LONGEST_GAP: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Timer {
    Linger,
    Overdue,
}

/// Batches writes; cloning shares the slots and the queue.
pub(crate) struct Batcher<W: BatchWrite> {
    shared: Arc<Shared<W>>,
}

impl<W: BatchWrite> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<W: BatchWrite> Batcher<W> {
    /// At most `slots` writes or batches run at once, each batch of at most `most` writes;
    /// `linger` is how long a write waits for company while writes come often (zero: never).
    pub(crate) fn new(writes: W, slots: usize, most: usize, linger: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                writes,
                slots: Arc::new(Semaphore::new(slots.max(1))),
                slot_count: slots.max(1),
                reruns: Semaphore::new(slots.max(1)),
                overdue_armed: AtomicBool::new(false),
                linger_armed: AtomicBool::new(false),
                waiting: Mutex::new(VecDeque::new()),
                most: most.max(1),
                linger,
                last_submitted: AtomicU64::new(NEVER),
                mean_gap: AtomicU64::new(NEVER),
                epoch: Instant::now(),
            }),
        }
    }

    /// Writes `item`, alone or with others, and answers when its statement has committed.
    pub(crate) async fn submit(&self, item: W::Item) -> StoreResult<W::Output> {
        let linger = if self.shared.writes.lingers(&item) && self.shared.note_submitted() {
            self.shared.linger
        } else {
            Duration::ZERO
        };
        if linger.is_zero()
            && let Ok(slot) = self.shared.slots.clone().try_acquire_owned()
        {
            if self.shared.queue().is_empty() && self.shared.alone_in_flight() {
                let _slot = Release {
                    shared: &self.shared,
                    slot: Some(slot),
                };
                return self.shared.writes.one(&item).await;
            }
            // Others wait already, or a statement is in flight: this write joins them, or the
            // next statement, rather than overtake them or run beside it.
            drop(slot);
        }
        let (answer, answered) = oneshot::channel();
        self.shared.queue().push_back(Waiting {
            item,
            answer,
            queued_at: Instant::now(),
            linger,
        });
        self.shared.start_batches();
        answered.await.map_err(|_| {
            // The batch's task ended without answering: it panicked, or the runtime is
            // shutting down. Its statement may or may not have run.
            StoreError::Internal("a batched write ended without an answer".into())
        })?
    }
}

impl<W: BatchWrite> Shared<W> {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<W>>> {
        // Nothing panics while holding the lock, but a poisoned queue is still a valid one.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the slot just taken is the only one in use.
    fn alone_in_flight(&self) -> bool {
        self.slots.available_permits() + 1 == self.slot_count
    }

    /// Records a write that may linger, submitted now. True when such writes have lately come
    /// less than `linger` apart on average, so that one lingering can expect another to join
    /// it. Concurrent callers may each lose the other's update of the mean; it is a hint, and
    /// the next write corrects it.
    fn note_submitted(&self) -> bool {
        if self.linger.is_zero() {
            return false;
        }
        let now = nanos(self.epoch.elapsed());
        let before = self.last_submitted.swap(now, Ordering::Relaxed);
        if before == NEVER {
            return false;
        }
        let gap = now.saturating_sub(before).min(nanos(LONGEST_GAP));
        let mean = match self.mean_gap.load(Ordering::Relaxed) {
            NEVER => gap,
            mean => mean - mean / 8 + gap / 8,
        };
        self.mean_gap.store(mean, Ordering::Relaxed);
        mean < nanos(self.linger)
    }

    /// Whether writes wait and none of the next batch's is due yet: they are lingering for
    /// others to join them.
    fn lingering(&self) -> bool {
        let queue = self.queue();
        !queue.is_empty() && !self.due(&queue, Instant::now())
    }

    /// Whether a write of the next batch from `queue` has waited out its linger (at once for a
    /// write that does not linger).
    fn due(&self, queue: &VecDeque<Waiting<W>>, now: Instant) -> bool {
        queue
            .iter()
            .take(self.most)
            .any(|waiting| now.duration_since(waiting.queued_at) >= waiting.linger)
    }

    /// Starts a batch of the writes that wait, for as long as some wait and a slot is free,
    /// except that beside a statement in flight only a full batch starts, or one whose oldest
    /// write is [`OVERDUE`], and with nothing in flight, only a full batch or one with a write
    /// that has lingered (or does not linger). Called after every write queued and every slot
    /// freed, and when the oldest write left waiting becomes overdue or has lingered.
    fn start_batches(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        while let Ok(slot) = self.slots.clone().try_acquire_owned() {
            let batch = {
                let mut queue = self.queue();
                // A caller that has gone (its request was cancelled) is not written behind its
                // back.
                queue.retain(|waiting| !waiting.answer.is_closed());
                // Beside a statement in flight, only a full batch starts, or one whose oldest
                // write is overdue: the rest wait for it to end and go together, which is fewer
                // statements at a moderate load. With nothing in flight, the batch starts once
                // any write in it is due: lingering writes wait out their linger unless the batch
                // fills first or a write that does not linger comes to take them along.
                let now = Instant::now();
                let waited = if self.alone_in_flight() {
                    self.due(&queue, now)
                } else {
                    queue
                        .front()
                        .is_some_and(|oldest| now.duration_since(oldest.queued_at) >= OVERDUE)
                };
                let take = if waited || queue.len() >= self.most {
                    queue.len().min(self.most)
                } else {
                    0
                };
                queue.drain(..take).collect::<Vec<_>>()
            };
            if batch.is_empty() {
                drop(slot);
                let idle = self.slots.available_permits() == self.slot_count;
                if idle && self.lingering() {
                    self.start_once_waited(&runtime, Timer::Linger);
                    // A write that filled the batch while this slot was held found none free.
                    if self.queue().len() < self.most {
                        return;
                    }
                    continue;
                }
                self.start_once_waited(&runtime, Timer::Overdue);
                // A write queued while this slot was held found none free, or the statement in
                // flight ended meanwhile: look once more.
                if self.queue().is_empty() || !idle {
                    return;
                }
                continue;
            }
            let shared = self.clone();
            runtime.spawn(async move {
                let slot = Release {
                    shared: &shared,
                    slot: Some(slot),
                };
                let failed = write_batch(&shared.writes, batch).await;
                drop(slot);
                shared.rerun_alone(failed).await;
            });
        }
    }
}

impl<W: BatchWrite> Shared<W> {
    fn armed(&self, timer: Timer) -> &AtomicBool {
        match timer {
            Timer::Linger => &self.linger_armed,
            Timer::Overdue => &self.overdue_armed,
        }
    }

    /// Makes sure a task looks again when the oldest waiting write has waited [`OVERDUE`] (or
    /// lingered), unless one will already. A write left waiting is then at most that late for a
    /// slot that is free, however long the statement beside it takes.
    fn start_once_waited(self: &Arc<Self>, runtime: &tokio::runtime::Handle, timer: Timer) {
        let Some((oldest, wait)) = self.queue().front().map(|waiting| {
            let wait = match timer {
                Timer::Linger => waiting.linger,
                Timer::Overdue => OVERDUE,
            };
            (waiting.queued_at, wait)
        }) else {
            return;
        };
        if self.armed(timer).swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.clone();
        runtime.spawn(async move {
            // Disarmed however the task ends, even dropped unpolled by a runtime shutting down.
            let armed = Disarm(shared.armed(timer));
            tokio::time::sleep_until(oldest + wait).await;
            drop(armed);
            shared.start_batches();
        });
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(NEVER - 1)
}

struct Disarm<'a>(&'a AtomicBool);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Frees a slot when a write or batch ends, however it ends (done, cancelled, panicked), and
/// starts a batch of what waited meanwhile.
struct Release<'a, W: BatchWrite> {
    shared: &'a Arc<Shared<W>>,
    slot: Option<OwnedSemaphorePermit>,
}

impl<W: BatchWrite> Drop for Release<'_, W> {
    fn drop(&mut self) {
        drop(self.slot.take());
        self.shared.start_batches();
    }
}

/// A failed batch's writes, each with its caller's answer, to run again alone.
type Failed<W> = Vec<(
    <W as BatchWrite>::Item,
    oneshot::Sender<StoreResult<<W as BatchWrite>::Output>>,
)>;

/// Writes `batch` as one statement and answers its callers, unless the statement failed for a
/// reason that may be one write's own: those writes come back, unanswered, to run again alone.
async fn write_batch<W: BatchWrite>(writes: &W, batch: Vec<Waiting<W>>) -> Failed<W> {
    let (items, answers): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.item, waiting.answer))
        .unzip();
    let results = if items.len() == 1 {
        vec![writes.one(&items[0]).await]
    } else {
        match writes.many(&items).await {
            Ok(outputs) if outputs.len() == items.len() => outputs,
            Ok(outputs) => {
                let error = StoreError::Internal(format!(
                    "a batch of {} writes answered {} times",
                    items.len(),
                    outputs.len()
                ));
                every(&error, items.len())
            }
            Err(error @ StoreError::Unavailable(_)) => every(&error, items.len()),
            Err(_) => return items.into_iter().zip(answers).collect(),
        }
    };
    for (answer, result) in answers.into_iter().zip(results) {
        // A caller that left meanwhile no longer listens; its write stands, as a single
        // statement's would.
        let _ = answer.send(result);
    }
    Vec::new()
}

fn every<T>(error: &StoreError, count: usize) -> Vec<StoreResult<T>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

impl<W: BatchWrite> Shared<W> {
    /// Each write of a failed batch on its own, one after the other, so only the one at fault
    /// fails; each caller is answered as soon as its write has run. Not at once, and only while
    /// holding a permit of `reruns`: the failed batches of every batcher doing this together
    /// could otherwise ask for more connections than the pool has.
    async fn rerun_alone(&self, failed: Failed<W>) {
        if failed.is_empty() {
            return;
        }
        // The semaphore is never closed; were it, running unbounded beats not running.
        let _permit = self.reruns.acquire().await.ok();
        for (item, answer) in failed {
            // Nothing of the batch was written, so a caller that has gone meanwhile is not
            // written behind its back.
            if answer.is_closed() {
                continue;
            }
            let _ = answer.send(self.writes.one(&item).await);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The batcher's rules against a write that records what it was asked to do: what makes a
    //! batch, what a failure costs, who is left out. The statements themselves are tested
    //! against Postgres (`tests/store_conformance.rs`).
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// Fails any batch it is in, and alone too, as a constraint violation would.
    const BAD: u32 = 13;
    /// Makes a batch find the database unavailable.
    const DOWN: u32 = 99;
    /// Panics when written, alone or in a batch.
    const PANIC: u32 = 66;
    /// Written in a batch, but its answer cannot be read back, as a row that does not decode.
    const UNREADABLE: u32 = 77;
    /// Waits, when written alone, until `release` is notified, keeping its slot busy.
    const HOLD: u32 = 1_000;
    /// Never lingers, as an upgrade beside lingering enqueues.
    const EAGER: u32 = 500;
    /// Needs a row another transaction holds: fails any batch it is in as a lock timeout would,
    /// and alone waits until `unlock` is notified, then fails the same way.
    const LOCKED: u32 = 2_000;

    #[derive(Default)]
    struct Recorder {
        written: Arc<Mutex<Vec<Vec<u32>>>>,
        holding: Arc<Notify>,
        release: Arc<Notify>,
        locked: Arc<Notify>,
        unlock: Arc<Notify>,
    }

    impl BatchWrite for Recorder {
        type Item = u32;
        type Output = u32;

        async fn one(&self, item: &u32) -> StoreResult<u32> {
            self.written.lock().unwrap().push(vec![*item]);
            match *item {
                HOLD => {
                    self.holding.notify_one();
                    self.release.notified().await;
                }
                BAD => return Err(StoreError::Internal("constraint".into())),
                LOCKED => {
                    self.locked.notify_one();
                    self.unlock.notified().await;
                    return Err(StoreError::LockTimedOut("lock timeout".into()));
                }
                PANIC => panic!("a bug in a write"),
                _ => {}
            }
            Ok(item * 10)
        }

        fn lingers(&self, item: &u32) -> bool {
            *item != EAGER
        }

        async fn many(&self, items: &[u32]) -> StoreResult<Vec<StoreResult<u32>>> {
            self.written.lock().unwrap().push(items.to_vec());
            if items.contains(&PANIC) {
                panic!("a bug in a batch");
            }
            if items.contains(&DOWN) {
                return Err(StoreError::Unavailable("connection refused".into()));
            }
            if items.contains(&BAD) {
                return Err(StoreError::Internal("constraint".into()));
            }
            if items.contains(&LOCKED) {
                return Err(StoreError::LockTimedOut("lock timeout".into()));
            }
            Ok(items
                .iter()
                .map(|item| match *item {
                    UNREADABLE => Err(StoreError::Internal("undecodable row".into())),
                    item => Ok(item * 10),
                })
                .collect())
        }
    }

    struct Started {
        batcher: Batcher<Recorder>,
        written: Arc<Mutex<Vec<Vec<u32>>>>,
        holding: Arc<Notify>,
        release: Arc<Notify>,
        locked: Arc<Notify>,
        unlock: Arc<Notify>,
        held: tokio::task::JoinHandle<StoreResult<u32>>,
    }

    /// A batcher with one slot, kept busy by a held write.
    async fn busy(most: usize) -> Started {
        busy_with(1, most).await
    }

    /// A batcher with `slots` slots, one of them kept busy by a held write.
    async fn busy_with(slots: usize, most: usize) -> Started {
        busy_lingering(slots, most, Duration::ZERO).await
    }

    /// The same, for a batcher whose writes linger while they come often.
    async fn busy_lingering(slots: usize, most: usize, linger: Duration) -> Started {
        let writes = Recorder::default();
        let (written, holding, release, locked, unlock) = (
            writes.written.clone(),
            writes.holding.clone(),
            writes.release.clone(),
            writes.locked.clone(),
            writes.unlock.clone(),
        );
        let batcher = Batcher::new(writes, slots, most, linger);
        let held = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.submit(HOLD).await }
        });
        holding.notified().await;
        Started {
            batcher,
            written,
            holding,
            release,
            locked,
            unlock,
            held,
        }
    }

    /// Submits each item from a task of its own and lets every task queue its write.
    async fn submit_all(
        batcher: &Batcher<Recorder>,
        items: &[u32],
    ) -> Vec<tokio::task::JoinHandle<StoreResult<u32>>> {
        let tasks = items
            .iter()
            .map(|item| {
                let (batcher, item) = (batcher.clone(), *item);
                tokio::spawn(async move { batcher.submit(item).await })
            })
            .collect();
        tokio::task::yield_now().await;
        tasks
    }

    /// Every task's answer; a write left waiting fails the test instead of hanging it.
    async fn answers(
        tasks: Vec<tokio::task::JoinHandle<StoreResult<u32>>>,
    ) -> Vec<StoreResult<u32>> {
        let all = futures_util::future::join_all(tasks);
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("a write was left waiting")
            .into_iter()
            .map(|answer| answer.expect("task"))
            .collect()
    }

    /// Every task's output, each of which must have been written.
    async fn all_written(tasks: Vec<tokio::task::JoinHandle<StoreResult<u32>>>) -> Vec<u32> {
        let answers = answers(tasks).await;
        answers.into_iter().map(|a| a.expect("written")).collect()
    }

    #[tokio::test]
    async fn writes_that_wait_for_a_slot_are_written_together() {
        let started = busy(4).await;
        let tasks = submit_all(&started.batcher, &[1, 2, 3, 4, 5, 6]).await;
        started.release.notify_one();
        assert_eq!(
            started.held.await.expect("held").expect("written"),
            HOLD * 10
        );
        assert_eq!(all_written(tasks).await, vec![10, 20, 30, 40, 50, 60]);
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 2, 3, 4], vec![5, 6]]
        );
    }

    /// Lets every task that can run do so, without moving (paused) time on.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beside_a_statement_in_flight_only_a_full_batch_starts() {
        let started = busy_with(2, 3).await;
        let first = submit_all(&started.batcher, &[1, 2]).await;
        tokio::time::sleep(OVERDUE / 2).await;
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD]],
            "a free slot does not take a batch that is not full"
        );
        let second = submit_all(&started.batcher, &[3, 4]).await;
        settle().await;
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 2, 3]],
            "a full batch takes the free slot before any write is overdue"
        );
        started.release.notify_one();
        assert_eq!(all_written(first).await, vec![10, 20]);
        assert_eq!(all_written(second).await, vec![30, 40]);
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 2, 3], vec![4]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_left_waiting_beside_a_slow_statement_take_the_free_slot_once_overdue() {
        let started = busy_with(2, 8).await;
        let waiting = submit_all(&started.batcher, &[1, 2]).await;
        tokio::time::sleep(OVERDUE - Duration::from_millis(1)).await;
        assert_eq!(*started.written.lock().unwrap(), vec![vec![HOLD]]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        settle().await;
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 2]],
            "overdue, while the held statement is still in flight"
        );
        assert_eq!(all_written(waiting).await, vec![10, 20]);
        started.release.notify_one();
        assert_eq!(
            started.held.await.expect("held").expect("written"),
            HOLD * 10
        );
    }

    #[tokio::test]
    async fn with_nothing_in_flight_a_write_runs_alone_at_once() {
        let writes = Recorder::default();
        let written = writes.written.clone();
        let batcher = Batcher::new(writes, 2, 8, Duration::ZERO);
        for item in [1, 2] {
            assert_eq!(batcher.submit(item).await.expect("written"), item * 10);
        }
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![2]]);
    }

    /// Tokio's timers tick in whole milliseconds, so the tests' times are whole milliseconds.
    const LINGER: Duration = Duration::from_millis(4);

    /// What a [`Recorder`] was asked to write, one list per statement.
    type Written = Arc<Mutex<Vec<Vec<u32>>>>;

    fn lingering_batcher(most: usize) -> (Batcher<Recorder>, Written) {
        let writes = Recorder::default();
        let written = writes.written.clone();
        (Batcher::new(writes, 2, most, LINGER), written)
    }

    /// A timed submission's answer; a write left waiting fails the test instead of hanging it.
    async fn finished(
        task: tokio::task::JoinHandle<(StoreResult<u32>, Duration)>,
    ) -> (StoreResult<u32>, Duration) {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a write was left waiting")
            .expect("task")
    }

    /// Submits `item` from a task of its own, which answers with the write and how long it took.
    fn timed_submit(
        batcher: &Batcher<Recorder>,
        item: u32,
    ) -> tokio::task::JoinHandle<(StoreResult<u32>, Duration)> {
        let batcher = batcher.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = batcher.submit(item).await;
            (answer, started.elapsed())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_come_seldom_run_at_once_despite_a_linger() {
        let (batcher, written) = lingering_batcher(8);
        for item in 1..=4 {
            let (answer, took) = finished(timed_submit(&batcher, item)).await;
            assert_eq!(answer.expect("written"), item * 10);
            assert_eq!(took, Duration::ZERO, "write {item} lingered");
            tokio::time::sleep(LINGER * 3).await;
        }
        assert_eq!(
            *written.lock().unwrap(),
            vec![vec![1], vec![2], vec![3], vec![4]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_come_often_linger_and_go_together() {
        let (batcher, written) = lingering_batcher(8);
        let mut tasks = Vec::new();
        for item in 1..=12 {
            tasks.push(timed_submit(&batcher, item));
            settle().await;
            tokio::time::sleep(LINGER / 4).await;
        }
        for (item, task) in (1..).zip(tasks) {
            let (answer, took) = finished(task).await;
            assert_eq!(answer.expect("written"), item * 10);
            assert!(took <= LINGER, "write {item} waited {took:?}");
        }
        let written = written.lock().unwrap().clone();
        assert_eq!(written[0], vec![1], "the first write has no pace to go by");
        assert_eq!(written.concat(), (1..=12).collect::<Vec<_>>());
        // The last write lingers too, and nothing comes to join it.
        let (last, between) = written[1..].split_last().expect("more than one statement");
        assert!(
            between.iter().all(|batch| batch.len() >= 3) && last.len() <= 4,
            "twelve writes a quarter of a linger apart went as {written:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_write_runs_once_it_has_waited_its_linger() {
        let (batcher, written) = lingering_batcher(8);
        batcher.submit(1).await.expect("written");
        tokio::time::sleep(LINGER / 2).await;
        let second = timed_submit(&batcher, 2);
        tokio::time::sleep(LINGER - Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(
            *written.lock().unwrap(),
            vec![vec![1]],
            "ran before its linger"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![2]]);
        let (answer, took) = finished(second).await;
        assert_eq!(answer.expect("written"), 20);
        assert_eq!(took, LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_does_not_linger_takes_the_lingering_ones_along_at_once() {
        let (batcher, written) = lingering_batcher(8);
        batcher.submit(1).await.expect("written");
        tokio::time::sleep(LINGER / 4).await;
        let lingering: Vec<_> = (2..=3).map(|item| timed_submit(&batcher, item)).collect();
        settle().await;
        tokio::time::sleep(LINGER / 4).await;
        assert_eq!(*written.lock().unwrap(), vec![vec![1]], "2 and 3 linger");
        let (answer, took) = finished(timed_submit(&batcher, EAGER)).await;
        assert_eq!(answer.expect("written"), EAGER * 10);
        assert_eq!(took, Duration::ZERO, "the eager write waited");
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![2, 3, EAGER]]);
        for task in lingering {
            let (answer, took) = finished(task).await;
            assert!(answer.is_ok());
            assert_eq!(
                took,
                LINGER / 4,
                "a lingering write did not leave with the eager one"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_eager_write_with_nothing_waiting_or_in_flight_runs_alone_at_once() {
        let (batcher, written) = lingering_batcher(8);
        for item in 1..=3 {
            batcher.submit(item).await.expect("written");
            tokio::time::sleep(LINGER / 4).await;
        }
        let (answer, took) = finished(timed_submit(&batcher, EAGER)).await;
        assert_eq!(answer.expect("written"), EAGER * 10);
        assert_eq!(took, Duration::ZERO);
        assert_eq!(written.lock().unwrap().last(), Some(&vec![EAGER]));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_that_do_not_linger_do_not_set_the_pace_of_those_that_do() {
        let (batcher, written) = lingering_batcher(8);
        batcher.submit(1).await.expect("written");
        for _ in 0..12 {
            tokio::time::sleep(LINGER / 4).await;
            batcher.submit(EAGER).await.expect("written");
        }
        let (answer, took) = finished(timed_submit(&batcher, 2)).await;
        assert_eq!(answer.expect("written"), 20);
        assert_eq!(
            took,
            Duration::ZERO,
            "eager writes set the pace: 2 lingered"
        );
        assert_eq!(written.lock().unwrap().last(), Some(&vec![2]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_does_not_wait_out_the_linger() {
        let (batcher, written) = lingering_batcher(3);
        batcher.submit(1).await.expect("written");
        tokio::time::sleep(LINGER / 2).await;
        let tasks: Vec<_> = (2..=4).map(|item| timed_submit(&batcher, item)).collect();
        settle().await;
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![2, 3, 4]]);
        for task in tasks {
            assert_eq!(finished(task).await.1, Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_the_lingering() {
        let (batcher, written) = lingering_batcher(8);
        for item in 1..=6 {
            assert!(finished(timed_submit(&batcher, item)).await.0.is_ok());
            tokio::time::sleep(LINGER / 4).await;
        }
        let lingered = finished(timed_submit(&batcher, 7)).await.1;
        assert_eq!(
            lingered, LINGER,
            "writes a quarter of a linger apart linger"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (answer, took) = finished(timed_submit(&batcher, 8)).await;
        assert_eq!(answer.expect("written"), 80);
        assert_eq!(
            took,
            Duration::ZERO,
            "the first write after a pause runs at once"
        );
        tokio::time::sleep(LINGER / 4).await;
        let took = finished(timed_submit(&batcher, 9)).await.1;
        assert_eq!(
            took,
            Duration::ZERO,
            "the pause is remembered, not one quick gap"
        );
        assert_eq!(written.lock().unwrap().last(), Some(&vec![9]));
    }

    #[tokio::test(start_paused = true)]
    async fn beside_a_statement_in_flight_lingering_writes_wait_for_it_not_their_linger() {
        let started = busy_lingering(2, 8, LINGER).await;
        // The held write was the first; these come a quarter of a linger apart.
        let mut tasks = Vec::new();
        for item in 1..=3 {
            tokio::time::sleep(LINGER / 4).await;
            tasks.push(timed_submit(&started.batcher, item));
            settle().await;
        }
        // The first has lingered, and another write looks at the free slot.
        tokio::time::sleep(LINGER).await;
        tasks.push(timed_submit(&started.batcher, 4));
        settle().await;
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD]],
            "a free slot beside a statement in flight waits for OVERDUE, not the linger"
        );
        started.release.notify_one();
        settle().await;
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 2, 3, 4]],
            "once the statement ends, writes whose oldest has lingered go at once"
        );
        for task in tasks {
            assert!(finished(task).await.0.is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_write_cancelled_leaves_the_others_to_run() {
        let (batcher, written) = lingering_batcher(8);
        batcher.submit(1).await.expect("written");
        tokio::time::sleep(LINGER / 4).await;
        let gone = timed_submit(&batcher, 2);
        settle().await;
        let stays = timed_submit(&batcher, 3);
        settle().await;
        gone.abort();
        let _ = gone.await;
        let (answer, took) = finished(stays).await;
        assert_eq!(answer.expect("written"), 30);
        assert!(took <= LINGER, "waited {took:?}");
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![3]]);
    }

    /// Sends `[1, culprit, 3]` while the slot is busy and checks that 1 and 3 are written and
    /// the culprit fails. Returns what the write was asked to do.
    async fn only_the_culprit_fails(culprit: u32) -> Vec<Vec<u32>> {
        let started = busy(8).await;
        let tasks = submit_all(&started.batcher, &[1, culprit, 3]).await;
        started.release.notify_one();
        let answers = answers(tasks).await;
        assert_eq!(answers[0].as_ref().ok(), Some(&10));
        assert!(matches!(answers[1], Err(StoreError::Internal(_))));
        assert_eq!(answers[2].as_ref().ok(), Some(&30));
        started.written.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_failed_batch_is_written_again_one_by_one_so_only_its_culprit_fails() {
        let written = only_the_culprit_fails(BAD).await;
        assert_eq!(written[1], vec![1, BAD, 3]);
        let mut alone = written[2..].to_vec();
        alone.sort();
        assert_eq!(alone, vec![vec![1], vec![3], vec![BAD]]);
    }

    #[tokio::test]
    async fn a_failed_batchs_writes_run_again_outside_its_slot_each_answered_when_run() {
        let started = busy(8).await;
        let mut tasks = submit_all(&started.batcher, &[1, LOCKED, 3])
            .await
            .into_iter();
        started.release.notify_one();
        started.locked.notified().await;
        let first = tokio::time::timeout(Duration::from_secs(5), tasks.next().expect("1"));
        let first = first
            .await
            .expect("answered while the batch's culprit still runs");
        assert_eq!(first.expect("task").expect("written"), 10);
        let after = tokio::time::timeout(Duration::from_secs(5), started.batcher.submit(7));
        let after = after
            .await
            .expect("the batch's only slot was free while it ran again");
        assert_eq!(after.expect("written"), 70);

        started.unlock.notify_one();
        let rest = answers(tasks.collect()).await;
        assert!(matches!(rest[0], Err(StoreError::LockTimedOut(_))));
        assert_eq!(rest[1].as_ref().ok(), Some(&30));
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![
                vec![HOLD],
                vec![1, LOCKED, 3],
                vec![1],
                vec![LOCKED],
                vec![7],
                vec![3]
            ]
        );
    }

    /// With paused time, the runtime moves the clock on only once every task waits: a write
    /// that could run would have run before the timeout ends.
    #[tokio::test(start_paused = true)]
    async fn failed_batches_run_again_no_more_at_once_than_there_are_slots() {
        let started = busy(8).await;
        let first = submit_all(&started.batcher, &[LOCKED, 2]).await;
        started.release.notify_one();
        started.locked.notified().await;
        let held_again = tokio::spawn({
            let batcher = started.batcher.clone();
            async move { batcher.submit(HOLD).await }
        });
        started.holding.notified().await;
        let second = submit_all(&started.batcher, &[BAD, 5]).await;
        started.release.notify_one();
        assert_eq!(held_again.await.expect("task").expect("written"), HOLD * 10);
        let second = futures_util::future::join_all(second);
        let mut second = std::pin::pin!(second);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut second)
                .await
                .is_err(),
            "the second failed batch waits for the first one's re-runs"
        );
        assert_eq!(
            started.written.lock().unwrap()[1..],
            [vec![LOCKED, 2], vec![LOCKED], vec![HOLD], vec![BAD, 5]]
        );

        started.unlock.notify_one();
        let first = answers(first).await;
        assert!(matches!(first[0], Err(StoreError::LockTimedOut(_))));
        assert_eq!(first[1].as_ref().ok(), Some(&20));
        let second: Vec<_> = second
            .await
            .into_iter()
            .map(|task| task.expect("task"))
            .collect();
        assert!(matches!(second[0], Err(StoreError::Internal(_))));
        assert_eq!(second[1].as_ref().ok(), Some(&50));
        assert_eq!(
            started.written.lock().unwrap()[5..],
            [vec![2], vec![BAD], vec![5]]
        );
    }

    #[tokio::test]
    async fn an_unavailable_database_fails_the_whole_batch_without_retries() {
        let started = busy(8).await;
        let tasks = submit_all(&started.batcher, &[1, DOWN, 3]).await;
        started.release.notify_one();
        for answer in answers(tasks).await {
            assert!(matches!(answer, Err(StoreError::Unavailable(_))));
        }
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, DOWN, 3]]
        );
    }

    #[tokio::test]
    async fn a_caller_gone_before_its_batch_is_not_written() {
        let started = busy(8).await;
        let mut tasks = submit_all(&started.batcher, &[1, 2, 3]).await;
        let gone = tasks.remove(1);
        gone.abort();
        let _ = gone.await;
        started.release.notify_one();
        tokio::time::timeout(Duration::from_secs(5), async {
            while started.written.lock().unwrap().len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the batch was written");
        assert_eq!(
            *started.written.lock().unwrap(),
            vec![vec![HOLD], vec![1, 3]]
        );
    }

    #[tokio::test]
    async fn a_panicking_write_fails_only_its_callers_and_the_batcher_goes_on() {
        let started = busy(8).await;
        let tasks = submit_all(&started.batcher, &[1, PANIC]).await;
        started.release.notify_one();
        for answer in answers(tasks).await {
            assert!(matches!(answer, Err(StoreError::Internal(_))));
        }
        // Alone, the write runs on its caller's task, so the panic is the caller's own.
        let alone = tokio::spawn({
            let batcher = started.batcher.clone();
            async move { batcher.submit(PANIC).await }
        });
        assert!(alone.await.expect_err("the caller panics").is_panic());
        // Both panics gave their slot back.
        let after = tokio::time::timeout(Duration::from_secs(5), started.batcher.submit(7));
        assert_eq!(after.await.expect("a slot was free").expect("written"), 70);
        let tasks = submit_all(&started.batcher, &[8]).await;
        assert_eq!(answers(tasks).await[0].as_ref().ok(), Some(&80));
    }

    #[tokio::test]
    async fn after_the_commit_an_unreadable_answer_fails_its_caller_alone_and_nothing_reruns() {
        assert_eq!(
            only_the_culprit_fails(UNREADABLE).await,
            vec![vec![HOLD], vec![1, UNREADABLE, 3]]
        );
    }

    #[tokio::test]
    async fn a_write_cancelled_on_its_callers_task_hands_its_slot_to_those_waiting() {
        let started = busy(8).await;
        let tasks = submit_all(&started.batcher, &[1, 2]).await;
        started.held.abort();
        assert!(started.held.await.expect_err("cancelled").is_cancelled());
        assert_eq!(all_written(tasks).await, vec![10, 20]);
    }
}
