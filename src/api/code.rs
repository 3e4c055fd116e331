//! `CodeService` (admin listener): Verify-style send and check for backends.
use super::convert::{channel_to_proto, parse_uuid, timestamp};
use crate::domain::mask::mask_address;
use crate::domain::verification::{self, SendCode, Target};
use crate::domain::{Context, DomainError};
use crate::proto::v1;
use crate::proto::v1::code_service_server::CodeService;
use crate::proto::v1::send_code_request::Target as ProtoTarget;
use tonic::{Request, Response, Status};

pub struct CodeApi {
    context: Context,
}

impl CodeApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

#[tonic::async_trait]
impl CodeService for CodeApi {
    async fn send_code(
        &self,
        request: Request<v1::SendCodeRequest>,
    ) -> Result<Response<v1::SendCodeResponse>, Status> {
        let request = request.into_inner();
        let identity_id = parse_uuid("identity_id", &request.identity_id)?;
        let target = match &request.target {
            Some(ProtoTarget::Via(via)) => Some(Target::Via(via.trim())),
            Some(ProtoTarget::Address(address)) => Some(Target::Address(address.as_str())),
            None => None,
        };
        let challenge = verification::send_code(
            &self.context,
            SendCode {
                identity_id,
                target,
                purpose: &request.purpose,
                locale: &request.locale,
                request_id: &request.request_id,
            },
        )
        .await?;
        Ok(Response::new(v1::SendCodeResponse {
            challenge_id: challenge.id.to_string(),
            channel: channel_to_proto(challenge.channel) as i32,
            masked_address: mask_address(&challenge.address),
            expires_at: Some(timestamp(challenge.expires_at)),
            resend_available_at: Some(timestamp(challenge.resend_available_at)),
        }))
    }

    async fn verify_code(
        &self,
        request: Request<v1::VerifyCodeRequest>,
    ) -> Result<Response<v1::VerifyCodeResponse>, Status> {
        let request = request.into_inner();
        let challenge_id = parse_uuid("challenge_id", &request.challenge_id)?;
        // A wrong or spent code is an answer, not a failed call: backends branch on the reason.
        let failure = |reason: v1::ErrorReason| {
            Ok(Response::new(v1::VerifyCodeResponse {
                verified: false,
                failure_reason: reason as i32,
                identity_id: String::new(),
            }))
        };
        match verification::verify_code(
            &self.context,
            challenge_id,
            &request.purpose,
            &request.code,
        )
        .await
        {
            Ok(challenge) => Ok(Response::new(v1::VerifyCodeResponse {
                verified: true,
                failure_reason: v1::ErrorReason::Unspecified as i32,
                identity_id: challenge.identity_id.to_string(),
            })),
            Err(DomainError::CodeInvalid) => failure(v1::ErrorReason::CodeInvalid),
            Err(DomainError::CodeSubmittedTooOften) => {
                failure(v1::ErrorReason::CodeSubmittedTooOften)
            }
            Err(other) => Err(other.into()),
        }
    }
}
