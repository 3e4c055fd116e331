//! `CourierService` (admin listener): outgoing messages and their delivery attempts.
use super::convert::{channel_to_proto, parse_uuid, timestamp};
use super::error::invalid_field;
use crate::domain::Context;
use crate::domain::courier_admin;
use crate::domain::mask::mask_address;
use crate::proto::v1;
use crate::proto::v1::courier_service_server::CourierService;
use crate::store::codes::{DeliveryAttempt, MessageStatus, OutboxMessage};
use tonic::{Request, Response, Status};

pub struct CourierApi {
    context: Context,
}

impl CourierApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

fn status_to_proto(status: MessageStatus) -> v1::MessageStatus {
    match status {
        MessageStatus::Queued => v1::MessageStatus::Queued,
        MessageStatus::Processing => v1::MessageStatus::Processing,
        MessageStatus::Sent => v1::MessageStatus::Sent,
        MessageStatus::Abandoned => v1::MessageStatus::Abandoned,
    }
}

fn status_from_proto(value: i32) -> Result<Option<MessageStatus>, Status> {
    match v1::MessageStatus::try_from(value) {
        Ok(v1::MessageStatus::Unspecified) => Ok(None),
        Ok(v1::MessageStatus::Queued) => Ok(Some(MessageStatus::Queued)),
        Ok(v1::MessageStatus::Processing) => Ok(Some(MessageStatus::Processing)),
        Ok(v1::MessageStatus::Sent) => Ok(Some(MessageStatus::Sent)),
        Ok(v1::MessageStatus::Abandoned) => Ok(Some(MessageStatus::Abandoned)),
        Err(_) => Err(invalid_field("status", "is not a known status")),
    }
}

fn attempt_to_proto(attempt: &DeliveryAttempt) -> v1::DeliveryAttempt {
    v1::DeliveryAttempt {
        attempted_at: Some(timestamp(attempt.attempted_at)),
        gateway: attempt.gateway.clone(),
        succeeded: attempt.succeeded,
        error: attempt.error.clone().unwrap_or_default(),
        provider_message_id: attempt.provider_message_id.clone().unwrap_or_default(),
    }
}

/// The body is never included: it is sealed, and it holds a code.
fn message_to_proto(message: &OutboxMessage, attempts: &[DeliveryAttempt]) -> v1::CourierMessage {
    v1::CourierMessage {
        id: message.id.to_string(),
        template_type: message.template_type.clone(),
        channel: channel_to_proto(message.channel) as i32,
        masked_recipient: mask_address(&message.recipient),
        status: status_to_proto(message.status) as i32,
        send_count: message.send_count,
        created_at: Some(timestamp(message.created_at)),
        updated_at: Some(timestamp(message.updated_at)),
        attempts: attempts.iter().map(attempt_to_proto).collect(),
    }
}

#[tonic::async_trait]
impl CourierService for CourierApi {
    async fn list_messages(
        &self,
        request: Request<v1::ListMessagesRequest>,
    ) -> Result<Response<v1::ListMessagesResponse>, Status> {
        let request = request.into_inner();
        let status = status_from_proto(request.status)?;
        let page = courier_admin::list_messages(
            &self.context,
            status,
            &request.recipient,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(Response::new(v1::ListMessagesResponse {
            messages: page
                .messages
                .iter()
                .map(|message| message_to_proto(message, &[]))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn get_message(
        &self,
        request: Request<v1::GetMessageRequest>,
    ) -> Result<Response<v1::GetMessageResponse>, Status> {
        let id = parse_uuid("message_id", &request.get_ref().message_id)?;
        let (message, attempts) = courier_admin::get_message(&self.context, id).await?;
        Ok(Response::new(v1::GetMessageResponse {
            message: Some(message_to_proto(&message, &attempts)),
        }))
    }
}
