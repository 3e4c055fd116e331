//! Redis backend for short-lived state (flows). STUB.
use super::StoreResult;

#[derive(Clone)]
pub struct RedisFlowStore {
    connection: ::redis::aio::ConnectionManager,
    key_prefix: String,
}

impl RedisFlowStore {
    /// Connects through a connection manager (reconnects on its own). Keys are
    /// `<key_prefix>flow:<id>`, so several test runs can share one server.
    pub async fn connect(url: &str, key_prefix: &str) -> StoreResult<Self> {
        let _ = (url, key_prefix);
        unimplemented!("redis connect")
    }
}
