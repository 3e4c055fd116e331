//! Checkpoints of the embedded store's WAL, run on a connection of their own instead of by the
//! writer.
//!
//! SQLite's automatic checkpoint runs in the writer's commit once the WAL holds 1,000 pages: it
//! syncs the WAL, copies its pages into the database file and syncs that. Under a step-up load
//! that came about every 50 ms and held the writer for about 6 ms each time (two `fsync`s and
//! the copy), and every write that queued meanwhile waited it out. Here a checkpoint that waits
//! for nobody (`PASSIVE`) copies the pages every [`CHECKPOINT_EVERY`] from another connection,
//! while the writer goes on appending; its `fsync`s block that connection's thread, not the
//! writer.
//!
//! SQLite starts the WAL from its beginning again only at a write that finds every page copied
//! and no reader on an older snapshot. Under a steady load a write always comes while a
//! checkpoint runs, so the WAL grows until the writer's own automatic checkpoint, moved out to
//! [`WRITER_CHECKPOINTS_AT`] pages, copies the few pages the last checkpoint left and lets the
//! next write start afresh: the writer still waits for the `fsync`s, but typically once every
//! 16,384 pages (about a second at the embedded peak) instead of every 1,000. That checkpoint
//! is `PASSIVE` too: if it finds this connection's checkpoint under way, it does nothing and
//! tries again after the next commit. Between loads the WAL starts afresh at the first write
//! after a checkpoint. A reader looks up only the pages appended since the last checkpoint;
//! the WAL file is cut back to [`WAL_FILE_KEPT`] bytes when it starts afresh.
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::time::{Duration, Instant};

/// How often the WAL is copied. A round with nothing new costs a hop to the connection's thread;
/// one with pages to copy costs an `fsync` of the WAL on that thread, and one of the database
/// file when it catches up with the WAL's end.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// How long after a failed round the checkpoints open a new connection. A connection whose
/// worker thread died fails every round, so a failed round gives up its connection; opening one
/// starts a thread, so a failure that lasts (a disk that refuses writes) is not met with twenty
/// new threads a second.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// The writer's own automatic checkpoint (`wal_autocheckpoint`), in pages: 64 MiB with SQLite's
/// 4 KiB pages.
pub(in crate::store) const WRITER_CHECKPOINTS_AT: i64 = 16_384;

/// The WAL file's size kept when it starts afresh (`journal_size_limit`): SQLite reuses the file
/// from its beginning, and without a limit it would keep whatever size a long load grew it to.
pub(in crate::store) const WAL_FILE_KEPT: i64 = 64 << 20;

/// What `PRAGMA wal_checkpoint` reports.
#[derive(Debug)]
struct Checkpoint {
    /// Whether it could not run at all because another checkpoint held the database; the two
    /// counts are then -1.
    busy: bool,
    /// Pages in the WAL when it ran.
    in_wal: i64,
    /// Of those, the pages now copied into the database file.
    copied: i64,
}

/// Runs one checkpoint that waits for nobody.
async fn passive(connection: &mut SqliteConnection) -> Result<Checkpoint, sqlx::Error> {
    let (busy, in_wal, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(connection)
        .await?;
    Ok(Checkpoint {
        busy: busy != 0,
        in_wal,
        copied,
    })
}

/// Checkpoints every [`CHECKPOINT_EVERY`] until the task is dropped with the write thread's
/// runtime, on `connection` and, after a round that failed, on a new one opened from `options`.
pub(super) async fn keep_checkpointing(
    connection: SqliteConnection,
    options: SqliteConnectOptions,
) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection = Some(connection);
    let mut reopen_at = Instant::now();
    let mut failing = false;
    loop {
        ticks.tick().await;
        if connection.is_none() && Instant::now() >= reopen_at {
            match options.connect().await {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    reopen_at = Instant::now() + REOPEN_AFTER;
                    report_failure(&mut failing, &error);
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        match passive(open).await {
            Ok(round) => {
                // Every 50 ms, so only at trace level: what the WAL did under a load, when a p99
                // has to be explained.
                tracing::trace!(
                    busy = round.busy,
                    in_wal = round.in_wal,
                    copied = round.copied,
                    "sqlite checkpoint"
                );
                if failing {
                    failing = false;
                    tracing::info!("sqlite checkpoints: working again");
                }
            }
            Err(error) => {
                connection = None;
                reopen_at = Instant::now() + REOPEN_AFTER;
                report_failure(&mut failing, &error);
            }
        }
    }
}

/// Said once per spell, not every round; the writer's own checkpoint is the fallback meanwhile.
fn report_failure(failing: &mut bool, error: &sqlx::Error) {
    if !*failing {
        *failing = true;
        tracing::warn!(
            %error,
            fallback_pages = WRITER_CHECKPOINTS_AT,
            "sqlite checkpoints: failed; the writer checkpoints by itself past the fallback"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{other_connection, writer_on_wal};
    use super::*;
    use sqlx::Executor;
    use std::str::FromStr;

    /// Commits four rows of 64 KiB, 16 pages each, into the WAL of `writer_on_wal`'s writer,
    /// which does not checkpoint by itself.
    async fn four_blobs_in_the_wal(writer: &super::super::Writer) {
        let mut held = writer.lock().await.expect("writer");
        held.execute("CREATE TABLE blobs (data BLOB)")
            .await
            .expect("create table");
        for _ in 0..4 {
            held.execute("INSERT INTO blobs VALUES (randomblob(65536))")
                .await
                .expect("insert");
        }
    }

    /// A checkpoint on a connection of its own copies every committed page of the WAL while
    /// the writer is in the middle of a write transaction: it never waits for a write (one that
    /// did, `FULL` or `RESTART`, would wait out the busy timeout).
    #[tokio::test]
    async fn a_checkpoint_copies_the_wal_while_the_writer_is_held() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, dsn) = writer_on_wal(&dir).await;
        four_blobs_in_the_wal(&writer).await;
        let mut connection = other_connection(&dsn, Duration::from_secs(5)).await;

        let mut held = writer.lock().await.expect("writer");
        held.execute("BEGIN IMMEDIATE").await.expect("begin");
        held.execute("INSERT INTO blobs VALUES (randomblob(65536))")
            .await
            .expect("insert, not committed");
        let checkpoint = tokio::time::timeout(Duration::from_secs(2), passive(&mut connection))
            .await
            .expect("the checkpoint does not wait for the writer")
            .expect("checkpointed");
        held.execute("ROLLBACK").await.expect("roll back");
        drop(held);

        assert!(!checkpoint.busy);
        assert!(
            checkpoint.in_wal >= 64,
            "four rows of 16 pages: {checkpoint:?}"
        );
        assert_eq!(checkpoint.copied, checkpoint.in_wal, "every page copied");
    }

    /// A connection whose checkpoints fail is replaced by a new one from the store's options, and
    /// the WAL is copied again. The first connection here is read-only, so every checkpoint on it
    /// fails, as one on a connection whose worker thread died would.
    #[tokio::test]
    async fn a_connection_whose_checkpoints_fail_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, dsn) = writer_on_wal(&dir).await;
        let database = dir.path().join("writes.sqlite");
        let before = std::fs::metadata(&database).expect("database file").len();
        four_blobs_in_the_wal(&writer).await;
        let options = SqliteConnectOptions::from_str(&dsn)
            .expect("dsn")
            .busy_timeout(Duration::from_secs(5));
        let mut read_only = options
            .clone()
            .read_only(true)
            .connect()
            .await
            .expect("open");
        passive(&mut read_only)
            .await
            .expect_err("a read-only connection cannot checkpoint");

        let checkpoints = tokio::spawn(keep_checkpointing(read_only, options));
        // Only a checkpoint moves the rows' pages from the WAL into the database file.
        let copied = async {
            loop {
                let size = std::fs::metadata(&database).expect("database file").len();
                if size >= before + 4 * 65536 {
                    return;
                }
                tokio::time::sleep(CHECKPOINT_EVERY).await;
            }
        };
        let was_copied = tokio::time::timeout(REOPEN_AFTER * 5, copied).await.is_ok();
        checkpoints.abort();
        assert!(
            was_copied,
            "the WAL was not copied: the database file stayed at {} bytes",
            std::fs::metadata(&database).expect("database file").len()
        );
    }
}
