//! The Amazon SNS gateway: SMS through `Publish` to a phone number. Settings come from
//! `courier.sns`; credentials are either a static key pair from there or the standard AWS chain
//! (environment, profile, web identity, container and instance roles). The SDK's own retries are
//! off because the courier already retries with backoff and records every attempt; stacking the
//! two would multiply attempts and hide them from the record.
use super::{Delivered, OutgoingMessage, SendError, Sender};
use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sns::Client;
use aws_sdk_sns::config::{Credentials, Region};
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;
use std::collections::HashMap;
use std::time::Duration;

const KEY: &str = "courier.sns";
const SENDER_ID_ATTRIBUTE: &str = "AWS.SNS.SMS.SenderID";
const SMS_TYPE_ATTRIBUTE: &str = "AWS.SNS.SMS.SMSType";
const SMS_TYPES: &[&str] = &["Transactional", "Promotional"];
// A worker blocked on a dead endpoint holds up every message behind it, so fail fast and let
// the courier's backoff decide when to try again.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
// AWS messages are short; the cap keeps an unexpected one from flooding the attempt record.
const MAX_REASON_CHARS: usize = 300;

/// `courier.sns`.
#[derive(Clone, PartialEq, Eq)]
pub struct SnsSettings {
    pub region: String,
    /// A stand-in (moto, LocalStack) or a VPC endpoint; unset means AWS's own endpoint.
    pub endpoint_url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Alphanumeric sender id, where the destination country supports one.
    pub sender_id: Option<String>,
    /// `Transactional` or `Promotional`.
    pub sms_type: Option<String>,
}

impl std::fmt::Debug for SnsSettings {
    // The secret key must never reach a log through `Debug`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SnsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("sender_id", &self.sender_id)
            .field("sms_type", &self.sms_type)
            .finish()
    }
}

impl SnsSettings {
    /// Reads `courier.sns`, collecting every problem as `(key, message)` so one run of the
    /// validator reports them all. Messages never quote the secret key.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Vec<(String, String)>> {
        let Some(object) = value.as_object() else {
            return Err(vec![(KEY.to_owned(), "must be an object".to_owned())]);
        };
        let mut problems = Vec::new();
        let known = [
            "region",
            "endpoint_url",
            "access_key_id",
            "secret_access_key",
            "sender_id",
            "sms_type",
        ];
        for key in object.keys() {
            if !known.contains(&key.as_str()) {
                problems.push((format!("{KEY}.{key}"), "unknown key".to_owned()));
            }
        }

        let region = optional_string(object, "region", &mut problems);
        let endpoint_url = optional_string(object, "endpoint_url", &mut problems);
        let access_key_id = optional_string(object, "access_key_id", &mut problems);
        let secret_access_key = optional_string(object, "secret_access_key", &mut problems);
        let sender_id = optional_string(object, "sender_id", &mut problems);
        let sms_type = optional_string(object, "sms_type", &mut problems);

        // Null counts as absent, but a value of the wrong type has already been reported.
        let reported =
            |problems: &[(String, String)], key: &str| problems.iter().any(|(k, _)| k == key);
        if region.is_none() && !reported(&problems, "courier.sns.region") {
            problems.push((format!("{KEY}.region"), "is required".to_owned()));
        }
        if let Some(region) = &region
            && !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            problems.push((
                format!("{KEY}.region"),
                "must be an AWS region name such as us-east-1".to_owned(),
            ));
        }
        if let Some(endpoint) = &endpoint_url {
            match url::Url::parse(endpoint) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
                _ => problems.push((
                    format!("{KEY}.endpoint_url"),
                    "must be an absolute http or https url".to_owned(),
                )),
            }
        }
        // Half a key pair is a mistake, not a request for the default chain: silently falling
        // back would send with whatever role the machine happens to have.
        match (&access_key_id, &secret_access_key) {
            (Some(_), None) if !reported(&problems, "courier.sns.secret_access_key") => problems
                .push((
                    format!("{KEY}.secret_access_key"),
                    "is required when access_key_id is set".to_owned(),
                )),
            (None, Some(_)) if !reported(&problems, "courier.sns.access_key_id") => {
                problems.push((
                    format!("{KEY}.access_key_id"),
                    "is required when secret_access_key is set".to_owned(),
                ))
            }
            _ => {}
        }
        if let Some(sender_id) = &sender_id
            && !(sender_id.chars().count() <= 11
                && sender_id.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            problems.push((
                format!("{KEY}.sender_id"),
                "must be 1 to 11 letters or digits".to_owned(),
            ));
        }
        if let Some(sms_type) = &sms_type
            && !SMS_TYPES.contains(&sms_type.as_str())
        {
            problems.push((
                format!("{KEY}.sms_type"),
                "must be Transactional or Promotional".to_owned(),
            ));
        }

        match region {
            Some(region) if problems.is_empty() => Ok(Self {
                region,
                endpoint_url,
                access_key_id,
                secret_access_key,
                sender_id,
                sms_type,
            }),
            _ => Err(problems),
        }
    }
}

/// A non-empty string at `key`, `None` when absent or null; anything else is a problem. The
/// message names the expected type only, so it is safe for the secret too.
fn optional_string(
    object: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    problems: &mut Vec<(String, String)>,
) -> Option<String> {
    match object.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
        Some(_) => {
            problems.push((
                format!("{KEY}.{key}"),
                "must be a non-empty string".to_owned(),
            ));
            None
        }
    }
}

/// Sends SMS through SNS `Publish`.
#[derive(Clone)]
pub struct SnsSender {
    client: Client,
    attributes: HashMap<String, MessageAttributeValue>,
}

impl std::fmt::Debug for SnsSender {
    // The client's configuration holds the credentials; keep it out of `Debug` entirely.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SnsSender")
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SnsSender {
    /// Builds the client. Only local work happens here (no request to AWS); credentials from
    /// the default chain are resolved lazily on the first send.
    pub async fn new(settings: SnsSettings) -> Result<Self, String> {
        let timeouts = TimeoutConfig::builder()
            .operation_timeout(OPERATION_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::disabled());
        if let Some(endpoint) = &settings.endpoint_url {
            loader = loader.endpoint_url(endpoint.clone());
        }
        match (settings.access_key_id, settings.secret_access_key) {
            (Some(key_id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    key_id,
                    secret,
                    None,
                    None,
                    "twofold-courier-sns",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(
                    "courier.sns needs both access_key_id and secret_access_key, or neither"
                        .to_owned(),
                );
            }
        }
        let client = Client::new(&loader.load().await);

        let mut attributes = HashMap::new();
        for (name, value) in [
            (SENDER_ID_ATTRIBUTE, settings.sender_id),
            (SMS_TYPE_ATTRIBUTE, settings.sms_type),
        ] {
            if let Some(value) = value {
                let attribute = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .map_err(|error| format!("sns message attribute {name}: {error}"))?;
                attributes.insert(name.to_owned(), attribute);
            }
        }
        Ok(Self { client, attributes })
    }
}

#[async_trait]
impl Sender for SnsSender {
    fn gateway(&self) -> &str {
        "sns"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let output = self
            .client
            .publish()
            .phone_number(&message.recipient)
            .message(&message.body)
            .set_message_attributes((!self.attributes.is_empty()).then(|| self.attributes.clone()))
            .send()
            .await
            .map_err(|error| send_error(&error))?;
        Ok(Delivered {
            provider_message_id: output.message_id,
        })
    }
}

/// Maps an SDK failure to the courier's verdict. The reason carries the AWS error code and
/// message; the request (and so the body with the code) is never part of it.
pub fn send_error(error: &SdkError<PublishError>) -> SendError {
    match error {
        SdkError::ServiceError(service) => {
            let status = Some(service.raw().status().as_u16());
            let code = service.err().code();
            let message = service.err().message();
            let reason = match (code, message) {
                (Some(code), Some(message)) => format!("sns {code}: {message}"),
                (Some(code), None) => format!("sns {code}"),
                (None, Some(message)) => format!("sns error: {message}"),
                (None, None) => match status {
                    Some(status) => format!("sns error with http status {status}"),
                    None => "sns error".to_owned(),
                },
            };
            SendError {
                retryable: is_retryable(code, status),
                reason: truncate(reason),
            }
        }
        SdkError::TimeoutError(_) => SendError {
            retryable: true,
            reason: "sns request timed out".to_owned(),
        },
        SdkError::DispatchFailure(failure) => {
            // The connector's error names the endpoint and the I/O cause; the request body is not
            // part of it.
            let detail = failure
                .as_connector_error()
                .map(|connector| error_chain(connector))
                .unwrap_or_else(|| "dispatch failure".to_owned());
            SendError {
                retryable: true,
                reason: truncate(format!("sns request not delivered: {detail}")),
            }
        }
        // An unreadable answer usually means a proxy or load balancer answered instead of SNS.
        SdkError::ResponseError(_) => SendError {
            retryable: true,
            reason: "sns answer could not be read".to_owned(),
        },
        // The request could not even be built (bad input or no credentials): trying again later
        // gives the same result.
        SdkError::ConstructionFailure(_) => SendError {
            retryable: false,
            reason: truncate(format!(
                "sns request could not be built: {}",
                error_chain(error)
            )),
        },
        _ => SendError {
            retryable: true,
            reason: truncate(format!("sns: {}", error_chain(error))),
        },
    }
}

/// Whether an SNS service error is worth another attempt: throttling and AWS's own failures
/// are; a refused number, opted-out recipient, or bad credentials are not.
pub fn is_retryable(code: Option<&str>, status: Option<u16>) -> bool {
    const RETRYABLE_CODES: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "KMSThrottling",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    ];
    if let Some(code) = code
        && RETRYABLE_CODES.contains(&code)
    {
        return true;
    }
    matches!(status, Some(429) | Some(500..=599))
}

/// The error and its causes on one line. `DisplayErrorContext` would also append the `Debug`
/// form, which is noise in an attempt record.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn truncate(mut reason: String) -> String {
    if let Some((index, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(index);
        reason.push('…');
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sns::config::http::HttpResponse;
    use aws_sdk_sns::error::ErrorMetadata;
    use serde_json::json;

    fn service_error(code: &str, status: u16) -> SdkError<PublishError, HttpResponse> {
        let error = PublishError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("details from aws")
                .build(),
        );
        let status = status.try_into().expect("valid status");
        SdkError::service_error(error, HttpResponse::new(status, "".into()))
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for (code, status) in [
            ("Throttling", 400),
            ("ThrottlingException", 400),
            ("InternalError", 500),
            ("ServiceUnavailable", 503),
            ("SomethingNew", 502),
            ("SomethingNew", 429),
        ] {
            let verdict = send_error(&service_error(code, status));
            assert!(verdict.retryable, "{code} {status}");
            assert_eq!(verdict.reason, format!("sns {code}: details from aws"));
        }
    }

    #[test]
    fn refusals_are_final() {
        for (code, status) in [
            ("InvalidParameter", 400),
            ("InvalidParameterValue", 400),
            ("AuthorizationError", 403),
            ("OptedOut", 400),
            ("InvalidClientTokenId", 403),
        ] {
            assert!(
                !send_error(&service_error(code, status)).retryable,
                "{code}"
            );
        }
    }

    #[test]
    fn timeouts_are_retryable() {
        let error: SdkError<PublishError, HttpResponse> =
            SdkError::timeout_error("operation timeout");
        assert!(send_error(&error).retryable);
    }

    #[test]
    fn settings_accept_a_full_block() {
        let settings = SnsSettings::from_value(&json!({
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:5000",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "wJalrXUtnFEMI",
            "sender_id": "Twofold",
            "sms_type": "Transactional",
        }))
        .expect("valid settings");
        assert_eq!(settings.region, "eu-west-1");
        assert_eq!(settings.sender_id.as_deref(), Some("Twofold"));
        assert!(!format!("{settings:?}").contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn settings_problems_name_their_keys_and_hide_the_secret() {
        let problems = SnsSettings::from_value(&json!({
            "secret_access_key": "s3cr3t-value",
            "sender_id": "far-too-long-sender",
            "sms_type": "Urgent",
            "endpoint_url": "not a url",
            "colour": "blue",
        }))
        .expect_err("invalid settings");
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        for expected in [
            "courier.sns.region",
            "courier.sns.access_key_id",
            "courier.sns.sender_id",
            "courier.sns.sms_type",
            "courier.sns.endpoint_url",
            "courier.sns.colour",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        assert!(
            problems
                .iter()
                .all(|(_, message)| !message.contains("s3cr3t"))
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let problems = SnsSettings::from_value(&json!({
            "region": null,
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": null,
        }))
        .expect_err("region and secret missing");
        let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            ["courier.sns.region", "courier.sns.secret_access_key"]
        );
    }

    #[test]
    fn settings_must_be_an_object() {
        let problems = SnsSettings::from_value(&json!("us-east-1")).expect_err("not an object");
        assert_eq!(problems[0].0, "courier.sns");
    }
}
