//! The outbox worker. Several workers (replicas) can run at once: claiming is exclusive in the
//! store, and a message handed straight to a worker is written already claimed for it, so each
//! message goes to one worker at a time; another takes it over only after its lease.
use super::render::{render, webotp_domain};
use super::{SendError, Senders};
use crate::domain::Context;
use crate::domain::challenges::CodeTemplateData;
use crate::domain::courier_handoff::{Door, LEASE, still_handed};
use crate::store::StoreResult;
use crate::store::codes::{AttemptResult, DeliveryAttempt, OutboxMessage};
use futures_util::{FutureExt, StreamExt};
use std::future::Future;
use std::time::Duration;

/// How often a worker looks for due messages (retries, expired leases, other replicas' messages,
/// messages queued while its hand-over was full), between rounds of hand-overs however steady.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Messages claimed per round.
const BATCH: u32 = 64;
/// How long a stopping worker waits for requests that took room with it to hand over.
const LAST_HANDOVERS: Duration = Duration::from_secs(5);
/// How long a woken worker waits before it claims, or takes what was handed over, so that
/// messages enqueued meanwhile share its round: one attempt write (and claim) for several
/// messages instead of a round each. Under full load rounds fill up anyway; at 70 % of peak
/// step-ups they did not, and the extra rounds kept a two-core machine 8–11 points busier
/// (docs/performance.md, "After the eighth pass"). Next to a gateway's own latency the wait is
/// nothing.
const GATHER: Duration = Duration::from_millis(5);
/// Deliveries in flight at once within a round. A gateway call is mostly waiting (an SMTP
/// dialogue, an HTTP request), so one at a time would cap a worker at 1 / (gateway latency)
/// messages per second. More than 8 measured slower on the bench machine (more tasks competing
/// for two cores, no more throughput).
pub const DELIVERY_CONCURRENCY: usize = 8;
/// An attempt made and what it means for the message, recorded with its chunk.
type Finished = (DeliveryAttempt, AttemptResult);

const BASE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where a worker's senders come from.
enum SenderSource {
    /// Given once (tests, or a deployment that wires its own).
    Fixed(Senders),
    /// Built from `courier.*` and rebuilt whenever the configuration version changes, so a
    /// gateway change through `ConfigService` takes effect without a restart.
    Configured(tokio::sync::Mutex<Option<(u64, Senders)>>),
}

pub struct Worker {
    context: Context,
    source: SenderSource,
}

impl Worker {
    pub fn new(context: Context, senders: Senders) -> Self {
        Self {
            context,
            source: SenderSource::Fixed(senders),
        }
    }

    /// A worker whose gateways follow the configuration.
    pub fn configured(context: Context) -> Self {
        Self {
            context,
            source: SenderSource::Configured(tokio::sync::Mutex::new(None)),
        }
    }

    async fn senders(&self) -> Result<Senders, String> {
        match &self.source {
            SenderSource::Fixed(senders) => Ok(senders.clone()),
            SenderSource::Configured(cache) => {
                let settings = self.context.settings();
                let mut cache = cache.lock().await;
                if let Some((version, senders)) = cache.as_ref()
                    && *version == settings.version
                {
                    return Ok(senders.clone());
                }
                let senders = super::gateways::senders(&settings.config).await?;
                *cache = Some((settings.version, senders.clone()));
                Ok(senders)
            }
        }
    }

    /// Works until `shutdown` completes; store outages are logged and retried next round.
    /// Messages handed over by this process's requests are delivered as they come; the outbox is
    /// claimed from every `POLL_INTERVAL`, and when woken for a message queued without a
    /// hand-over.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let handoff = self.context.courier_handoff.clone();
        let mut door = handoff.open();
        if door.is_none() {
            tracing::info!("another courier worker in this process takes the hand-overs");
        }
        // Its first tick is at once: a round on start for what waited while no worker ran.
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased, in this order: a stop is seen as soon as a round ends, and the poll,
            // ready once per interval, gets its turn between rounds however steadily messages
            // are handed over.
            let stopped = tokio::select! {
                biased;
                _ = &mut shutdown => true,
                _ = poll.tick() => self.claim_rounds(&mut shutdown, &mut poll).await,
                Some(first) = handed(&mut door) => {
                    tokio::time::sleep(GATHER).await;
                    let messages = gather(first, door.as_mut());
                    if let Err(error) = self.deliver_handed(messages).await {
                        tracing::warn!(error = %error, "courier round failed; retrying");
                    }
                    false
                }
                _ = self.context.courier_wakeup.notified() => {
                    tokio::time::sleep(GATHER).await;
                    self.claim_rounds(&mut shutdown, &mut poll).await
                }
            };
            if stopped {
                break;
            }
        }
        if let Some(mut door) = door {
            handoff.close(&mut door);
            self.deliver_the_rest(door).await;
        }
        tracing::info!("courier stopped");
    }

    /// What was handed over before the door closed: the requests were answered as sent. A
    /// request that took room holds the door open until it hands its message over; one that
    /// takes longer than [`LAST_HANDOVERS`] leaves its message to a claim after its lease.
    async fn deliver_the_rest(&self, mut door: Door) {
        let mut rest = Vec::new();
        let drained = tokio::time::timeout(LAST_HANDOVERS, async {
            while let Some(message) = door.recv().await {
                rest.push(message);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("courier stopped waiting for the last hand-overs");
        }
        if !rest.is_empty()
            && let Err(error) = self.deliver_handed(rest).await
        {
            tracing::warn!(error = %error, "courier's last round failed");
        }
    }

    /// Claim rounds until one is not full (a full one means more may be due right now); the
    /// next poll is an interval after the last of them. Returns whether `shutdown` completed
    /// meanwhile; it is not polled again after that.
    async fn claim_rounds(
        &self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        poll: &mut tokio::time::Interval,
    ) -> bool {
        let stopped = loop {
            match self.run_once().await {
                Ok(handled) if handled == BATCH as usize => {
                    if shutdown.as_mut().now_or_never().is_some() {
                        break true;
                    }
                }
                Ok(_) => break false,
                Err(error) => {
                    tracing::warn!(error = %error, "courier round failed; retrying");
                    break false;
                }
            }
        };
        poll.reset();
        stopped
    }

    /// One round: claims due messages and tries each once, several at a time. Returns how many
    /// were handled.
    pub async fn run_once(&self) -> StoreResult<usize> {
        let senders = match self.senders().await {
            Ok(senders) => senders,
            Err(error) => {
                // Nothing is claimed, so the messages wait for a working configuration.
                tracing::error!(error = %error, "courier gateways cannot be set up");
                return Ok(0);
            }
        };
        let now = self.context.clock.now();
        let claimed = self
            .context
            .stores
            .outbox
            .claim_due(now, BATCH, LEASE)
            .await?;
        let count = claimed.len();
        self.deliver_all(&senders, claimed).await?;
        Ok(count)
    }

    /// A round of messages handed over, already claimed for this worker.
    async fn deliver_handed(&self, mut messages: Vec<OutboxMessage>) -> StoreResult<()> {
        let now = self.context.clock.now();
        let before = messages.len();
        messages.retain(|message| still_handed(message, now));
        if messages.len() < before {
            tracing::warn!(
                count = before - messages.len(),
                "courier left handed-over messages that waited half their lease to a claim"
            );
        }
        if messages.is_empty() {
            return Ok(());
        }
        match self.senders().await {
            Ok(senders) => self.deliver_all(&senders, messages).await,
            Err(error) => {
                // They stay claimed until their lease runs out; a round after that claims them.
                tracing::error!(
                    error = %error,
                    count = messages.len(),
                    "courier gateways cannot be set up; handed-over messages wait for their lease"
                );
                Ok(())
            }
        }
    }

    /// Tries each message once, several at a time, and records the attempts as they finish.
    async fn deliver_all(
        &self,
        senders: &Senders,
        messages: Vec<OutboxMessage>,
    ) -> StoreResult<()> {
        // Every delivery runs to its end even when another fails: dropping one after its gateway
        // call would send that message again after the lease.
        let deliveries = futures_util::stream::iter(messages)
            .map(|message| self.deliver(senders, message))
            .buffer_unordered(DELIVERY_CONCURRENCY);
        let outbox = self.context.stores.outbox.as_ref();
        record_as_delivered(deliveries, |chunk| async move {
            outbox.finish_attempts(&chunk).await
        })
        .await
    }

    /// Tries one message. Returns the attempt to record, or `None` when the message was settled
    /// without one (abandoned before any gateway call).
    async fn deliver(
        &self,
        senders: &Senders,
        message: OutboxMessage,
    ) -> StoreResult<Option<Finished>> {
        let now = self.context.clock.now();
        let outbox = &self.context.stores.outbox;
        if message.not_after.is_some_and(|not_after| now >= not_after) {
            tracing::info!(
                message_id = %message.id,
                "courier message abandoned: its code expired before delivery"
            );
            return outbox.abandon(message.id, now).await.map(|()| None);
        }
        let settings = self.context.settings();
        let sender = senders.for_channel(message.channel);
        let data = settings
            .sealer()
            .open(&message.sealed_data, message.id.as_bytes())
            .ok()
            .and_then(|plain| serde_json::from_slice::<CodeTemplateData>(&plain).ok());
        let Some(data) = data else {
            // Sealed with a secret that is gone: it can never be sent.
            tracing::error!(
                message_id = %message.id,
                "courier message cannot be opened with the configured secrets"
            );
            return outbox.abandon(message.id, now).await.map(|()| None);
        };
        let domain = webotp_domain(settings.config.serve.public.base_url.as_deref());
        let rendered = match render(settings.templates(), &message, &data, &domain) {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(
                    message_id = %message.id,
                    error = %error,
                    "courier message cannot be rendered"
                );
                return outbox.abandon(message.id, now).await.map(|()| None);
            }
        };
        let outcome = sender.send(&rendered).await;
        let attempted_at = self.context.clock.now();
        let attempts_made = message.send_count + 1;
        let retries = settings.config.courier.message_retries;
        let (attempt, result) = match outcome {
            Ok(delivered) => (
                DeliveryAttempt {
                    message_id: message.id,
                    attempted_at,
                    gateway: sender.gateway().to_owned(),
                    succeeded: true,
                    error: None,
                    provider_message_id: delivered.provider_message_id,
                },
                AttemptResult::Sent,
            ),
            Err(SendError { retryable, reason }) => {
                let result = if retryable && attempts_made <= retries {
                    AttemptResult::RetryAt(attempted_at + backoff(attempts_made))
                } else {
                    AttemptResult::Abandoned
                };
                (
                    DeliveryAttempt {
                        message_id: message.id,
                        attempted_at,
                        gateway: sender.gateway().to_owned(),
                        succeeded: false,
                        error: Some(reason),
                        provider_message_id: None,
                    },
                    result,
                )
            }
        };
        tracing::info!(
            message_id = %message.id,
            gateway = sender.gateway(),
            channel = message.channel.as_str(),
            outcome = ?result,
            "courier attempt"
        );
        Ok(Some((attempt, result)))
    }
}

/// Finished attempts that a write in flight may leave waiting before deliveries pause for it, so
/// what a crash leaves unrecorded stays about where it was when writes held deliveries up.
const MOST_WAITING: usize = 2 * DELIVERY_CONCURRENCY;

/// Records attempts without holding up deliveries. A write starts once a chunk of
/// [`DELIVERY_CONCURRENCY`] has finished (or the round's last ones), with everything finished by
/// then, and deliveries go on while it runs. Rounds are serial, so a round's length is how long a
/// message enqueued during it waits; when each chunk's write held up the deliveries behind it, a
/// round of 64 made eight writes one after another, and under load the courier capped step-ups
/// (docs/performance.md, "After the eleventh pass"). A gateway that answers at once (the bench's)
/// now costs a round one write; one whose answers come spread out, a write per chunk as before.
/// A crash re-sends (after the lease) what was delivered but not recorded: the write in flight,
/// at most [`MOST_WAITING`] finished behind it, and the deliveries in flight. Every write is made
/// even after one fails; the first error is returned.
async fn record_as_delivered<Write, Written>(
    deliveries: impl futures_util::Stream<Item = StoreResult<Option<Finished>>>,
    mut write: Write,
) -> StoreResult<()>
where
    Write: FnMut(Vec<Finished>) -> Written,
    Written: Future<Output = StoreResult<()>>,
{
    use futures_util::stream::FusedStream;
    let mut deliveries = std::pin::pin!(deliveries.fuse());
    let mut finished: Vec<Finished> = Vec::new();
    let mut writing: Option<std::pin::Pin<Box<Written>>> = None;
    let mut first_error = None;
    loop {
        if writing.is_none() {
            let ended = deliveries.is_terminated();
            if finished.len() >= DELIVERY_CONCURRENCY || (ended && !finished.is_empty()) {
                writing = Some(Box::pin(write(std::mem::take(&mut finished))));
            } else if ended {
                break;
            }
        }
        let room = writing.is_none() || finished.len() < MOST_WAITING;
        tokio::select! {
            // Deliveries first: what has finished by the time a write starts goes in it.
            biased;
            Some(delivered) = deliveries.next(), if room && !deliveries.is_terminated() => {
                let mut delivered = Some(delivered);
                while let Some(outcome) = delivered {
                    match outcome {
                        Ok(Some(attempt)) => finished.push(attempt),
                        Ok(None) => {}
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                    if writing.is_some() && finished.len() >= MOST_WAITING {
                        break;
                    }
                    delivered = deliveries.next().now_or_never().flatten();
                }
            }
            written = async { writing.as_mut().expect("guarded by the condition").await },
                if writing.is_some() =>
            {
                writing = None;
                if let Err(error) = written {
                    first_error.get_or_insert(error);
                }
            }
            // The deliveries just ended: the top of the loop writes what is left.
            else => {}
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The next message handed through `door`; never, for a worker without one.
async fn handed(door: &mut Option<Door>) -> Option<OutboxMessage> {
    match door {
        Some(door) => door.recv().await,
        None => std::future::pending().await,
    }
}

/// `first` and what else was handed over by now, up to a round's worth.
fn gather(first: OutboxMessage, door: Option<&mut Door>) -> Vec<OutboxMessage> {
    let mut messages = vec![first];
    if let Some(door) = door {
        while messages.len() < BATCH as usize {
            match door.try_recv() {
                Some(message) => messages.push(message),
                None => break,
            }
        }
    }
    messages
}

/// Exponential backoff with ±20 % jitter, so retries from many replicas do not line up.
fn backoff(attempts_made: u32) -> chrono::Duration {
    use rand::RngExt;
    let exponential = BASE_BACKOFF
        .saturating_mul(1u32 << attempts_made.min(16))
        .min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    chrono::Duration::from_std(exponential.mul_f64(jitter)).unwrap_or(chrono::Duration::seconds(1))
}

#[cfg(test)]
mod tests {
    use super::{Finished, MOST_WAITING, record_as_delivered};
    use crate::store::codes::{AttemptResult, DeliveryAttempt};
    use crate::store::{StoreError, StoreResult};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::{Semaphore, mpsc};

    fn attempt(number: u8) -> Delivered {
        let attempt = DeliveryAttempt {
            message_id: uuid::Uuid::from_bytes([number; 16]),
            attempted_at: chrono::DateTime::UNIX_EPOCH,
            gateway: "test".into(),
            succeeded: true,
            error: None,
            provider_message_id: None,
        };
        Ok(Some((attempt, AttemptResult::Sent)))
    }

    fn numbers(chunk: &[Finished]) -> Vec<u8> {
        chunk
            .iter()
            .map(|(attempt, _)| attempt.message_id.as_bytes()[0])
            .collect()
    }

    type Delivered = StoreResult<Option<Finished>>;

    /// Deliveries that finish when the test says so, and a count of those the recorder took.
    fn deliveries() -> (
        mpsc::UnboundedSender<Delivered>,
        Arc<Mutex<usize>>,
        impl futures_util::Stream<Item = Delivered>,
    ) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let taken = Arc::new(Mutex::new(0));
        let counted = taken.clone();
        let stream = futures_util::stream::unfold(receiver, move |mut receiver| {
            let counted = counted.clone();
            async move {
                let next = receiver.recv().await?;
                *counted.lock().unwrap() += 1;
                Some((next, receiver))
            }
        });
        (sender, taken, stream)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    type Writes = Arc<Mutex<Vec<Vec<u8>>>>;
    type HeldWrite = futures_util::future::BoxFuture<'static, StoreResult<()>>;

    /// A recorder whose writes each wait for a permit, logging what they were given.
    fn held_writes() -> (
        Writes,
        Arc<Semaphore>,
        impl FnMut(Vec<Finished>) -> HeldWrite,
    ) {
        let writes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (logged, opened) = (writes.clone(), gate.clone());
        let write = move |chunk: Vec<Finished>| {
            logged.lock().unwrap().push(numbers(&chunk));
            let gate = opened.clone();
            Box::pin(async move {
                gate.acquire().await.expect("open").forget();
                Ok(())
            }) as HeldWrite
        };
        (writes, gate, write)
    }

    type Recorder = tokio::task::JoinHandle<StoreResult<()>>;

    /// A recorder running on deliveries the test sends, with writes that wait for permits.
    fn held_recorder() -> (
        mpsc::UnboundedSender<Delivered>,
        Arc<Mutex<usize>>,
        Writes,
        Arc<Semaphore>,
        Recorder,
    ) {
        let (sender, taken, stream) = deliveries();
        let (writes, gate, write) = held_writes();
        let recorder = tokio::spawn(record_as_delivered(stream, write));
        (sender, taken, writes, gate, recorder)
    }

    fn send(sender: &mpsc::UnboundedSender<Delivered>, numbers: std::ops::RangeInclusive<u8>) {
        for number in numbers {
            sender.send(attempt(number)).unwrap();
        }
    }

    #[tokio::test]
    async fn deliveries_go_on_while_a_write_is_in_flight_and_the_rest_follow_it() {
        let (sender, taken, writes, gate, recorder) = held_recorder();
        send(&sender, 1..=8);
        until("the first chunk's write", || {
            writes.lock().unwrap().len() == 1
        })
        .await;
        sender.send(attempt(9)).unwrap();
        sender.send(attempt(10)).unwrap();
        until("deliveries taken during the write", || {
            *taken.lock().unwrap() == 10
        })
        .await;
        // The round ends while the first write is still in flight.
        drop(sender);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(writes.lock().unwrap().len(), 1, "one write at a time");
        gate.add_permits(2);
        recorder.await.unwrap().unwrap();
        assert_eq!(
            *writes.lock().unwrap(),
            [(1..=8).collect::<Vec<u8>>(), vec![9, 10]]
        );
    }

    #[tokio::test]
    async fn answers_that_come_spread_out_are_written_a_chunk_at_a_time() {
        let (sender, _, stream) = deliveries();
        let writes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let written = writes.clone();
        let recorder = tokio::spawn(record_as_delivered(stream, move |chunk| {
            written.lock().unwrap().push(numbers(&chunk));
            async { Ok(()) }
        }));
        for number in 1..=19 {
            sender.send(attempt(number)).unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(sender);
        recorder.await.unwrap().unwrap();
        let sizes: Vec<usize> = writes.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [8, 8, 3], "{:?}", writes.lock().unwrap());
    }

    #[tokio::test]
    async fn a_stalled_write_pauses_deliveries_once_enough_wait_behind_it() {
        let (sender, taken, writes, gate, recorder) = held_recorder();
        send(&sender, 1..=8);
        until("the first write", || writes.lock().unwrap().len() == 1).await;
        send(&sender, 9..=40);
        drop(sender);
        until("deliveries up to the limit", || {
            *taken.lock().unwrap() >= 8 + MOST_WAITING
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            *taken.lock().unwrap(),
            8 + MOST_WAITING,
            "no more deliveries while the write is stalled"
        );
        gate.add_permits(10);
        recorder.await.unwrap().unwrap();
        let written: Vec<u8> = writes.lock().unwrap().concat();
        assert_eq!(written, (1..=40).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn deliveries_finished_together_are_written_together() {
        let writes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let ready = futures_util::stream::iter((1..=20).map(attempt));
        let written = writes.clone();
        record_as_delivered(ready, move |chunk| {
            written.lock().unwrap().push(numbers(&chunk));
            async { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(*writes.lock().unwrap(), [(1..=20).collect::<Vec<u8>>()]);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_after_the_later_writes_are_made() {
        let (sender, _, stream) = deliveries();
        let writes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let recorder = tokio::spawn({
            let writes = writes.clone();
            record_as_delivered(stream, move |chunk| {
                let mut writes = writes.lock().unwrap();
                writes.push(numbers(&chunk));
                let first = writes.len() == 1;
                async move {
                    match first {
                        true => Err(StoreError::Unavailable("first write".into())),
                        false => Ok(()),
                    }
                }
            })
        });
        send(&sender, 1..=8);
        until("the failed write", || writes.lock().unwrap().len() == 1).await;
        sender.send(attempt(9)).unwrap();
        drop(sender);
        let error = recorder.await.unwrap().unwrap_err();
        assert!(
            matches!(&error, StoreError::Unavailable(reason) if reason == "first write"),
            "{error}"
        );
        assert_eq!(
            *writes.lock().unwrap(),
            [(1..=8).collect::<Vec<u8>>(), vec![9]]
        );
    }

    #[tokio::test]
    async fn a_failed_delivery_is_reported_and_the_others_are_written() {
        let writes = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let outcomes = [
            attempt(1),
            Err(StoreError::Internal("a delivery".into())),
            Ok(None),
            attempt(4),
        ];
        let written = writes.clone();
        let error = record_as_delivered(futures_util::stream::iter(outcomes), move |chunk| {
            written.lock().unwrap().push(numbers(&chunk));
            async { Ok(()) }
        })
        .await
        .unwrap_err();
        assert!(matches!(error, StoreError::Internal(_)), "{error}");
        assert_eq!(*writes.lock().unwrap(), [vec![1, 4]]);
    }
}
