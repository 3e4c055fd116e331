//! `FlowService`: registration and login flows (public listener).
use super::auth::session_token;
use super::convert::{
    aal_from_proto, identity_to_proto, login_flow_to_proto, parse_uuid, registration_flow_to_proto,
    session_to_proto, struct_to_json,
};
use crate::domain::{Context, flows, login_code};
use crate::proto::v1;
use crate::proto::v1::flow_service_server::FlowService;
use tonic::{Request, Response, Status};

pub struct FlowApi {
    context: Context,
}

impl FlowApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }

    fn schema_json(&self, schema_id: &str) -> String {
        self.context
            .settings()
            .schemas
            .get(schema_id)
            .map(|schema| schema.raw().to_string())
            .unwrap_or_default()
    }
}

#[tonic::async_trait]
impl FlowService for FlowApi {
    async fn create_registration_flow(
        &self,
        request: Request<v1::CreateRegistrationFlowRequest>,
    ) -> Result<Response<v1::CreateRegistrationFlowResponse>, Status> {
        let request = request.into_inner();
        let flow = flows::create_registration_flow(&self.context, &request.schema_id).await?;
        Ok(Response::new(v1::CreateRegistrationFlowResponse {
            flow: Some(registration_flow_to_proto(
                &flow,
                self.schema_json(&flow.schema_id),
            )),
        }))
    }

    async fn get_registration_flow(
        &self,
        request: Request<v1::GetRegistrationFlowRequest>,
    ) -> Result<Response<v1::GetRegistrationFlowResponse>, Status> {
        let flow_id = parse_uuid("flow_id", &request.get_ref().flow_id)?;
        let flow = flows::get_registration_flow(&self.context, flow_id).await?;
        Ok(Response::new(v1::GetRegistrationFlowResponse {
            flow: Some(registration_flow_to_proto(
                &flow,
                self.schema_json(&flow.schema_id),
            )),
        }))
    }

    async fn submit_registration_flow(
        &self,
        request: Request<v1::SubmitRegistrationFlowRequest>,
    ) -> Result<Response<v1::SubmitRegistrationFlowResponse>, Status> {
        let request = request.into_inner();
        let flow_id = parse_uuid("flow_id", &request.flow_id)?;
        let registered = flows::submit_registration_flow(
            &self.context,
            flow_id,
            struct_to_json(request.traits),
            request.password,
        )
        .await?;
        Ok(Response::new(v1::SubmitRegistrationFlowResponse {
            identity: Some(identity_to_proto(&registered.identity)),
            session: Some(session_to_proto(
                &registered.session,
                Some(&registered.identity),
                true,
            )),
            session_token: registered.token.expose().to_owned(),
            flow: Some(registration_flow_to_proto(&registered.flow, String::new())),
        }))
    }

    async fn create_login_flow(
        &self,
        request: Request<v1::CreateLoginFlowRequest>,
    ) -> Result<Response<v1::CreateLoginFlowResponse>, Status> {
        let token = session_token(request.metadata());
        let request = request.into_inner();
        let flow = flows::create_login_flow(
            &self.context,
            flows::LoginFlowRequest {
                requested_aal: aal_from_proto("requested_aal", request.requested_aal)?,
                refresh: request.refresh,
                via: request.via.trim(),
                session_token: token.as_deref(),
            },
        )
        .await?;
        Ok(Response::new(v1::CreateLoginFlowResponse {
            flow: Some(login_flow_to_proto(&flow)),
        }))
    }

    async fn get_login_flow(
        &self,
        request: Request<v1::GetLoginFlowRequest>,
    ) -> Result<Response<v1::GetLoginFlowResponse>, Status> {
        let token = session_token(request.metadata());
        let flow_id = parse_uuid("flow_id", &request.get_ref().flow_id)?;
        let flow = flows::get_login_flow(&self.context, flow_id, token.as_deref()).await?;
        Ok(Response::new(v1::GetLoginFlowResponse {
            flow: Some(login_flow_to_proto(&flow)),
        }))
    }

    async fn submit_login_password(
        &self,
        request: Request<v1::SubmitLoginPasswordRequest>,
    ) -> Result<Response<v1::SubmitLoginPasswordResponse>, Status> {
        let request = request.into_inner();
        let flow_id = parse_uuid("flow_id", &request.flow_id)?;
        let logged_in = flows::submit_login_password(
            &self.context,
            flow_id,
            &request.identifier,
            request.password,
        )
        .await?;
        Ok(Response::new(v1::SubmitLoginPasswordResponse {
            session: Some(session_to_proto(&logged_in.session, None, true)),
            session_token: logged_in.token.expose().to_owned(),
            flow: Some(login_flow_to_proto(&logged_in.flow)),
        }))
    }

    async fn send_login_code(
        &self,
        request: Request<v1::SendLoginCodeRequest>,
    ) -> Result<Response<v1::SendLoginCodeResponse>, Status> {
        let token = session_token(request.metadata());
        let request = request.into_inner();
        let flow_id = parse_uuid("flow_id", &request.flow_id)?;
        let flow = login_code::send_login_code(
            &self.context,
            flow_id,
            &request.address_id,
            &request.identifier,
            token.as_deref(),
        )
        .await?;
        Ok(Response::new(v1::SendLoginCodeResponse {
            flow: Some(login_flow_to_proto(&flow)),
        }))
    }

    async fn resend_login_code(
        &self,
        request: Request<v1::ResendLoginCodeRequest>,
    ) -> Result<Response<v1::ResendLoginCodeResponse>, Status> {
        let token = session_token(request.metadata());
        let flow_id = parse_uuid("flow_id", &request.get_ref().flow_id)?;
        let flow = login_code::resend_login_code(&self.context, flow_id, token.as_deref()).await?;
        Ok(Response::new(v1::ResendLoginCodeResponse {
            flow: Some(login_flow_to_proto(&flow)),
        }))
    }

    async fn submit_login_code(
        &self,
        request: Request<v1::SubmitLoginCodeRequest>,
    ) -> Result<Response<v1::SubmitLoginCodeResponse>, Status> {
        let token = session_token(request.metadata());
        let request = request.into_inner();
        let flow_id = parse_uuid("flow_id", &request.flow_id)?;
        let logged_in =
            login_code::submit_login_code(&self.context, flow_id, &request.code, token.as_deref())
                .await?;
        Ok(Response::new(v1::SubmitLoginCodeResponse {
            session: Some(session_to_proto(&logged_in.session, None, true)),
            session_token: logged_in.token.expose().to_owned(),
            flow: Some(login_flow_to_proto(&logged_in.flow)),
        }))
    }
}
