//! Group commit: write transactions queued for the writer share one command and one commit.
//!
//! Under load the step-up's transactions queue for the one writer. Each costs a hop to SQLite's
//! worker thread and back, and a commit that appends every page it touched to the WAL. Queued
//! transactions with the same text (the enqueues, or the session upgrades with as many audit
//! events) go in one command instead: one hop and one commit for the group, and the pages they
//! share (an index's leaf, a table's last page) are appended once.
//!
//! Only the same text goes together: sqlx keeps a command prepared by its text, so a group of
//! one kind and size is prepared once, where mixed groups would be prepared anew each time.
use super::{InFlight, Writer, WriterGuard, rows_by_statement};
use crate::store::sql_common::map_error;
use crate::store::{StoreError, StoreResult};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Execute, Executor, Sqlite};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Each size of group is a command kept prepared on the writer's connection: sizes 2 to 8 are 7
/// commands for each of the three texts the step-up writes, holding 35 copies of the text.
const MOST_IN_A_GROUP: usize = 8;

type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;

/// A write transaction that may share its command and commit with others of the same text.
pub(in crate::store) struct Shareable {
    /// Its statements, each followed by `"; "`, as [`statements!`](super::statements) writes
    /// them. Transactions whose text is the same go together.
    statements: Cow<'static, str>,
    /// How many statements that is, so that each transaction's rows can be told apart.
    count: usize,
    /// How many `?` parameters they have. A group binds its transactions' arguments one after
    /// the other, so one short of arguments would shift the next one's into its statements.
    parameters: usize,
    /// Binds the transaction's arguments as the next parameters of a query, each time it is
    /// sent: in a group, and again alone if the group fails or loses a caller.
    bind: Box<dyn Fn(SqliteQuery) -> SqliteQuery + Send + Sync>,
    /// What it does, for errors.
    what: &'static str,
}

impl Shareable {
    pub(in crate::store) fn new(
        statements: impl Into<Cow<'static, str>>,
        count: usize,
        what: &'static str,
        bind: impl Fn(SqliteQuery) -> SqliteQuery + Send + Sync + 'static,
    ) -> Self {
        let statements = statements.into();
        debug_assert_eq!(statements.matches("; ").count(), count, "{statements}");
        // No statement has a `?` outside its parameters.
        let parameters = statements.matches('?').count();
        Self {
            statements,
            count,
            parameters,
            bind: Box::new(bind),
            what,
        }
    }

    /// The transaction as a command of its own.
    fn alone(&self) -> SqliteQuery {
        (self.bind)(sqlx::query(AssertSqlSafe(format!(
            "BEGIN IMMEDIATE; {}COMMIT",
            self.statements
        ))))
    }

    /// Runs the transaction by itself and returns each statement's rows; a caller that stops
    /// waiting abandons it (see [`Writer::transaction`]).
    pub(in crate::store) async fn run_alone(
        &self,
        writer: &Arc<Writer>,
    ) -> StoreResult<Vec<Vec<SqliteRow>>> {
        writer.transaction(self.alone(), self.what).await
    }
}

/// A transaction queued for the group committer, and where its rows go.
pub(super) struct Waiting {
    transaction: Shareable,
    answer: oneshot::Sender<StoreResult<Vec<Vec<SqliteRow>>>>,
    /// Counted as under way until it is answered or dropped.
    _counted: InFlight,
}

impl Waiting {
    pub(super) fn new(
        transaction: Shareable,
        counted: InFlight,
    ) -> (Self, oneshot::Receiver<StoreResult<Vec<Vec<SqliteRow>>>>) {
        let (answer, answered) = oneshot::channel();
        let waiting = Self {
            transaction,
            answer,
            _counted: counted,
        };
        (waiting, answered)
    }

    fn departed(&self) -> bool {
        self.answer.is_closed()
    }

    fn answer(self, outcome: StoreResult<Vec<Vec<SqliteRow>>>) {
        let Self {
            answer, _counted, ..
        } = self;
        // No longer under way: a caller that writes again at once may run it where it is.
        drop(_counted);
        // A caller that stopped waiting no longer needs the answer.
        let _ = answer.send(outcome);
    }
}

/// What the group committer has taken in and not answered yet. It lives outside the committer,
/// so that one started again after a panic carries on with the same transactions.
struct Queue {
    incoming: mpsc::UnboundedReceiver<Waiting>,
    waiting: VecDeque<Waiting>,
    /// Groups taken out of `waiting` so far. A panic with no group taken since the one before
    /// did not come from a transaction, and would meet what waits again.
    groups_taken: u64,
}

impl Queue {
    fn new(incoming: mpsc::UnboundedReceiver<Waiting>) -> Self {
        Self {
            incoming,
            waiting: VecDeque::new(),
            groups_taken: 0,
        }
    }
}

/// How long a committer that panicked twice without taking a group waits before it starts
/// again, so that a panic outside any transaction does not spin.
const AFTER_REPEATED_PANIC: Duration = Duration::from_millis(100);

/// Commits what is queued until the queue's senders are gone, starting the committer again if
/// it panics. A committer that ended would leave every later transaction that queued failing
/// until the process restarted; a panic costs only the callers of the group it was committing.
pub(super) async fn keep_committing(
    writer: Arc<Writer>,
    incoming: mpsc::UnboundedReceiver<Waiting>,
) {
    supervise(Queue::new(incoming), |queue, restarted| {
        let writer = writer.clone();
        Box::pin(async move {
            if restarted {
                // Rolls back what the panic left open now, not at the next write: an open
                // `BEGIN IMMEDIATE` holds the database's write lock against other processes.
                drop(writer.lock().await);
            }
            commit_in_groups(&writer, queue).await;
        })
    })
    .await;
}

/// Runs `committer` until it returns, again after each panic (`restarted` says so). Unwind
/// safety: what a panic leaves behind is the queue, whose collections are never mid-change
/// while a transaction runs, and the writer, whose guard marks a transaction that may be open
/// so that its next holder rolls it back (see `Writer::lock`). A second panic with no group
/// taken since the first answers everything waiting with `Unavailable`, since the same panic
/// would meet it again, and waits a little before starting again.
async fn supervise<C>(mut queue: Queue, mut committer: C)
where
    C: for<'a> FnMut(&'a mut Queue, bool) -> BoxFuture<'a, ()>,
{
    let mut restarted = false;
    let mut taken_at_last_panic = None;
    while let Err(panic) = AssertUnwindSafe(committer(&mut queue, restarted))
        .catch_unwind()
        .await
    {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not text)");
        tracing::error!(
            panic = message,
            "the sqlite group committer panicked; it starts again"
        );
        if taken_at_last_panic == Some(queue.groups_taken) {
            let error = StoreError::Unavailable("sqlite group committer: failing".into());
            answer_all(queue.waiting.drain(..), &error);
            tokio::time::sleep(AFTER_REPEATED_PANIC).await;
        }
        taken_at_last_panic = Some(queue.groups_taken);
        restarted = true;
    }
}

/// Commits what is queued, group by group, until the queue's senders are gone. The writer is
/// taken before a group is chosen, so everything that queued while it was busy can join.
async fn commit_in_groups(writer: &Arc<Writer>, queue: &mut Queue) {
    let Queue {
        incoming,
        waiting,
        groups_taken,
    } = queue;
    loop {
        if waiting.is_empty() {
            match incoming.recv().await {
                Some(first) => waiting.push_back(first),
                None => return,
            }
        }
        let held = writer.lock().await;
        while let Ok(next) = incoming.try_recv() {
            waiting.push_back(next);
        }
        match held {
            Ok(mut held) => {
                let group = next_group(waiting);
                *groups_taken += 1;
                commit_group(&mut held, group).await;
            }
            // Everything queued has waited for the writer as long as this did, or is behind
            // transactions that did: it is `Unavailable` now, as a caller's own wait would be.
            Err(error) => answer_all(waiting.drain(..), &error),
        }
    }
}

/// A rollback failed: whatever ran next would run inside the open transaction. The writer's
/// next holder tries the rollback again (see [`Writer::lock`]).
fn still_open() -> StoreError {
    StoreError::Unavailable(
        "sqlite writer: an unfinished transaction could not be rolled back".into(),
    )
}

fn answer_all(transactions: impl IntoIterator<Item = Waiting>, error: &StoreError) {
    for transaction in transactions {
        transaction.answer(Err(error.clone()));
    }
}

/// The first transaction still awaited and those behind it with the same text, in the order
/// they came; the others keep their places.
fn next_group(waiting: &mut VecDeque<Waiting>) -> Vec<Waiting> {
    waiting.retain(|transaction| !transaction.departed());
    let Some(first) = waiting.pop_front() else {
        return Vec::new();
    };
    let mut group = vec![first];
    let mut others = VecDeque::with_capacity(waiting.len());
    for next in waiting.drain(..) {
        if group.len() < MOST_IN_A_GROUP
            && next.transaction.statements == group[0].transaction.statements
        {
            group.push(next);
        } else {
            others.push_back(next);
        }
    }
    *waiting = others;
    group
}

async fn commit_group(writer: &mut WriterGuard<'_>, mut group: Vec<Waiting>) {
    loop {
        group.retain(|transaction| !transaction.departed());
        if group.len() <= 1 {
            if let Some(transaction) = group.pop() {
                commit_alone(writer, transaction).await;
            }
            return;
        }
        match commit_together(writer, &group).await {
            Together::Committed(rows) => {
                for (transaction, rows) in group.into_iter().zip(rows) {
                    transaction.answer(Ok(rows));
                }
                return;
            }
            Together::SomeoneLeft | Together::Failed if writer.0.may_be_open => {
                answer_all(group, &still_open());
                return;
            }
            Together::SomeoneLeft => continue,
            Together::Failed => {
                // Each on its own, so a statement that fails fails only its own transaction.
                for transaction in group {
                    commit_alone(writer, transaction).await;
                }
                return;
            }
            Together::Unreadable(message) => {
                // Committed: callers treat an error as a write that may have happened.
                for transaction in group {
                    transaction.answer(Err(StoreError::Internal(message.clone())));
                }
                return;
            }
        }
    }
}

/// Runs one transaction by itself. If its caller stops waiting, it is abandoned as a caller's
/// own would be: SQLite's worker runs at most one more statement, and what ran is rolled back.
async fn commit_alone(writer: &mut WriterGuard<'_>, mut transaction: Waiting) {
    if transaction.departed() {
        return;
    }
    if writer.0.may_be_open {
        transaction.answer(Err(still_open()));
        return;
    }
    let query = transaction.transaction.alone();
    let what = transaction.transaction.what;
    let outcome = tokio::select! {
        // A caller that left is noticed before the transaction is sent, not after.
        biased;
        () = transaction.answer.closed() => None,
        outcome = writer.transaction(query, what) => Some(outcome),
    };
    match outcome {
        Some(outcome) => transaction.answer(outcome),
        None => writer.roll_back_abandoned().await,
    }
}

enum Together {
    /// Each transaction's rows, in the group's order.
    Committed(Vec<Vec<Vec<SqliteRow>>>),
    /// A caller stopped waiting before the commit: everything was rolled back, so its
    /// transaction is not committed behind its back.
    SomeoneLeft,
    /// A statement, the commit or the arguments failed; everything was rolled back.
    Failed,
    /// Committed, but the answer does not divide into the group's transactions.
    Unreadable(String),
}

/// The group's statements in one command after `BEGIN IMMEDIATE`, and `COMMIT` as a command of
/// its own once every caller is known to be still waiting: a caller that leaves while its
/// transaction runs alone abandons it, and leaving a group must not commit it either.
async fn commit_together(writer: &mut WriterGuard<'_>, group: &[Waiting]) -> Together {
    let what = group[0].transaction.what;
    let count = group[0].transaction.count;
    let statements = group[0].transaction.statements.repeat(group.len());
    let mut query = sqlx::query(AssertSqlSafe(format!(
        "BEGIN IMMEDIATE; {}",
        statements.trim_end_matches("; ")
    )));
    for waiting in group {
        query = (waiting.transaction.bind)(query);
    }
    let parameters = group
        .iter()
        .map(|waiting| waiting.transaction.parameters)
        .sum();
    let Some(query) = with_arguments_for(query, parameters) else {
        // Alone, the short one is refused and the others run.
        return Together::Failed;
    };
    writer.0.may_be_open = true;
    let outcome = match rows_by_statement(writer, query).await {
        Ok(_) if group.iter().any(Waiting::departed) => Err(Together::SomeoneLeft),
        Ok(statements) => match writer.execute("COMMIT").await {
            Ok(_) => Ok(statements),
            // A COMMIT that fails leaves nothing committed (SQLite rolls back, or the
            // transaction stays open and is rolled back below), so running them again is safe.
            Err(error) => {
                tracing::warn!(error = %map_error(what, error), size = group.len(),
                    "sqlite group commit failed; its transactions run one by one");
                Err(Together::Failed)
            }
        },
        Err(error) => {
            tracing::debug!(error = %map_error(what, error), size = group.len(),
                "a statement in a sqlite group failed; its transactions run one by one");
            Err(Together::Failed)
        }
    };
    let statements = match outcome {
        Ok(statements) => statements,
        Err(together) => {
            writer.roll_back_abandoned().await;
            return together;
        }
    };
    writer.0.may_be_open = false;
    // The first list is `BEGIN`'s.
    if statements.len() != 1 + count * group.len() {
        return Together::Unreadable(format!(
            "{what}: {} statements answered for a group of {} with {count} each",
            statements.len().saturating_sub(1),
            group.len()
        ));
    }
    let mut statements = statements.into_iter().skip(1);
    Together::Committed(
        (0..group.len())
            .map(|_| statements.by_ref().take(count).collect())
            .collect(),
    )
}

/// The query, if its arguments are as many as its `?` parameters: sqlx does not count them.
fn with_arguments_for(mut query: SqliteQuery, parameters: usize) -> Option<SqliteQuery> {
    let persistent = Execute::persistent(&query);
    let arguments = query.take_arguments().ok()?.unwrap_or_default();
    if arguments.len() != parameters {
        tracing::error!(
            arguments = arguments.len(),
            parameters,
            "sqlite group: arguments do not match the parameters"
        );
        return None;
    }
    Some(sqlx::query_with(query.sql(), arguments).persistent(persistent))
}

#[cfg(test)]
mod tests {
    use super::{InFlight, Queue, Shareable, Waiting, supervise};
    use crate::store::StoreError;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A committer that panics outside any group (none taken between two panics) would meet
    /// what waits again and again: the second panic answers it with `Unavailable` instead of
    /// leaving its callers waiting for good, and the committer goes on once nothing waits.
    #[tokio::test]
    async fn a_repeated_panic_outside_any_group_answers_what_waits() {
        let (sender, incoming) = tokio::sync::mpsc::unbounded_channel();
        let under_way = Arc::new(AtomicUsize::new(0));
        let mut answers = Vec::new();
        for id in [1_i64, 2] {
            let transaction = Shareable::new(
                "INSERT INTO items VALUES (?) RETURNING id; ",
                1,
                "insert item",
                move |query| query.bind(id),
            );
            let (waiting, answered) = Waiting::new(transaction, InFlight::enter(under_way.clone()));
            sender.send(waiting).expect("queued");
            answers.push(answered);
        }
        drop(sender);
        let panics = Arc::new(AtomicUsize::new(0));
        let counted = panics.clone();
        let supervised = supervise(Queue::new(incoming), move |queue, _restarted| {
            let counted = counted.clone();
            Box::pin(async move {
                while let Ok(next) = queue.incoming.try_recv() {
                    queue.waiting.push_back(next);
                }
                if !queue.waiting.is_empty() {
                    counted.fetch_add(1, Ordering::Relaxed);
                    panic!("a panic outside any group");
                }
            })
        });
        tokio::time::timeout(Duration::from_secs(5), supervised)
            .await
            .expect("the committer ends once nothing waits");
        for answered in answers {
            let answer = answered.await.expect("answered, not dropped");
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        }
        assert_eq!(panics.load(Ordering::Relaxed), 2, "answered at the second");
        assert_eq!(under_way.load(Ordering::Relaxed), 0);
    }
}
