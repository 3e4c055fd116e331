//! The HTTP channel, "your own application": Kratos's `courier.channels[]` entry of
//! `type: http`. Each message becomes one request to a URL the operator controls (an SMS
//! provider's API, or a small service of their own), with a body rendered from a template.
//!
//! ```yaml
//! courier:
//!   channels:
//!     - id: sms
//!       type: http
//!       request_config:
//!         url: https://sms.example.com/send
//!         method: POST                # default POST
//!         headers:
//!           X-Tenant: acme
//!         body: |                     # inline, or file://path, or base64://…
//!           {
//!             "to": {{ recipient | tojson }},
//!             "text": {{ body | tojson }},
//!             "code": {{ template_data.code | tojson }},
//!             "reference": {{ message_id | tojson }}
//!           }
//!         auth:
//!           type: basic_auth          # or api_key
//!           config: { user: twofold, password: secret }
//!           # api_key: { name: X-Api-Key, value: secret, in: header }  (in: header | cookie)
//! ```
//!
//! # Template syntax
//!
//! Kratos writes these bodies in Jsonnet (or Go templates); Twofold uses Jinja syntax
//! (minijinja). A Kratos body must be rewritten: `ctx.recipient` becomes `{{ recipient }}`.
//! Values are inserted as they are, without escaping, so a string that goes into JSON should
//! pass through the `tojson` filter, which adds the quotes and escapes newlines (the SMS text
//! has several). Referring to a variable that does not exist is an error. The template is
//! compiled and rendered once against a sample message when the configuration loads, so a
//! mistake stops start-up instead of failing every send.
//!
//! # The context
//!
//! | name            | value                                                              |
//! |-----------------|--------------------------------------------------------------------|
//! | `recipient`     | the phone number or email address                                  |
//! | `body`          | the rendered message text (for SMS it ends with the WebOTP line)   |
//! | `subject`       | the email subject, `none` for SMS                                  |
//! | `template_type` | `login_code`, `verification_code`, ...                             |
//! | `locale`        | BCP 47 locale the text was rendered in                             |
//! | `message_id`    | the outbox id (a UUID), stable across retries: use it to deduplicate |
//! | `template_data` | `{to, code, login_code, identity_id, expires_in_minutes, request_url_domain, locale, purpose}` |
//!
//! Without `body` the request carries the context itself as JSON.
//!
//! # Content type
//!
//! Bodies are sent as `application/json` unless the configured headers say otherwise. When they
//! set `Content-Type: application/x-www-form-urlencoded` the template must render a JSON object
//! of flat values (strings, numbers, booleans; `null` drops the field), which is then
//! form-encoded. This is how Twilio-style APIs are called from Kratos:
//!
//! ```text
//! headers: { Content-Type: application/x-www-form-urlencoded }
//! body: '{"To": {{ recipient | tojson }}, "From": "+15550100", "Body": {{ body | tojson }}}'
//! ```
//!
//! # Outcome
//!
//! Any 2xx is a delivery; the provider's id is taken from a JSON answer's `id`, `sid` or
//! `message_id`. Timeouts, connection failures, 429 and 5xx are retried; redirects and other
//! 4xx are final. Redirects are not followed, so credentials never travel to another host.
//! Errors never carry the request body or the answer's body, which may echo the code.
use super::{Delivered, OutgoingMessage, SendError, Sender};
use async_trait::async_trait;
use base64::Engine as _;
use minijinja::value::{Value as TemplateValue, ValueKind};
use minijinja::{Environment, UndefinedBehavior};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are read only to find a message id; a provider that streams megabytes back must not
/// hold the courier's memory.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const TEMPLATE_NAME: &str = "body";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A problem with the configuration: the key it is about, and what is wrong.
pub type Problems = Vec<(String, String)>;

#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    Basic {
        user: String,
        password: String,
    },
    ApiKey {
        name: String,
        value: String,
        location: ApiKeyLocation,
    },
}

impl std::fmt::Debug for HttpAuth {
    // Credentials stay out of `Debug`, which ends up in logs and panics.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => formatter
                .debug_struct("Basic")
                .field("user", user)
                .finish_non_exhaustive(),
            Self::ApiKey { name, location, .. } => formatter
                .debug_struct("ApiKey")
                .field("name", name)
                .field("location", location)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyLocation {
    Header,
    Cookie,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// The rendered body is sent as it is (JSON unless the headers name another type).
    Raw,
    /// The rendered body is a JSON object that is form-encoded before sending.
    Form,
}

/// One validated `courier.channels[]` entry of type `http`.
#[derive(Clone)]
pub struct HttpChannelSettings {
    pub id: String,
    pub url: url::Url,
    pub method: Method,
    /// Configured headers, plus `Content-Type` (JSON unless configured).
    pub headers: HeaderMap,
    pub auth: Option<HttpAuth>,
    pub encoding: BodyEncoding,
    /// The compiled body template; `None` sends the context as JSON.
    template: Option<Environment<'static>>,
}

impl std::fmt::Debug for HttpChannelSettings {
    // Header values may be credentials too (`Authorization` set by hand): print names only.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpChannelSettings")
            .field("id", &self.id)
            .field("url", &redacted_url(&self.url))
            .field("method", &self.method)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("auth", &self.auth)
            .field("encoding", &self.encoding)
            .field("templated", &self.template.is_some())
            .finish()
    }
}

impl HttpChannelSettings {
    /// Reads `courier.channels[index]`. Problems are keyed by their full configuration path and
    /// never repeat a credential.
    pub fn from_value(index: usize, value: &Value) -> Result<Self, Problems> {
        let prefix = format!("courier.channels[{index}]");
        let mut problems = Problems::new();
        let Some(object) = value.as_object() else {
            return Err(vec![(prefix, "must be an object".to_owned())]);
        };
        check_known_keys(
            object,
            &prefix,
            &["id", "type", "request_config"],
            &mut problems,
        );

        let id = match object.get("id") {
            Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
            Some(_) => {
                problems.push((
                    format!("{prefix}.id"),
                    "must be a non-empty string".to_owned(),
                ));
                String::new()
            }
            None => {
                problems.push((format!("{prefix}.id"), "is required".to_owned()));
                String::new()
            }
        };
        match object.get("type") {
            Some(Value::String(kind)) if kind == "http" => {}
            // Kratos's default type is `email` (SMTP); only `http` channels belong here.
            Some(Value::String(kind)) => problems.push((
                format!("{prefix}.type"),
                format!("channel type {kind:?} is not supported here: use \"http\""),
            )),
            Some(_) => problems.push((format!("{prefix}.type"), "must be \"http\"".to_owned())),
            None => problems.push((format!("{prefix}.type"), "is required".to_owned())),
        }

        let config_key = format!("{prefix}.request_config");
        let Some(config) = object.get("request_config") else {
            problems.push((config_key, "is required".to_owned()));
            return Err(problems);
        };
        let Some(config) = config.as_object() else {
            problems.push((config_key, "must be an object".to_owned()));
            return Err(problems);
        };
        check_known_keys(
            config,
            &config_key,
            &["url", "method", "headers", "body", "auth"],
            &mut problems,
        );

        let url = parse_url(
            config.get("url"),
            &format!("{config_key}.url"),
            &mut problems,
        );
        let method = parse_method(
            config.get("method"),
            &format!("{config_key}.method"),
            &mut problems,
        );
        let mut headers = parse_headers(
            config.get("headers"),
            &format!("{config_key}.headers"),
            &mut problems,
        );
        let auth = parse_auth(
            config.get("auth"),
            &format!("{config_key}.auth"),
            &mut problems,
        );

        // Two `Authorization` headers (or two api keys) would leave the choice to the server.
        let clash = match &auth {
            Some(HttpAuth::Basic { .. }) => Some(AUTHORIZATION),
            Some(HttpAuth::ApiKey {
                name,
                location: ApiKeyLocation::Header,
                ..
            }) => HeaderName::from_bytes(name.as_bytes()).ok(),
            _ => None,
        };
        if let Some(clash) = clash
            && headers.contains_key(&clash)
        {
            problems.push((
                format!("{config_key}.headers.{clash}"),
                "is also set by auth: set it in one place".to_owned(),
            ));
        }

        let encoding = match headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(kind) if media_type(kind) == FORM_CONTENT_TYPE => BodyEncoding::Form,
            _ => BodyEncoding::Raw,
        };
        let expects_json = match headers.get(CONTENT_TYPE) {
            None => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                true
            }
            Some(kind) => kind
                .to_str()
                .map(|kind| media_type(kind) == "application/json")
                .unwrap_or(false),
        };

        let body_key = format!("{config_key}.body");
        let template = match config.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(source)) => match load_body_source(source).and_then(compile) {
                Ok(environment) => {
                    check_sample(
                        &environment,
                        encoding,
                        expects_json,
                        &body_key,
                        &mut problems,
                    );
                    Some(environment)
                }
                Err(problem) => {
                    problems.push((body_key, problem));
                    None
                }
            },
            Some(_) => {
                problems.push((body_key, "must be a string (a template)".to_owned()));
                None
            }
        };

        match (problems.is_empty(), url, method) {
            (true, Some(url), Some(method)) => Ok(Self {
                id,
                url,
                method,
                headers,
                auth,
                encoding,
                template,
            }),
            _ => Err(problems),
        }
    }

    /// The request body for `message`, or a reason it can not be built (always final: the same
    /// message would fail the same way on every attempt).
    pub fn render_body(&self, message: &OutgoingMessage) -> Result<Vec<u8>, String> {
        let context = message_context(message);
        let rendered = match &self.template {
            Some(environment) => render(environment, &context)?,
            None => serde_json::to_string(&context)
                .map_err(|error| format!("can not encode the message context: {error}"))?,
        };
        match self.encoding {
            BodyEncoding::Raw => Ok(rendered.into_bytes()),
            BodyEncoding::Form => form_encode(&rendered).map(String::into_bytes),
        }
    }
}

/// The context a body template sees; see the module documentation.
pub fn message_context(message: &OutgoingMessage) -> Value {
    serde_json::json!({
        "recipient": message.recipient,
        "body": message.body,
        "subject": message.subject,
        "template_type": message.template_type,
        "locale": message.locale,
        "message_id": message.id.to_string(),
        "template_data": message.template_data,
    })
}

/// Sends each message as one request per [`HttpChannelSettings`].
#[derive(Debug, Clone)]
pub struct HttpSender {
    settings: HttpChannelSettings,
    client: reqwest::Client,
}

impl HttpSender {
    pub fn new(settings: HttpChannelSettings) -> Result<Self, String> {
        Ok(Self {
            settings,
            client: gateway_client()?,
        })
    }

    pub fn settings(&self) -> &HttpChannelSettings {
        &self.settings
    }
}

#[async_trait]
impl Sender for HttpSender {
    fn gateway(&self) -> &str {
        "http"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let settings = &self.settings;
        let body = settings.render_body(message).map_err(|reason| SendError {
            retryable: false,
            reason: format!("http channel {}: {reason}", settings.id),
        })?;
        let mut request = self
            .client
            .request(settings.method.clone(), settings.url.clone())
            .headers(settings.headers.clone())
            .body(body);
        match &settings.auth {
            None => {}
            Some(HttpAuth::Basic { user, password }) => {
                request = request.basic_auth(user, Some(password));
            }
            Some(HttpAuth::ApiKey {
                name,
                value,
                location,
            }) => {
                // Both were checked when the settings were read.
                let mut header = match location {
                    ApiKeyLocation::Header => HeaderValue::from_str(value),
                    ApiKeyLocation::Cookie => HeaderValue::from_str(&format!("{name}={value}")),
                }
                .map_err(|_| SendError {
                    retryable: false,
                    reason: format!(
                        "http channel {}: api key is not a valid header",
                        settings.id
                    ),
                })?;
                header.set_sensitive(true);
                let header_name = match location {
                    ApiKeyLocation::Header => HeaderName::from_bytes(name.as_bytes()),
                    ApiKeyLocation::Cookie => Ok(COOKIE),
                }
                .map_err(|_| SendError {
                    retryable: false,
                    reason: format!(
                        "http channel {}: api key name is not a valid header",
                        settings.id
                    ),
                })?;
                request = request.header(header_name, header);
            }
        }

        let label = format!("http channel {}", settings.id);
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&label, error))?;
        let status = response.status();
        let answer = read_answer(response).await;
        if status.is_success() {
            let provider_message_id = serde_json::from_slice::<Value>(&answer)
                .ok()
                .and_then(|answer| provider_id(&answer, &["id", "sid", "message_id"]));
            return Ok(Delivered {
                provider_message_id,
            });
        }
        Err(SendError {
            retryable: status_is_retryable(status),
            reason: format!("{label}: answered {}", describe_status(status)),
        })
    }
}

// ---- pieces shared with the Twilio sender ----------------------------------------------------

/// One client per sender: connection pooling, bounded waits, no redirects (a redirect would
/// either lose the body or carry credentials elsewhere).
pub(crate) fn gateway_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("twofold/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| format!("can not build the http client: {}", error_chain(&error)))
}

/// 429 and 5xx mean "not now"; other answers will not change on a retry.
pub(crate) fn status_is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

pub(crate) fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {}", status.as_u16(), reason.to_lowercase()),
        None => status.as_u16().to_string(),
    }
}

/// A failure before any answer. The URL is left out: it may carry a key in its query.
pub(crate) fn transport_error(label: &str, error: reqwest::Error) -> SendError {
    let error = error.without_url();
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "can not connect"
    } else {
        "request failed"
    };
    SendError {
        // A request that could not be built will not build next time either.
        retryable: !error.is_builder(),
        reason: format!("{label}: {what}: {}", error_chain(&error)),
    }
}

/// The answer's body, up to [`MAX_ANSWER_BYTES`]; a broken stream just ends it early.
pub(crate) async fn read_answer(mut response: reqwest::Response) -> Vec<u8> {
    let mut answer = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
            break;
        }
        answer.extend_from_slice(&chunk);
    }
    answer
}

/// The first of `fields` that holds a string or a number.
pub(crate) fn provider_id(answer: &Value, fields: &[&str]) -> Option<String> {
    fields.iter().find_map(|field| match answer.get(field)? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub(crate) fn check_known_keys(
    object: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
    problems: &mut Problems,
) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            problems.push((format!("{prefix}.{key}"), "is not a known key".to_owned()));
        }
    }
}

/// An absolute `http` or `https` URL.
pub(crate) fn parse_url(
    value: Option<&Value>,
    key: &str,
    problems: &mut Problems,
) -> Option<url::Url> {
    let text = match value {
        Some(Value::String(text)) if !text.trim().is_empty() => text.trim(),
        Some(_) => {
            problems.push((key.to_owned(), "must be a non-empty string".to_owned()));
            return None;
        }
        None => {
            problems.push((key.to_owned(), "is required".to_owned()));
            return None;
        }
    };
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            problems.push((key.to_owned(), "must be an http or https url".to_owned()));
            None
        }
        // The parser's message names the kind of mistake without repeating the text, which may
        // hold a key in its query.
        Err(error) => {
            problems.push((key.to_owned(), format!("is not a valid url: {error}")));
            None
        }
    }
}

/// The URL without user info or query, for `Debug`.
fn redacted_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("…"));
    }
    shown.to_string()
}

fn parse_method(value: Option<&Value>, key: &str, problems: &mut Problems) -> Option<Method> {
    match value {
        None | Some(Value::Null) => Some(Method::POST),
        Some(Value::String(text)) => {
            let upper = text.trim().to_ascii_uppercase();
            match upper.as_str() {
                "POST" | "PUT" | "PATCH" | "GET" | "DELETE" => {
                    Method::from_bytes(upper.as_bytes()).map_err(|_| ()).ok()
                }
                _ => None,
            }
            .or_else(|| {
                problems.push((
                    key.to_owned(),
                    "must be one of POST, PUT, PATCH, GET, DELETE".to_owned(),
                ));
                None
            })
        }
        Some(_) => {
            problems.push((key.to_owned(), "must be a string".to_owned()));
            None
        }
    }
}

fn parse_headers(value: Option<&Value>, key: &str, problems: &mut Problems) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let entries = match value {
        None | Some(Value::Null) => return headers,
        Some(Value::Object(entries)) => entries,
        Some(_) => {
            problems.push((
                key.to_owned(),
                "must be a map of header names to values".to_owned(),
            ));
            return headers;
        }
    };
    for (name, value) in entries {
        let entry_key = format!("{key}.{name}");
        let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
            problems.push((entry_key, "is not a valid header name".to_owned()));
            continue;
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => {
                problems.push((entry_key, "must be a string".to_owned()));
                continue;
            }
        };
        // The value may be a credential: say what is wrong, never what it is.
        match HeaderValue::from_str(&text) {
            Ok(mut header_value) => {
                header_value.set_sensitive(true);
                headers.append(header_name, header_value);
            }
            Err(_) => problems.push((
                entry_key,
                "is not a valid header value (control characters?)".to_owned(),
            )),
        }
    }
    headers
}

fn parse_auth(value: Option<&Value>, key: &str, problems: &mut Problems) -> Option<HttpAuth> {
    let object = match value {
        None | Some(Value::Null) => return None,
        Some(Value::Object(object)) => object,
        Some(_) => {
            problems.push((key.to_owned(), "must be an object".to_owned()));
            return None;
        }
    };
    check_known_keys(object, key, &["type", "config"], problems);
    let config_key = format!("{key}.config");
    let empty = Map::new();
    let config = match object.get("config") {
        Some(Value::Object(config)) => config,
        Some(_) => {
            problems.push((config_key, "must be an object".to_owned()));
            return None;
        }
        None => {
            problems.push((config_key.clone(), "is required".to_owned()));
            &empty
        }
    };
    let string = |name: &str, problems: &mut Problems| -> Option<String> {
        match config.get(name) {
            Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
            Some(_) => {
                problems.push((
                    format!("{config_key}.{name}"),
                    "must be a non-empty string".to_owned(),
                ));
                None
            }
            None => {
                problems.push((format!("{config_key}.{name}"), "is required".to_owned()));
                None
            }
        }
    };
    match object.get("type").and_then(Value::as_str) {
        Some("basic_auth") => {
            check_known_keys(config, &config_key, &["user", "password"], problems);
            let user = string("user", problems);
            let password = string("password", problems);
            if user.as_deref().is_some_and(|user| user.contains(':')) {
                problems.push((
                    format!("{config_key}.user"),
                    "must not contain a colon (basic auth separates user and password with one)"
                        .to_owned(),
                ));
            }
            Some(HttpAuth::Basic {
                user: user?,
                password: password?,
            })
        }
        Some("api_key") => {
            check_known_keys(config, &config_key, &["name", "value", "in"], problems);
            let name = string("name", problems);
            let value = string("value", problems);
            let location = match config.get("in") {
                None | Some(Value::Null) => Some(ApiKeyLocation::Header),
                Some(Value::String(place)) if place == "header" => Some(ApiKeyLocation::Header),
                Some(Value::String(place)) if place == "cookie" => Some(ApiKeyLocation::Cookie),
                Some(_) => {
                    problems.push((
                        format!("{config_key}.in"),
                        "must be \"header\" or \"cookie\"".to_owned(),
                    ));
                    None
                }
            };
            if let (Some(name), Some(location)) = (&name, location) {
                let name_ok = match location {
                    ApiKeyLocation::Header => HeaderName::from_bytes(name.as_bytes()).is_ok(),
                    ApiKeyLocation::Cookie => name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"\\".contains(&b)),
                };
                if !name_ok {
                    problems.push((
                        format!("{config_key}.name"),
                        "is not a valid header or cookie name".to_owned(),
                    ));
                }
            }
            if let Some(value) = &value
                && (HeaderValue::from_str(value).is_err() || value.contains(';'))
            {
                problems.push((
                    format!("{config_key}.value"),
                    "contains characters that can not be sent in a header".to_owned(),
                ));
            }
            Some(HttpAuth::ApiKey {
                name: name?,
                value: value?,
                location: location?,
            })
        }
        Some(_) => {
            problems.push((
                format!("{key}.type"),
                "must be \"basic_auth\" or \"api_key\"".to_owned(),
            ));
            None
        }
        None => {
            problems.push((format!("{key}.type"), "is required".to_owned()));
            None
        }
    }
}

/// `application/json; charset=utf-8` → `application/json`.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Kratos points `body` at a file or inlines it as base64; both are accepted, and anything else
/// is the template itself.
fn load_body_source(source: &str) -> Result<String, String> {
    if let Some(path) = source.strip_prefix("file://") {
        std::fs::read_to_string(path)
            .map_err(|error| format!("can not read template file {path}: {error}"))
    } else if let Some(encoded) = source.strip_prefix("base64://") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(encoded.trim()))
            .map_err(|_| "base64:// template is not valid base64".to_owned())?;
        String::from_utf8(bytes).map_err(|_| "base64:// template is not utf-8".to_owned())
    } else if source.starts_with("http://") || source.starts_with("https://") {
        // Fetching templates over the network at start-up would make start-up depend on it.
        Err("templates are not fetched over http: inline the template or use file://".to_owned())
    } else {
        Ok(source.to_owned())
    }
}

fn compile(source: String) -> Result<Environment<'static>, String> {
    let mut environment = Environment::new();
    // A misspelt variable fails the sample render at start-up instead of sending an empty
    // field; `is defined` checks still work.
    environment.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    environment.add_filter("tojson", tojson);
    environment
        .add_template_owned(TEMPLATE_NAME, source)
        .map_err(|error| format!("template does not compile: {}", template_error(&error)))?;
    Ok(environment)
}

fn render(environment: &Environment<'static>, context: &Value) -> Result<String, String> {
    let template = environment
        .get_template(TEMPLATE_NAME)
        .map_err(|error| format!("template: {}", template_error(&error)))?;
    template
        .render(to_template_value(context))
        .map_err(|error| format!("template does not render: {}", template_error(&error)))
}

/// The template error without the source line, which after rendering could show values.
fn template_error(error: &minijinja::Error) -> String {
    let mut text = error.kind().to_string().to_lowercase();
    if let Some(detail) = error.detail() {
        text.push_str(": ");
        text.push_str(detail);
    }
    if let Some(line) = error.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// Renders the template against a made-up message so template and content-type mistakes are
/// reported at start-up.
fn check_sample(
    environment: &Environment<'static>,
    encoding: BodyEncoding,
    expects_json: bool,
    key: &str,
    problems: &mut Problems,
) {
    let sample = sample_context();
    let rendered = match render(environment, &sample) {
        Ok(rendered) => rendered,
        Err(problem) => {
            problems.push((key.to_owned(), problem));
            return;
        }
    };
    let outcome = match encoding {
        BodyEncoding::Form => form_encode(&rendered).map(|_| ()),
        BodyEncoding::Raw if expects_json => serde_json::from_str::<Value>(&rendered)
            .map(|_| ())
            .map_err(|error| {
                format!(
                    "the template does not render valid json for a sample message ({error}); \
                     pass strings through `| tojson`, or set a Content-Type header"
                )
            }),
        BodyEncoding::Raw => Ok(()),
    };
    if let Err(problem) = outcome {
        problems.push((key.to_owned(), problem));
    }
}

fn sample_context() -> Value {
    serde_json::json!({
        "recipient": "+15555550100",
        "body": "Your login code is: 123456\n\nIt expires in 15 minutes.\n\n@example.com #123456",
        "subject": null,
        "template_type": "login_code",
        "locale": "en",
        "message_id": "00000000-0000-7000-8000-000000000000",
        "template_data": {
            "to": "+15555550100",
            "code": "123456",
            "login_code": "123456",
            "identity_id": "00000000-0000-7000-8000-000000000001",
            "expires_in_minutes": 15,
            "request_url_domain": "example.com",
            "locale": "en",
            "purpose": "login",
        },
    })
}

/// Form-encodes a rendered JSON object of flat values.
fn form_encode(rendered: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(rendered).map_err(|error| {
        format!("a form-encoded body must render a json object, and this one is not json ({error})")
    })?;
    let Value::Object(fields) = value else {
        return Err("a form-encoded body must render a json object".to_owned());
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in &fields {
        match value {
            Value::Null => {}
            Value::String(text) => {
                form.append_pair(name, text);
            }
            Value::Number(number) => {
                form.append_pair(name, &number.to_string());
            }
            Value::Bool(flag) => {
                form.append_pair(name, if *flag { "true" } else { "false" });
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(format!(
                    "form field {name:?} must be a string, number or boolean"
                ));
            }
        }
    }
    Ok(form.finish())
}

// minijinja is built without its serde support, so values cross over by hand.

fn to_template_value(value: &Value) -> TemplateValue {
    match value {
        Value::Null => TemplateValue::from(()),
        Value::Bool(flag) => TemplateValue::from(*flag),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                TemplateValue::from(integer)
            } else if let Some(integer) = number.as_u64() {
                TemplateValue::from(integer)
            } else {
                TemplateValue::from(number.as_f64().unwrap_or_default())
            }
        }
        Value::String(text) => TemplateValue::from(text.as_str()),
        Value::Array(items) => items.iter().map(to_template_value).collect(),
        Value::Object(fields) => TemplateValue::from_pairs(
            fields
                .iter()
                .map(|(name, value)| (name.as_str(), to_template_value(value))),
        ),
    }
}

fn from_template_value(value: &TemplateValue) -> Result<Value, minijinja::Error> {
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Some(integer) = value.as_i64() {
                Value::from(integer)
            } else if let Ok(integer) = u64::try_from(value.clone()) {
                Value::from(integer)
            } else {
                f64::try_from(value.clone())
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        ValueKind::String => Value::String(value.as_str().unwrap_or_default().to_owned()),
        ValueKind::Seq | ValueKind::Iterable => Value::Array(
            value
                .try_iter()?
                .map(|item| from_template_value(&item))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut fields = Map::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                fields.insert(key.to_string(), from_template_value(&item)?);
            }
            Value::Object(fields)
        }
        _ => Value::String(value.to_string()),
    })
}

/// The `tojson` filter (minijinja's own needs a feature this build does not have).
fn tojson(value: &TemplateValue) -> Result<TemplateValue, minijinja::Error> {
    // A misspelt name would otherwise quietly become `null`.
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson of an undefined value",
        ));
    }
    let json = from_template_value(value)?;
    serde_json::to_string(&json)
        .map(TemplateValue::from_safe_string)
        .map_err(|error| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("tojson: {error}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tojson_escapes_strings_and_keeps_structures() {
        let environment =
            compile(r#"{"t": {{ body | tojson }}, "d": {{ template_data | tojson }}}"#.to_owned())
                .unwrap();
        let rendered = render(&environment, &sample_context()).unwrap();
        let value: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(value["t"], sample_context()["body"]);
        assert_eq!(value["d"], sample_context()["template_data"]);
    }

    #[test]
    fn a_misspelt_variable_is_a_start_up_problem() {
        let problem = HttpChannelSettings::from_value(
            2,
            &json!({"id": "sms", "type": "http", "request_config": {
                "url": "https://example.com", "body": "{{ recipent | tojson }}"}}),
        )
        .unwrap_err();
        assert_eq!(problem[0].0, "courier.channels[2].request_config.body");
    }

    #[test]
    fn nested_form_values_are_refused() {
        assert!(form_encode(r#"{"a": {"b": 1}}"#).is_err());
        assert_eq!(
            form_encode(r#"{"To": "+1 555", "n": 2, "x": null}"#).unwrap(),
            "To=%2B1+555&n=2"
        );
    }
}
