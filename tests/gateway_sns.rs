//! The SNS gateway against moto's server, a local stand-in for Amazon SNS that records every SMS
//! it is asked to publish. Start it with `eval "$(scripts/moto.sh)"`; the tests fail, rather than
//! skip, when `TWOFOLD_TEST_MOTO_URL` is missing.
mod support;

use serde_json::{Value, json};
use twofold::courier::sns::{SnsSender, SnsSettings};
use twofold::courier::{OutgoingMessage, Sender};
use twofold::domain::aal::Channel;
use uuid::Uuid;

const MOTO_ENV: &str = "TWOFOLD_TEST_MOTO_URL";

fn moto_url() -> String {
    match std::env::var(MOTO_ENV) {
        Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ => panic!(
            "{MOTO_ENV} is not set: start the SNS stand-in with `eval \"$(scripts/moto.sh)\"` \
             and run the tests from the same shell"
        ),
    }
}

fn settings(endpoint: &str) -> SnsSettings {
    SnsSettings::from_value(&json!({
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }))
    .expect("valid settings")
}

/// A North American number no other test (or earlier run against the same server) uses.
fn unique_number() -> String {
    let digits = Uuid::new_v4().as_u128() % 10_000_000;
    format!("+1555{digits:07}")
}

fn sms(recipient: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        id: Uuid::now_v7(),
        channel: Channel::Sms,
        recipient: recipient.to_owned(),
        template_type: "login_code_valid".to_owned(),
        subject: None,
        body: body.to_owned(),
        html_body: None,
        locale: "en".to_owned(),
        template_data: json!({}),
    }
}

/// Every SMS moto recorded. moto 5 lists them flat under `sns.SMS`; older or future layouts
/// nest backends per account and region, so any `SMS` array below `sns` is collected.
async fn recorded_sms(moto: &str) -> Vec<Value> {
    let data: Value = reqwest::get(format!("{moto}/moto-api/data.json"))
        .await
        .expect("moto data.json")
        .json()
        .await
        .expect("moto data.json is json");
    let mut found = Vec::new();
    collect_sms(&data["sns"], &mut found);
    found
}

fn collect_sms(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("SMS", Value::Array(items)) => found.extend(items.iter().cloned()),
                    _ => collect_sms(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_sms(item, found)),
        _ => {}
    }
}

async fn recorded_for(moto: &str, number: &str) -> Vec<Value> {
    recorded_sms(moto)
        .await
        .into_iter()
        .filter(|sms| sms["phone_number"] == number)
        .collect()
}

#[tokio::test]
async fn publishes_the_body_to_the_number() {
    let moto = moto_url();
    let sender = SnsSender::new(settings(&moto)).await.expect("sender");
    assert_eq!(sender.gateway(), "sns");
    let number = unique_number();
    let body = format!("Your code is {}", Uuid::new_v4().simple());

    let delivered = sender.send(&sms(&number, &body)).await.expect("published");

    let message_id = delivered.provider_message_id.expect("sns message id");
    let recorded = recorded_for(&moto, &number).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["message"], body.as_str());
    assert_eq!(recorded[0]["message_id"], message_id.as_str());
}

#[tokio::test]
async fn sender_id_and_sms_type_are_accepted() {
    let moto = moto_url();
    let settings = SnsSettings::from_value(&json!({
        "region": "us-east-1",
        "endpoint_url": moto,
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "sender_id": "Twofold",
        "sms_type": "Transactional",
    }))
    .expect("valid settings");
    let sender = SnsSender::new(settings).await.expect("sender");
    let number = unique_number();

    let delivered = sender
        .send(&sms(&number, "Your code is 424242"))
        .await
        .expect("published with attributes");

    let recorded = recorded_for(&moto, &number).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        recorded[0]["message_id"],
        delivered.provider_message_id.expect("id").as_str()
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    // A port that was free a moment ago: nothing listens, so the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let sender = SnsSender::new(settings(&format!("http://127.0.0.1:{port}")))
        .await
        .expect("sender");

    let error = sender
        .send(&sms(&unique_number(), "Your code is 135790"))
        .await
        .expect_err("nothing listens");

    assert!(error.retryable, "{error:?}");
    assert!(
        error.reason.starts_with("sns request not delivered"),
        "{error:?}"
    );
    assert!(!error.reason.contains("135790"), "{error:?}");
}

#[tokio::test]
async fn a_malformed_number_is_refused_for_good() {
    // moto validates E.164 on Publish (`+15551234567a` → 400 InvalidParameter), as SNS does.
    let moto = moto_url();
    let sender = SnsSender::new(settings(&moto)).await.expect("sender");
    let number = "+15551234567a";

    let error = sender
        .send(&sms(number, "Your code is 975310"))
        .await
        .expect_err("invalid number");

    assert!(!error.retryable, "{error:?}");
    assert!(
        error.reason.starts_with("sns InvalidParameter: "),
        "{error:?}"
    );
    assert!(!error.reason.contains("975310"), "{error:?}");
    assert!(recorded_for(&moto, number).await.is_empty());
}

#[tokio::test]
async fn wrong_settings_name_their_keys() {
    let problems = SnsSettings::from_value(&json!({
        "region": 5,
        "access_key_id": "AKIDEXAMPLE",
        "sms_type": "transactional",
        "sender_id": "",
    }))
    .expect_err("invalid settings");
    let keys: Vec<&str> = problems.iter().map(|(key, _)| key.as_str()).collect();
    assert!(keys.contains(&"courier.sns.region"), "{problems:?}");
    assert!(
        keys.contains(&"courier.sns.secret_access_key"),
        "{problems:?}"
    );
    assert!(keys.contains(&"courier.sns.sms_type"), "{problems:?}");
    assert!(keys.contains(&"courier.sns.sender_id"), "{problems:?}");

    let problems = SnsSettings::from_value(&json!({})).expect_err("region missing");
    assert_eq!(
        problems,
        vec![("courier.sns.region".to_owned(), "is required".to_owned())]
    );
}
