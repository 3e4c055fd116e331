//! Proto messages as JSON for people and scripts: enum values as short lower-case words,
//! timestamps as RFC 3339, traits as plain JSON.
use serde_json::{Map, Value, json};
use twofold::api::convert::struct_to_json;
use twofold::proto::v1;

pub fn timestamp(at: Option<&prost_types::Timestamp>) -> Value {
    at.and_then(|at| chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?))
        .map_or(Value::Null, |at| {
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        })
}

/// Timestamp text for tables, where `null` would read oddly.
pub fn timestamp_text(at: Option<&prost_types::Timestamp>) -> String {
    match timestamp(at) {
        Value::String(text) => text,
        _ => "-".to_owned(),
    }
}

fn channel(value: i32) -> &'static str {
    match v1::Channel::try_from(value) {
        Ok(v1::Channel::Email) => "email",
        Ok(v1::Channel::Sms) => "sms",
        _ => "unspecified",
    }
}

fn state(value: i32) -> &'static str {
    match v1::IdentityState::try_from(value) {
        Ok(v1::IdentityState::Active) => "active",
        Ok(v1::IdentityState::Inactive) => "inactive",
        _ => "unspecified",
    }
}

fn verifiable_address(address: v1::VerifiableAddress) -> Value {
    json!({
        "id": address.id,
        "value": address.value,
        "channel": channel(address.channel),
        "verified": address.verified,
        "verified_at": timestamp(address.verified_at.as_ref()),
        "trait": address.r#trait,
    })
}

fn code_address(address: v1::CodeAddress) -> Value {
    json!({
        "trait": address.r#trait,
        "value": address.value,
        "channel": channel(address.channel),
    })
}

pub fn identity(identity: v1::Identity) -> Value {
    let mut view = Map::new();
    view.insert("id".into(), identity.id.into());
    view.insert("schema_id".into(), identity.schema_id.into());
    view.insert("state".into(), state(identity.state).into());
    view.insert("traits".into(), struct_to_json(identity.traits));
    view.insert(
        "verifiable_addresses".into(),
        identity
            .verifiable_addresses
            .into_iter()
            .map(verifiable_address)
            .collect(),
    );
    view.insert(
        "code_addresses".into(),
        identity
            .code_addresses
            .into_iter()
            .map(code_address)
            .collect(),
    );
    view.insert("has_password".into(), identity.has_password.into());
    view.insert("created_at".into(), timestamp(identity.created_at.as_ref()));
    view.insert("updated_at".into(), timestamp(identity.updated_at.as_ref()));
    Value::Object(view)
}

/// Pads columns to their widest cell so the table lines up in a terminal.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_and_drop_trailing_blanks() {
        let rows = vec![
            vec!["VERSION".to_owned(), "CURRENT".to_owned()],
            vec!["1".to_owned(), String::new()],
            vec!["12".to_owned(), "*".to_owned()],
        ];
        assert_eq!(table(&rows), "VERSION  CURRENT\n1\n12       *\n");
    }

    #[test]
    fn timestamps_are_rfc3339_and_missing_ones_null() {
        let at = prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(timestamp(Some(&at)), json!("1970-01-01T00:00:00Z"));
        assert_eq!(timestamp(None), Value::Null);
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(timestamp(Some(&bad)), Value::Null);
    }
}
