//! The HTTP channel (Kratos's `courier.channels[]` of type `http`) and the native Twilio sender,
//! against a stand-in server on 127.0.0.1: what goes on the wire (method, path, auth, content
//! type, body) and how answers are classified (delivered, retryable, final).

#[allow(unused_macros)]
#[macro_use]
mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::http_stub::{HttpStub, ScriptedResponse, closed_port_url};
use twofold::courier::http::{HttpChannelSettings, HttpSender};
use twofold::courier::twilio::{TwilioAuth, TwilioSender, TwilioSettings};
use twofold::courier::{OutgoingMessage, Sender};
use twofold::domain::aal::Channel;
use uuid::Uuid;

const RECIPIENT: &str = "+15555550123";
const CODE: &str = "424242";
const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const API_KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
const SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";

fn sms() -> OutgoingMessage {
    let body =
        format!("Your login code is: {CODE}\n\nIt expires in 15 minutes.\n\n@example.com #{CODE}");
    OutgoingMessage {
        id: Uuid::now_v7(),
        channel: Channel::Sms,
        recipient: RECIPIENT.to_owned(),
        template_type: "login_code".to_owned(),
        subject: None,
        body,
        html_body: None,
        locale: "en".to_owned(),
        template_data: json!({
            "to": RECIPIENT,
            "code": CODE,
            "login_code": CODE,
            "identity_id": "0190c0de-0000-7000-8000-000000000001",
            "expires_in_minutes": 15,
            "request_url_domain": "example.com",
            "locale": "en",
            "purpose": "login",
        }),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn http_sender(request_config: Value) -> HttpSender {
    let settings = HttpChannelSettings::from_value(
        0,
        &json!({"id": "sms", "type": "http", "request_config": request_config}),
    )
    .unwrap_or_else(|problems| panic!("settings refused: {problems:?}"));
    HttpSender::new(settings).expect("http sender")
}

fn problems_of(request_config: Value) -> Vec<(String, String)> {
    HttpChannelSettings::from_value(
        0,
        &json!({"id": "sms", "type": "http", "request_config": request_config}),
    )
    .expect_err("settings should be refused")
}

// ---- HTTP channel ------------------------------------------------------------------------------

#[tokio::test]
async fn webhook_sends_the_rendered_json_body_with_basic_auth() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(
        200,
        json!({"message_id": "prov-1"}),
    )])
    .await;
    let sender = http_sender(json!({
        "url": stub.url("/v1/sms?tenant=acme"),
        "headers": {"X-Tenant": "acme"},
        "body": r#"{"to": {{ recipient | tojson }}, "code": {{ template_data.code | tojson }}, "text": {{ body | tojson }}, "ref": {{ message_id | tojson }}, "minutes": {{ template_data.expires_in_minutes }}}"#,
        "auth": {"type": "basic_auth", "config": {"user": "twofold", "password": "s3cret"}},
    }));
    assert_eq!(sender.gateway(), "http");
    let message = sms();

    let delivered = sender.send(&message).await.expect("delivered");

    assert_eq!(delivered.provider_message_id.as_deref(), Some("prov-1"));
    let request = stub.single_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/sms?tenant=acme");
    assert_eq!(
        request.header("authorization"),
        Some(basic("twofold", "s3cret").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-tenant"), Some("acme"));
    assert_eq!(
        request.json(),
        json!({
            "to": RECIPIENT,
            "code": CODE,
            "text": message.body,
            "ref": message.id.to_string(),
            "minutes": 15,
        })
    );
}

#[tokio::test]
async fn api_key_goes_in_the_named_header() {
    let stub = HttpStub::start(vec![]).await;
    let sender = http_sender(json!({
        "url": stub.url("/send"),
        "method": "put",
        "auth": {"type": "api_key", "config": {"name": "X-Api-Key", "value": "k-123", "in": "header"}},
    }));

    sender.send(&sms()).await.expect("delivered");

    let request = stub.single_request();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.header("x-api-key"), Some("k-123"));
    assert_eq!(request.header("authorization"), None);
}

#[tokio::test]
async fn api_key_can_go_in_a_cookie() {
    let stub = HttpStub::start(vec![]).await;
    let sender = http_sender(json!({
        "url": stub.url("/send"),
        "auth": {"type": "api_key", "config": {"name": "session", "value": "k-123", "in": "cookie"}},
    }));

    sender.send(&sms()).await.expect("delivered");

    assert_eq!(
        stub.single_request().header("cookie"),
        Some("session=k-123")
    );
}

#[tokio::test]
async fn form_content_type_encodes_the_rendered_object() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(
        201,
        json!({"sid": "SM1", "status": "queued"}),
    )])
    .await;
    let sender = http_sender(json!({
        "url": stub.url("/2010-04-01/Accounts/AC1/Messages.json"),
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "body": r#"{"To": {{ recipient | tojson }}, "From": "+15555550100", "Body": {{ body | tojson }}, "Ttl": {{ template_data.expires_in_minutes }}, "Skip": null}"#,
    }));
    let message = sms();

    let delivered = sender.send(&message).await.expect("delivered");

    assert_eq!(delivered.provider_message_id.as_deref(), Some("SM1"));
    let request = stub.single_request();
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Field order follows the JSON object's, which is not the template's: compare as a set.
    let mut form = request.form();
    form.sort();
    assert_eq!(
        form,
        vec![
            ("Body".to_owned(), message.body.clone()),
            ("From".to_owned(), "+15555550100".to_owned()),
            ("To".to_owned(), RECIPIENT.to_owned()),
            ("Ttl".to_owned(), "15".to_owned()),
        ]
    );
}

#[tokio::test]
async fn without_a_body_template_the_context_is_sent_as_json() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(200, json!({"id": 7}))]).await;
    let sender = http_sender(json!({"url": stub.url("/hook")}));
    let message = sms();

    let delivered = sender.send(&message).await.expect("delivered");

    assert_eq!(delivered.provider_message_id.as_deref(), Some("7"));
    let request = stub.single_request();
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({
            "recipient": RECIPIENT,
            "body": message.body,
            "subject": null,
            "template_type": "login_code",
            "locale": "en",
            "message_id": message.id.to_string(),
            "template_data": message.template_data,
        })
    );
}

#[tokio::test]
async fn answers_are_classified_retryable_or_final() {
    for (status, retryable) in [
        (500, true),
        (503, true),
        (429, true),
        (400, false),
        (401, false),
    ] {
        let stub =
            HttpStub::start(vec![ScriptedResponse::new(status, format!("echo: {CODE}"))]).await;
        let sender = http_sender(json!({"url": stub.url("/hook")}));

        let error = sender.send(&sms()).await.expect_err("refused");

        assert_eq!(error.retryable, retryable, "status {status}: {error}");
        assert!(error.reason.contains(&status.to_string()), "{error}");
        assert!(
            !error.reason.contains(CODE),
            "no body in the reason: {error}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_final_and_not_followed() {
    let stub = HttpStub::start(vec![
        ScriptedResponse::new(302, "").header("Location", "/elsewhere"),
    ])
    .await;
    let sender = http_sender(json!({"url": stub.url("/hook")}));

    let error = sender.send(&sms()).await.expect_err("refused");

    assert!(!error.retryable, "{error}");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let sender =
        http_sender(json!({"url": format!("{}/hook?key=secret-in-url", closed_port_url().await)}));

    let error = sender.send(&sms()).await.expect_err("no server");

    assert!(error.retryable, "{error}");
    assert!(error.reason.contains("connect"), "{error}");
    assert!(!error.reason.contains("secret-in-url"), "{error}");
}

#[test]
fn a_bad_template_is_a_configuration_problem() {
    let problems = problems_of(json!({
        "url": "https://sms.example.com/send",
        "body": "{\"to\": {{ recipient | tojson }",
    }));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "courier.channels[0].request_config.body");
}

#[test]
fn a_json_body_that_does_not_render_json_is_a_configuration_problem() {
    // Without `tojson` the multi-line SMS text breaks the JSON string.
    let problems = problems_of(json!({
        "url": "https://sms.example.com/send",
        "body": "{\"text\": \"{{ body }}\"}",
    }));
    assert_eq!(problems[0].0, "courier.channels[0].request_config.body");
    assert!(problems[0].1.contains("tojson"), "{problems:?}");
}

#[test]
fn channel_settings_are_validated_without_echoing_secrets() {
    let problems = problems_of(json!({
        "url": "ftp://sms.example.com",
        "method": "TRACE",
        "headers": {"Bad Header": "x"},
        "auth": {"type": "basic_auth", "config": {"user": "a:b", "password": "hunter2"}},
        "extra": true,
    }));
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    for expected in [
        "courier.channels[0].request_config.url",
        "courier.channels[0].request_config.method",
        "courier.channels[0].request_config.headers.Bad Header",
        "courier.channels[0].request_config.auth.config.user",
        "courier.channels[0].request_config.extra",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
    assert!(!format!("{problems:?}").contains("hunter2"));

    let problems = problems_of(json!({
        "url": "https://sms.example.com",
        "auth": {"type": "api_key", "config": {"name": "X-Key", "in": "query"}},
    }));
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert!(keys.contains(&"courier.channels[0].request_config.auth.config.value"));
    assert!(keys.contains(&"courier.channels[0].request_config.auth.config.in"));

    let problems = problems_of(json!({
        "url": "https://sms.example.com",
        "headers": {"authorization": "Bearer x"},
        "auth": {"type": "basic_auth", "config": {"user": "u", "password": "p"}},
    }));
    assert_eq!(
        problems[0].0,
        "courier.channels[0].request_config.headers.authorization"
    );

    let problems = HttpChannelSettings::from_value(3, &json!({"type": "email"})).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert!(keys.contains(&"courier.channels[3].id"), "{keys:?}");
    assert!(keys.contains(&"courier.channels[3].type"), "{keys:?}");
    assert!(
        keys.contains(&"courier.channels[3].request_config"),
        "{keys:?}"
    );
}

#[test]
fn debug_output_keeps_credentials_out() {
    let settings = HttpChannelSettings::from_value(
        0,
        &json!({"id": "sms", "type": "http", "request_config": {
            "url": "https://u:urlpass@sms.example.com/send?key=urlkey",
            "headers": {"Authorization": "Bearer headertoken"},
            "auth": {"type": "api_key", "config": {"name": "X-Key", "value": "authpass"}},
        }}),
    )
    .expect("settings");
    let shown = format!("{settings:?}");
    for secret in ["urlpass", "urlkey", "headertoken", "authpass"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

// ---- Twilio ------------------------------------------------------------------------------------

fn twilio_sender(stub: &HttpStub, extra: Value) -> TwilioSender {
    let mut config = json!({
        "account_sid": ACCOUNT_SID,
        "auth_token": "token-123",
        "from": "+15555550100",
        "base_url": stub.base_url(),
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if value.is_null() {
                config.remove(key);
            } else {
                config.insert(key.clone(), value.clone());
            }
        }
    }
    let settings = TwilioSettings::from_value(&config)
        .unwrap_or_else(|problems| panic!("twilio settings refused: {problems:?}"));
    TwilioSender::new(settings).expect("twilio sender")
}

fn twilio_error(status: u16, code: i64, message: &str) -> ScriptedResponse {
    ScriptedResponse::json(
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

#[tokio::test]
async fn twilio_posts_the_form_with_account_basic_auth() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(
        201,
        json!({"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}),
    )])
    .await;
    let sender = twilio_sender(&stub, json!({}));
    assert_eq!(sender.gateway(), "twilio");
    let message = sms();

    let delivered = sender.send(&message).await.expect("delivered");

    assert_eq!(
        delivered.provider_message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    let request = stub.single_request();
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(
        request.header("authorization"),
        Some(basic(ACCOUNT_SID, "token-123").as_str())
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(request.form_field("To").as_deref(), Some(RECIPIENT));
    assert_eq!(request.form_field("Body"), Some(message.body.clone()));
    assert_eq!(request.form_field("From").as_deref(), Some("+15555550100"));
    assert_eq!(request.form_field("MessagingServiceSid"), None);
}

#[tokio::test]
async fn twilio_messaging_service_and_api_key() {
    let stub = HttpStub::start(vec![ScriptedResponse::json(201, json!({"sid": "SM1"}))]).await;
    let sender = twilio_sender(
        &stub,
        json!({
            "from": null,
            "messaging_service_sid": SERVICE_SID,
            "auth_token": null,
            "api_key_sid": API_KEY_SID,
            "api_key_secret": "key-secret",
        }),
    );

    sender.send(&sms()).await.expect("delivered");

    let request = stub.single_request();
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    );
    assert_eq!(
        request.header("authorization"),
        Some(basic(API_KEY_SID, "key-secret").as_str())
    );
    assert_eq!(
        request.form_field("MessagingServiceSid").as_deref(),
        Some(SERVICE_SID)
    );
    assert_eq!(request.form_field("From"), None);
}

#[tokio::test]
async fn twilio_rate_limit_is_retryable() {
    let stub = HttpStub::start(vec![twilio_error(429, 20429, "Too Many Requests")]).await;

    let error = twilio_sender(&stub, json!({}))
        .send(&sms())
        .await
        .expect_err("refused");

    assert!(error.retryable, "{error}");
    assert!(error.reason.contains("20429"), "{error}");
}

#[tokio::test]
async fn twilio_server_errors_and_closed_ports_are_retryable() {
    let stub = HttpStub::start(vec![ScriptedResponse::new(503, "down")]).await;
    let error = twilio_sender(&stub, json!({}))
        .send(&sms())
        .await
        .expect_err("refused");
    assert!(error.retryable, "{error}");

    let settings = TwilioSettings::from_value(&json!({
        "account_sid": ACCOUNT_SID,
        "auth_token": "token-123",
        "from": "+15555550100",
        "base_url": closed_port_url().await,
    }))
    .expect("settings");
    let error = TwilioSender::new(settings)
        .expect("sender")
        .send(&sms())
        .await
        .expect_err("no server");
    assert!(error.retryable, "{error}");
}

#[tokio::test]
async fn twilio_invalid_number_is_final_and_names_the_code() {
    let stub = HttpStub::start(vec![twilio_error(
        400,
        21211,
        &format!("The 'To' number {RECIPIENT} is not a valid phone number."),
    )])
    .await;
    let message = sms();

    let error = twilio_sender(&stub, json!({}))
        .send(&message)
        .await
        .expect_err("refused");

    assert!(!error.retryable, "{error}");
    assert!(error.reason.contains("21211"), "{error}");
    assert!(!error.reason.contains(CODE), "{error}");
    assert!(
        !error.reason.contains(RECIPIENT),
        "recipient is masked: {error}"
    );
}

#[tokio::test]
async fn twilio_other_client_errors_are_final() {
    for (status, code) in [(400, 21614), (400, 21408), (400, 21610), (401, 20003)] {
        let stub = HttpStub::start(vec![twilio_error(status, code, "refused")]).await;
        let error = twilio_sender(&stub, json!({}))
            .send(&sms())
            .await
            .expect_err("refused");
        assert!(!error.retryable, "{code}: {error}");
        assert!(error.reason.contains(&code.to_string()), "{error}");
    }
}

#[tokio::test]
async fn twilio_refuses_email_without_a_request() {
    let stub = HttpStub::start(vec![]).await;
    let mut message = sms();
    message.channel = Channel::Email;
    message.recipient = "jane@example.com".to_owned();

    let error = twilio_sender(&stub, json!({}))
        .send(&message)
        .await
        .expect_err("refused");

    assert!(!error.retryable, "{error}");
    assert!(stub.requests().is_empty());
}

#[test]
fn twilio_settings_are_validated() {
    let settings = TwilioSettings::from_value(&json!({
        "account_sid": ACCOUNT_SID,
        "auth_token": "token-123",
        "messaging_service_sid": SERVICE_SID,
    }))
    .expect("settings");
    assert_eq!(settings.base_url, "https://api.twilio.com");
    assert_eq!(settings.auth, TwilioAuth::AuthToken("token-123".to_owned()));
    assert!(!format!("{settings:?}").contains("token-123"));

    let keys = |value: Value| -> Vec<String> {
        TwilioSettings::from_value(&value)
            .expect_err("refused")
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    };
    assert_eq!(
        keys(json!({"auth_token": "t", "from": "+15555550100"})),
        ["courier.twilio.account_sid"]
    );
    assert_eq!(
        keys(json!({"account_sid": "AC123", "auth_token": "t", "from": "+15555550100"})),
        ["courier.twilio.account_sid"]
    );
    assert_eq!(
        keys(json!({"account_sid": ACCOUNT_SID, "from": "+15555550100"})),
        ["courier.twilio.auth_token"]
    );
    assert_eq!(
        keys(
            json!({"account_sid": ACCOUNT_SID, "auth_token": "t", "api_key_sid": API_KEY_SID, "api_key_secret": "s", "from": "+1"})
        ),
        ["courier.twilio.auth_token"]
    );
    assert_eq!(
        keys(json!({"account_sid": ACCOUNT_SID, "api_key_sid": API_KEY_SID, "from": "+1"})),
        ["courier.twilio.api_key_secret"]
    );
    assert_eq!(
        keys(json!({"account_sid": ACCOUNT_SID, "auth_token": "t"})),
        ["courier.twilio.from"]
    );
    assert_eq!(
        keys(
            json!({"account_sid": ACCOUNT_SID, "auth_token": "t", "from": "+1", "messaging_service_sid": SERVICE_SID})
        ),
        ["courier.twilio.from"]
    );
    assert_eq!(
        keys(
            json!({"account_sid": ACCOUNT_SID, "auth_token": "t", "messaging_service_sid": "MG1"})
        ),
        ["courier.twilio.messaging_service_sid"]
    );
    assert_eq!(
        keys(
            json!({"account_sid": ACCOUNT_SID, "auth_token": "t", "from": "+1", "base_url": "not a url"})
        ),
        ["courier.twilio.base_url"]
    );
    assert_eq!(
        keys(json!({"account_sid": ACCOUNT_SID, "auth_token": "t", "from": "+1", "sender": "x"})),
        ["courier.twilio.sender"]
    );
    let problems = TwilioSettings::from_value(&json!({
        "account_sid": ACCOUNT_SID, "auth_token": "supersecret", "api_key_secret": "alsosecret", "from": "+1"
    }))
    .expect_err("refused");
    let shown = format!("{problems:?}");
    assert!(
        !shown.contains("supersecret") && !shown.contains("alsosecret"),
        "{shown}"
    );
}
