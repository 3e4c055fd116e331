//! Go-style durations (`15m`, `1h30m`, `900s`, `250ms`) as Kratos writes them. STUB.
use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let _ = text;
    unimplemented!("duration parse")
}

pub fn format(duration: &Duration) -> String {
    format!("{}s", duration.as_secs())
}

pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(duration))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}
