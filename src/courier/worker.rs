//! The outbox worker. Several workers (replicas) can run at once: claiming is exclusive in the
//! store, so each message goes to the gateway once.
use super::render::{render, webotp_domain};
use super::{SendError, Senders};
use crate::domain::Context;
use crate::domain::challenges::CodeTemplateData;
use crate::store::StoreResult;
use crate::store::codes::{AttemptResult, DeliveryAttempt, OutboxMessage};
use futures_util::StreamExt;
use std::future::Future;
use std::time::Duration;

/// How often an idle worker looks for due messages (retries, other replicas' messages).
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Messages claimed per round.
const BATCH: u32 = 64;
/// How long a woken worker waits before it claims, so that messages enqueued meanwhile share its
/// round: one claim and one attempt write for several messages instead of a round each. Under
/// full load rounds fill up anyway; at 70 % of peak step-ups they did not, and the extra rounds
/// kept a two-core machine 8–11 points busier (docs/performance.md, "After the eighth pass").
/// Next to a gateway's own latency the wait is nothing.
const GATHER: Duration = Duration::from_millis(5);
/// Deliveries in flight at once within a round. A gateway call is mostly waiting (an SMTP
/// dialogue, an HTTP request), so one at a time would cap a worker at 1 / (gateway latency)
/// messages per second. More than 8 measured slower on the bench machine (more tasks competing
/// for two cores, no more throughput).
pub const DELIVERY_CONCURRENCY: usize = 8;
/// A claimed message returns to the pool if its worker dies for this long.
const LEASE: Duration = Duration::from_secs(60);
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
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.run_once().await {
                // A full batch means more may be due right now: go again without waiting,
                // unless shutdown has begun.
                Ok(handled) if handled == BATCH as usize => {
                    if futures_util::FutureExt::now_or_never(&mut shutdown).is_some() {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "courier round failed; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.context.courier_wakeup.notified() => tokio::time::sleep(GATHER).await,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
        tracing::info!("courier stopped");
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
        // Every delivery runs to its end even when another fails: dropping one after its gateway
        // call would send that message again after the lease.
        let mut deliveries = futures_util::stream::iter(claimed)
            .map(|message| self.deliver(&senders, message))
            .buffer_unordered(DELIVERY_CONCURRENCY);
        // Attempts are recorded a chunk at a time as they complete: one write per chunk instead of
        // one per message, and a crash re-sends (after the lease) at most the unrecorded chunk.
        let outbox = &self.context.stores.outbox;
        let mut finished = Vec::with_capacity(DELIVERY_CONCURRENCY);
        let mut first_error = None;
        while let Some(outcome) = deliveries.next().await {
            match outcome {
                Ok(Some(attempt)) => finished.push(attempt),
                Ok(None) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
            if finished.len() >= DELIVERY_CONCURRENCY {
                if let Err(error) = outbox.finish_attempts(&finished).await {
                    first_error.get_or_insert(error);
                }
                finished.clear();
            }
        }
        if let Err(error) = outbox.finish_attempts(&finished).await {
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(count),
        }
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
            tracing::info!(message_id = %message.id, "courier message abandoned: its code expired before delivery");
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
            tracing::error!(message_id = %message.id, "courier message cannot be opened with the configured secrets");
            return outbox.abandon(message.id, now).await.map(|()| None);
        };
        let domain = webotp_domain(settings.config.serve.public.base_url.as_deref());
        let rendered = match render(settings.templates(), &message, &data, &domain) {
            Ok(rendered) => rendered,
            Err(error) => {
                tracing::error!(message_id = %message.id, error = %error, "courier message cannot be rendered");
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

/// Exponential backoff with ±20 % jitter, so retries from many replicas do not line up.
fn backoff(attempts_made: u32) -> chrono::Duration {
    use rand::RngExt;
    let exponential = BASE_BACKOFF
        .saturating_mul(1u32 << attempts_made.min(16))
        .min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    chrono::Duration::from_std(exponential.mul_f64(jitter)).unwrap_or(chrono::Duration::seconds(1))
}
