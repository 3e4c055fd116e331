//! The service that is part of the contract but served by a later release: `CourierService`.
//! It answers `UNIMPLEMENTED` with reason `NOT_IMPLEMENTED`, so SDKs generated now keep working
//! when it lands.
use super::error::not_implemented;
use crate::proto::v1;
use crate::proto::v1::courier_service_server::CourierService;
use tonic::{Request, Response, Status};

#[derive(Debug, Default, Clone, Copy)]
pub struct NotYetServed;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl CourierService for NotYetServed {
    async fn list_messages(
        &self,
        _: Request<v1::ListMessagesRequest>,
    ) -> Answer<v1::ListMessagesResponse> {
        Err(not_implemented("CourierService.ListMessages"))
    }

    async fn get_message(
        &self,
        _: Request<v1::GetMessageRequest>,
    ) -> Answer<v1::GetMessageResponse> {
        Err(not_implemented("CourierService.GetMessage"))
    }
}
