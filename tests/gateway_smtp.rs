//! The SMTP gateway against real SMTP servers: three Mailpit catchers from `scripts/mailpit.sh`
//! (plain, STARTTLS required, implicit TLS) read back through Mailpit's HTTP API, plus a tiny
//! scripted SMTP server in the test for the replies Mailpit never gives (4xx and 5xx).
//! Tests run in parallel against one Mailpit, so each sends to its own recipient and looks its
//! message up by that recipient.

mod support;

use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use twofold::courier::smtp::{SmtpSender, SmtpSettings};
use twofold::courier::{OutgoingMessage, Sender};
use twofold::domain::aal::Channel;
use uuid::Uuid;

const SMTP_ENV: &str = "TWOFOLD_TEST_MAILPIT_SMTP";
const API_ENV: &str = "TWOFOLD_TEST_MAILPIT_API";
const STARTTLS_SMTP_ENV: &str = "TWOFOLD_TEST_MAILPIT_STARTTLS_SMTP";
const STARTTLS_API_ENV: &str = "TWOFOLD_TEST_MAILPIT_STARTTLS_API";
const TLS_SMTP_ENV: &str = "TWOFOLD_TEST_MAILPIT_TLS_SMTP";
const TLS_API_ENV: &str = "TWOFOLD_TEST_MAILPIT_TLS_API";

/// A Mailpit address. A missing one fails the test: a suite that skips itself looks green while
/// testing nothing.
fn mailpit(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{variable} is not set: start Mailpit with `eval \"$(scripts/mailpit.sh)\"` (as root) \
             and run the tests from the same shell"
        ),
    }
}

fn unique_recipient(test: &str) -> String {
    format!("{test}-{}@twofold.test", Uuid::now_v7().simple())
}

fn message(recipient: &str, html: Option<&str>) -> OutgoingMessage {
    OutgoingMessage {
        id: Uuid::now_v7(),
        channel: Channel::Email,
        recipient: recipient.to_owned(),
        template_type: "login_code_valid".to_owned(),
        subject: Some("Your login code".to_owned()),
        body: "Your code is 482913.".to_owned(),
        html_body: html.map(str::to_owned),
        locale: "en".to_owned(),
        template_data: serde_json::json!({"to": recipient, "code": "482913"}),
    }
}

fn settings(connection_uri: String) -> SmtpSettings {
    SmtpSettings {
        connection_uri,
        from_address: "no-reply@twofold.test".to_owned(),
        from_name: Some("Twofold Codes".to_owned()),
        headers: vec![("X-Twofold-Test".to_owned(), "gateway-smtp".to_owned())],
        local_name: Some("twofold.test".to_owned()),
    }
}

fn plain_uri() -> String {
    format!(
        "smtp://mail%40user:p%40ss%2Bw0rd@{}/?disable_starttls=true",
        mailpit(SMTP_ENV)
    )
}

fn search_url(api: &str, recipient: &str) -> url::Url {
    let mut url = url::Url::parse(&format!("{api}/api/v1/search")).expect("api url");
    url.query_pairs_mut()
        .append_pair("query", &format!("to:\"{recipient}\""));
    url
}

/// Waits for the one message addressed to `recipient` and returns Mailpit's full view of it.
async fn received(api: &str, recipient: &str) -> Value {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let search: Value = client
            .get(search_url(api, recipient))
            .send()
            .await
            .expect("search mailpit")
            .json()
            .await
            .expect("search answer is json");
        if let Some(found) = search["messages"].as_array().and_then(|m| m.first()) {
            assert_eq!(
                search["messages"].as_array().unwrap().len(),
                1,
                "one message each"
            );
            let id = found["ID"].as_str().expect("message id");
            return client
                .get(format!("{api}/api/v1/message/{id}"))
                .send()
                .await
                .expect("read message")
                .json()
                .await
                .expect("message is json");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message to {recipient} reached mailpit at {api}");
}

async fn headers(api: &str, id: &str) -> Value {
    reqwest::get(format!("{api}/api/v1/message/{id}/headers"))
        .await
        .expect("read headers")
        .json()
        .await
        .expect("headers are json")
}

/// Mailpit searches its index; make sure nothing at all arrived for `recipient`.
async fn nothing_for(api: &str, recipient: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let search: Value = reqwest::Client::new()
        .get(search_url(api, recipient))
        .send()
        .await
        .expect("search mailpit")
        .json()
        .await
        .expect("search answer is json");
    assert_eq!(search["messages_count"], 0, "{search}");
}

#[tokio::test]
async fn plain_text_with_credentials_arrives() {
    let api = mailpit(API_ENV);
    let recipient = unique_recipient("plain");
    let sender = SmtpSender::new(settings(plain_uri())).expect("sender");
    assert_eq!(sender.gateway(), "smtp");

    let delivered = sender.send(&message(&recipient, None)).await.expect("sent");

    let found = received(&api, &recipient).await;
    assert_eq!(found["To"][0]["Address"], recipient.as_str());
    assert_eq!(found["Subject"], "Your login code");
    assert_eq!(
        found["Text"].as_str().unwrap().trim_end(),
        "Your code is 482913."
    );
    assert_eq!(found["HTML"], "");
    let provider_id = delivered.provider_message_id.expect("message id");
    assert!(provider_id.starts_with('<') && provider_id.ends_with("@twofold>"));
    assert_eq!(
        found["MessageID"].as_str().unwrap(),
        provider_id.trim_matches(|c| c == '<' || c == '>')
    );
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate_arrives() {
    let api = mailpit(STARTTLS_API_ENV);
    let recipient = unique_recipient("starttls");
    let uri = format!(
        "smtp://user:secret@{}/?skip_ssl_verify=true",
        mailpit(STARTTLS_SMTP_ENV)
    );
    let sender = SmtpSender::new(settings(uri)).expect("sender");

    sender
        .send(&message(&recipient, None))
        .await
        .expect("sent over starttls");

    let found = received(&api, &recipient).await;
    assert_eq!(found["To"][0]["Address"], recipient.as_str());
    assert_eq!(
        found["Text"].as_str().unwrap().trim_end(),
        "Your code is 482913."
    );
}

#[tokio::test]
async fn implicit_tls_arrives() {
    let api = mailpit(TLS_API_ENV);
    let recipient = unique_recipient("smtps");
    let uri = format!(
        "smtps://user:secret@{}/?skip_ssl_verify=true",
        mailpit(TLS_SMTP_ENV)
    );
    let sender = SmtpSender::new(settings(uri)).expect("sender");

    sender
        .send(&message(&recipient, None))
        .await
        .expect("sent over implicit tls");

    let found = received(&api, &recipient).await;
    assert_eq!(found["To"][0]["Address"], recipient.as_str());
}

#[tokio::test]
async fn starttls_is_required_unless_disabled() {
    // The plain catcher offers no STARTTLS: a sender that requires it must not fall back to
    // plain text, and the failure is worth retrying (the relay may be fixed).
    let api = mailpit(API_ENV);
    let recipient = unique_recipient("downgrade");
    let uri = format!("smtp://user:secret@{}/", mailpit(SMTP_ENV));
    let sender = SmtpSender::new(settings(uri)).expect("sender");

    let error = sender
        .send(&message(&recipient, None))
        .await
        .expect_err("no plain-text fallback");
    assert!(error.retryable, "{error}");
    assert!(!error.reason.contains("secret"), "{error}");
    nothing_for(&api, &recipient).await;
}

#[tokio::test]
async fn certificates_are_verified_by_default() {
    let api = mailpit(STARTTLS_API_ENV);
    let recipient = unique_recipient("verify");
    let uri = format!("smtp://user:secret@{}/", mailpit(STARTTLS_SMTP_ENV));
    let sender = SmtpSender::new(settings(uri)).expect("sender");

    let error = sender
        .send(&message(&recipient, None))
        .await
        .expect_err("a self-signed certificate is refused");
    assert!(!error.reason.contains("secret"), "{error}");
    nothing_for(&api, &recipient).await;
}

#[tokio::test]
async fn html_and_text_parts_arrive() {
    let api = mailpit(API_ENV);
    let recipient = unique_recipient("html");
    let sender = SmtpSender::new(settings(plain_uri())).expect("sender");
    let html = "<p>Your code is <strong>482913</strong>.</p>";

    sender
        .send(&message(&recipient, Some(html)))
        .await
        .expect("sent");

    let found = received(&api, &recipient).await;
    assert_eq!(
        found["Text"].as_str().unwrap().trim_end(),
        "Your code is 482913."
    );
    assert!(
        found["HTML"].as_str().unwrap().contains(html),
        "{}",
        found["HTML"]
    );
    let id = found["ID"].as_str().unwrap();
    let headers = headers(&api, id).await;
    let content_type = headers["Content-Type"][0].as_str().unwrap();
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
}

#[tokio::test]
async fn sender_subject_and_custom_header_arrive() {
    let api = mailpit(API_ENV);
    let recipient = unique_recipient("headers");
    let sender = SmtpSender::new(settings(plain_uri())).expect("sender");
    let mut outgoing = message(&recipient, None);
    outgoing.subject = Some("Votre code de connexion – 482913".to_owned());

    sender.send(&outgoing).await.expect("sent");

    let found = received(&api, &recipient).await;
    assert_eq!(found["From"]["Name"], "Twofold Codes");
    assert_eq!(found["From"]["Address"], "no-reply@twofold.test");
    assert_eq!(found["Subject"], "Votre code de connexion – 482913");
    let headers = headers(&api, found["ID"].as_str().unwrap()).await;
    assert_eq!(headers["X-Twofold-Test"][0], "gateway-smtp", "{headers}");
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let uri = format!("smtp://user:hunter2@127.0.0.1:{port}/?disable_starttls=true");
    let sender = SmtpSender::new(settings(uri)).expect("sender");

    let error = sender
        .send(&message(&unique_recipient("closed"), None))
        .await
        .expect_err("nothing listens");
    assert!(error.retryable, "{error}");
    assert!(!error.reason.contains("hunter2"), "{error}");
    assert!(!error.reason.contains("482913"), "{error}");
}

#[tokio::test]
async fn an_invalid_recipient_is_final() {
    let sender = SmtpSender::new(settings(plain_uri())).expect("sender");
    for recipient in [
        "not an address",
        "jane@",
        "jane@example.com\r\nBcc: x@y.test",
        "",
    ] {
        let error = sender
            .send(&message(recipient, None))
            .await
            .expect_err("refused before sending");
        assert!(!error.retryable, "{recipient:?}: {error}");
        assert!(!error.reason.contains("482913"), "{error}");
    }
}

/// Answers every SMTP command with 250, except `RCPT TO` with `rcpt_reply`. Returns its port.
async fn scripted_server(rcpt_reply: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 scripted ESMTP\r\n").await.ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    let command = line.to_ascii_uppercase();
                    let reply = if command.starts_with("RCPT") {
                        rcpt_reply
                    } else if command.starts_with("QUIT") {
                        "221 bye"
                    } else {
                        "250 ok"
                    };
                    if write
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .is_err()
                        || command.starts_with("QUIT")
                    {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn permanent_replies_are_final_and_transient_ones_retryable() {
    for (reply, retryable) in [
        ("550 5.1.1 mailbox unavailable", false),
        ("553 5.1.3 bad destination address", false),
        ("451 4.3.0 try again later", true),
        ("452 4.2.2 mailbox full", true),
    ] {
        let port = scripted_server(reply).await;
        let uri = format!("smtp://127.0.0.1:{port}/?disable_starttls=true");
        let sender = SmtpSender::new(settings(uri)).expect("sender");
        let error = sender
            .send(&message(&unique_recipient("scripted"), None))
            .await
            .expect_err(reply);
        assert_eq!(error.retryable, retryable, "{reply}: {error}");
        assert!(error.reason.contains(&reply[..3]), "{error}");
        assert!(!error.reason.contains("482913"), "{error}");
    }
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let settings = settings("smtp://127.0.0.1:2525/?disable_starttls=true".to_owned());
    let error = SmtpSender::new(settings.clone()).expect_err("no runtime");
    assert!(error.contains("tokio runtime"), "{error}");

    // Built on a runtime, dropped outside it: the pool's shutdown must not panic.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sender = runtime.block_on(async { SmtpSender::new(settings).expect("sender") });
    drop(sender);
}

#[tokio::test]
async fn settings_problems_name_the_key() {
    let problems = SmtpSettings::from_value(&serde_json::json!({
        "connection_uri": "https://user:topsecret@mail.example.com/",
        "from_address": "not an address",
        "headers": {"X-Ok": 3},
    }))
    .expect_err("three problems");
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "courier.smtp.connection_uri",
            "courier.smtp.from_address",
            "courier.smtp.headers.X-Ok",
        ]
    );
    for (_, text) in &problems {
        assert!(!text.contains("topsecret"), "{text}");
    }

    let problems = SmtpSettings::from_value(&serde_json::json!({"from_address": "a@b.test"}))
        .expect_err("uri missing");
    assert_eq!(
        problems,
        [(
            "courier.smtp.connection_uri".to_owned(),
            "is required".to_owned()
        )]
    );

    let settings = SmtpSettings::from_value(&serde_json::json!({
        "connection_uri": "smtps://u:p@mail.example.com/",
        "from_address": "no-reply@twofold.test",
        "from_name": "Twofold",
        "headers": {"X-Campaign": "codes"},
        "local_name": "twofold.example.com",
    }))
    .expect("valid");
    assert_eq!(settings.from_name.as_deref(), Some("Twofold"));
    assert!(SmtpSender::new(settings).is_ok());
}
