//! Hands a queued message straight to the courier worker of the same process, so the worker
//! does not claim it back from the outbox. The message is written already processing, under the
//! same lease a claim gives, in the transaction that queues it; if the worker dies before
//! recording an attempt, the lease runs out and any worker claims it, as a claimed message.
//!
//! A claim costs a statement per round and a new row version, with its index entries, per
//! message: at 1,270 step-ups/s, claims ran 0.79 s of the 2.06 s the courier's statements ran
//! per 20 s on Postgres (docs/performance.md, "After the seventeenth pass").
use crate::store::StoreResult;
use crate::store::codes::{AuditEvent, Outbox, OutboxMessage};
use chrono::{DateTime, TimeDelta, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a claimed or handed-over message stays with its worker before another may take it
/// over (its worker died).
pub const LEASE: Duration = Duration::from_secs(60);

/// Messages handed over and not yet taken by the worker. When they are this many, further
/// messages are queued to be claimed, as without a hand-over, so a worker that fell behind holds
/// at most this many waiting under their leases besides the round it is delivering.
pub const CAPACITY: usize = 64;

/// When a lease taken at `now` runs out.
pub fn lease_end(now: DateTime<Utc>) -> DateTime<Utc> {
    TimeDelta::from_std(LEASE)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether a handed-over message may still be delivered by the worker it was handed to at `now`:
/// at least half its lease is left. One that waited longer (a worker far behind) is left to a
/// claim, which may already have taken it; delivering it too would send it twice.
pub fn still_handed(message: &OutboxMessage, now: DateTime<Utc>) -> bool {
    let half = TimeDelta::from_std(LEASE / 2).unwrap_or(TimeDelta::MAX);
    message
        .lease_until
        .and_then(|until| until.checked_sub_signed(half))
        .is_some_and(|latest| now < latest)
}

/// The way between the requests that queue messages and the worker that delivers them. Closed
/// until a worker opens it: a process without a running worker (a test driving rounds by hand,
/// a worker that stopped) queues every message to be claimed.
#[derive(Default)]
pub struct CourierHandoff {
    open: Mutex<Option<mpsc::Sender<OutboxMessage>>>,
}

/// The worker's end of an open hand-over.
pub struct Door {
    receiver: mpsc::Receiver<OutboxMessage>,
    /// Tells this door's channel from a later one's when it is closed.
    sender: mpsc::Sender<OutboxMessage>,
}

/// Room for one message, taken before it is queued so that a message written as handed over
/// has a place to go. Dropped unused, the room is given back.
pub struct Slot(mpsc::OwnedPermit<OutboxMessage>);

impl CourierHandoff {
    /// Opens the hand-over for the worker that takes what comes through the door. `None` while
    /// another worker's is open: that one keeps it, and this one works by claims alone.
    pub fn open(&self) -> Option<Door> {
        let mut open = self.lock();
        if open.as_ref().is_some_and(|sender| !sender.is_closed()) {
            return None;
        }
        let (sender, receiver) = mpsc::channel(CAPACITY);
        *open = Some(sender.clone());
        Some(Door { receiver, sender })
    }

    /// No message is handed through `door` from now on. Rooms already taken can still be used,
    /// so the worker drains the door until it answers `None`.
    pub fn close(&self, door: &mut Door) {
        let mut open = self.lock();
        if open
            .as_ref()
            .is_some_and(|sender| sender.same_channel(&door.sender))
        {
            *open = None;
        }
        door.receiver.close();
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

impl Door {
    /// The next message handed over; `None` once the door is closed and drained.
    pub async fn recv(&mut self) -> Option<OutboxMessage> {
        self.receiver.recv().await
    }

    /// A message handed over by now, if any.
    pub fn try_recv(&mut self) -> Option<OutboxMessage> {
        self.receiver.try_recv().ok()
    }
}

impl Slot {
    /// Hands the queued message to the worker. It must have been written processing, under a
    /// lease.
    pub fn hand_over(self, message: OutboxMessage) {
        self.0.send(message);
    }
}

/// Queues `message`, written processing under its lease, and hands it over through `slot` once
/// written. Both happen even if the caller stops waiting once the write is under way (a
/// deadline, a client gone): left half done, the message would wait out its lease. A write that
/// fails gives the room back; one that committed but could not say so waits for its lease, and
/// then any worker claims it.
pub async fn queue_and_hand_over(
    outbox: Arc<dyn Outbox>,
    slot: Slot,
    message: OutboxMessage,
    audit: AuditEvent,
) -> StoreResult<()> {
    FinishedEvenIfDropped::new(async move {
        outbox.enqueue(&message, &audit).await?;
        slot.hand_over(message);
        Ok(())
    })
    .await
}

/// Polls `work` in place and, if dropped before it finished, moves it to a task of its own to
/// finish there: the usual call costs no task.
struct FinishedEvenIfDropped<Work: Future<Output = StoreResult<()>> + Send + 'static> {
    work: Option<Pin<Box<Work>>>,
}

impl<Work: Future<Output = StoreResult<()>> + Send + 'static> FinishedEvenIfDropped<Work> {
    fn new(work: Work) -> Self {
        Self {
            work: Some(Box::pin(work)),
        }
    }
}

impl<Work: Future<Output = StoreResult<()>> + Send + 'static> Future
    for FinishedEvenIfDropped<Work>
{
    type Output = StoreResult<()>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Polled again after it finished: nothing more will come.
        let Some(work) = this.work.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(work.as_mut().poll(context));
        this.work = None;
        Poll::Ready(output)
    }
}

impl<Work: Future<Output = StoreResult<()>> + Send + 'static> Drop for FinishedEvenIfDropped<Work> {
    fn drop(&mut self) {
        // Outside a runtime (it is shutting down) there is nothing left to finish on.
        if let (Some(work), Ok(runtime)) = (self.work.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(error) = work.await {
                    tracing::warn!(
                        error = %error,
                        "a message queued for a request that stopped waiting failed"
                    );
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aal::Channel;
    use crate::store::codes::MessageStatus;

    fn message(lease_until: Option<DateTime<Utc>>) -> OutboxMessage {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        OutboxMessage {
            id: uuid::Uuid::now_v7(),
            channel: Channel::Sms,
            recipient: "+15550100".into(),
            template_type: "login_code".into(),
            locale: "en".into(),
            sealed_data: vec![1],
            identity_id: None,
            status: MessageStatus::Processing,
            send_count: 0,
            not_after: None,
            next_attempt_at: at,
            lease_until,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn room_runs_out_at_capacity_and_comes_back_when_a_slot_is_dropped() {
        let handoff = CourierHandoff::default();
        assert!(
            handoff.reserve().is_none(),
            "closed until a worker opens it"
        );
        let _door = handoff.open().expect("opens");
        let slots: Vec<Slot> = (0..CAPACITY).map_while(|_| handoff.reserve()).collect();
        assert_eq!(slots.len(), CAPACITY);
        assert!(
            handoff.reserve().is_none(),
            "full: the message is queued to be claimed"
        );
        drop(slots);
        assert!(handoff.reserve().is_some(), "unused rooms are given back");
    }

    #[tokio::test]
    async fn a_closed_door_takes_nothing_new_and_drains_what_rooms_taken_before_hand_over() {
        let handoff = CourierHandoff::default();
        let mut door = handoff.open().expect("opens");
        let taken = handoff.reserve().expect("room");
        handoff.close(&mut door);
        assert!(handoff.reserve().is_none(), "closed");
        let handed = message(None);
        let id = handed.id;
        let drained = tokio::spawn(async move { door.recv().await.map(|message| message.id) });
        taken.hand_over(handed);
        assert_eq!(drained.await.unwrap(), Some(id));
    }

    #[test]
    fn one_worker_holds_the_door_and_an_older_door_never_closes_a_newer_one() {
        let handoff = CourierHandoff::default();
        let mut first = handoff.open().expect("opens");
        assert!(handoff.open().is_none(), "a second worker works by claims");
        handoff.close(&mut first);
        let _second = handoff.open().expect("opens again once closed");
        handoff.close(&mut first);
        assert!(handoff.reserve().is_some(), "the newer door stays open");
        drop(_second);
        assert!(
            handoff.reserve().is_none(),
            "a worker gone (its door dropped) takes nothing"
        );
        assert!(handoff.open().is_some(), "and its place can be taken");
    }

    #[tokio::test]
    async fn work_dropped_unfinished_is_finished_in_a_task_of_its_own() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let work = FinishedEvenIfDropped::new(async move {
            let _ = released.await;
            let _ = finish.send(());
            Ok(())
        });
        // The caller stops waiting while the work waits.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), work).await;
        assert!(gave_up.is_err());
        release
            .send(())
            .expect("the work is still there to release");
        tokio::time::timeout(Duration::from_secs(5), finished)
            .await
            .expect("finished after its caller left")
            .expect("finished, not dropped");
    }

    #[tokio::test]
    async fn work_waited_for_answers_in_place() {
        let answer = FinishedEvenIfDropped::new(async {
            Err(crate::store::StoreError::Unavailable("down".into()))
        })
        .await;
        assert!(matches!(
            answer,
            Err(crate::store::StoreError::Unavailable(_))
        ));
    }

    #[test]
    fn a_message_is_delivered_by_its_worker_only_while_half_its_lease_is_left() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let handed = message(Some(lease_end(at)));
        assert!(still_handed(&handed, at));
        assert!(still_handed(&handed, at + TimeDelta::seconds(29)));
        assert!(!still_handed(&handed, at + TimeDelta::seconds(30)));
        assert!(
            !still_handed(&message(None), at),
            "no lease: never handed over"
        );
    }
}
