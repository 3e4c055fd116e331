//! The courier: a worker that takes queued messages from the durable outbox, renders them, hands
//! them to a sender per channel, records every attempt, retries with backoff, and abandons
//! messages whose code died before they could be delivered. Requests never send anything
//! themselves, so their timing does not reveal whether a message went out.

#[cfg(feature = "bench")]
pub mod bench_sender;
pub mod gateways;
pub mod http;
pub mod log_sender;
pub mod render;
pub mod smtp;
pub mod sns;
pub mod templates;
pub mod twilio;
pub mod worker;

use crate::domain::aal::Channel;
use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

/// A rendered message, ready for a gateway.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub id: Uuid,
    pub channel: Channel,
    pub recipient: String,
    pub template_type: String,
    /// Email subject; `None` for SMS.
    pub subject: Option<String>,
    /// Plain-text body (the SMS text, or the email's text part).
    pub body: String,
    /// The email's HTML part, when the template has one.
    pub html_body: Option<String>,
    /// BCP 47 locale the message was rendered in.
    pub locale: String,
    /// What the template saw, for gateways that build their own request (the HTTP webhook):
    /// `{to, code, login_code, identity_id, expires_in_minutes, request_url_domain, locale,
    /// purpose}`. Holds the code: never log it.
    pub template_data: serde_json::Value,
}

impl std::fmt::Debug for OutgoingMessage {
    // The body holds the code: never print it through `Debug`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("OutgoingMessage")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("template_type", &self.template_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    pub provider_message_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SendError {
    /// Timeouts, 5xx and 429 are worth retrying; a refused recipient is not.
    pub retryable: bool,
    /// Gateway's error text, without the message body.
    pub reason: String,
}

#[async_trait]
pub trait Sender: Send + Sync + 'static {
    /// Name recorded with each attempt (`log`, `smtp`, `http`, `twilio`, `sns`, ...).
    fn gateway(&self) -> &str;

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError>;
}

/// The sender for each channel.
#[derive(Clone)]
pub struct Senders {
    pub email: Arc<dyn Sender>,
    pub sms: Arc<dyn Sender>,
}

impl Senders {
    pub fn for_channel(&self, channel: Channel) -> &Arc<dyn Sender> {
        match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.sms,
        }
    }

    /// Both channels through one sender (the development log sender, or a test's capture).
    pub fn single(sender: Arc<dyn Sender>) -> Self {
        Self {
            email: sender.clone(),
            sms: sender,
        }
    }
}
