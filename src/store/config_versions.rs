//! Stored configuration versions: the history `ConfigService` serves and the channel through
//! which replicas learn about a change (they poll the newest version number).
use super::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Read from the configuration file at start-up.
    File,
    /// Sent through `ConfigService.UpdateConfig` / `PutIdentitySchema`.
    Api,
    /// Restored by `ConfigService.RollbackConfig`.
    Rollback,
}

impl ConfigSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigSource::File => "file",
            ConfigSource::Api => "api",
            ConfigSource::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "file" => Some(ConfigSource::File),
            "api" => Some(ConfigSource::Api),
            "rollback" => Some(ConfigSource::Rollback),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVersion {
    pub version: u64,
    /// The configuration as JSON.
    pub document: String,
    pub etag: String,
    pub source: ConfigSource,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait ConfigVersionStore: Send + Sync + 'static {
    /// The newest version, if any was stored.
    async fn latest_config(&self) -> StoreResult<Option<ConfigVersion>>;

    /// Only the newest version number (cheap, for polling).
    async fn latest_config_version(&self) -> StoreResult<Option<u64>>;

    async fn config_version(&self, version: u64) -> StoreResult<Option<ConfigVersion>>;

    /// The newest `source` version, if any (start-up compares the file with it).
    async fn latest_config_from(&self, source: ConfigSource) -> StoreResult<Option<ConfigVersion>>;

    /// Every version without documents' bodies mattering to the caller, newest first.
    async fn list_config_versions(&self) -> StoreResult<Vec<ConfigVersion>>;

    /// Stores `version.version`, which must be one more than the current newest (or 1). Returns
    /// false when another writer stored that version first: of concurrent writers exactly one
    /// wins, through the primary key.
    async fn insert_config_version(&self, version: &ConfigVersion) -> StoreResult<bool>;
}
