//! Loading: file, then environment overrides, then validation, then identity schemas. Every
//! problem is collected and named by its dotted key path, so one start-up shows all of them.
//!
//! serde's own errors for `deny_unknown_fields` and type mismatches do not carry the key path,
//! so the document is walked against the tree of known keys (the serialised defaults) first, and
//! each leaf is type-checked on its own.
use super::Config;
use super::validate::validate;
use crate::domain::schema::{DEFAULT_SCHEMA_ID, IdentitySchema, SchemaRegistry};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Kratos keys Twofold does not implement: accepted so Kratos files load, then dropped with a
/// warning. A listed key covers everything below it.
const KRATOS_ONLY_KEYS: &[&str] = &[
    "version",
    "dev",
    "cookies",
    "hashers",
    "ciphers",
    "tracing",
    "oauth2_provider",
    "feature_flags",
    "preview",
    "organizations",
    "clients",
    "database",
    "security",
    "expose_metrics_port",
    "session.cookie",
    "session.earliest_possible_extend",
    "session.whoami.tokenizer",
    "serve.public.tls",
    "serve.admin.tls",
    "serve.public.request_log",
    "serve.admin.request_log",
    "serve.admin.base_url",
    "serve.public.cors.allowed_methods",
    "serve.public.cors.allowed_headers",
    "serve.public.cors.exposed_headers",
    "serve.public.cors.allow_credentials",
    "serve.public.cors.options_passthrough",
    "serve.public.cors.max_age",
    "serve.public.cors.debug",
    "selfservice.default_browser_return_url",
    "selfservice.allowed_return_urls",
    "selfservice.methods.totp",
    "selfservice.methods.webauthn",
    "selfservice.methods.passkey",
    "selfservice.methods.lookup_secret",
    "selfservice.methods.oidc",
    "selfservice.methods.saml",
    "selfservice.methods.link",
    "selfservice.methods.profile",
    "selfservice.methods.code.passwordless_login_fallback_enabled",
    "selfservice.methods.password.config.max_breaches",
    "selfservice.methods.password.config.ignore_network_errors",
    "selfservice.methods.password.config.haveibeenpwned_host",
    "selfservice.flows.recovery",
    "selfservice.flows.verification",
    "selfservice.flows.settings",
    "selfservice.flows.error",
    "selfservice.flows.logout",
    "selfservice.flows.login.ui_url",
    "selfservice.flows.login.after",
    "selfservice.flows.login.error_ui_url",
    "selfservice.flows.login.style",
    "selfservice.flows.registration.ui_url",
    "selfservice.flows.registration.after",
    "selfservice.flows.registration.login_hints",
    "selfservice.flows.registration.enable_legacy_one_step",
    "log.redaction_text",
];

/// Keys whose values are free-form (delivery settings arrive with the courier); anything below
/// them is accepted.
const OPEN_KEYS: &[&str] = &[
    "courier.smtp",
    "courier.channels",
    "courier.templates",
    "courier.http",
    "courier.twilio",
    "courier.sns",
];

/// Keys below open ones that Kratos users commonly set from the environment (the SMTP password
/// lives in `connection_uri`). Their env names cannot be derived from the defaults.
const OPEN_ENV_KEYS: &[&str] = &[
    "courier.smtp.connection_uri",
    "courier.smtp.from_address",
    "courier.smtp.from_name",
    "courier.smtp.local_name",
    "courier.smtp.headers",
    "courier.twilio.account_sid",
    "courier.twilio.auth_token",
    "courier.twilio.from",
    "courier.twilio.messaging_service_sid",
    "courier.twilio.api_key_sid",
    "courier.twilio.api_key_secret",
    "courier.twilio.base_url",
    "courier.sns.region",
    "courier.sns.access_key_id",
    "courier.sns.secret_access_key",
];

const ENV_PREFIX: &str = "TWOFOLD_";

/// Loads the file at `path` (or the defaults when `None`), applies `env` overrides, validates,
/// and compiles identity schemas (relative `file://` URLs resolve against the file's folder).
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigProblems> {
    let Some(path) = path else {
        return build(Value::Object(Map::new()), None, env);
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        single_problem(
            "",
            format!(
                "can not read configuration file {}: {error}",
                path.display()
            ),
        )
    })?;
    let document = parse_yaml(&text)?;
    build(document, path.parent(), env)
}

/// Parses and validates a YAML or JSON document (JSON is YAML); `base_dir` resolves relative
/// schema paths.
pub fn parse_document(text: &str, base_dir: Option<&Path>) -> Result<Loaded, ConfigProblems> {
    build(parse_yaml(text)?, base_dir, &[])
}

fn single_problem(key: &str, message: String) -> ConfigProblems {
    ConfigProblems(vec![ConfigProblem {
        key: key.to_string(),
        message,
    }])
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        message: message.into(),
    }
}

/// An empty document (or one with only comments) means "all defaults".
fn parse_yaml(text: &str) -> Result<Value, ConfigProblems> {
    let blank = text
        .lines()
        .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'));
    if blank {
        return Ok(Value::Object(Map::new()));
    }
    let value: Value = yaml_serde::from_str(text)
        .map_err(|error| single_problem("", format!("not valid yaml: {error}")))?;
    match value {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(value),
        _ => Err(single_problem(
            "",
            "the configuration must be a mapping of keys".into(),
        )),
    }
}

fn build(
    mut document: Value,
    base_dir: Option<&Path>,
    env: &[(String, String)],
) -> Result<Loaded, ConfigProblems> {
    let known = known_tree();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let (Value::Object(doc), Value::Object(known)) = (&mut document, &known) {
        prune(doc, known, "", &mut problems, &mut warnings);
    }
    let env_sources = apply_env(&mut document, &known, env);
    problems.extend(type_problems(&document, &known, &env_sources));
    if !problems.is_empty() {
        return Err(ConfigProblems(problems));
    }
    let config: Config = serde_json::from_value(document)
        .map_err(|error| single_problem("", describe_serde_error(&error.to_string())))?;
    let mut problems = validate(&config);
    let schemas = compile_schemas(&config, base_dir, &mut problems);
    if let Err(template_problems) = crate::courier::templates::Templates::compile(&config) {
        problems.extend(template_problems);
    }
    problems.extend(crate::courier::gateways::check(&config));
    if !problems.is_empty() {
        return Err(ConfigProblems(problems));
    }
    if config.log.leak_sensitive_values {
        warnings.push(
            "log.leak_sensitive_values is ignored: Twofold never logs sensitive values".into(),
        );
    }
    Ok(Loaded {
        config,
        schemas,
        warnings,
    })
}

/// Every key of the serialised defaults is a known key.
fn known_tree() -> Value {
    serde_json::to_value(Config::default()).unwrap_or(Value::Null)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_open(path: &str) -> bool {
    OPEN_KEYS.contains(&path)
}

/// Drops Kratos-only keys (with a warning) and empty values, and reports unknown keys.
fn prune(
    doc: &mut Map<String, Value>,
    known: &Map<String, Value>,
    prefix: &str,
    problems: &mut Vec<ConfigProblem>,
    warnings: &mut Vec<String>,
) {
    let keys: Vec<String> = doc.keys().cloned().collect();
    for key in keys {
        let path = join(prefix, &key);
        if KRATOS_ONLY_KEYS.contains(&path.as_str()) {
            doc.remove(&key);
            warnings.push(format!("key {path} is a Kratos setting Twofold ignores"));
            continue;
        }
        let Some(known_value) = known.get(&key) else {
            problems.push(problem(path, "unknown key"));
            continue;
        };
        if is_open(&path) {
            continue;
        }
        // `code:` with nothing below it is YAML for null; read it as "use the defaults".
        if doc.get(&key).is_some_and(Value::is_null) && !known_value.is_null() {
            doc.remove(&key);
            continue;
        }
        if let (Some(Value::Object(child)), Value::Object(known_child)) =
            (doc.get_mut(&key), known_value)
        {
            prune(child, known_child, &path, problems, warnings);
        }
    }
}

/// Known leaf key paths with their default values: what env variables can set.
fn known_leaves(known: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(value: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
        match value {
            Value::Object(map) if !is_open(prefix) => {
                for (key, child) in map {
                    walk(child, &join(prefix, key), out);
                }
            }
            _ => out.push((prefix.to_string(), value)),
        }
    }
    let mut out = Vec::new();
    walk(known, "", &mut out);
    out
}

fn env_name(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// Kratos-style overrides: `selfservice.methods.code.mfa_enabled` is
/// `SELFSERVICE_METHODS_CODE_MFA_ENABLED`, also with a `TWOFOLD_` prefix, which wins. Returns the
/// variable that set each key, to name it in problems.
fn apply_env(
    document: &mut Value,
    known: &Value,
    env: &[(String, String)],
) -> BTreeMap<String, String> {
    let lookup = |name: &str| env.iter().rev().find(|(key, _)| key == name);
    let mut sources = BTreeMap::new();
    let mut leaves = known_leaves(known);
    leaves.extend(
        OPEN_ENV_KEYS
            .iter()
            .map(|path| (path.to_string(), &Value::Null)),
    );
    for (path, default) in leaves {
        let name = env_name(&path);
        let prefixed = format!("{ENV_PREFIX}{name}");
        let Some((variable, raw)) = lookup(&prefixed).or_else(|| lookup(&name)) else {
            continue;
        };
        let value = env_value(&path, default, raw);
        set_path(document, &path, value);
        sources.insert(path, variable.clone());
    }
    sources
}

fn env_value(path: &str, default: &Value, raw: &str) -> Value {
    let structured = || yaml_serde::from_str::<Value>(raw).unwrap_or_else(|_| raw.into());
    if is_open(path) || path == "courier.smtp.headers" {
        return structured();
    }
    match default {
        Value::Bool(_) | Value::Number(_) => structured(),
        Value::Array(_) if raw.trim_start().starts_with('[') => structured(),
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    }
}

fn set_path(document: &mut Value, path: &str, value: Value) {
    let mut current = document;
    let segments: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    for segment in parents {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        let Value::Object(map) = current else {
            return;
        };
        current = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current {
        map.insert(last.to_string(), value);
    }
}

/// Leaves of the document under known keys, with their paths.
fn document_leaves<'a>(
    doc: &'a Value,
    known: &Value,
    prefix: &str,
    out: &mut Vec<(String, &'a Value)>,
) {
    let (Value::Object(doc), Value::Object(known)) = (doc, known) else {
        return;
    };
    for (key, value) in doc {
        let Some(known_value) = known.get(key) else {
            continue;
        };
        let path = join(prefix, key);
        match (value, known_value) {
            (Value::Object(_), Value::Object(_)) if !is_open(&path) => {
                document_leaves(value, known_value, &path, out);
            }
            _ => out.push((path, value)),
        }
    }
}

/// Type-checks each leaf alone, so a serde error is tied to its key.
fn type_problems(
    document: &Value,
    known: &Value,
    env_sources: &BTreeMap<String, String>,
) -> Vec<ConfigProblem> {
    let mut leaves = Vec::new();
    document_leaves(document, known, "", &mut leaves);
    let mut problems = Vec::new();
    for (path, value) in leaves {
        let Err(message) = check_leaf(&path, value.clone()) else {
            continue;
        };
        let suffix = env_sources
            .get(&path)
            .map(|variable| format!(" (set by {variable})"))
            .unwrap_or_default();
        // Lists name the bad element when one alone is wrong.
        let mut element_problems = Vec::new();
        if let Value::Array(items) = value {
            for (index, item) in items.iter().enumerate() {
                if let Err(message) = check_leaf(&path, Value::Array(vec![item.clone()])) {
                    element_problems.push(problem(format!("{path}[{index}]"), message + &suffix));
                }
            }
        }
        if element_problems.is_empty() {
            problems.push(problem(path, message + &suffix));
        } else {
            problems.extend(element_problems);
        }
    }
    problems
}

fn check_leaf(path: &str, value: Value) -> Result<(), String> {
    let mut minimal = Value::Object(Map::new());
    set_path(&mut minimal, path, value);
    serde_json::from_value::<Config>(minimal)
        .map(|_| ())
        .map_err(|error| describe_serde_error(&error.to_string()))
}

/// serde quotes the offending value ("invalid type: string \"hunter2\""); values may be
/// secrets, so only their kind is kept.
fn describe_serde_error(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            let kind = found
                .split([' ', '`', '"'])
                .next()
                .unwrap_or("value")
                .trim_end_matches(':');
            return format!("expected {expected}, found {kind}");
        }
    }
    message.to_string()
}

fn compile_schemas(
    config: &Config,
    base_dir: Option<&Path>,
    problems: &mut Vec<ConfigProblem>,
) -> SchemaRegistry {
    let references = &config.identity.schemas;
    if references.is_empty() {
        let schemas = match IdentitySchema::builtin() {
            Ok(schema) => vec![schema],
            Err(violations) => {
                problems.extend(schema_problems("identity.schemas", &violations));
                Vec::new()
            }
        };
        return SchemaRegistry::new(schemas, DEFAULT_SCHEMA_ID.to_string());
    }
    let mut schemas = Vec::new();
    for (index, reference) in references.iter().enumerate() {
        let key = format!("identity.schemas[{index}].url");
        let raw = match read_schema(&reference.url, base_dir) {
            Ok(raw) => raw,
            Err(message) => {
                problems.push(problem(key, message));
                continue;
            }
        };
        match IdentitySchema::compile(&reference.id, raw) {
            Ok(schema) => schemas.push(schema),
            Err(violations) => problems.extend(schema_problems(&key, &violations)),
        }
    }
    SchemaRegistry::new(schemas, config.identity.default_schema_id.clone())
}

fn schema_problems(key: &str, violations: &[crate::domain::FieldViolation]) -> Vec<ConfigProblem> {
    violations
        .iter()
        .map(|violation| {
            let at = if violation.field.is_empty() {
                String::new()
            } else {
                format!(" at {}", violation.field)
            };
            problem(
                key,
                format!("invalid identity schema{at}: {}", violation.description),
            )
        })
        .collect()
}

/// Reads a schema from `file://` or `base64://`; remote URLs are refused so start-up never
/// depends on the network.
fn read_schema(url: &str, base_dir: Option<&Path>) -> Result<Value, String> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = resolve_file(path, base_dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("can not read schema file {}: {error}", path.display()))?;
        return parse_schema_text(&text);
    }
    if let Some(encoded) = url.strip_prefix("base64://") {
        let bytes = decode_base64(encoded.trim())
            .ok_or_else(|| "base64:// schema is not valid base64".to_string())?;
        let text = String::from_utf8(bytes)
            .map_err(|_| "base64:// schema is not valid utf-8".to_string())?;
        return parse_schema_text(&text);
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err("remote schema urls are not supported; use file:// or base64://".into());
    }
    Err("unsupported schema url; use file:// or base64://".into())
}

fn resolve_file(path: &str, base_dir: Option<&Path>) -> PathBuf {
    let path = Path::new(path);
    match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

fn decode_base64(encoded: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded).ok())
}

fn parse_schema_text(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).or_else(|json_error| {
        yaml_serde::from_str(text).map_err(|_| format!("schema is not valid json: {json_error}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEED_SNIPPET: &str = "\
selfservice:
  methods:
    code:
      mfa_enabled: true
identity:
  default_schema_id: person
  schemas:
    - id: person
      url: file://identity.schema.json
";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        parse_document(text, None).expect_err("should be refused").0
    }

    fn keys(text: &str) -> Vec<String> {
        problems(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn seed_snippet_loads_with_schema_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("identity.schema.json"),
            crate::domain::schema::DEFAULT_SCHEMA_JSON,
        )
        .unwrap();
        let path = dir.path().join("identity-config.yaml");
        std::fs::write(&path, SEED_SNIPPET).unwrap();
        let loaded = load(Some(&path), &[]).expect("seed config loads");
        assert!(loaded.config.selfservice.methods.code.mfa_enabled);
        assert_eq!(loaded.schemas.default_id(), "person");
        let schema = loaded.schemas.resolve("").expect("default schema");
        assert_eq!(schema.id(), "person");
        assert!(schema.trait_markers("phone").is_some());
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn relative_schema_paths_resolve_against_base_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s.json"),
            crate::domain::schema::DEFAULT_SCHEMA_JSON,
        )
        .unwrap();
        let text =
            "identity:\n  default_schema_id: a\n  schemas:\n    - {id: a, url: file://./s.json}\n";
        assert!(parse_document(text, Some(dir.path())).is_ok());
        let absolute = format!(
            "identity:\n  default_schema_id: a\n  schemas:\n    - {{id: a, url: 'file://{}'}}\n",
            dir.path().join("s.json").display()
        );
        assert!(parse_document(&absolute, None).is_ok());
        let missing = parse_document(text, None).unwrap_err().0;
        assert_eq!(missing[0].key, "identity.schemas[0].url");
    }

    #[test]
    fn base64_and_remote_schema_urls() {
        use base64::engine::general_purpose::STANDARD;
        let encoded = STANDARD.encode(crate::domain::schema::DEFAULT_SCHEMA_JSON);
        let text = format!(
            "identity:\n  default_schema_id: b\n  schemas:\n    - {{id: b, url: 'base64://{encoded}'}}\n"
        );
        let loaded = parse_document(&text, None).expect("base64 schema loads");
        assert!(loaded.schemas.get("b").is_some());
        let remote = problems(
            "identity:\n  default_schema_id: r\n  schemas:\n    - {id: r, url: 'https://example.com/s.json'}\n",
        );
        assert_eq!(remote[0].key, "identity.schemas[0].url");
        assert_eq!(
            remote[0].message,
            "remote schema urls are not supported; use file:// or base64://"
        );
        let broken = STANDARD.encode(r#"{"type": 12}"#);
        let text = format!(
            "identity:\n  default_schema_id: x\n  schemas:\n    - {{id: x, url: 'base64://{broken}'}}\n"
        );
        assert_eq!(problems(&text)[0].key, "identity.schemas[0].url");
    }

    #[test]
    fn mfa_and_passwordless_together_are_refused() {
        let found = problems(
            "selfservice:\n  methods:\n    code:\n      mfa_enabled: true\n      passwordless_enabled: true\n",
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "selfservice.methods.code.mfa_enabled");
        assert!(found[0].message.contains(
            "if MFA via code is enabled, this method can not be used for passwordless login"
        ));
    }

    #[test]
    fn bad_duration_names_its_key() {
        let found = problems(
            "selfservice:\n  methods:\n    code:\n      config:\n        lifespan: 15 minutes\n",
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "selfservice.methods.code.config.lifespan");
        assert!(
            found[0].message.contains("unknown unit"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn unknown_keys_are_all_named() {
        // Keys come back in key order, not file order.
        let found = problems(
            "selfservice:\n  methods:\n    code:\n      mfa_enable: true\nserve:\n  public:\n    prot: 1\nnonsense: 1\n",
        );
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "nonsense",
                "selfservice.methods.code.mfa_enable",
                "serve.public.prot",
            ]
        );
        assert!(found.iter().all(|p| p.message == "unknown key"));
    }

    #[test]
    fn kratos_only_keys_warn_and_load() {
        let loaded = parse_document(
            "version: v1.3.0\nselfservice:\n  methods:\n    totp:\n      enabled: true\n    code:\n      mfa_enabled: true\n",
            None,
        )
        .expect("loads");
        assert!(loaded.config.selfservice.methods.code.mfa_enabled);
        assert_eq!(
            loaded.warnings,
            [
                "key selfservice.methods.totp is a Kratos setting Twofold ignores",
                "key version is a Kratos setting Twofold ignores",
            ]
        );
    }

    #[test]
    fn env_overrides_apply() {
        let overrides = env(&[
            ("SELFSERVICE_METHODS_CODE_MFA_ENABLED", "true"),
            ("DSN", "postgres://ignored"),
            ("TWOFOLD_DSN", "memory"),
            (
                "SERVE_ADMIN_API_KEYS",
                "first-key-0123456789, second-key-0123456789",
            ),
            ("SECRETS_DEFAULT", r#"["a-secret-of-sixteen+"]"#),
            ("SELFSERVICE_METHODS_CODE_CONFIG_LIFESPAN", "10m"),
            ("SERVE_PUBLIC_PORT", "8080"),
            ("REDIS_URL", "redis://cache:6379/0"),
            ("PATH", "/usr/bin"),
        ]);
        let loaded = load(None, &overrides).expect("loads");
        let config = &loaded.config;
        assert!(config.selfservice.methods.code.mfa_enabled);
        assert_eq!(config.dsn.as_deref(), Some("memory"));
        assert_eq!(
            config.serve.admin.api_keys,
            ["first-key-0123456789", "second-key-0123456789"]
        );
        assert_eq!(config.secrets.default, ["a-secret-of-sixteen+"]);
        assert_eq!(
            config.selfservice.methods.code.config.lifespan,
            Duration::from_secs(600)
        );
        assert_eq!(config.serve.public.port, 8080);
        assert_eq!(config.redis.url.as_deref(), Some("redis://cache:6379/0"));
    }

    #[test]
    fn env_schemas_and_bad_env_values_name_their_variable() {
        let encoded = {
            use base64::engine::general_purpose::STANDARD;
            STANDARD.encode(crate::domain::schema::DEFAULT_SCHEMA_JSON)
        };
        let schemas = format!(r#"[{{"id":"e","url":"base64://{encoded}"}}]"#);
        let overrides = env(&[
            ("IDENTITY_SCHEMAS", &schemas),
            ("IDENTITY_DEFAULT_SCHEMA_ID", "e"),
        ]);
        let loaded = load(None, &overrides).expect("loads");
        assert_eq!(loaded.schemas.default_id(), "e");

        let bad = env(&[("SERVE_PUBLIC_PORT", "many")]);
        let found = load(None, &bad).unwrap_err().0;
        assert_eq!(found[0].key, "serve.public.port");
        assert!(found[0].message.contains("SERVE_PUBLIC_PORT"));
    }

    #[test]
    fn smtp_settings_come_from_env() {
        let overrides = env(&[
            ("COURIER_SMTP_CONNECTION_URI", "smtps://user:pass@mail:465"),
            ("COURIER_SMTP_FROM_ADDRESS", "no-reply@example.com"),
            ("COURIER_SMTP_HEADERS", r#"{"x-app": "twofold"}"#),
        ]);
        let loaded = load(None, &overrides).expect("loads");
        assert_eq!(
            loaded.config.courier.smtp,
            Some(serde_json::json!({
                "connection_uri": "smtps://user:pass@mail:465",
                "from_address": "no-reply@example.com",
                "headers": {"x-app": "twofold"}
            }))
        );
        // Gateway settings are checked when the configuration loads.
        let incomplete = env(&[("COURIER_SMTP_CONNECTION_URI", "smtps://user:pass@mail:465")]);
        let found = load(None, &incomplete).unwrap_err().0;
        assert_eq!(found[0].key, "courier.smtp.from_address");
    }

    #[test]
    fn invalid_schema_document_names_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), r#"{"type": 12}"#).unwrap();
        let text =
            "identity:\n  default_schema_id: a\n  schemas:\n    - {id: a, url: file://s.json}\n";
        let found = parse_document(text, Some(dir.path())).unwrap_err().0;
        assert_eq!(found[0].key, "identity.schemas[0].url");
        assert!(
            found[0].message.starts_with("invalid identity schema"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn empty_config_is_defaults_with_builtin_schema() {
        for text in ["", "# nothing here\n", "{}"] {
            let loaded = parse_document(text, None).expect("loads");
            assert_eq!(loaded.config, Config::default());
            assert_eq!(loaded.schemas.default_id(), "default");
            assert!(loaded.schemas.get("default").is_some());
        }
        let loaded = load(None, &[]).expect("loads");
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn empty_sections_mean_defaults() {
        let loaded = parse_document("selfservice:\n  methods:\n    code:\n", None).expect("loads");
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn type_errors_name_the_key_and_hide_the_value() {
        let found = problems(
            "secrets:\n  default: hunter2-hunter2-hunter2\nserve:\n  public:\n    port: 70000\nsession:\n  whoami:\n    required_aal: aal3\n",
        );
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "secrets.default",
                "serve.public.port",
                "session.whoami.required_aal"
            ]
        );
        assert!(found.iter().all(|p| !p.message.contains("hunter2")));
        let found =
            problems("identity:\n  schemas:\n    - {id: a, url: 'file://a.json'}\n    - {id: b}\n");
        assert_eq!(found[0].key, "identity.schemas[1]");
    }

    #[test]
    fn json_documents_and_yaml_errors() {
        assert!(parse_document(r#"{"log": {"level": "debug"}}"#, None).is_ok());
        assert_eq!(keys("log: [unclosed\n"), [""]);
        assert_eq!(keys("- a list\n"), [""]);
        assert_eq!(keys("log: 5\n"), ["log"]);
    }
}
