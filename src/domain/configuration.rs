//! Configuration at run time, the way `ory get identity-config` / `ory update identity-config`
//! work: read the effective configuration (secrets redacted), validate or store a new version and
//! apply it without a restart, list versions, roll back, and manage identity schemas.
//!
//! What is stored: every run-time setting, with identity schemas inlined as `base64://` so any
//! replica can load a version without the original files. Listen addresses, storage DSNs and
//! logging (`serve`, `dsn`, `redis`, `log`) are fixed at start-up: they come from each process's
//! file and environment, are never stored, and a document that changes them is refused.
//!
//! Which version is in force after a restart: the newest, unless the configuration file changed
//! since it was last stored, in which case the file is stored as a new version and wins (the most
//! recent intent is the operator's edit).
use super::error::{DomainError, DomainResult, FieldViolation};
use super::schema::IdentitySchema;
use super::{Context, Settings};
use crate::config::{self, Config, ConfigProblem, Loaded};
use crate::store::config_versions::{ConfigSource, ConfigVersion};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What replaces a secret in documents handed out; sent back unchanged, it keeps the stored value.
pub const REDACTED: &str = "<redacted>";
/// Keys fixed at start-up.
const RESTART_ONLY: [&str; 4] = ["dsn", "redis", "serve", "log"];
/// How often a replica looks for a newer version (the issue asks for pick-up within a second).
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

pub struct ConfigView {
    pub document: String,
    pub version: u64,
    pub etag: String,
}

fn etag_of(document: &str) -> String {
    hex::encode(&Sha256::digest(document.as_bytes())[..12])
}

fn problems_to_violations(problems: Vec<ConfigProblem>) -> Vec<FieldViolation> {
    problems
        .into_iter()
        .map(|problem| FieldViolation::new(problem.key, problem.message))
        .collect()
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, value| !value.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The stored form of a configuration: run-time keys only, schemas inlined.
fn stored_document(
    config: &Config,
    schemas: &super::schema::SchemaRegistry,
) -> DomainResult<String> {
    let mut value =
        serde_json::to_value(config).map_err(|error| DomainError::Internal(error.to_string()))?;
    drop_nulls(&mut value);
    if let Value::Object(map) = &mut value {
        for key in RESTART_ONLY {
            map.remove(key);
        }
    }
    if let Some(Value::Array(references)) = value.pointer_mut("/identity/schemas") {
        for reference in references {
            let id = reference
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(schema) = schemas.get(&id) {
                let encoded = STANDARD.encode(schema.raw().to_string());
                reference["url"] = Value::String(format!("base64://{encoded}"));
            }
        }
    }
    serde_json::to_string(&value).map_err(|error| DomainError::Internal(error.to_string()))
}

fn is_secret(path: &[String]) -> bool {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        parts.as_slice(),
        ["secrets", _, _]
            | ["serve", "admin", "api_keys", _]
            | ["dsn"]
            | ["redis", "url"]
            | ["courier", "smtp", "connection_uri"]
            | [
                "courier",
                "channels",
                _,
                "request_config",
                "auth",
                "config",
                ..
            ]
            | ["courier", "http", "request_config", "auth", "config", ..]
    )
}

fn walk_strings(
    value: &mut Value,
    path: &mut Vec<String>,
    visit: &mut dyn FnMut(&[String], &mut Value),
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key.clone());
                walk_strings(child, path, visit);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                path.push(index.to_string());
                walk_strings(child, path, visit);
                path.pop();
            }
        }
        Value::String(_) => visit(path, value),
        _ => {}
    }
}

fn redact(mut value: Value) -> Value {
    walk_strings(&mut value, &mut Vec::new(), &mut |path, value| {
        if is_secret(path) {
            *value = Value::String(REDACTED.to_owned());
        }
    });
    value
}

fn pointer(path: &[String]) -> String {
    path.iter()
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(part);
        }
    }
    key
}

/// Puts stored values back where a document still holds the redaction marker.
fn unredact(value: &mut Value, stored: &Value) -> Vec<FieldViolation> {
    let mut problems = Vec::new();
    walk_strings(value, &mut Vec::new(), &mut |path, value| {
        if value.as_str() != Some(REDACTED) {
            return;
        }
        match stored.pointer(&pointer(path)) {
            Some(original) => *value = original.clone(),
            None => problems.push(FieldViolation::new(
                dotted(path),
                "is redacted but no value is stored for it",
            )),
        }
    });
    problems
}

/// The effective configuration as a document: stored keys plus this process's start-up keys.
fn effective_value(settings: &Settings) -> DomainResult<Value> {
    let stored: Value =
        serde_json::from_str(&stored_document(&settings.config, &settings.schemas)?)
            .map_err(|error| DomainError::Internal(error.to_string()))?;
    let mut full = serde_json::to_value(&settings.config)
        .map_err(|error| DomainError::Internal(error.to_string()))?;
    drop_nulls(&mut full);
    if let (Value::Object(full_map), Value::Object(stored_map)) = (&mut full, stored) {
        for (key, value) in stored_map {
            full_map.insert(key, value);
        }
    }
    Ok(full)
}

pub fn render(value: &Value, format: Format) -> DomainResult<String> {
    match format {
        Format::Json => serde_json::to_string_pretty(value)
            .map_err(|error| DomainError::Internal(error.to_string())),
        Format::Yaml => {
            yaml_serde::to_string(value).map_err(|error| DomainError::Internal(error.to_string()))
        }
    }
}

pub fn get_config(context: &Context, format: Format) -> DomainResult<ConfigView> {
    let settings = context.settings();
    Ok(ConfigView {
        document: render(&redact(effective_value(&settings)?), format)?,
        version: settings.version,
        etag: settings.etag.clone(),
    })
}

/// Parses a document sent by a caller against the settings in force: redacted values are
/// restored, start-up keys must not change. Returns the configuration ready to store.
fn candidate(settings: &Settings, text: &str) -> Result<Loaded, Vec<FieldViolation>> {
    let mut value: Value = match yaml_serde::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return Err(vec![FieldViolation::new(
                "document",
                format!("is not valid yaml or json: {error}"),
            )]);
        }
    };
    if value.is_null() {
        value = Value::Object(Map::new());
    }
    let current = effective_value(settings)
        .map_err(|error| vec![FieldViolation::new("document", error.to_string())])?;
    let mut problems = unredact(&mut value, &current);
    if let Value::Object(map) = &value {
        for key in RESTART_ONLY {
            if let Some(sent) = map.get(key)
                && current.get(key) != Some(sent)
            {
                problems.push(FieldViolation::new(
                    key,
                    "is fixed at start-up; change it in the configuration file and restart",
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let text = serde_json::to_string(&value)
        .map_err(|error| vec![FieldViolation::new("document", error.to_string())])?;
    let mut loaded = config::parse_document(&text, None)
        .map_err(|problems| problems_to_violations(problems.0))?;
    // Start-up keys always come from this process.
    loaded.config.dsn = settings.config.dsn.clone();
    loaded.config.redis = settings.config.redis.clone();
    loaded.config.serve = settings.config.serve.clone();
    loaded.config.log = settings.config.log.clone();
    Ok(loaded)
}

/// Every problem with a document, applying nothing.
pub fn validate_config(context: &Context, text: &str) -> Vec<FieldViolation> {
    candidate(&context.settings(), text)
        .err()
        .unwrap_or_default()
}

async fn store_and_apply(
    context: &Context,
    loaded: Loaded,
    source: ConfigSource,
    expected: u64,
) -> DomainResult<ConfigView> {
    let document = stored_document(&loaded.config, &loaded.schemas)?;
    let version = ConfigVersion {
        version: expected + 1,
        etag: etag_of(&document),
        document,
        source,
        created_at: context.clock.now(),
    };
    if !context
        .stores
        .configs
        .insert_config_version(&version)
        .await?
    {
        return Err(DomainError::ConfigVersionConflict);
    }
    let settings = Settings::new(loaded.config, loaded.schemas)
        .at_version(version.version, version.etag.clone());
    context.replace_settings(settings);
    tracing::info!(
        version = version.version,
        source = source.as_str(),
        "configuration applied"
    );
    Ok(ConfigView {
        document: String::new(),
        version: version.version,
        etag: version.etag,
    })
}

pub async fn update_config(
    context: &Context,
    text: &str,
    expected_etag: &str,
) -> DomainResult<ConfigView> {
    let settings = context.settings();
    if !expected_etag.is_empty() && expected_etag != settings.etag {
        return Err(DomainError::ConfigVersionConflict);
    }
    let loaded = candidate(&settings, text).map_err(DomainError::ConfigInvalid)?;
    store_and_apply(context, loaded, ConfigSource::Api, settings.version).await
}

pub async fn list_versions(context: &Context) -> DomainResult<Vec<ConfigVersion>> {
    Ok(context.stores.configs.list_config_versions().await?)
}

/// Restores an earlier version as a new one.
pub async fn rollback(context: &Context, version: u64) -> DomainResult<ConfigView> {
    let settings = context.settings();
    let earlier = context
        .stores
        .configs
        .config_version(version)
        .await?
        .ok_or(DomainError::ConfigVersionNotFound)?;
    let loaded = load_stored(&settings.config, &earlier.document)?;
    store_and_apply(context, loaded, ConfigSource::Rollback, settings.version).await
}

/// Loads a stored document with this process's start-up keys.
fn load_stored(start_up: &Config, document: &str) -> DomainResult<Loaded> {
    let mut loaded = config::parse_document(document, None).map_err(|problems| {
        DomainError::Internal(format!(
            "a stored configuration no longer loads: {problems}"
        ))
    })?;
    loaded.config.dsn = start_up.dsn.clone();
    loaded.config.redis = start_up.redis.clone();
    loaded.config.serve = start_up.serve.clone();
    loaded.config.log = start_up.log.clone();
    Ok(loaded)
}

/// At start-up: stores the file's configuration when it is new or changed, else applies the
/// newest stored version.
pub async fn bootstrap(context: &Context) -> DomainResult<()> {
    let settings = context.settings();
    let document = stored_document(&settings.config, &settings.schemas)?;
    let etag = etag_of(&document);
    let configs = &context.stores.configs;
    let file_unchanged = configs
        .latest_config_from(ConfigSource::File)
        .await?
        .is_some_and(|stored| stored.etag == etag);
    if file_unchanged && let Some(latest) = configs.latest_config().await? {
        let loaded = load_stored(&settings.config, &latest.document)?;
        context.replace_settings(
            Settings::new(loaded.config, loaded.schemas).at_version(latest.version, latest.etag),
        );
        tracing::info!(version = latest.version, "configuration version in force");
        return Ok(());
    }
    let current = configs.latest_config_version().await?.unwrap_or(0);
    let version = ConfigVersion {
        version: current + 1,
        etag: etag.clone(),
        document,
        source: ConfigSource::File,
        created_at: context.clock.now(),
    };
    if configs.insert_config_version(&version).await? {
        let fresh = Settings::new(settings.config.clone(), settings.schemas.clone())
            .at_version(version.version, etag);
        context.replace_settings(fresh);
        tracing::info!(
            version = version.version,
            "configuration file stored as a new version"
        );
        Ok(())
    } else {
        // Another replica stored something at the same moment: take whatever is newest.
        follow_once(context).await
    }
}

/// Applies a newer stored version, if there is one.
pub async fn follow_once(context: &Context) -> DomainResult<()> {
    let settings = context.settings();
    let Some(latest) = context.stores.configs.latest_config_version().await? else {
        return Ok(());
    };
    if latest <= settings.version {
        return Ok(());
    }
    let Some(version) = context.stores.configs.config_version(latest).await? else {
        return Ok(());
    };
    let loaded = load_stored(&settings.config, &version.document)?;
    context.replace_settings(
        Settings::new(loaded.config, loaded.schemas).at_version(version.version, version.etag),
    );
    tracing::info!(version = version.version, "configuration change picked up");
    Ok(())
}

/// Keeps this replica on the newest version until `shutdown` completes.
pub async fn follow(context: Context, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(FOLLOW_INTERVAL) => {
                if let Err(error) = follow_once(&context).await {
                    tracing::warn!(error = %error, "could not check for configuration changes");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- identity schemas

pub fn list_schemas(context: &Context) -> Vec<(String, Value, bool)> {
    let settings = context.settings();
    let default = settings.schemas.default_id().to_owned();
    settings
        .schemas
        .iter()
        .map(|schema| {
            (
                schema.id().to_owned(),
                schema.raw().clone(),
                schema.id() == default,
            )
        })
        .collect()
}

/// Adds or replaces a schema: validated as JSON Schema and as an `ory.sh/kratos` extension,
/// then stored as a new configuration version.
pub async fn put_schema(
    context: &Context,
    id: &str,
    schema_json: &str,
    make_default: bool,
) -> DomainResult<()> {
    if id.trim().is_empty() {
        return Err(DomainError::Validation(vec![FieldViolation::new(
            "id",
            "is required",
        )]));
    }
    let raw: Value = serde_json::from_str(schema_json).map_err(|error| {
        DomainError::ConfigInvalid(vec![FieldViolation::new(
            "schema_json",
            format!("is not json: {error}"),
        )])
    })?;
    IdentitySchema::compile(id, raw.clone()).map_err(|violations| {
        DomainError::ConfigInvalid(
            violations
                .into_iter()
                .map(|v| {
                    FieldViolation::new(
                        format!("schema_json{}", v.field.trim_start_matches("schema")),
                        v.description,
                    )
                })
                .collect(),
        )
    })?;
    let settings = context.settings();
    let mut value: Value =
        serde_json::from_str(&stored_document(&settings.config, &settings.schemas)?)
            .map_err(|error| DomainError::Internal(error.to_string()))?;
    let url = format!("base64://{}", STANDARD.encode(raw.to_string()));
    let identity = value
        .as_object_mut()
        .ok_or_else(|| DomainError::Internal("stored configuration is not an object".into()))?
        .entry("identity")
        .or_insert_with(|| Value::Object(Map::new()));
    // With no schemas configured the built-in one is in force; keep it when adding another.
    let mut schemas: Vec<Value> = identity
        .get("schemas")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if schemas.is_empty()
        && let Some(builtin) = settings.schemas.get(super::schema::DEFAULT_SCHEMA_ID)
    {
        schemas.push(serde_json::json!({
            "id": super::schema::DEFAULT_SCHEMA_ID,
            "url": format!("base64://{}", STANDARD.encode(builtin.raw().to_string())),
        }));
        identity["default_schema_id"] = Value::String(super::schema::DEFAULT_SCHEMA_ID.into());
    }
    match schemas
        .iter_mut()
        .find(|schema| schema.get("id").and_then(Value::as_str) == Some(id))
    {
        Some(existing) => existing["url"] = Value::String(url),
        None => schemas.push(serde_json::json!({ "id": id, "url": url })),
    }
    identity["schemas"] = Value::Array(schemas);
    if make_default {
        identity["default_schema_id"] = Value::String(id.to_owned());
    }
    let loaded = load_stored(&settings.config, &value.to_string()).map_err(|_| {
        DomainError::ConfigInvalid(vec![FieldViolation::new(
            "schema_json",
            "does not fit the configuration",
        )])
    })?;
    store_and_apply(context, loaded, ConfigSource::Api, settings.version).await?;
    Ok(())
}
