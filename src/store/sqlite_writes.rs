//! How the embedded store writes: through one connection that the store holds, with its
//! busiest transactions sent as one command each, on a thread of their own, and under load
//! several of them in one command and one commit (`group_commit`).
//!
//! Writes are bound by hops, not by SQLite: a statement is a command to the connection's worker
//! thread and an answer back, and only one writer can hold the database. Every hop while the
//! writer is held is time in which nobody writes.
mod checkpoints;
mod group_commit;

pub(super) use checkpoints::{WAL_FILE_KEPT, WRITER_CHECKPOINTS_AT};
pub(super) use group_commit::Shareable;

use super::sql_common::map_error;
use super::{StoreError, StoreResult};
use futures_util::TryStreamExt;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Arguments, Either, Execute, Executor, Sqlite};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A transaction for [`Writer::transaction`]: its statements between `BEGIN IMMEDIATE` and
/// `COMMIT`, as one string. The statements take anonymous `?` parameters: sqlx binds a query
/// of several statements statement by statement, each taking the next arguments in order, while
/// a `?NNN` parameter indexes the whole argument list (a later statement's `?1` is the first
/// statement's first argument). sqlx does not count them either: a missing argument binds NULL,
/// so every transaction's count is checked before it is sent (see `checked`).
///
/// Several statements in one prepared query is something only sqlx's SQLite driver does (its
/// migrations need it), and sqlx calls it deprecated (launchbadge/sqlx#3108, still open in 0.9).
/// The tests below and the store's conformance suite exercise every such transaction, so an
/// sqlx upgrade that drops it fails them rather than production.
macro_rules! in_one_command {
    ($($statement:expr),+ $(,)?) => {
        concat!("BEGIN IMMEDIATE; ", statements!($($statement),+), "COMMIT")
    };
}
pub(super) use in_one_command;

/// A transaction's statements without `BEGIN` and `COMMIT`, each followed by `"; "`, for a
/// [`Shareable`] transaction. The same rules for parameters hold as for [`in_one_command!`].
macro_rules! statements {
    ($($statement:expr),+ $(,)?) => {
        concat!($($statement, "; ",)+)
    };
}
pub(super) use statements;

/// The one connection that writes. The store holds it instead of a pool of one: a pool pings a
/// connection each time it is handed back, from a task of its own, and nobody can write until
/// that hop is over.
pub(super) struct Writer {
    held: tokio::sync::Mutex<Held>,
    wait: Duration,
}

struct Held {
    connection: SqliteConnection,
    /// A transaction sent as one command may still be open: its caller stopped waiting, or a
    /// statement in it failed and the rollback did not finish. The next holder rolls it back.
    may_be_open: bool,
}

/// The writer, held until dropped.
pub(super) struct WriterGuard<'a>(tokio::sync::MutexGuard<'a, Held>);

impl Deref for WriterGuard<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.0.connection
    }
}

impl DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.connection
    }
}

impl Writer {
    pub(super) fn new(connection: SqliteConnection, wait: Duration) -> Self {
        Self {
            held: tokio::sync::Mutex::new(Held {
                connection,
                may_be_open: false,
            }),
            wait,
        }
    }

    /// Waits for the writer (first come, first served) and rolls back what an earlier holder
    /// left open. A writer not free within `wait` is reported `Unavailable`: better to answer
    /// than to queue forever. So is one whose unfinished transaction cannot be rolled back:
    /// a write run inside it would report success and then be lost with it.
    pub(super) async fn lock(&self) -> StoreResult<WriterGuard<'_>> {
        let mut held = tokio::time::timeout(self.wait, self.held.lock())
            .await
            .map_err(|_| StoreError::Unavailable("sqlite writer: busy past the wait".into()))?;
        if held.may_be_open {
            roll_back(&mut held.connection).await.map_err(|error| {
                StoreError::Unavailable(format!(
                    "sqlite writer: an unfinished transaction could not be rolled back: {error}"
                ))
            })?;
            held.may_be_open = false;
        }
        Ok(WriterGuard(held))
    }

    /// Runs a transaction written with [`in_one_command!`] and returns the rows of each of its
    /// statements, in order (`BEGIN` and `COMMIT` left out): one hop to SQLite's worker thread
    /// instead of one per statement plus two.
    ///
    /// A caller that stops waiting abandons it as it would a `sqlx::Transaction`: the worker
    /// runs at most one more statement, so it commits only if it was already committing, and
    /// the next holder rolls back what ran. A failed statement rolls back what ran before it.
    pub(super) async fn transaction(
        self: &Arc<Self>,
        transaction: Query<'_, Sqlite, SqliteArguments>,
        what: &'static str,
    ) -> StoreResult<Vec<Vec<SqliteRow>>> {
        let mut writer = self.lock().await?;
        // Until this is disarmed, dropping the call leaves the writer to be rolled back at once,
        // not when it is next used: meanwhile the open transaction would hold the database's
        // write lock against other processes (a backup, a migration, a second instance).
        let mut abandoned = RollBackWhenAbandoned(Some(self.clone()));
        let outcome = writer.transaction(transaction, what).await;
        abandoned.0 = None;
        outcome
    }
}

impl WriterGuard<'_> {
    /// [`Writer::transaction`] on a writer already held. Dropped before it ends, it leaves the
    /// transaction to be rolled back (see [`Self::roll_back_abandoned`]).
    async fn transaction(
        &mut self,
        transaction: Query<'_, Sqlite, SqliteArguments>,
        what: &'static str,
    ) -> StoreResult<Vec<Vec<SqliteRow>>> {
        // Counting costs a scan of the text, nothing beside the transaction itself, and a
        // missing argument would write NULL where a value belongs.
        let transaction = checked(transaction)?;
        self.0.may_be_open = true;
        match rows_by_statement(self, transaction).await {
            Ok(statements) => {
                self.0.may_be_open = false;
                let between = statements.len().saturating_sub(2);
                Ok(statements.into_iter().skip(1).take(between).collect())
            }
            Err(error) => {
                self.roll_back_abandoned().await;
                Err(map_error(what, error))
            }
        }
    }

    /// Rolls back what may still be open; if that fails the writer stays marked, so its next
    /// holder finds it `Unavailable` (see [`Writer::lock`]).
    async fn roll_back_abandoned(&mut self) {
        if self.0.may_be_open && roll_back(self).await.is_ok() {
            self.0.may_be_open = false;
        }
    }
}

/// Rolls back, from a task of its own, what an abandoned [`Writer::transaction`] left open.
struct RollBackWhenAbandoned(Option<Arc<Writer>>);

impl Drop for RollBackWhenAbandoned {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // Taking the writer rolls back; the guard is released at once.
            runtime.spawn(async move {
                let _ = writer.lock().await;
            });
        }
    }
}

/// The transaction with its arguments counted against its `?` parameters (none of the
/// statements has a `?` anywhere else): sqlx would bind NULL for a missing argument.
fn checked(
    mut transaction: Query<'_, Sqlite, SqliteArguments>,
) -> StoreResult<Query<'_, Sqlite, SqliteArguments>> {
    let persistent = Execute::persistent(&transaction);
    let arguments = transaction
        .take_arguments()
        .map_err(|error| StoreError::Internal(format!("sqlite transaction arguments: {error}")))?
        .unwrap_or_default();
    let sql = transaction.sql();
    let parameters = sql.as_str().matches('?').count();
    if parameters != arguments.len() {
        return Err(StoreError::Internal(format!(
            "sqlite transaction: {parameters} parameters, {} arguments: {}",
            arguments.len(),
            sql.as_str()
        )));
    }
    Ok(sqlx::query_with(sql, arguments).persistent(persistent))
}

/// The rows of a query of several statements, one list per statement: the worker reports the
/// end of each statement after its rows.
async fn rows_by_statement(
    connection: &mut SqliteConnection,
    query: Query<'_, Sqlite, SqliteArguments>,
) -> Result<Vec<Vec<SqliteRow>>, sqlx::Error> {
    let mut results = connection.fetch_many(query);
    let mut statements = Vec::new();
    let mut rows = Vec::new();
    while let Some(result) = results.try_next().await? {
        match result {
            Either::Left(_) => statements.push(std::mem::take(&mut rows)),
            Either::Right(row) => rows.push(row),
        }
    }
    Ok(statements)
}

/// Rolls back whatever is open; nothing open (the transaction committed, or never began) is
/// fine too.
async fn roll_back(connection: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    match connection.execute("ROLLBACK").await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error))
            if error.message().contains("no transaction is active") =>
        {
            Ok(())
        }
        Err(error) => {
            tracing::warn!(error = %error, "sqlite writer: rollback of an unfinished transaction failed");
            Err(error)
        }
    }
}

/// A thread with a runtime of its own for the busiest write transactions. On the server's
/// runtime the answer to each hop waited behind all the other requests ready to run while the
/// writer was held; there a transaction's task queues only behind other transactions.
pub(super) struct WriteThread {
    writer: Arc<Writer>,
    /// To the write thread's group committer (see `group_commit`).
    groups: tokio::sync::mpsc::UnboundedSender<group_commit::Waiting>,
    /// Transactions started through `run` and not yet finished or abandoned.
    in_flight: Arc<AtomicUsize>,
    /// Dropped with the last store, which ends the thread; last, as before, after `groups`.
    runtime: crate::runtime_thread::RuntimeThread,
}

impl WriteThread {
    /// Starts the thread, and on it the WAL's checkpoints on `checkpoints`, a connection of
    /// their own and the options that open another when it fails (none for a database in
    /// memory, which has no WAL).
    pub(super) fn start(
        writer: Arc<Writer>,
        checkpoints: Option<(SqliteConnection, SqliteConnectOptions)>,
    ) -> StoreResult<Arc<Self>> {
        // Blocks for as long as building a current-thread runtime takes, once per store.
        let runtime = crate::runtime_thread::RuntimeThread::start("sqlite-writes")
            .map_err(StoreError::Internal)?;
        let (groups, grouped) = tokio::sync::mpsc::unbounded_channel();
        runtime
            .handle()
            .spawn(group_commit::keep_committing(writer.clone(), grouped));
        if let Some((connection, options)) = checkpoints {
            runtime
                .handle()
                .spawn(checkpoints::keep_checkpointing(connection, options));
        }
        Ok(Arc::new(Self {
            writer,
            groups,
            in_flight: Arc::new(AtomicUsize::new(0)),
            runtime,
        }))
    }

    /// Commits a transaction and returns each statement's rows. A lone transaction runs where
    /// it was called, as in `run`; one that would queue behind another goes to the write
    /// thread's group committer, which commits it together with the others of its text that
    /// queued meanwhile. Either way a caller that stops waiting abandons it: it is not
    /// committed unless it was already committing.
    pub(super) async fn commit(&self, transaction: Shareable) -> StoreResult<Vec<Vec<SqliteRow>>> {
        let counted = InFlight::enter(self.in_flight.clone());
        if counted.alone {
            return transaction.run_alone(&self.writer).await;
        }
        let (waiting, answered) = group_commit::Waiting::new(transaction, counted);
        self.groups
            .send(waiting)
            .map_err(|_| StoreError::Internal("sqlite write thread: stopped".into()))?;
        answered.await.map_err(|_| {
            StoreError::Internal("sqlite write thread: dropped a transaction".into())
        })?
    }

    /// Runs `work` where it was called when no other transaction is under way, else on the
    /// write thread. Waking the parked write thread costs two thread switches, a quarter of a
    /// lone step-up's time, and a lone transaction has nothing to queue behind anyway.
    ///
    /// A caller that stops waiting abandons the transaction wherever it runs (the task is
    /// aborted, so it rolls back unless it was already committing), as before the write thread:
    /// what callers do after a write (cache announcements, audit events, waking the courier)
    /// must never miss a write that committed.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        let counted = InFlight::enter(self.in_flight.clone());
        if counted.alone {
            return work.await;
        }
        let task = AbortOnDrop(self.runtime.handle().spawn(async move {
            let _counted = counted;
            work.await
        }));
        task.await
            .map_err(|error| StoreError::Internal(format!("sqlite write task: {error}")))?
    }
}

/// Counts a transaction in `WriteThread::in_flight` for as long as it lives.
struct InFlight {
    count: Arc<AtomicUsize>,
    alone: bool,
}

impl InFlight {
    fn enter(count: Arc<AtomicUsize>) -> Self {
        // Only a heuristic for where to run: a stale read costs a thread switch, nothing more.
        let before = count.fetch_add(1, Ordering::Relaxed);
        Self {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A task that is aborted when its caller stops waiting for it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(context)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Row};
    use std::str::FromStr;

    pub(in crate::store) fn thread_name() -> StoreResult<Option<String>> {
        Ok(std::thread::current().name().map(str::to_owned))
    }

    /// A writer on a database file with one table, and the file's DSN for a second connection.
    async fn writer_on_file(dir: &tempfile::TempDir) -> (Arc<Writer>, String) {
        let dsn = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("writes.sqlite").display()
        );
        let mut connection = other_connection(&dsn, Duration::from_secs(5)).await;
        connection
            .execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
            .await
            .expect("create table");
        (
            Arc::new(Writer::new(connection, Duration::from_secs(5))),
            dsn,
        )
    }

    async fn memory_writer() -> Arc<Writer> {
        let connection = other_connection("sqlite::memory:", Duration::from_secs(5)).await;
        Arc::new(Writer::new(connection, Duration::from_secs(5)))
    }

    const TWO_ITEMS: &str = in_one_command!(
        "INSERT INTO items VALUES (?)",
        "INSERT INTO items VALUES (?)"
    );

    async fn items(writer: &Writer) -> Vec<i64> {
        sqlx::query_scalar("SELECT id FROM items ORDER BY id")
            .fetch_all(&mut *writer.lock().await.expect("writer"))
            .await
            .expect("read items")
    }

    /// Each statement takes its own arguments, in order, and its own rows come back apart.
    #[tokio::test]
    async fn a_transaction_in_one_command_returns_each_statements_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _) = writer_on_file(&dir).await;
        let statements = writer
            .transaction(
                sqlx::query(in_one_command!(
                    "INSERT INTO items VALUES (?) RETURNING id",
                    "INSERT INTO items VALUES (?)",
                    "SELECT id FROM items WHERE id > ? ORDER BY id"
                ))
                .bind(1)
                .bind(2)
                .bind(0),
                "insert",
            )
            .await
            .expect("committed");
        assert_eq!(ids(&statements), [vec![1], vec![], vec![1, 2]]);
        assert_eq!(items(&writer).await, [1, 2]);
    }

    /// A connection to `dsn` that waits at most `wait` for the database's lock: the writer's, or
    /// a second one to its file.
    pub(super) async fn other_connection(dsn: &str, wait: Duration) -> SqliteConnection {
        SqliteConnectOptions::from_str(dsn)
            .expect("dsn")
            .busy_timeout(wait)
            .connect()
            .await
            .expect("open")
    }

    /// A failed statement undoes the ones before it at once (the database's lock is free
    /// before the writer is used again), and the writer is free for the next.
    #[tokio::test]
    async fn a_failed_statement_rolls_back_the_whole_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, dsn) = writer_on_file(&dir).await;
        let failed = writer
            .transaction(sqlx::query(TWO_ITEMS).bind(1).bind(1), "insert")
            .await;
        assert!(failed.is_err(), "the second insert repeats the key");
        let mut other = other_connection(&dsn, Duration::from_millis(200)).await;
        other
            .execute("BEGIN IMMEDIATE")
            .await
            .expect("nothing holds the lock");
        other.execute("ROLLBACK").await.expect("free the lock");
        assert_eq!(items(&writer).await, Vec::<i64>::new());
        writer
            .transaction(sqlx::query(TWO_ITEMS).bind(3).bind(4), "insert")
            .await
            .expect("the next transaction runs");
        assert_eq!(items(&writer).await, [3, 4]);
    }

    /// A transaction's arguments are counted against its parameters in every build: sqlx would
    /// bind NULL for a missing one.
    #[tokio::test]
    async fn a_transaction_short_of_arguments_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _) = writer_on_file(&dir).await;
        let refused = writer
            .transaction(sqlx::query(TWO_ITEMS).bind(1), "insert")
            .await;
        assert!(
            matches!(refused, Err(StoreError::Internal(_))),
            "{refused:?}"
        );
        assert_eq!(items(&writer).await, Vec::<i64>::new());
    }

    /// The transaction's command is on its way when its caller stops waiting: its `BEGIN` waits
    /// for a lock another connection holds, so nothing after it can have run. What began is
    /// rolled back before the writer's next holder uses it.
    #[tokio::test]
    async fn a_sent_transaction_whose_caller_stops_waiting_is_rolled_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, dsn) = writer_on_file(&dir).await;
        let mut other = other_connection(&dsn, Duration::from_secs(5)).await;
        other
            .execute("BEGIN IMMEDIATE")
            .await
            .expect("take the lock");
        let sent = futures_util::FutureExt::now_or_never(
            writer.transaction(sqlx::query(TWO_ITEMS).bind(1).bind(2), "insert"),
        );
        assert!(sent.is_none(), "waiting for the database's lock");
        other.execute("ROLLBACK").await.expect("free the lock");
        // Nobody uses the writer meanwhile: the abandoned `BEGIN` is rolled back anyway, or
        // this would wait out the busy timeout and fail.
        other
            .execute("BEGIN IMMEDIATE")
            .await
            .expect("the abandoned transaction let go of the lock");
        other.execute("ROLLBACK").await.expect("free the lock");
        writer
            .transaction(sqlx::query(TWO_ITEMS).bind(3).bind(4), "insert")
            .await
            .expect("the next transaction runs");
        assert_eq!(items(&writer).await, [3, 4]);
    }

    /// The writer on a file in WAL mode that never checkpoints by itself, so the frames in its
    /// WAL count what its commits appended.
    pub(super) async fn writer_on_wal(dir: &tempfile::TempDir) -> (Arc<Writer>, String) {
        let (writer, dsn) = writer_on_file(dir).await;
        {
            let mut connection = writer.lock().await.expect("writer");
            connection
                .execute("PRAGMA journal_mode = WAL")
                .await
                .expect("wal");
            connection
                .execute("PRAGMA wal_autocheckpoint = 0")
                .await
                .expect("no automatic checkpoints");
        }
        (writer, dsn)
    }

    /// Empties the WAL into the database, so that it counts from nothing again.
    async fn empty_wal(writer: &Writer) {
        writer
            .lock()
            .await
            .expect("writer")
            .execute("PRAGMA wal_checkpoint(TRUNCATE)")
            .await
            .expect("checkpoint");
    }

    async fn wal_frames(writer: &Writer) -> i64 {
        let (_busy, frames, _checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *writer.lock().await.expect("writer"))
                .await
                .expect("count frames");
        frames
    }

    /// A writer on a WAL and its write thread, with the frames that one commit of one row (id
    /// 0) appends to the WAL, which is empty again after it.
    async fn measured_commit(dir: &tempfile::TempDir) -> (Arc<Writer>, Arc<WriteThread>, i64) {
        let (writer, _) = writer_on_wal(dir).await;
        let thread = WriteThread::start(writer.clone(), None).expect("start");
        empty_wal(&writer).await;
        thread.commit(insert_item(0)).await.expect("alone");
        let one_commit = wal_frames(&writer).await;
        assert!(one_commit > 0, "a commit appends to the WAL");
        empty_wal(&writer).await;
        (writer, thread, one_commit)
    }

    fn insert_item(id: i64) -> Shareable {
        Shareable::new(
            statements!("INSERT INTO items VALUES (?) RETURNING id"),
            1,
            "insert item",
            move |query| query.bind(id),
        )
    }

    /// Holds the writer from a transaction counted as under way (alone, it runs on the test's
    /// own task) until released, so that what is committed meanwhile queues for the group
    /// committer.
    async fn hold_writer(thread: &Arc<WriteThread>, writer: &Arc<Writer>) -> HeldWriter {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (held, holding) = tokio::sync::oneshot::channel::<()>();
        let (thread, writer) = (thread.clone(), writer.clone());
        let holder = tokio::spawn(async move {
            thread
                .run(async move {
                    let _writer = writer.lock().await?;
                    let _ = held.send(());
                    let _ = released.await;
                    Ok(())
                })
                .await
        });
        holding.await.expect("the writer is held");
        HeldWriter { release, holder }
    }

    struct HeldWriter {
        release: tokio::sync::oneshot::Sender<()>,
        holder: tokio::task::JoinHandle<StoreResult<()>>,
    }

    impl HeldWriter {
        async fn release(self) {
            self.release.send(()).expect("the holder waits");
            self.holder.await.expect("joined").expect("held");
        }
    }

    /// Polls the queued transactions once, which sends them, and checks they wait.
    fn assert_queued(queued: std::pin::Pin<&mut impl Future>) {
        assert!(
            futures_util::FutureExt::now_or_never(queued).is_none(),
            "queued behind the writer's holder"
        );
    }

    /// Commits transactions queued together behind a held writer, so that they meet the group
    /// committer at once, and returns their answers in order.
    async fn commit_queued(
        thread: &Arc<WriteThread>,
        writer: &Arc<Writer>,
        transactions: Vec<Shareable>,
    ) -> Vec<StoreResult<Vec<Vec<SqliteRow>>>> {
        let held = hold_writer(thread, writer).await;
        let queued = futures_util::future::join_all(
            transactions
                .into_iter()
                .map(|transaction| thread.commit(transaction)),
        );
        tokio::pin!(queued);
        assert_queued(queued.as_mut());
        held.release().await;
        queued.await
    }

    fn ids(statements: &[Vec<SqliteRow>]) -> Vec<Vec<i64>> {
        statements
            .iter()
            .map(|rows| rows.iter().map(|row| row.get::<i64, _>(0)).collect())
            .collect()
    }

    /// Transactions of one text that queued while the writer was busy are committed in one
    /// commit: the WAL grows by what one commit of a row appends, not three. Each caller gets
    /// its own statements' rows.
    #[tokio::test]
    async fn transactions_queued_for_the_writer_commit_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, thread, one_commit) = measured_commit(&dir).await;

        let answers = commit_queued(
            &thread,
            &writer,
            vec![insert_item(2), insert_item(3), insert_item(4)],
        )
        .await;
        let answered: Vec<_> = answers
            .into_iter()
            .map(|rows| ids(&rows.expect("committed")))
            .collect();
        assert_eq!(answered, [[vec![2]], [vec![3]], [vec![4]]]);
        assert_eq!(
            wal_frames(&writer).await,
            one_commit,
            "one commit for the three"
        );
        assert_eq!(items(&writer).await, [0, 2, 3, 4]);
    }

    /// Transactions queued with two texts, more than a group's worth of one: a group takes the
    /// first transaction's text and at most 8, the others keep their places. Three commits for
    /// twelve transactions, each answered with its own rows.
    #[tokio::test]
    async fn queued_transactions_group_by_text_and_at_most_eight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, thread, one_commit) = measured_commit(&dir).await;

        let insert_two = |id: i64| {
            Shareable::new(
                statements!(
                    "INSERT INTO items VALUES (?) RETURNING id",
                    "INSERT INTO items VALUES (?) RETURNING id"
                ),
                2,
                "insert two items",
                move |query| query.bind(id).bind(id + 1),
            )
        };
        // Ten single inserts (ids 1 to 10) with two double inserts (20, 21 and 40, 41) among them.
        let mut transactions = Vec::new();
        for id in 1..=10 {
            transactions.push(insert_item(id));
            match id {
                3 => transactions.push(insert_two(20)),
                6 => transactions.push(insert_two(40)),
                _ => {}
            }
        }
        let answered: Vec<Vec<Vec<i64>>> = commit_queued(&thread, &writer, transactions)
            .await
            .into_iter()
            .map(|rows| ids(&rows.expect("committed")))
            .collect();
        let expected: Vec<Vec<Vec<i64>>> = vec![
            vec![vec![1]],
            vec![vec![2]],
            vec![vec![3]],
            vec![vec![20], vec![21]],
            vec![vec![4]],
            vec![vec![5]],
            vec![vec![6]],
            vec![vec![40], vec![41]],
            vec![vec![7]],
            vec![vec![8]],
            vec![vec![9]],
            vec![vec![10]],
        ];
        assert_eq!(answered, expected);
        // Singles 1 to 8, then both doubles, then singles 9 and 10.
        assert_eq!(wal_frames(&writer).await, 3 * one_commit);
    }

    /// A transaction short of arguments in a group does not take the next one's: the group's
    /// arguments are counted, and each transaction runs alone instead.
    #[tokio::test]
    async fn a_transaction_short_of_arguments_does_not_take_the_next_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _) = writer_on_file(&dir).await;
        let thread = WriteThread::start(writer.clone(), None).expect("start");
        let short = Shareable::new(
            statements!("INSERT INTO items VALUES (?) RETURNING id"),
            1,
            "insert item",
            |query| query,
        );
        let answers = commit_queued(
            &thread,
            &writer,
            vec![insert_item(1), short, insert_item(3)],
        )
        .await;
        let [first, short, third] = <[_; 3]>::try_from(answers).expect("three answers");
        assert_eq!(ids(&first.expect("committed")), [vec![1]]);
        // Refused alone too, rather than inserting NULL, which would be a new row id.
        assert!(matches!(short, Err(StoreError::Internal(_))), "{short:?}");
        assert_eq!(ids(&third.expect("committed")), [vec![3]]);
    }

    /// A panic in the group committer (here a transaction whose binding panics, as a bug in a
    /// store's binding would) fails that transaction's caller only: the committer starts again
    /// and commits what had queued behind it and what comes later. Two such transactions in a
    /// row are two groups, not a panic outside any group, so what waits behind them is kept.
    /// Without the restart every later queued transaction fails with "stopped".
    #[tokio::test]
    async fn the_group_committer_starts_again_after_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _) = writer_on_file(&dir).await;
        let thread = WriteThread::start(writer.clone(), None).expect("start");
        // Texts other than `insert_item`'s and each other's, so each is a group of its own.
        let panicking = |statement: &'static str| {
            Shareable::new(statement, 1, "insert item with a broken binding", |_| {
                panic!("a binding that panics")
            })
        };
        let answers = commit_queued(
            &thread,
            &writer,
            vec![
                panicking("INSERT INTO items SELECT ? RETURNING id; "),
                panicking("INSERT INTO items SELECT ? + 0 RETURNING id; "),
                insert_item(1),
                insert_item(2),
            ],
        )
        .await;
        let [panicked, panicked_again, first, second] =
            <[_; 4]>::try_from(answers).expect("four answers");
        for answer in [panicked, panicked_again] {
            assert!(matches!(answer, Err(StoreError::Internal(_))), "{answer:?}");
        }
        assert_eq!(ids(&first.expect("queued behind them")), [vec![1]]);
        assert_eq!(ids(&second.expect("queued behind them")), [vec![2]]);

        let later = commit_queued(&thread, &writer, vec![insert_item(3), insert_item(4)]).await;
        for (answer, id) in later.into_iter().zip([3, 4]) {
            assert_eq!(ids(&answer.expect("committed later")), [vec![id]]);
        }
        assert_eq!(items(&writer).await, [1, 2, 3, 4]);
    }

    /// A statement that fails in a group fails its own transaction only: the others commit.
    #[tokio::test]
    async fn a_failed_transaction_in_a_group_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, _) = writer_on_file(&dir).await;
        let thread = WriteThread::start(writer.clone(), None).expect("start");
        let answers = commit_queued(
            &thread,
            &writer,
            vec![insert_item(1), insert_item(1), insert_item(2)],
        )
        .await;
        let [first, repeated, other] = <[_; 3]>::try_from(answers).expect("three answers");
        assert_eq!(ids(&first.expect("committed")), [vec![1]]);
        assert!(repeated.is_err(), "the key is taken");
        assert_eq!(ids(&other.expect("committed")), [vec![2]]);
        assert_eq!(items(&writer).await, [1, 2]);
    }

    /// A caller that stops waiting while its group runs is not committed behind its back: the
    /// group is rolled back and the others commit without it. The group's `BEGIN` waits for a
    /// lock another connection holds, so the caller leaves after the group was formed (given
    /// 100 ms to get there; a committer slower than that would find the caller gone before it
    /// formed the group, and the test would check that path instead).
    #[tokio::test]
    async fn a_caller_that_leaves_a_running_group_is_not_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, dsn) = writer_on_file(&dir).await;
        let thread = WriteThread::start(writer.clone(), None).expect("start");
        let held = hold_writer(&thread, &writer).await;
        let staying = futures_util::future::join(
            thread.commit(insert_item(1)),
            thread.commit(insert_item(3)),
        );
        tokio::pin!(staying);
        assert_queued(staying.as_mut());
        let mut leaving = Box::pin(thread.commit(insert_item(2)));
        assert_queued(leaving.as_mut());

        let mut other = other_connection(&dsn, Duration::from_secs(5)).await;
        other
            .execute("BEGIN IMMEDIATE")
            .await
            .expect("take the lock");
        held.release().await;
        // The group committer takes the writer, forms the group and waits in its `BEGIN`.
        while writer.held.try_lock().is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(leaving);
        other.execute("ROLLBACK").await.expect("free the lock");

        let (first, third) = staying.await;
        assert_eq!(ids(&first.expect("committed")), [vec![1]]);
        assert_eq!(ids(&third.expect("committed")), [vec![3]]);
        assert_eq!(items(&writer).await, [1, 3]);
    }

    /// A lone transaction runs where it was called; one that would queue behind another runs on
    /// the write thread.
    #[tokio::test]
    async fn only_a_transaction_behind_another_goes_to_the_write_thread() {
        let thread = WriteThread::start(memory_writer().await, None).expect("start");
        let alone = thread.run(async { thread_name() }).await.expect("ran");
        assert_ne!(alone.as_deref(), Some("sqlite-writes"));

        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = thread.run(async move {
            let _ = released.await;
            thread_name()
        });
        tokio::pin!(first);
        assert!(
            futures_util::FutureExt::now_or_never(first.as_mut()).is_none(),
            "still under way"
        );
        let behind = thread.run(async { thread_name() }).await.expect("ran");
        assert_eq!(behind.as_deref(), Some("sqlite-writes"));
        release.send(()).expect("first still waits");
        assert_ne!(first.await.expect("ran").as_deref(), Some("sqlite-writes"));
        let alone_again = thread.run(async { thread_name() }).await.expect("ran");
        assert_ne!(
            alone_again.as_deref(),
            Some("sqlite-writes"),
            "the count went back"
        );
    }

    #[tokio::test]
    async fn the_write_thread_stops_when_dropped() {
        let thread = WriteThread::start(memory_writer().await, None).expect("start");
        let (held, released) = tokio::sync::oneshot::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        thread.runtime.handle().spawn(async move {
            let _held = held;
            let _ = started.send(());
            std::future::pending::<()>().await;
        });
        running.await.expect("the task ran");
        drop(thread);
        let ended = tokio::time::timeout(Duration::from_secs(5), released)
            .await
            .expect("the thread's runtime shut down");
        assert!(ended.is_err(), "its tasks were dropped, not completed");
    }
}
