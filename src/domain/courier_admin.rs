//! What `CourierService` shows: queued and sent messages with their attempts. Bodies never leave
//! the outbox (they are sealed); recipients are shown masked.
use super::Context;
use super::error::{DomainError, DomainResult, FieldViolation};
use super::identities::normalise_identifier;
use crate::store::codes::{DeliveryAttempt, MessageStatus, OutboxMessage};
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 500;

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
    let limit = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size > MAX_PAGE_SIZE => {
            return Err(DomainError::Validation(vec![FieldViolation::new(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            )]));
        }
        size => size,
    };
    let before = if page_token.is_empty() {
        None
    } else {
        Some(Uuid::parse_str(page_token).map_err(|_| {
            DomainError::Validation(vec![FieldViolation::new(
                "page_token",
                "is not a token from a previous page",
            )])
        })?)
    };
    let recipient = (!recipient.trim().is_empty()).then(|| normalise_identifier(recipient));
    // One extra row tells whether another page exists.
    let mut messages = context
        .stores
        .outbox
        .list_messages(status, recipient.as_deref(), before, limit + 1)
        .await?;
    let next_page_token = if messages.len() > limit as usize {
        messages.truncate(limit as usize);
        messages.last().map(|message| message.id.to_string())
    } else {
        None
    };
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
