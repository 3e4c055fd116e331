//! Rules that cross keys or ranges that serde cannot express. Every rule reports on its own, so an
//! operator sees all problems of a file at once instead of fixing them one start-up at a time.
use super::{Config, ConfigProblem};
use std::collections::BTreeSet;
use std::time::Duration;

const MIN_SECRET_LENGTH: usize = 16;
const MAX_CODE_LIFESPAN: Duration = Duration::from_secs(24 * 3600);
const LOG_LEVELS: [&str; 8] = [
    "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic",
];

pub fn validate(config: &Config) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    code_method(config, &mut problems);
    lifespans(config, &mut problems);
    secrets(config, &mut problems);
    cors(config, &mut problems);
    listeners(config, &mut problems);
    static_dir(config, &mut problems);
    log(config, &mut problems);
    stores(config, &mut problems);
    identity(config, &mut problems);
    problems
}

fn problem(problems: &mut Vec<ConfigProblem>, key: impl Into<String>, message: impl Into<String>) {
    problems.push(ConfigProblem {
        key: key.into(),
        message: message.into(),
    });
}

fn code_method(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let code = &config.selfservice.methods.code;
    if code.passwordless_enabled && code.mfa_enabled {
        problem(
            problems,
            "selfservice.methods.code.mfa_enabled",
            "if MFA via code is enabled, this method can not be used for passwordless login \
             (disable selfservice.methods.code.passwordless_enabled or mfa_enabled)",
        );
    }
    let settings = &code.config;
    if !(1..=255).contains(&settings.max_submissions) {
        problem(
            problems,
            "selfservice.methods.code.config.max_submissions",
            "must be between 1 and 255",
        );
    }
    if !(6..=12).contains(&settings.length) {
        problem(
            problems,
            "selfservice.methods.code.config.length",
            "must be between 6 and 12 digits (codes are never under 6 digits)",
        );
    }
    if settings.lifespan.is_zero() || settings.lifespan > MAX_CODE_LIFESPAN {
        problem(
            problems,
            "selfservice.methods.code.config.lifespan",
            "must be more than 0s and at most 24h",
        );
    }
    if settings.resend_cooldown >= settings.lifespan && !settings.lifespan.is_zero() {
        problem(
            problems,
            "selfservice.methods.code.config.resend_cooldown",
            "must be shorter than selfservice.methods.code.config.lifespan",
        );
    }
    if settings.failure_window.is_zero() {
        problem(
            problems,
            "selfservice.methods.code.config.failure_window",
            "must be more than 0s",
        );
    }
}

fn lifespans(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let positive = [
        ("session.lifespan", config.session.lifespan),
        (
            "selfservice.flows.login.lifespan",
            config.selfservice.flows.login.lifespan,
        ),
        (
            "selfservice.flows.registration.lifespan",
            config.selfservice.flows.registration.lifespan,
        ),
        (
            "serve.public.request_timeout",
            config.serve.public.request_timeout,
        ),
        (
            "serve.admin.request_timeout",
            config.serve.admin.request_timeout,
        ),
    ];
    for (key, value) in positive {
        if value.is_zero() {
            problem(problems, key, "must be more than 0s");
        }
    }
}

/// Secret values never appear in messages; only their position does.
fn secrets(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let lists = [
        ("secrets.default", &config.secrets.default),
        ("secrets.cookie", &config.secrets.cookie),
        ("secrets.cipher", &config.secrets.cipher),
        ("serve.admin.api_keys", &config.serve.admin.api_keys),
    ];
    for (key, values) in lists {
        for (index, value) in values.iter().enumerate() {
            if value.chars().count() < MIN_SECRET_LENGTH {
                problem(
                    problems,
                    format!("{key}[{index}]"),
                    format!("must be at least {MIN_SECRET_LENGTH} characters long"),
                );
            }
        }
    }
}

fn cors(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let origins = &config.serve.public.cors.allowed_origins;
    for (index, origin) in origins.iter().enumerate() {
        if let Err(message) = check_origin(origin) {
            problem(
                problems,
                format!("serve.public.cors.allowed_origins[{index}]"),
                message,
            );
        }
    }
}

/// Browsers send `scheme://host[:port]`; anything else never matches, and wildcards would
/// defeat the explicit allow-list.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin.contains('*') {
        return Err("wildcards are not allowed; list each origin explicitly".into());
    }
    let expected =
        "must be an origin like https://app.example.com (scheme, host and optional port; no path)";
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(expected.into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(expected.into());
    }
    let invalid_char = |c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace();
    if authority.is_empty() || authority.contains(invalid_char) {
        return Err(expected.into());
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !authority.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return Err(expected.into());
            }
            host
        }
        _ => authority,
    };
    if host.is_empty() {
        return Err(expected.into());
    }
    Ok(())
}

fn listeners(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let public = &config.serve.public;
    let admin = &config.serve.admin;
    let wildcard = |host: &str| matches!(host, "" | "0.0.0.0" | "::" | "[::]");
    let overlapping = public.host == admin.host || wildcard(&public.host) || wildcard(&admin.host);
    if public.port == admin.port && public.port != 0 && overlapping {
        problem(
            problems,
            "serve.admin.port",
            "must differ from serve.public.port: the admin api must never share the public listener",
        );
    }
    if let Some(base_url) = &public.base_url
        && !(base_url.starts_with("https://") || base_url.starts_with("http://"))
    {
        problem(
            problems,
            "serve.public.base_url",
            "must be an http:// or https:// url",
        );
    }
    for (key, size) in [
        ("serve.public.max_message_size", public.max_message_size),
        ("serve.admin.max_message_size", admin.max_message_size),
    ] {
        if size == 0 {
            problem(problems, key, "must be more than 0");
        }
    }
}

/// Checked at load so a typo in the path fails start-up instead of every page view.
fn static_dir(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let Some(dir) = &config.serve.public.static_dir else {
        return;
    };
    let key = "serve.public.static_dir";
    if dir.as_os_str().is_empty() {
        problem(problems, key, "must name a folder (or be left unset)");
    } else if !dir.is_dir() {
        problem(problems, key, format!("{} is not a folder", dir.display()));
    } else if !dir.join("index.html").is_file() {
        problem(
            problems,
            key,
            format!(
                "{} has no index.html (build the page with `npm run build -w @twofold/ui`)",
                dir.display()
            ),
        );
    }
}

fn log(config: &Config, problems: &mut Vec<ConfigProblem>) {
    if !matches!(config.log.format.as_str(), "text" | "json") {
        problem(problems, "log.format", "must be text or json");
    }
    if !LOG_LEVELS.contains(&config.log.level.to_ascii_lowercase().as_str()) {
        problem(
            problems,
            "log.level",
            "must be one of trace, debug, info, warn, error",
        );
    }
}

fn stores(config: &Config, problems: &mut Vec<ConfigProblem>) {
    if let Some(dsn) = &config.dsn {
        let known = ["postgres://", "postgresql://", "sqlite:"];
        if dsn != "memory" && !known.iter().any(|prefix| dsn.starts_with(prefix)) {
            problem(
                problems,
                "dsn",
                "must be postgres://…, postgresql://…, sqlite://… (or sqlite:…) or memory",
            );
        }
    }
    if let Some(url) = &config.redis.url {
        let known = ["redis://", "rediss://", "unix://"];
        if !known.iter().any(|prefix| url.starts_with(prefix)) {
            problem(
                problems,
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            );
        }
    }
}

fn identity(config: &Config, problems: &mut Vec<ConfigProblem>) {
    let schemas = &config.identity.schemas;
    let mut seen = BTreeSet::new();
    for (index, schema) in schemas.iter().enumerate() {
        if schema.id.trim().is_empty() {
            problem(
                problems,
                format!("identity.schemas[{index}].id"),
                "must not be empty",
            );
        } else if !seen.insert(schema.id.as_str()) {
            problem(
                problems,
                format!("identity.schemas[{index}].id"),
                format!("duplicate schema id {:?}", schema.id),
            );
        }
    }
    let default_id = config.identity.default_schema_id.as_str();
    if !schemas.is_empty() && !seen.contains(default_id) {
        problem(
            problems,
            "identity.default_schema_id",
            format!("no schema in identity.schemas has the id {default_id:?}"),
        );
    }
    if schemas.is_empty() && default_id != crate::domain::schema::DEFAULT_SCHEMA_ID {
        problem(
            problems,
            "identity.default_schema_id",
            format!(
                "without identity.schemas only the built-in schema {:?} exists",
                crate::domain::schema::DEFAULT_SCHEMA_ID
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchemaReference;

    fn keys(config: &Config) -> Vec<String> {
        validate(config).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&Config::default()), Vec::new());
    }

    #[test]
    fn reports_every_problem() {
        let mut config = Config::default();
        let code = &mut config.selfservice.methods.code;
        code.passwordless_enabled = true;
        code.mfa_enabled = true;
        code.config.max_submissions = 0;
        code.config.length = 4;
        code.config.lifespan = Duration::from_secs(25 * 3600);
        config.session.lifespan = Duration::ZERO;
        config.secrets.default = vec!["a-long-enough-secret".into(), "short".into()];
        config.serve.admin.api_keys = vec!["tiny".into()];
        config.serve.public.cors.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://app.example.com:8443".into(),
            "*".into(),
            "https://app.example.com/path".into(),
            "app.example.com".into(),
        ];
        config.log.format = "xml".into();
        config.log.level = "loud".into();
        config.dsn = Some("mysql://x".into());
        config.redis.url = Some("http://x".into());
        config.serve.admin.host = "0.0.0.0".into();
        config.serve.admin.port = config.serve.public.port;
        assert_eq!(
            keys(&config),
            [
                "selfservice.methods.code.mfa_enabled",
                "selfservice.methods.code.config.max_submissions",
                "selfservice.methods.code.config.length",
                "selfservice.methods.code.config.lifespan",
                "session.lifespan",
                "secrets.default[1]",
                "serve.admin.api_keys[0]",
                "serve.public.cors.allowed_origins[2]",
                "serve.public.cors.allowed_origins[3]",
                "serve.public.cors.allowed_origins[4]",
                "serve.admin.port",
                "log.format",
                "log.level",
                "dsn",
                "redis.url",
            ]
        );
        let messages: Vec<String> = validate(&config).into_iter().map(|p| p.message).collect();
        assert!(messages[0].contains(
            "if MFA via code is enabled, this method can not be used for passwordless login"
        ));
        assert!(
            messages
                .iter()
                .all(|m| !m.contains("short") && !m.contains("tiny"))
        );
    }

    #[test]
    fn static_dir_needs_a_folder_with_index_html() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        let mut problem_for = |path: std::path::PathBuf| {
            config.serve.public.static_dir = Some(path);
            validate(&config)
        };
        let empty = problem_for(dir.path().to_path_buf());
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0].key, "serve.public.static_dir");
        assert!(empty[0].message.contains("has no index.html"), "{empty:?}");

        let missing = problem_for(dir.path().join("nowhere"));
        assert!(
            missing[0].message.ends_with("is not a folder"),
            "{missing:?}"
        );
        assert_eq!(problem_for("".into())[0].key, "serve.public.static_dir");

        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        assert_eq!(problem_for(dir.path().to_path_buf()), Vec::new());
    }

    #[test]
    fn schema_ids_are_checked() {
        let mut config = Config::default();
        let reference = |id: &str| SchemaReference {
            id: id.into(),
            url: "file://x.json".into(),
        };
        config.identity.schemas = vec![reference("a"), reference("a")];
        config.identity.default_schema_id = "b".into();
        assert_eq!(
            keys(&config),
            ["identity.schemas[1].id", "identity.default_schema_id"]
        );
    }

    #[test]
    fn accepted_stores() {
        for dsn in [
            "memory",
            "postgres://u@h/db",
            "postgresql://h/db",
            "sqlite://x.db?mode=rwc",
            "sqlite::memory:",
        ] {
            let config = Config {
                dsn: Some(dsn.into()),
                redis: crate::config::RedisConfig {
                    url: Some("rediss://cache:6380/0".into()),
                },
                ..Config::default()
            };
            assert_eq!(keys(&config), Vec::<String>::new(), "{dsn}");
        }
    }
}
