//! Redis backend for short-lived state (flows).
//!
//! A flow is one hash `<key_prefix>flow:<id>` with fields `rev` (decimal) and `doc` (the
//! document bytes) and a millisecond TTL on the key. Replacing is a Lua script, so comparing the
//! revision and writing happen in one step on the server; `HSET` leaves the key's TTL alone, so
//! the flow keeps its original deadline, except that finishing a flow may bring it nearer.
use super::{FlowStore, StoreError, StoreResult, StoredFlow};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// A request that gets no answer within this is reported as `Unavailable` rather than hanging
/// the RPC that made it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect attempts per failure; with the default backoff this stays within a few seconds.
const RECONNECT_RETRIES: usize = 3;

/// Compare-revision-and-set. ARGV: expected revision, new revision, document, and optionally
/// a number of milliseconds the key's TTL comes down to if it is longer (`finish_flow`). The new
/// revision is computed by the caller so Lua's doubles never touch a u64.
static REPLACE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
        local current = redis.call('HGET', KEYS[1], 'rev')
        if current ~= ARGV[1] then
            return 0
        end
        redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'doc', ARGV[3])
        if ARGV[4] then
            local remaining = redis.call('PTTL', KEYS[1])
            if remaining < 0 or remaining > tonumber(ARGV[4]) then
                redis.call('PEXPIRE', KEYS[1], ARGV[4])
            end
        end
        return 1
        ",
    )
});

#[derive(Clone)]
pub struct RedisFlowStore {
    connection: ConnectionManager,
    key_prefix: String,
}

impl RedisFlowStore {
    /// Connects through a connection manager (reconnects on its own). Keys are
    /// `<key_prefix>flow:<id>`, so several test runs can share one server.
    pub async fn connect(url: &str, key_prefix: &str) -> StoreResult<Self> {
        Ok(Self::with_connection(
            connect_manager(url).await?,
            key_prefix,
        ))
    }

    /// A flow store on an existing connection manager (shared with the code store).
    pub fn with_connection(connection: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            connection,
            key_prefix: key_prefix.to_owned(),
        }
    }

    fn key(&self, id: Uuid) -> String {
        format!("{}flow:{}", self.key_prefix, id)
    }
}

/// Opens a connection manager with the store's timeouts; clones of it share one connection.
pub async fn connect_manager(url: &str) -> StoreResult<ConnectionManager> {
    let client = redis::Client::open(url).map_err(|error| map_error("parse redis url", error))?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES);
    ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|error| map_error("connect to redis", error))
}

/// Connection trouble (refused, dropped, timed out) is `Unavailable`; anything else, such as a
/// script error or an unexpected reply, is `Internal`.
pub(crate) fn map_error(context: &'static str, error: redis::RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
    {
        StoreError::Unavailable(format!("{context}: {error}"))
    } else {
        StoreError::Internal(format!("{context}: {error}"))
    }
}

#[async_trait]
impl FlowStore for RedisFlowStore {
    async fn create_flow(&self, id: Uuid, document: &[u8], ttl: Duration) -> StoreResult<()> {
        let ttl_ms = ttl_millis(ttl);
        let key = self.key(id);
        let mut connection = self.connection.clone();
        // MULTI/EXEC: the hash never exists without its TTL, and stale fields of an earlier
        // flow under the same id cannot survive.
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &[("rev", b"1".as_slice()), ("doc", document)])
            .ignore()
            .pexpire(&key, ttl_ms)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| map_error("create flow", error))
    }

    async fn delete_flow(&self, id: Uuid) -> StoreResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("DEL")
            .arg(self.key(id))
            .query_async::<()>(&mut connection)
            .await
            .map_err(|error| map_error("delete flow", error))
    }

    async fn get_flow(&self, id: Uuid) -> StoreResult<Option<StoredFlow>> {
        let mut connection = self.connection.clone();
        let (revision, document): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.key(id))
            .arg("rev")
            .arg("doc")
            .query_async(&mut connection)
            .await
            .map_err(|error| map_error("get flow", error))?;
        match (revision, document) {
            (None, None) => Ok(None),
            (Some(revision), Some(document)) => {
                let revision = revision
                    .parse()
                    .map_err(|_| StoreError::Internal("corrupt stored flow: revision".into()))?;
                Ok(Some(StoredFlow { revision, document }))
            }
            _ => Err(StoreError::Internal(
                "corrupt stored flow: missing field".into(),
            )),
        }
    }

    async fn replace_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
    ) -> StoreResult<bool> {
        self.replace(id, expected_revision, document, None).await
    }

    async fn finish_flow(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
        keep_for: Duration,
    ) -> StoreResult<bool> {
        self.replace(id, expected_revision, document, Some(keep_for))
            .await
    }
}

impl RedisFlowStore {
    async fn replace(
        &self,
        id: Uuid,
        expected_revision: u64,
        document: &[u8],
        keep_for: Option<Duration>,
    ) -> StoreResult<bool> {
        let Some(next_revision) = expected_revision.checked_add(1) else {
            return Ok(false);
        };
        let mut invocation = REPLACE_SCRIPT.key(self.key(id));
        invocation
            .arg(expected_revision.to_string())
            .arg(next_revision.to_string())
            .arg(document);
        if let Some(keep_for) = keep_for {
            invocation.arg(ttl_millis(keep_for));
        }
        let mut connection = self.connection.clone();
        let replaced: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| map_error("replace flow", error))?;
        Ok(replaced == 1)
    }
}

/// A TTL in whole milliseconds for `PEXPIRE`, at least 1 (0 would delete the key at once).
pub(crate) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}
