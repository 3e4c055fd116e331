//! Twilio's Messages API, natively: Kratos can only reach Twilio through a hand-written
//! form-encoded webhook; here `courier.twilio` is enough.
//!
//! ```yaml
//! courier:
//!   twilio:
//!     account_sid: AC…                 # required
//!     auth_token: …                    # or api_key_sid: SK… with api_key_secret: …
//!     from: "+15555550100"             # or messaging_service_sid: MG… (exactly one)
//!     base_url: https://api.twilio.com # default; tests point it at a stand-in
//! ```
//!
//! Each message is one `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with
//! `To`, `Body` and `From` or `MessagingServiceSid`, under HTTP basic auth. A 2xx (Twilio
//! answers 201) is a delivery whose provider id is the message `sid`. 429, 5xx and timeouts are
//! retried; Twilio's refusals of the number (21211 invalid `To`, 21614 not a mobile number, 21408
//! region not permitted, 21610 unsubscribed) and every other 4xx are final. Failure reasons carry
//! Twilio's error code and message, with the recipient masked, and never the message body.
use super::http::{
    Problems, check_known_keys, describe_status, gateway_client, parse_url, provider_id,
    read_answer, status_is_retryable, transport_error,
};
use super::{Delivered, OutgoingMessage, SendError, Sender};
use crate::domain::aal::Channel;
use crate::domain::mask::mask_address;
use async_trait::async_trait;
use serde_json::Value;

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio error codes that say the recipient can not be reached, ever; they are final like any
/// other 4xx, and named so the reason says why.
const RECIPIENT_REFUSED: &[(i64, &str)] = &[
    (21211, "invalid recipient number"),
    (21614, "recipient is not a mobile number"),
    (21408, "recipient region not permitted"),
    (21610, "recipient has unsubscribed"),
];

#[derive(Clone, PartialEq, Eq)]
pub enum TwilioAuth {
    /// The account's auth token; basic auth as account SID + token.
    AuthToken(String),
    /// An API key (Twilio's recommendation for production); basic auth as key SID + secret.
    ApiKey { sid: String, secret: String },
}

impl std::fmt::Debug for TwilioAuth {
    // Secrets stay out of `Debug`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AuthToken(_) => formatter.write_str("AuthToken(..)"),
            Self::ApiKey { sid, .. } => formatter
                .debug_struct("ApiKey")
                .field("sid", sid)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    pub account_sid: String,
    pub auth: TwilioAuth,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    /// Without a trailing slash.
    pub base_url: String,
}

impl TwilioSettings {
    /// Reads `courier.twilio`. Problems are keyed `courier.twilio.<key>` and never repeat a
    /// secret.
    pub fn from_value(value: &Value) -> Result<Self, Problems> {
        const PREFIX: &str = "courier.twilio";
        let mut problems = Problems::new();
        let Some(object) = value.as_object() else {
            return Err(vec![(PREFIX.to_owned(), "must be an object".to_owned())]);
        };
        check_known_keys(
            object,
            PREFIX,
            &[
                "account_sid",
                "auth_token",
                "api_key_sid",
                "api_key_secret",
                "from",
                "messaging_service_sid",
                "base_url",
            ],
            &mut problems,
        );
        let mut string = |name: &str| -> Option<String> {
            match object.get(name) {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) if !text.trim().is_empty() => {
                    Some(text.trim().to_owned())
                }
                Some(_) => {
                    problems.push((
                        format!("{PREFIX}.{name}"),
                        "must be a non-empty string".to_owned(),
                    ));
                    None
                }
            }
        };
        let account_sid = string("account_sid");
        let auth_token = string("auth_token");
        let api_key_sid = string("api_key_sid");
        let api_key_secret = string("api_key_secret");
        let from = string("from");
        let messaging_service_sid = string("messaging_service_sid");
        let base_url = string("base_url");

        match &account_sid {
            None if !object.contains_key("account_sid") => {
                problems.push((format!("{PREFIX}.account_sid"), "is required".to_owned()))
            }
            Some(sid) if !is_sid(sid, "AC") => problems.push((
                format!("{PREFIX}.account_sid"),
                "must be an account sid: AC followed by 32 hexadecimal digits".to_owned(),
            )),
            _ => {}
        }

        let auth = match (auth_token, api_key_sid, api_key_secret) {
            (Some(token), None, None) => Some(TwilioAuth::AuthToken(token)),
            (None, Some(sid), Some(secret)) => {
                if is_sid(&sid, "SK") {
                    Some(TwilioAuth::ApiKey { sid, secret })
                } else {
                    problems.push((
                        format!("{PREFIX}.api_key_sid"),
                        "must be an api key sid: SK followed by 32 hexadecimal digits".to_owned(),
                    ));
                    None
                }
            }
            (None, Some(_), None) => {
                problems.push((
                    format!("{PREFIX}.api_key_secret"),
                    "is required with api_key_sid".to_owned(),
                ));
                None
            }
            (None, None, Some(_)) => {
                problems.push((
                    format!("{PREFIX}.api_key_sid"),
                    "is required with api_key_secret".to_owned(),
                ));
                None
            }
            (Some(_), _, _) => {
                problems.push((
                    format!("{PREFIX}.auth_token"),
                    "set either auth_token or api_key_sid with api_key_secret, not both".to_owned(),
                ));
                None
            }
            (None, None, None) => {
                problems.push((
                    format!("{PREFIX}.auth_token"),
                    "is required (or api_key_sid with api_key_secret)".to_owned(),
                ));
                None
            }
        };

        match (&from, &messaging_service_sid) {
            (Some(_), Some(_)) => problems.push((
                format!("{PREFIX}.from"),
                "set either from or messaging_service_sid, not both".to_owned(),
            )),
            (None, None) => problems.push((
                format!("{PREFIX}.from"),
                "is required (or messaging_service_sid)".to_owned(),
            )),
            (_, Some(sid)) if !is_sid(sid, "MG") => problems.push((
                format!("{PREFIX}.messaging_service_sid"),
                "must be a messaging service sid: MG followed by 32 hexadecimal digits".to_owned(),
            )),
            _ => {}
        }

        let base_url = match base_url {
            None => Some(DEFAULT_BASE_URL.to_owned()),
            Some(text) => parse_url(
                Some(&Value::String(text)),
                &format!("{PREFIX}.base_url"),
                &mut problems,
            )
            .map(|url| url.as_str().trim_end_matches('/').to_owned()),
        };

        match (problems.is_empty(), account_sid, auth, base_url) {
            (true, Some(account_sid), Some(auth), Some(base_url)) => Ok(Self {
                account_sid,
                auth,
                from,
                messaging_service_sid,
                base_url,
            }),
            _ => Err(problems),
        }
    }

    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.account_sid
        )
    }
}

/// `AC`/`SK`/`MG` and 32 hex digits, as Twilio issues them.
fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34
        && sid.starts_with(prefix)
        && sid[2..].bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[derive(Debug, Clone)]
pub struct TwilioSender {
    settings: TwilioSettings,
    client: reqwest::Client,
}

impl TwilioSender {
    pub fn new(settings: TwilioSettings) -> Result<Self, String> {
        Ok(Self {
            settings,
            client: gateway_client()?,
        })
    }

    pub fn settings(&self) -> &TwilioSettings {
        &self.settings
    }
}

#[async_trait]
impl Sender for TwilioSender {
    fn gateway(&self) -> &str {
        "twilio"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        if message.channel != Channel::Sms {
            return Err(SendError {
                retryable: false,
                reason: format!("twilio sends sms only, not {}", message.channel.as_str()),
            });
        }
        let settings = &self.settings;
        let mut form = vec![
            ("To", message.recipient.as_str()),
            ("Body", message.body.as_str()),
        ];
        match (&settings.messaging_service_sid, &settings.from) {
            (Some(service), _) => form.push(("MessagingServiceSid", service)),
            (None, Some(from)) => form.push(("From", from)),
            (None, None) => {}
        }
        let (user, password) = match &settings.auth {
            TwilioAuth::AuthToken(token) => (settings.account_sid.as_str(), token.as_str()),
            TwilioAuth::ApiKey { sid, secret } => (sid.as_str(), secret.as_str()),
        };
        let response = self
            .client
            .post(settings.messages_url())
            .basic_auth(user, Some(password))
            .form(&form)
            .send()
            .await
            .map_err(|error| transport_error("twilio", error))?;
        let status = response.status();
        let answer = serde_json::from_slice::<Value>(&read_answer(response).await).ok();
        if status.is_success() {
            return Ok(Delivered {
                provider_message_id: answer.and_then(|answer| provider_id(&answer, &["sid"])),
            });
        }
        Err(SendError {
            retryable: status_is_retryable(status),
            reason: twilio_reason(status, answer.as_ref(), &message.recipient),
        })
    }
}

/// `twilio answered 400 bad request: error 21211 (invalid recipient number): <message> <more_info>`.
fn twilio_reason(status: reqwest::StatusCode, answer: Option<&Value>, recipient: &str) -> String {
    let mut reason = format!("twilio answered {}", describe_status(status));
    let Some(answer) = answer else {
        return reason;
    };
    if let Some(code) = answer.get("code").and_then(Value::as_i64) {
        reason.push_str(&format!(": error {code}"));
        if let Some((_, meaning)) = RECIPIENT_REFUSED.iter().find(|(known, _)| *known == code) {
            reason.push_str(&format!(" ({meaning})"));
        }
    }
    if let Some(text) = answer.get("message").and_then(Value::as_str) {
        // Twilio quotes the number back ("The 'To' number +1555… is not valid"); the attempt log
        // keeps addresses masked.
        let text = text.replace(recipient, &mask_address(recipient));
        let text: String = text.chars().take(300).collect();
        reason.push_str(&format!(": {text}"));
    }
    if let Some(more) = answer.get("more_info").and_then(Value::as_str)
        && more.starts_with("https://")
        && more.len() < 200
    {
        reason.push_str(&format!(" ({more})"));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_reason_masks_the_recipient() {
        let reason = twilio_reason(
            reqwest::StatusCode::BAD_REQUEST,
            Some(
                &json!({"code": 21211, "message": "The 'To' number +15555550123 is not a valid phone number."}),
            ),
            "+15555550123",
        );
        assert!(reason.contains("21211"), "{reason}");
        assert!(!reason.contains("+15555550123"), "{reason}");
    }
}
