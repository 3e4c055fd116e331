//! `IdentityService` (admin listener).
use super::convert::{identity_to_proto, parse_uuid, struct_to_json};
use crate::domain::Context;
use crate::domain::identities::{self, NewIdentity};
use crate::proto::v1;
use crate::proto::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

pub struct IdentityApi {
    context: Context,
}

impl IdentityApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn create_identity(
        &self,
        request: Request<v1::CreateIdentityRequest>,
    ) -> Result<Response<v1::CreateIdentityResponse>, Status> {
        let request = request.into_inner();
        let identity = identities::create_identity(
            &self.context,
            NewIdentity {
                schema_id: request.schema_id,
                traits: struct_to_json(request.traits),
                password: Some(request.password).filter(|password| !password.is_empty()),
                verified_addresses: request.verified_addresses,
            },
        )
        .await?;
        Ok(Response::new(v1::CreateIdentityResponse {
            identity: Some(identity_to_proto(&identity)),
        }))
    }

    async fn get_identity(
        &self,
        request: Request<v1::GetIdentityRequest>,
    ) -> Result<Response<v1::GetIdentityResponse>, Status> {
        let identity_id = parse_uuid("identity_id", &request.get_ref().identity_id)?;
        let identity = identities::get_identity(&self.context, identity_id).await?;
        Ok(Response::new(v1::GetIdentityResponse {
            identity: Some(identity_to_proto(&identity)),
        }))
    }

    async fn list_identities(
        &self,
        request: Request<v1::ListIdentitiesRequest>,
    ) -> Result<Response<v1::ListIdentitiesResponse>, Status> {
        let request = request.into_inner();
        let page = identities::list_identities(
            &self.context,
            request.page_size,
            &request.page_token,
            &request.identifier,
        )
        .await?;
        Ok(Response::new(v1::ListIdentitiesResponse {
            identities: page.identities.iter().map(identity_to_proto).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_identity_traits(
        &self,
        request: Request<v1::UpdateIdentityTraitsRequest>,
    ) -> Result<Response<v1::UpdateIdentityTraitsResponse>, Status> {
        let request = request.into_inner();
        let identity_id = parse_uuid("identity_id", &request.identity_id)?;
        let identity =
            identities::update_traits(&self.context, identity_id, struct_to_json(request.traits))
                .await?;
        Ok(Response::new(v1::UpdateIdentityTraitsResponse {
            identity: Some(identity_to_proto(&identity)),
        }))
    }

    async fn delete_identity(
        &self,
        request: Request<v1::DeleteIdentityRequest>,
    ) -> Result<Response<v1::DeleteIdentityResponse>, Status> {
        let identity_id = parse_uuid("identity_id", &request.get_ref().identity_id)?;
        identities::delete_identity(&self.context, identity_id).await?;
        Ok(Response::new(v1::DeleteIdentityResponse {}))
    }
}
