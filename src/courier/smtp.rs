//! The SMTP gateway: sends email through a relay configured the way Kratos configures its
//! courier (`courier.smtp`), over one pooled connection set built at start-up.
//!
//! `connection_uri` follows Kratos: `smtp://user:pass@host:port/` requires STARTTLS unless
//! `?disable_starttls=true`, `smtps://` wraps the connection in TLS from the start, and
//! `?skip_ssl_verify=true` accepts any certificate. The URI holds the relay password, so it is
//! never echoed in a problem, an error or a log line.
use super::{Delivered, OutgoingMessage, SendError, Sender};
use crate::domain::mask::mask_address;
use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{Address, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use uuid::Uuid;

const KEY: &str = "courier.smtp";

/// Ports used when the URI names none: submission for STARTTLS, submissions for implicit TLS.
const STARTTLS_PORT: u16 = 587;
const IMPLICIT_TLS_PORT: u16 = 465;

/// A relay that does not answer a command within this time is treated as down (retryable).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers the sender sets itself; letting configuration replace them would break threading,
/// the provider message id or the MIME structure.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// Kratos's `courier.smtp` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// `smtp://` or `smtps://` URI with credentials; holds a password.
    pub connection_uri: String,
    pub from_address: String,
    pub from_name: Option<String>,
    /// Extra headers added to every message, in configuration order.
    pub headers: Vec<(String, String)>,
    /// Name sent in `EHLO`; the machine's host name when absent.
    pub local_name: Option<String>,
}

impl std::fmt::Debug for SmtpSettings {
    // The URI holds the relay password: never print it through `Debug`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SmtpSettings")
            .field("connection_uri", &"<redacted>")
            .field("from_address", &self.from_address)
            .field("from_name", &self.from_name)
            .field("headers", &self.headers)
            .field("local_name", &self.local_name)
            .finish()
    }
}

impl SmtpSettings {
    /// Reads the `courier.smtp` object. Every problem is reported, each as (key path, message).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, Vec<(String, String)>> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut problem = |key: &str, message: &str| {
            let path = if key.is_empty() {
                KEY.to_owned()
            } else {
                format!("{KEY}.{key}")
            };
            problems.push((path, message.to_owned()));
        };

        let Some(object) = value.as_object() else {
            problem("", "must be an object");
            return Err(problems);
        };

        for key in object.keys() {
            match key.as_str() {
                "connection_uri" | "from_address" | "from_name" | "headers" | "local_name" => {}
                // Kratos keys for client-certificate authentication, which Twofold lacks: say so
                // rather than ignore them and fail at the relay.
                "client_cert_path" | "client_key_path" => {
                    problem(key, "client certificates are not supported")
                }
                _ => problem(key, "unknown key"),
            }
        }

        let mut connection_uri = String::new();
        match object.get("connection_uri") {
            None => problem("connection_uri", "is required"),
            Some(serde_json::Value::String(uri)) => match ConnectionUri::parse(uri) {
                Ok(_) => connection_uri = uri.clone(),
                Err(message) => problem("connection_uri", &message),
            },
            Some(_) => problem("connection_uri", "must be a string"),
        }

        let mut from_address = String::new();
        match object.get("from_address") {
            None => problem("from_address", "is required"),
            Some(serde_json::Value::String(address)) => match address.parse::<Address>() {
                Ok(_) => from_address = address.clone(),
                Err(_) => problem("from_address", "is not a valid email address"),
            },
            Some(_) => problem("from_address", "must be a string"),
        }

        let from_name = match object.get("from_name") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) if has_control(name) => {
                problem("from_name", "must not contain control characters");
                None
            }
            Some(serde_json::Value::String(name)) if name.is_empty() => None,
            Some(serde_json::Value::String(name)) => Some(name.clone()),
            Some(_) => {
                problem("from_name", "must be a string");
                None
            }
        };

        let mut headers = Vec::new();
        match object.get("headers") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(map)) => {
                for (name, value) in map {
                    let key = format!("headers.{name}");
                    let Some(value) = value.as_str() else {
                        problem(&key, "must be a string");
                        continue;
                    };
                    if let Err(message) = check_header(name, value) {
                        problem(&key, message);
                        continue;
                    }
                    headers.push((name.clone(), value.to_owned()));
                }
            }
            Some(_) => problem("headers", "must be a map of header names to strings"),
        }

        let local_name = match object.get("local_name") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) if name.is_empty() => None,
            Some(serde_json::Value::String(name))
                if name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) =>
            {
                Some(name.clone())
            }
            Some(serde_json::Value::String(_)) => {
                problem("local_name", "must be a host name");
                None
            }
            Some(_) => {
                problem("local_name", "must be a string");
                None
            }
        };

        if problems.is_empty() {
            Ok(Self {
                connection_uri,
                from_address,
                from_name,
                headers,
                local_name,
            })
        } else {
            Err(problems)
        }
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err("is not a valid header name");
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err("is set by the sender and cannot be configured");
    }
    // A line break in a value would let configuration inject headers or a body.
    if has_control(value) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// How to reach the relay, from `connection_uri`.
struct ConnectionUri {
    host: String,
    port: u16,
    security: Security,
    skip_ssl_verify: bool,
    /// Name checked against the certificate (`?server_name=`), the host by default.
    server_name: String,
    credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    StartTls,
    Implicit,
}

impl ConnectionUri {
    /// Parses the URI; messages never contain any part of it, since it holds a password.
    fn parse(uri: &str) -> Result<Self, String> {
        let url = url::Url::parse(uri).map_err(|_| "is not a valid URI".to_owned())?;
        let mut disable_starttls = false;
        let mut skip_ssl_verify = false;
        let mut legacy_ssl = false;
        let mut server_name = None;
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "disable_starttls" => disable_starttls = parse_flag("disable_starttls", &value)?,
                "skip_ssl_verify" => skip_ssl_verify = parse_flag("skip_ssl_verify", &value)?,
                // Kratos's older spelling of `smtps://`.
                "legacy_ssl" => legacy_ssl = parse_flag("legacy_ssl", &value)?,
                "server_name" => server_name = Some(value.into_owned()),
                _ => return Err("has an unknown query parameter".to_owned()),
            }
        }
        let security = match url.scheme() {
            "smtps" => Security::Implicit,
            "smtp" if legacy_ssl => Security::Implicit,
            "smtp" if disable_starttls => Security::Plain,
            "smtp" => Security::StartTls,
            _ => return Err("must use the smtp or smtps scheme".to_owned()),
        };
        let host = match url.host() {
            Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
            Some(url::Host::Ipv4(address)) => address.to_string(),
            Some(url::Host::Ipv6(address)) => address.to_string(),
            _ => return Err("must name a host".to_owned()),
        };
        let port = url.port().unwrap_or(match security {
            Security::Implicit => IMPLICIT_TLS_PORT,
            Security::Plain | Security::StartTls => STARTTLS_PORT,
        });
        let credentials = if url.username().is_empty() {
            None
        } else {
            let user = percent_decode(url.username())
                .ok_or_else(|| "has a user name that is not valid UTF-8".to_owned())?;
            let password = percent_decode(url.password().unwrap_or_default())
                .ok_or_else(|| "has a password that is not valid UTF-8".to_owned())?;
            Some(Credentials::new(user, password))
        };
        Ok(Self {
            server_name: server_name.unwrap_or_else(|| host.clone()),
            host,
            port,
            security,
            skip_ssl_verify,
            credentials,
        })
    }
}

fn parse_flag(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!(
            "has a {name} parameter that is neither true nor false"
        )),
    }
}

/// Decodes `%XX` escapes in URI user info (where `+` is a literal plus, unlike in forms).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = text.get(index + 1..index + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            decoded.push(byte);
            index += 3;
            continue;
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(decoded).ok()
}

/// Sends email through an SMTP relay.
pub struct SmtpSender {
    /// Always `Some` until dropped; see the `Drop` impl.
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// The runtime the pool was built on: lettre's pool spawns tasks when built and dropped,
    /// which panics outside a runtime.
    runtime: tokio::runtime::Handle,
    from: Mailbox,
    headers: Vec<HeaderValue>,
}

impl Drop for SmtpSender {
    fn drop(&mut self) {
        // Dropping the pool spawns its shutdown; enter the runtime it belongs to so dropping the
        // sender elsewhere (a synchronous test, the end of `main`) cannot panic.
        let _entered = self.runtime.enter();
        self.transport.take();
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SmtpSender")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Builds the pooled transport once; connections are opened on first use, so a relay that is
    /// down at start-up shows up as retryable send errors rather than a failed start. Must be
    /// called inside a Tokio runtime (the pool runs a cleanup task on it).
    pub fn new(settings: SmtpSettings) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the smtp sender must be built inside a tokio runtime".to_owned())?;
        let uri = ConnectionUri::parse(&settings.connection_uri)
            .map_err(|message| format!("{KEY}.connection_uri {message}"))?;
        let address = settings
            .from_address
            .parse::<Address>()
            .map_err(|_| format!("{KEY}.from_address is not a valid email address"))?;
        let from = Mailbox::new(settings.from_name.clone(), address);

        let mut headers = Vec::with_capacity(settings.headers.len());
        for (name, value) in &settings.headers {
            check_header(name, value)
                .map_err(|message| format!("{KEY}.headers.{name} {message}"))?;
            let header_name = HeaderName::new_from_ascii(name.clone())
                .map_err(|_| format!("{KEY}.headers.{name} is not a valid header name"))?;
            headers.push(HeaderValue::new(header_name, value.clone()));
        }

        let tls = if uri.security == Security::Plain {
            if uri.credentials.is_some() {
                tracing::warn!(
                    host = %uri.host,
                    "smtp: starttls is disabled, so the relay password travels in plain text"
                );
            }
            Tls::None
        } else {
            if uri.skip_ssl_verify {
                tracing::warn!(
                    host = %uri.host,
                    "smtp: skip_ssl_verify is set, so any certificate is accepted; use it only for tests"
                );
            }
            let parameters = TlsParameters::builder(uri.server_name.clone())
                .dangerous_accept_invalid_certs(uri.skip_ssl_verify)
                .dangerous_accept_invalid_hostnames(uri.skip_ssl_verify)
                .build()
                .map_err(|error| format!("{KEY}: cannot set up tls: {error}"))?;
            match uri.security {
                Security::Implicit => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            }
        };

        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(uri.host.clone())
            .port(uri.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT))
            .pool_config(PoolConfig::new());
        if let Some(credentials) = uri.credentials {
            builder = builder.credentials(credentials);
        }
        if let Some(name) = settings.local_name {
            builder = builder.hello_name(ClientId::Domain(name));
        }

        Ok(Self {
            transport: Some(builder.build()),
            runtime,
            from,
            headers,
        })
    }

    fn build_message(
        &self,
        message: &OutgoingMessage,
        message_id: &str,
    ) -> Result<Message, SendError> {
        let address = message
            .recipient
            .trim()
            .parse::<Address>()
            .map_err(|_| SendError {
                retryable: false,
                reason: format!(
                    "smtp: recipient {} is not a valid email address",
                    mask_address(&message.recipient)
                ),
            })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address))
            .message_id(Some(message_id.to_owned()));
        if let Some(subject) = &message.subject {
            builder = builder.subject(subject.clone());
        }
        for header in &self.headers {
            builder = builder.raw_header(header.clone());
        }
        let built = match &message.html_body {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                message.body.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(message.body.clone())),
        };
        // The builder only fails on a missing sender or recipient, both set above; the error text
        // is lettre's own and holds no body.
        built.map_err(|error| SendError {
            retryable: false,
            reason: format!("smtp: cannot build the message: {error}"),
        })
    }
}

#[async_trait]
impl Sender for SmtpSender {
    fn gateway(&self) -> &str {
        "smtp"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let message_id = format!("<{}@twofold>", Uuid::new_v4());
        let email = self.build_message(message, &message_id)?;
        let Some(transport) = &self.transport else {
            return Err(SendError {
                retryable: true,
                reason: "smtp: the sender is shutting down".to_owned(),
            });
        };
        match transport.send(email).await {
            Ok(_) => Ok(Delivered {
                provider_message_id: Some(message_id),
            }),
            Err(error) => Err(classify(&error)),
        }
    }
}

/// Turns a lettre error into a `SendError`. Only a permanent (5xx) reply is final: connection
/// failures, timeouts, TLS trouble and 4xx replies may clear up, and a relay misconfiguration an
/// operator fixes should let the queued messages through on a later attempt.
fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    // lettre's text names the kind, the reply code and the relay's reply; it never holds the
    // message (sent only after the envelope is accepted) nor the credentials.
    let reason = format!("smtp: {error}");
    SendError {
        retryable: !error.is_permanent(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(uri: &str) -> serde_json::Value {
        json!({"connection_uri": uri, "from_address": "no-reply@twofold.test"})
    }

    #[test]
    fn reads_every_key() {
        let value = json!({
            "connection_uri": "smtps://user:p%40ss@mail.example.com:2465/",
            "from_address": "no-reply@twofold.test",
            "from_name": "Twofold",
            "headers": {"X-Campaign": "codes"},
            "local_name": "twofold.example.com",
        });
        let settings = SmtpSettings::from_value(&value).unwrap();
        assert_eq!(settings.from_name.as_deref(), Some("Twofold"));
        assert_eq!(
            settings.headers,
            vec![("X-Campaign".into(), "codes".into())]
        );
        assert_eq!(settings.local_name.as_deref(), Some("twofold.example.com"));
        assert!(!format!("{settings:?}").contains("p%40ss"));
    }

    #[test]
    fn problems_name_the_key_and_never_the_uri() {
        let problems = SmtpSettings::from_value(&settings("http://user:secret@host/")).unwrap_err();
        assert_eq!(problems[0].0, "courier.smtp.connection_uri");
        assert!(!problems[0].1.contains("secret"));

        let problems = SmtpSettings::from_value(&json!({"from_address": "nope"})).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            ["courier.smtp.connection_uri", "courier.smtp.from_address"]
        );

        let problems = SmtpSettings::from_value(&json!({
            "connection_uri": "smtp://h/", "from_address": "a@b.test",
            "headers": {"Subject": "x", "X-Ok": "a\r\nBcc: evil@x.test"}
        }))
        .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            ["courier.smtp.headers.Subject", "courier.smtp.headers.X-Ok"]
        );
    }

    #[test]
    fn uri_semantics_follow_kratos() {
        let uri = ConnectionUri::parse("smtp://a%2Bb:p%40ss+word@host/").unwrap();
        assert_eq!(uri.security, Security::StartTls);
        assert_eq!(uri.port, STARTTLS_PORT);
        assert_eq!(
            uri.credentials,
            Some(Credentials::new("a+b".into(), "p@ss+word".into()))
        );
        let uri = ConnectionUri::parse("smtp://host:25/?disable_starttls=true").unwrap();
        assert_eq!((uri.security, uri.port), (Security::Plain, 25));
        let uri = ConnectionUri::parse("smtps://host/?skip_ssl_verify=true").unwrap();
        assert_eq!(
            (uri.security, uri.port),
            (Security::Implicit, IMPLICIT_TLS_PORT)
        );
        assert!(uri.skip_ssl_verify);
        assert!(ConnectionUri::parse("smtp://host/?skip_ssl_verify=maybe").is_err());
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%zz%4").as_deref(), Some("a%zz%4"));
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(percent_decode("%FF"), None);
    }
}
