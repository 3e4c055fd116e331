//! The development sender: prints each message to standard error, so a newcomer on the embedded
//! default can read the code without any gateway. It writes to the terminal directly, not
//! through the log, because the log must never hold a code; only the embedded default uses it.
use super::{Delivered, OutgoingMessage, SendError, Sender};
use crate::domain::mask::mask_address;
use async_trait::async_trait;

#[derive(Debug, Default, Clone, Copy)]
pub struct LogSender;

#[async_trait]
impl Sender for LogSender {
    fn gateway(&self) -> &str {
        "log"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let subject = message
            .subject
            .as_deref()
            .map(|s| format!("subject: {s}\n"))
            .unwrap_or_default();
        eprintln!(
            "\n----- courier (development log sender) -----\nto: {} ({})\n{subject}\n{}\n--------------------------------------------\n",
            mask_address(&message.recipient),
            message.channel.as_str(),
            message.body
        );
        Ok(Delivered {
            provider_message_id: Some(format!("log-{}", message.id)),
        })
    }
}
