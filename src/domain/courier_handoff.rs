//! Hands a queued message straight to the courier worker of the same process, so the worker
//! does not claim it back from the outbox. The message is written already processing, under the
//! same lease a claim gives, in the transaction that queues it; if the worker dies before
//! recording an attempt, the lease runs out and any worker claims it, as a claimed message.
//!
//! A claim costs a statement per round and a new row version, with its index entries, per
//! message: at 1,270 step-ups/s, claims ran 0.79 s of the 2.06 s the courier's statements ran
//! per 20 s on Postgres (docs/performance.md, "After the seventeenth pass").
use crate::store::codes::OutboxMessage;
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a claimed or handed-over message stays with its worker before another may take it
/// over (its worker died).
pub const LEASE: Duration = Duration::from_secs(60);

/// Messages handed over and not yet taken by the worker. When they are this many, further
/// messages are queued to be claimed, as without a hand-over: a worker that fell behind holds no
/// more than a round's worth under its lease.
pub const CAPACITY: usize = 64;

/// When a lease taken at `now` runs out.
pub fn lease_end(now: DateTime<Utc>) -> DateTime<Utc> {
    TimeDelta::from_std(LEASE)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The door between the requests that queue messages and the worker that delivers them. Closed
/// until a worker opens it: a process without a running worker (a test driving rounds by hand,
/// a worker that stopped) queues every message to be claimed.
#[derive(Default)]
pub struct CourierHandoff {
    open: Mutex<Option<mpsc::Sender<OutboxMessage>>>,
}

/// Room for one message, taken before it is queued so that a message written as handed over
/// always has a place to go. Dropped unused, the room is given back.
pub struct Slot(mpsc::OwnedPermit<OutboxMessage>);

impl CourierHandoff {
    /// Opens the door for the worker that takes what comes through the returned receiver. A
    /// second call replaces the first worker's door.
    pub fn open(&self) -> mpsc::Receiver<OutboxMessage> {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        *self.lock() = Some(sender);
        receiver
    }

    /// No message is handed over from now on. Rooms already taken can still be used, so the
    /// worker drains its receiver until it answers `None`.
    pub fn close(&self) {
        self.lock().take();
    }

    /// Room for one message, or `None` when no worker is listening or its room is used up.
    pub fn reserve(&self) -> Option<Slot> {
        let sender = self.lock().clone()?;
        sender.try_reserve_owned().ok().map(Slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<OutboxMessage>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slot {
    /// Hands the queued message to the worker. It must have been written processing, under a
    /// lease.
    pub fn hand_over(self, message: OutboxMessage) {
        self.0.send(message);
    }
}
