//! Conversions between protobuf messages and domain types. Pure functions; no I/O.
use super::error::invalid_field;
use crate::domain::aal::{Aal, Channel, RequiredAal};
use crate::domain::flows::{
    CodeChoice, FlowState, LoginFlow, RegistrationFlow, UiMessage, UiMessageKind,
};
use crate::domain::identity::{Identity, IdentityState, VerifiableAddress};
use crate::domain::mask::mask_address;
use crate::domain::session::{AuthenticationMethod, MethodKind, Session};
use crate::domain::sessions::SessionView;
use crate::proto::v1;
use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use tonic::Status;
use uuid::Uuid;

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn parse_uuid(field: &str, text: &str) -> Result<Uuid, Status> {
    if text.is_empty() {
        return Err(invalid_field(field, "is required"));
    }
    Uuid::parse_str(text).map_err(|_| invalid_field(field, "must be a UUID"))
}

// ---------------------------------------------------------------- JSON <-> Struct

/// Protobuf `Struct` numbers are doubles; integral values become JSON integers so schemas with
/// `"type": "integer"` accept them.
pub fn struct_to_json(value: Option<prost_types::Struct>) -> serde_json::Value {
    let fields = value.map(|s| s.fields).unwrap_or_default();
    serde_json::Value::Object(
        fields
            .into_iter()
            .map(|(key, value)| (key, value_to_json(value)))
            .collect(),
    )
}

fn value_to_json(value: prost_types::Value) -> serde_json::Value {
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(flag),
        Some(Kind::StringValue(text)) => serde_json::Value::String(text),
        Some(Kind::NumberValue(number)) => {
            if number.fract() == 0.0 && number.abs() < 9_007_199_254_740_992.0 {
                serde_json::Value::from(number as i64)
            } else {
                serde_json::Number::from_f64(number)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.into_iter().map(value_to_json).collect())
        }
        Some(Kind::StructValue(object)) => struct_to_json(Some(object)),
    }
}

pub fn json_to_struct(value: &serde_json::Value) -> prost_types::Struct {
    match json_to_value(value).kind {
        Some(Kind::StructValue(object)) => object,
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(value: &serde_json::Value) -> prost_types::Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(flag) => Kind::BoolValue(*flag),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        serde_json::Value::String(text) => Kind::StringValue(text.clone()),
        serde_json::Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(fields) => Kind::StructValue(prost_types::Struct {
            fields: fields
                .iter()
                .map(|(key, value)| (key.clone(), json_to_value(value)))
                .collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

// ---------------------------------------------------------------- enums

pub fn aal_to_proto(aal: Aal) -> v1::AuthenticatorAssuranceLevel {
    match aal {
        Aal::Aal1 => v1::AuthenticatorAssuranceLevel::Aal1,
        Aal::Aal2 => v1::AuthenticatorAssuranceLevel::Aal2,
    }
}

pub fn aal_from_proto(field: &str, value: i32) -> Result<Option<Aal>, Status> {
    match v1::AuthenticatorAssuranceLevel::try_from(value) {
        Ok(v1::AuthenticatorAssuranceLevel::Unspecified) => Ok(None),
        Ok(v1::AuthenticatorAssuranceLevel::Aal1) => Ok(Some(Aal::Aal1)),
        Ok(v1::AuthenticatorAssuranceLevel::Aal2) => Ok(Some(Aal::Aal2)),
        Err(_) => Err(invalid_field(field, "is not a known assurance level")),
    }
}

pub fn required_aal_from_proto(value: i32) -> Result<Option<RequiredAal>, Status> {
    match v1::RequiredAal::try_from(value) {
        Ok(v1::RequiredAal::Unspecified) => Ok(None),
        Ok(v1::RequiredAal::Aal1) => Ok(Some(RequiredAal::Aal1)),
        Ok(v1::RequiredAal::HighestAvailable) => Ok(Some(RequiredAal::HighestAvailable)),
        Err(_) => Err(invalid_field("required_aal", "is not a known value")),
    }
}

pub fn channel_to_proto(channel: Channel) -> v1::Channel {
    match channel {
        Channel::Email => v1::Channel::Email,
        Channel::Sms => v1::Channel::Sms,
    }
}

fn flow_state_to_proto(state: FlowState) -> v1::FlowState {
    match state {
        FlowState::ChooseMethod => v1::FlowState::ChooseMethod,
        FlowState::CodeSent => v1::FlowState::CodeSent,
        FlowState::PassedChallenge => v1::FlowState::PassedChallenge,
    }
}

// ---------------------------------------------------------------- messages

fn message_to_proto(message: &UiMessage) -> v1::Message {
    v1::Message {
        id: message.id,
        text: message.text.clone(),
        r#type: match message.kind {
            UiMessageKind::Info => v1::MessageType::Info,
            UiMessageKind::Error => v1::MessageType::Error,
            UiMessageKind::Success => v1::MessageType::Success,
        } as i32,
        context: message.context.iter().cloned().collect(),
    }
}

fn address_to_proto(address: &VerifiableAddress) -> v1::VerifiableAddress {
    v1::VerifiableAddress {
        id: address.id.to_string(),
        value: address.value.clone(),
        channel: channel_to_proto(address.channel) as i32,
        verified: address.verified,
        verified_at: address.verified_at.map(timestamp),
        r#trait: address.trait_name.clone(),
    }
}

pub fn identity_to_proto(identity: &Identity) -> v1::Identity {
    v1::Identity {
        id: identity.id.to_string(),
        schema_id: identity.schema_id.clone(),
        traits: Some(json_to_struct(&identity.traits)),
        state: match identity.state {
            IdentityState::Active => v1::IdentityState::Active,
            IdentityState::Inactive => v1::IdentityState::Inactive,
        } as i32,
        verifiable_addresses: identity
            .verifiable_addresses
            .iter()
            .map(address_to_proto)
            .collect(),
        code_addresses: identity
            .code_addresses()
            .filter_map(|identifier| {
                Some(v1::CodeAddress {
                    r#trait: identifier.trait_name.clone(),
                    value: identifier.value.clone(),
                    channel: channel_to_proto(identifier.channel?) as i32,
                })
            })
            .collect(),
        has_password: identity.has_password,
        created_at: Some(timestamp(identity.created_at)),
        updated_at: Some(timestamp(identity.updated_at)),
    }
}

fn method_to_proto(method: &AuthenticationMethod) -> v1::AuthenticationMethod {
    v1::AuthenticationMethod {
        method: match method.method {
            MethodKind::Password => v1::AuthenticationMethodType::Password,
            MethodKind::Code => v1::AuthenticationMethodType::Code,
        } as i32,
        aal: aal_to_proto(method.aal) as i32,
        completed_at: Some(timestamp(method.completed_at)),
        channel: method
            .channel
            .map_or(v1::Channel::Unspecified, channel_to_proto) as i32,
    }
}

pub fn session_to_proto(
    session: &Session,
    identity: Option<&Identity>,
    active: bool,
) -> v1::Session {
    v1::Session {
        id: session.id.to_string(),
        active,
        aal: aal_to_proto(session.aal) as i32,
        authentication_methods: session.methods.iter().map(method_to_proto).collect(),
        issued_at: Some(timestamp(session.issued_at)),
        expires_at: Some(timestamp(session.expires_at)),
        authenticated_at: Some(timestamp(session.authenticated_at)),
        identity: identity.map(identity_to_proto),
    }
}

pub fn session_view_to_proto(view: &SessionView) -> v1::Session {
    session_to_proto(&view.session, Some(&view.identity), view.active)
}

pub fn registration_flow_to_proto(
    flow: &RegistrationFlow,
    schema_json: String,
) -> v1::RegistrationFlow {
    v1::RegistrationFlow {
        id: flow.id.to_string(),
        schema_id: flow.schema_id.clone(),
        issued_at: Some(timestamp(flow.issued_at)),
        expires_at: Some(timestamp(flow.expires_at)),
        state: flow_state_to_proto(flow.state) as i32,
        schema_json,
        messages: flow.messages.iter().map(message_to_proto).collect(),
    }
}

/// Addresses are shown masked: a flow id may be seen by more eyes than the address's owner.
fn code_choice_to_proto(choice: &CodeChoice) -> v1::CodeChoice {
    v1::CodeChoice {
        address_id: choice.address_id.to_string(),
        masked_address: mask_address(&choice.value),
        channel: channel_to_proto(choice.channel) as i32,
        r#trait: choice.trait_name.clone(),
    }
}

pub fn login_flow_to_proto(flow: &LoginFlow) -> v1::LoginFlow {
    v1::LoginFlow {
        id: flow.id.to_string(),
        requested_aal: aal_to_proto(flow.requested_aal) as i32,
        refresh: flow.refresh,
        state: flow_state_to_proto(flow.state) as i32,
        issued_at: Some(timestamp(flow.issued_at)),
        expires_at: Some(timestamp(flow.expires_at)),
        methods: flow.methods.clone(),
        code_choices: flow.choices.iter().map(code_choice_to_proto).collect(),
        code_sent_to: flow.sent_to.as_ref().map(code_choice_to_proto),
        resend_available_at: flow.resend_available_at.map(timestamp),
        messages: flow.messages.iter().map(message_to_proto).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{json_to_struct, struct_to_json};
    use serde_json::json;

    #[test]
    fn traits_survive_a_round_trip_and_integers_stay_integers() {
        let traits = json!({"email": "a@b.c", "age": 42, "ratio": 0.5, "tags": ["x"], "name": {"first": "A"}, "none": null});
        assert_eq!(struct_to_json(Some(json_to_struct(&traits))), traits);
    }
}
