//! Reading what real gateway stand-ins received: Mailpit (SMTP, with an HTTP API) and moto's
//! server (Amazon SNS). Their addresses come from `scripts/mailpit.sh` and `scripts/moto.sh`.
use serde_json::Value;
use std::time::Duration;

pub fn required(variable: &str, script: &str) -> String {
    std::env::var(variable)
        .unwrap_or_else(|_| panic!("{variable} is not set: start it with `eval \"$({script})\"` and run the tests from the same shell"))
}

pub fn mailpit_smtp() -> String {
    required("TWOFOLD_TEST_MAILPIT_SMTP", "scripts/mailpit.sh")
}

pub fn mailpit_api() -> String {
    required("TWOFOLD_TEST_MAILPIT_API", "scripts/mailpit.sh")
}

pub fn moto_url() -> String {
    required("TWOFOLD_TEST_MOTO_URL", "scripts/moto.sh")
}

/// The text of the newest email Mailpit holds for `recipient`, waiting up to ten seconds.
pub async fn mailpit_text_for(recipient: &str) -> String {
    let api = mailpit_api();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        let mut url = url::Url::parse(&format!("{api}/api/v1/search")).unwrap();
        url.query_pairs_mut()
            .append_pair("query", &format!("to:\"{recipient}\""));
        let found: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        if let Some(id) = found["messages"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["ID"].as_str())
        {
            let message: Value = client
                .get(format!("{api}/api/v1/message/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            return message["Text"].as_str().unwrap_or_default().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no email to {recipient} reached mailpit");
}

/// Every SMS moto recorded for `number`, waiting up to ten seconds for the first.
pub async fn moto_sms_for(number: &str) -> Vec<String> {
    let moto = moto_url();
    for _ in 0..200 {
        let data: Value = reqwest::get(format!("{moto}/moto-api/data.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut found = Vec::new();
        collect(&data["sns"], number, &mut found);
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no sms to {number} reached moto");
}

fn collect(value: &Value, number: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("SMS", Value::Array(items)) => found.extend(
                        items
                            .iter()
                            .filter(|sms| sms["phone_number"] == number)
                            .filter_map(|sms| sms["message"].as_str().map(str::to_owned)),
                    ),
                    _ => collect(child, number, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect(item, number, found)),
        _ => {}
    }
}
