//! The load harness's sender: hands each code to `twofold-bench` through a Unix datagram socket,
//! so a benchmark measures Twofold and not a gateway. Compiled only with the `bench` feature, and
//! chosen only by `courier.sms_sender: bench` / `email_sender: bench` with `courier.bench.socket`.
use super::{Delivered, OutgoingMessage, SendError, Sender};
use async_trait::async_trait;
use serde_json::Value;
use std::path::PathBuf;
use tokio::net::UnixDatagram;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchSettings {
    pub socket: PathBuf,
}

impl BenchSettings {
    pub fn from_value(value: &Value) -> Result<Self, Vec<(String, String)>> {
        match value.get("socket").and_then(Value::as_str) {
            Some(path) if !path.is_empty() => Ok(Self {
                socket: PathBuf::from(path),
            }),
            _ => Err(vec![(
                "courier.bench.socket".into(),
                "is required: the harness's Unix datagram socket path".into(),
            )]),
        }
    }
}

pub struct BenchSender {
    settings: BenchSettings,
    socket: UnixDatagram,
}

impl BenchSender {
    pub fn new(settings: BenchSettings) -> Result<Self, String> {
        let socket = UnixDatagram::unbound()
            .map_err(|error| format!("courier.bench: cannot open a datagram socket: {error}"))?;
        Ok(Self { settings, socket })
    }
}

#[async_trait]
impl Sender for BenchSender {
    fn gateway(&self) -> &str {
        "bench"
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let datagram = serde_json::json!({
            "to": message.recipient,
            "code": message.template_data.get("code").cloned().unwrap_or(Value::Null),
            "purpose": message.template_data.get("purpose").cloned().unwrap_or(Value::Null),
        });
        let bytes = serde_json::to_vec(&datagram).map_err(|error| SendError {
            retryable: false,
            reason: format!("bench datagram: {error}"),
        })?;
        // A harness that is not listening (yet) is worth retrying, like a gateway outage.
        self.socket
            .send_to(&bytes, &self.settings.socket)
            .await
            .map_err(|error| SendError {
                retryable: true,
                reason: format!("bench socket: {error}"),
            })?;
        Ok(Delivered {
            provider_message_id: Some(format!("bench-{}", message.id)),
        })
    }
}
