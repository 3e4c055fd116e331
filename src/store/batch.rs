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
//! No write waits for company while nothing is in flight. Queued codes used to linger for 2 ms
//! while they came often, to share commits at moderate loads; that saved the stores a few per cent
//! of their CPU but made `CreateLoginFlow` wait for it, and without it the worst p99 was lower in
//! 34 of 49 interleaved pairs, at 70 % of the peak and at fixed rates (docs/performance.md, "The
//! linger again, in a faster half hour").
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
use std::sync::atomic::{AtomicBool, Ordering};
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
}

struct Shared<W: BatchWrite> {
    writes: W,
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Taken by a failed batch's writes while they run again alone, outside the slots.
    reruns: Semaphore,
    /// A task will look again when the oldest waiting write is [`OVERDUE`].
    overdue_armed: AtomicBool,
    waiting: Mutex<VecDeque<Waiting<W>>>,
    most: usize,
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
    /// At most `slots` writes or batches run at once, each batch of at most `most` writes.
    pub(crate) fn new(writes: W, slots: usize, most: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                writes,
                slots: Arc::new(Semaphore::new(slots.max(1))),
                slot_count: slots.max(1),
                reruns: Semaphore::new(slots.max(1)),
                overdue_armed: AtomicBool::new(false),
                waiting: Mutex::new(VecDeque::new()),
                most: most.max(1),
            }),
        }
    }

    /// Writes `item`, alone or with others, and answers when its statement has committed.
    pub(crate) async fn submit(&self, item: W::Item) -> StoreResult<W::Output> {
        if let Ok(slot) = self.shared.slots.clone().try_acquire_owned() {
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

    /// Starts a batch of the writes that wait, for as long as some wait and a slot is free,
    /// except that beside a statement in flight only a full batch starts, or one whose oldest
    /// write is [`OVERDUE`]. Called after every write queued and every slot freed, and when the
    /// oldest write left waiting becomes overdue.
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
                // statements at a moderate load. With nothing in flight, whatever waits starts.
                let waited = self.alone_in_flight()
                    || queue
                        .front()
                        .is_some_and(|oldest| oldest.queued_at.elapsed() >= OVERDUE);
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
                self.start_once_overdue(&runtime);
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
    /// Makes sure a task looks again when the oldest waiting write has waited [`OVERDUE`], unless
    /// one will already. A write left waiting is then at most that late for a slot that is free,
    /// however long the statement beside it takes.
    fn start_once_overdue(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let Some(oldest) = self.queue().front().map(|waiting| waiting.queued_at) else {
            return;
        };
        if self.overdue_armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.clone();
        runtime.spawn(async move {
            // Disarmed however the task ends, even dropped unpolled by a runtime shutting down.
            let armed = Disarm(&shared.overdue_armed);
            tokio::time::sleep_until(oldest + OVERDUE).await;
            drop(armed);
            shared.start_batches();
        });
    }
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
        let writes = Recorder::default();
        let (written, holding, release, locked, unlock) = (
            writes.written.clone(),
            writes.holding.clone(),
            writes.release.clone(),
            writes.locked.clone(),
            writes.unlock.clone(),
        );
        let batcher = Batcher::new(writes, slots, most);
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
        let batcher = Batcher::new(writes, 2, 8);
        for item in [1, 2] {
            assert_eq!(batcher.submit(item).await.expect("written"), item * 10);
        }
        assert_eq!(*written.lock().unwrap(), vec![vec![1], vec![2]]);
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
