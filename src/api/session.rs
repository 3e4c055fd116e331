//! `SessionService` (public, the caller's own sessions) and `SessionAdminService` (admin).
use super::auth::session_token;
use super::convert::{parse_uuid, required_aal_from_proto, session_view_to_proto};
use crate::domain::{Context, sessions};
use crate::proto::v1;
use crate::proto::v1::session_admin_service_server::SessionAdminService;
use crate::proto::v1::session_service_server::SessionService;
use tonic::{Request, Response, Status};

pub struct SessionApi {
    context: Context,
}

impl SessionApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let token = session_token(request.metadata());
        let required = required_aal_from_proto(request.get_ref().required_aal)?;
        let view = sessions::whoami(&self.context, token.as_deref(), required).await?;
        Ok(Response::new(v1::WhoAmIResponse {
            session: Some(session_view_to_proto(&view)),
        }))
    }

    async fn list_my_sessions(
        &self,
        request: Request<v1::ListMySessionsRequest>,
    ) -> Result<Response<v1::ListMySessionsResponse>, Status> {
        let token = session_token(request.metadata());
        let views = sessions::list_my_sessions(&self.context, token.as_deref()).await?;
        Ok(Response::new(v1::ListMySessionsResponse {
            sessions: views.iter().map(session_view_to_proto).collect(),
        }))
    }

    async fn revoke_my_session(
        &self,
        request: Request<v1::RevokeMySessionRequest>,
    ) -> Result<Response<v1::RevokeMySessionResponse>, Status> {
        let token = session_token(request.metadata());
        let session_id = parse_uuid("session_id", &request.get_ref().session_id)?;
        sessions::revoke_my_session(&self.context, token.as_deref(), session_id).await?;
        Ok(Response::new(v1::RevokeMySessionResponse {}))
    }

    async fn logout(
        &self,
        request: Request<v1::LogoutRequest>,
    ) -> Result<Response<v1::LogoutResponse>, Status> {
        let token = session_token(request.metadata());
        sessions::logout(&self.context, token.as_deref()).await?;
        Ok(Response::new(v1::LogoutResponse {}))
    }
}

#[tonic::async_trait]
impl SessionAdminService for SessionApi {
    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::GetSessionResponse>, Status> {
        let session_id = parse_uuid("session_id", &request.get_ref().session_id)?;
        let view = sessions::get_session(&self.context, session_id).await?;
        Ok(Response::new(v1::GetSessionResponse {
            session: Some(session_view_to_proto(&view)),
        }))
    }

    async fn list_identity_sessions(
        &self,
        request: Request<v1::ListIdentitySessionsRequest>,
    ) -> Result<Response<v1::ListIdentitySessionsResponse>, Status> {
        let request = request.into_inner();
        let identity_id = parse_uuid("identity_id", &request.identity_id)?;
        let views =
            sessions::list_identity_sessions(&self.context, identity_id, request.include_inactive)
                .await?;
        Ok(Response::new(v1::ListIdentitySessionsResponse {
            sessions: views.iter().map(session_view_to_proto).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<v1::RevokeSessionRequest>,
    ) -> Result<Response<v1::RevokeSessionResponse>, Status> {
        let session_id = parse_uuid("session_id", &request.get_ref().session_id)?;
        sessions::revoke_session(&self.context, session_id).await?;
        Ok(Response::new(v1::RevokeSessionResponse {}))
    }

    async fn revoke_identity_sessions(
        &self,
        request: Request<v1::RevokeIdentitySessionsRequest>,
    ) -> Result<Response<v1::RevokeIdentitySessionsResponse>, Status> {
        let identity_id = parse_uuid("identity_id", &request.get_ref().identity_id)?;
        let revoked = sessions::revoke_identity_sessions(&self.context, identity_id).await?;
        Ok(Response::new(v1::RevokeIdentitySessionsResponse {
            revoked,
        }))
    }
}
