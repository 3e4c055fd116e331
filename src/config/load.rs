//! Loading: file, then environment overrides, then validation. STUB.
use super::Config;
use crate::domain::schema::SchemaRegistry;
use std::path::Path;

/// One problem with a configuration document, named by its dotted key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.iter().map(|p| format!("{}: {}", p.key, p.message)).collect::<Vec<_>>().join("; "))]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

/// A validated configuration with its compiled identity schemas.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub schemas: SchemaRegistry,
    /// Keys Kratos has that Twofold ignores, and similar notices, for the start-up log.
    pub warnings: Vec<String>,
}

/// Loads the file at `path` (or the defaults when `None`), applies `env` overrides, validates,
/// and compiles identity schemas (relative `file://` URLs resolve against the file's folder).
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigProblems> {
    let _ = (path, env);
    unimplemented!("config load")
}

/// Parses and validates a YAML or JSON document (JSON is YAML); `base_dir` resolves relative
/// schema paths.
pub fn parse_document(text: &str, base_dir: Option<&Path>) -> Result<Loaded, ConfigProblems> {
    let _ = (text, base_dir);
    unimplemented!("config parse")
}
