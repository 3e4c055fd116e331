//! Configuration versions: `ConfigVersionStore`.
use super::PostgresStore;
use crate::store::StoreResult;
use crate::store::config_versions::{ConfigSource, ConfigVersion, ConfigVersionStore};
use crate::store::sql_common::{corrupt, map_error};
use async_trait::async_trait;
use sqlx::Row;

fn config_row(row: &sqlx::postgres::PgRow) -> StoreResult<ConfigVersion> {
    let version: i64 = row
        .try_get("version")
        .map_err(|error| map_error("read config version", error))?;
    let source: String = row
        .try_get("source")
        .map_err(|error| map_error("read config version", error))?;
    Ok(ConfigVersion {
        version: u64::try_from(version).map_err(|_| corrupt("negative config version"))?,
        document: row
            .try_get("document")
            .map_err(|error| map_error("read config version", error))?,
        etag: row
            .try_get("etag")
            .map_err(|error| map_error("read config version", error))?,
        source: ConfigSource::parse(&source).ok_or_else(|| corrupt("unknown config source"))?,
        created_at: row
            .try_get("created_at")
            .map_err(|error| map_error("read config version", error))?,
    })
}

#[async_trait]
impl ConfigVersionStore for PostgresStore {
    async fn latest_config(&self) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get latest config", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_version(&self) -> StoreResult<Option<u64>> {
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM config_versions")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| map_error("get latest config version", error))?;
        Ok(version.and_then(|version| u64::try_from(version).ok()))
    }

    async fn config_version(&self, version: u64) -> StoreResult<Option<ConfigVersion>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        sqlx::query("SELECT * FROM config_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get config version", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn latest_config_from(&self, source: ConfigSource) -> StoreResult<Option<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions WHERE source = $1 ORDER BY version DESC LIMIT 1")
            .bind(source.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get latest config by source", error))?
            .map(|row| config_row(&row))
            .transpose()
    }

    async fn list_config_versions(&self) -> StoreResult<Vec<ConfigVersion>> {
        sqlx::query("SELECT * FROM config_versions ORDER BY version DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(|error| map_error("list config versions", error))?
            .iter()
            .map(config_row)
            .collect()
    }

    async fn insert_config_version(&self, version: &ConfigVersion) -> StoreResult<bool> {
        let number =
            i64::try_from(version.version).map_err(|_| corrupt("config version out of range"))?;
        // The version must follow the newest one; the primary key settles races between writers.
        let inserted = sqlx::query(
            "INSERT INTO config_versions (version, document, etag, source, created_at) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE $1 = (SELECT coalesce(max(version), 0) + 1 FROM config_versions) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(number)
        .bind(&version.document)
        .bind(&version.etag)
        .bind(version.source.as_str())
        .bind(version.created_at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("insert config version", error))?;
        Ok(inserted.rows_affected() == 1)
    }
}
