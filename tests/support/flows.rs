//! The user-side steps most scenarios start with: register, log in with a password, ask
//! WhoAmI, start an AAL2 flow.
use super::server::{TestServer, traits, with_bearer};
use twofold::proto::v1;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Registered {
    pub identity_id: String,
    /// The AAL1 session token registration issued.
    pub token: String,
    pub email: String,
}

/// A unique valid German mobile number, so tests sharing a database never collide.
pub fn unique_phone() -> String {
    let suffix = uuid::Uuid::new_v4().as_u128() % 100_000_000;
    format!("+49151{suffix:08}")
}

pub async fn register(server: &TestServer, email: &str, phone: Option<&str>) -> Registered {
    let mut flows = server.flows().await;
    let flow = flows
        .create_registration_flow(v1::CreateRegistrationFlowRequest::default())
        .await
        .expect("registration flow")
        .into_inner()
        .flow
        .expect("flow");
    let submitted = flows
        .submit_registration_flow(v1::SubmitRegistrationFlowRequest {
            flow_id: flow.id,
            traits: Some(traits(email, phone)),
            password: PASSWORD.into(),
        })
        .await
        .expect("registration succeeds")
        .into_inner();
    Registered {
        identity_id: submitted.identity.expect("identity").id,
        token: submitted.session_token,
        email: email.to_owned(),
    }
}

pub async fn password_login(
    server: &TestServer,
    identifier: &str,
    password: &str,
) -> Result<v1::SubmitLoginPasswordResponse, tonic::Status> {
    let mut flows = server.flows().await;
    let flow = flows
        .create_login_flow(v1::CreateLoginFlowRequest {
            requested_aal: v1::AuthenticatorAssuranceLevel::Aal1 as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .flow
        .expect("flow");
    flows
        .submit_login_password(v1::SubmitLoginPasswordRequest {
            flow_id: flow.id,
            identifier: identifier.into(),
            password: password.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn whoami(
    server: &TestServer,
    token: &str,
    required: v1::RequiredAal,
) -> Result<v1::Session, tonic::Status> {
    server
        .sessions()
        .await
        .who_am_i(with_bearer(
            v1::WhoAmIRequest {
                required_aal: required as i32,
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().session.expect("session"))
}

/// `CreateLoginFlow(aal2, via)` for the session holding `token`.
pub async fn aal2_flow(
    server: &TestServer,
    token: &str,
    via: &str,
) -> Result<v1::LoginFlow, tonic::Status> {
    server
        .flows()
        .await
        .create_login_flow(with_bearer(
            v1::CreateLoginFlowRequest {
                requested_aal: v1::AuthenticatorAssuranceLevel::Aal2 as i32,
                via: via.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().flow.expect("flow"))
}
