//! The password hashing threads free their 19 MiB blocks once no hash has needed them for a
//! while, and then sleep until the next hash. A binary of its own, so no other test hashes at the
//! same time and refills the blocks.
use std::time::{Duration, Instant};
use twofold::domain::password::{self, IDLE_MEMORY_RELEASED_AFTER};

#[tokio::test]
async fn hashing_memory_is_kept_between_runs_and_freed_once_idle() {
    let asked = Instant::now();
    let stored = password::hash("correct horse battery".into())
        .await
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    // The answer is sent before the thread puts its block back.
    let answered = Instant::now();
    while password::spare_memory_bytes() == 0 && answered.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        password::spare_memory_bytes() >= 19 * 1024 * 1024,
        "the block of the run just finished is kept for the next one"
    );

    let finished = Instant::now();
    // Freed by whichever thread is waiting for work, when its wait for the next job times out.
    let deadline = finished + IDLE_MEMORY_RELEASED_AFTER + Duration::from_secs(3);
    while password::spare_memory_bytes() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        password::spare_memory_bytes(),
        0,
        "still held {:?} after the last run",
        finished.elapsed()
    );
    // The block was put back after `asked`, so this cannot fail on a slow machine.
    assert!(
        asked.elapsed() >= IDLE_MEMORY_RELEASED_AFTER,
        "freed {:?} after the hash was asked for, before it had been idle long enough",
        asked.elapsed()
    );

    // With nothing left to free, the threads wait for work alone: an idle server's hashing
    // threads do not wake up.
    let woken = password::idle_wake_ups();
    tokio::time::sleep(IDLE_MEMORY_RELEASED_AFTER * 6).await;
    assert_eq!(
        password::idle_wake_ups(),
        woken,
        "a hashing thread woke with nothing to free"
    );
}
