//! Services that are part of the contract but served by later releases: `ConfigService` and
//! `CourierService`. They answer `UNIMPLEMENTED` with reason
//! `NOT_IMPLEMENTED`, so SDKs generated now keep working when they land.
use super::error::not_implemented;
use crate::proto::v1;
use crate::proto::v1::config_service_server::ConfigService;
use crate::proto::v1::courier_service_server::CourierService;
use tonic::{Request, Response, Status};

#[derive(Debug, Default, Clone, Copy)]
pub struct NotYetServed;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ConfigService for NotYetServed {
    async fn get_config(&self, _: Request<v1::GetConfigRequest>) -> Answer<v1::GetConfigResponse> {
        Err(not_implemented("ConfigService.GetConfig"))
    }

    async fn validate_config(
        &self,
        _: Request<v1::ValidateConfigRequest>,
    ) -> Answer<v1::ValidateConfigResponse> {
        Err(not_implemented("ConfigService.ValidateConfig"))
    }

    async fn update_config(
        &self,
        _: Request<v1::UpdateConfigRequest>,
    ) -> Answer<v1::UpdateConfigResponse> {
        Err(not_implemented("ConfigService.UpdateConfig"))
    }

    async fn list_config_versions(
        &self,
        _: Request<v1::ListConfigVersionsRequest>,
    ) -> Answer<v1::ListConfigVersionsResponse> {
        Err(not_implemented("ConfigService.ListConfigVersions"))
    }

    async fn rollback_config(
        &self,
        _: Request<v1::RollbackConfigRequest>,
    ) -> Answer<v1::RollbackConfigResponse> {
        Err(not_implemented("ConfigService.RollbackConfig"))
    }

    async fn list_identity_schemas(
        &self,
        _: Request<v1::ListIdentitySchemasRequest>,
    ) -> Answer<v1::ListIdentitySchemasResponse> {
        Err(not_implemented("ConfigService.ListIdentitySchemas"))
    }

    async fn get_identity_schema(
        &self,
        _: Request<v1::GetIdentitySchemaRequest>,
    ) -> Answer<v1::GetIdentitySchemaResponse> {
        Err(not_implemented("ConfigService.GetIdentitySchema"))
    }

    async fn put_identity_schema(
        &self,
        _: Request<v1::PutIdentitySchemaRequest>,
    ) -> Answer<v1::PutIdentitySchemaResponse> {
        Err(not_implemented("ConfigService.PutIdentitySchema"))
    }
}

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
