//! What `CourierService` shows: queued and sent messages with their attempts. Bodies never leave
//! the outbox (they are sealed); recipients are shown masked.
use super::Context;
use super::error::{DomainError, DomainResult};
use super::identities::normalise_identifier;
use super::paging::PageRequest;
use crate::store::codes::{DeliveryAttempt, MessageStatus, OutboxMessage};
use uuid::Uuid;

pub struct MessagePage {
    pub messages: Vec<OutboxMessage>,
    pub next_page_token: Option<String>,
}

pub async fn list_messages(
    context: &Context,
    status: Option<MessageStatus>,
    recipient: &str,
    page_size: u32,
    page_token: &str,
) -> DomainResult<MessagePage> {
    let page = PageRequest::parse(page_size, page_token)?;
    let recipient = (!recipient.trim().is_empty()).then(|| normalise_identifier(recipient));
    let mut messages = context
        .stores
        .outbox
        .list_messages(status, recipient.as_deref(), page.cursor, page.fetch())
        .await?;
    let next_page_token = page.finish(&mut messages, |message| message.id);
    Ok(MessagePage {
        messages,
        next_page_token,
    })
}

pub async fn get_message(
    context: &Context,
    id: Uuid,
) -> DomainResult<(OutboxMessage, Vec<DeliveryAttempt>)> {
    let message = context
        .stores
        .outbox
        .get_message(id)
        .await?
        .ok_or(DomainError::MessageNotFound)?;
    let attempts = context.stores.outbox.attempts(id).await?;
    Ok((message, attempts))
}
