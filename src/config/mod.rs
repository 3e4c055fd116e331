//! Configuration: one struct tree with Kratos's keys (so existing files carry over) plus
//! Twofold's own, loaded from a YAML file with environment overrides and validated at start-up
//! with errors that name the key.

pub mod duration;
pub mod load;
pub mod validate;

pub use load::{ConfigProblem, ConfigProblems, Loaded, load, parse_document};

use crate::domain::aal::RequiredAal;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration. Field names are the YAML keys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kratos's `dsn`: `postgres://…` for Postgres, `sqlite://path?mode=rwc` for a SQLite file,
    /// `memory` for a throw-away in-memory database. Unset: the embedded SQLite file
    /// `twofold.sqlite` in the working directory.
    pub dsn: Option<String>,
    pub redis: RedisConfig,
    pub serve: ServeConfig,
    pub secrets: SecretsConfig,
    pub session: SessionConfig,
    pub selfservice: SelfserviceConfig,
    pub identity: IdentityConfig,
    pub courier: CourierConfig,
    pub log: LogConfig,
}

/// Twofold's own key: where short-lived state (flows, code challenges) lives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`). Unset: an in-process store, for one replica.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    pub public: PublicListenerConfig,
    pub admin: AdminListenerConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublicListenerConfig {
    pub host: String,
    pub port: u16,
    /// Kratos's public base URL; its host is the WebOTP domain of SMS messages.
    pub base_url: Option<String>,
    pub cors: CorsConfig,
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Largest accepted request message, in bytes.
    pub max_message_size: usize,
    /// Twofold: a folder of static files (the built sign-in page, `ui/dist`) that the public
    /// listener serves to browsers beside the API, so page and API share one origin. Relative
    /// paths are relative to the working directory. Unset: no files are served.
    pub static_dir: Option<PathBuf>,
}

impl Default for PublicListenerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 4433,
            base_url: None,
            cors: CorsConfig::default(),
            request_timeout: Duration::from_secs(10),
            max_message_size: 256 * 1024,
            static_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub enabled: bool,
    /// Exact origins (`https://app.example.com`) allowed to call the public API from a browser.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminListenerConfig {
    /// Loopback by default: the admin API must never be reachable from outside by accident.
    pub host: String,
    pub port: u16,
    /// Twofold's own key: accepted admin API keys (first is current; more allow rotation).
    /// When empty, `twofold serve` generates one for the run and writes it to a file.
    pub api_keys: Vec<String>,
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    pub max_message_size: usize,
}

impl Default for AdminListenerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 4434,
            api_keys: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_message_size: 1024 * 1024,
        }
    }
}

/// Kratos's `secrets`: the first of each list signs, all verify.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    pub default: Vec<String>,
    pub cookie: Vec<String>,
    pub cipher: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    #[serde(with = "duration")]
    pub lifespan: Duration,
    pub whoami: WhoamiConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            lifespan: Duration::from_secs(24 * 3600),
            whoami: WhoamiConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhoamiConfig {
    pub required_aal: RequiredAal,
}

impl Default for WhoamiConfig {
    fn default() -> Self {
        Self {
            required_aal: RequiredAal::HighestAvailable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelfserviceConfig {
    pub methods: MethodsConfig,
    pub flows: FlowsConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodsConfig {
    pub password: PasswordMethodConfig,
    pub code: CodeMethodConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordMethodConfig {
    pub enabled: bool,
    pub config: PasswordPolicyConfig,
}

impl Default for PasswordMethodConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            config: PasswordPolicyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicyConfig {
    pub min_password_length: usize,
    /// Kratos keys accepted for compatibility; Twofold does not call the HIBP API.
    pub haveibeenpwned_enabled: bool,
    pub identifier_similarity_check_enabled: bool,
}

impl Default for PasswordPolicyConfig {
    fn default() -> Self {
        Self {
            min_password_length: crate::domain::password::MIN_PASSWORD_LENGTH,
            haveibeenpwned_enabled: false,
            identifier_similarity_check_enabled: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeMethodConfig {
    pub enabled: bool,
    pub passwordless_enabled: bool,
    pub mfa_enabled: bool,
    pub config: CodeConfig,
}

impl Default for CodeMethodConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            passwordless_enabled: false,
            mfa_enabled: false,
            config: CodeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeConfig {
    /// How long a code lives. Kratos OSS defaults to 1h; the seed says 15 minutes or less.
    #[serde(with = "duration")]
    pub lifespan: Duration,
    /// Wrong tries per code challenge (1..=255).
    pub max_submissions: u32,
    pub missing_credential_fallback_enabled: bool,
    /// Twofold: digits per code, never under 6.
    pub length: u32,
    /// Twofold: minimum time between two sends in one flow or challenge.
    #[serde(with = "duration")]
    pub resend_cooldown: Duration,
    /// Twofold: whether a code sent by email can lift a session to AAL2 (the seed: yes;
    /// NIST SP 800-63B: no).
    pub email_counts_as_aal2: bool,
    /// Twofold: wrong codes per identity across all flows and challenges, per `failure_window`.
    pub identity_failure_budget: u32,
    #[serde(with = "duration")]
    pub failure_window: Duration,
    /// Twofold: sends per address and per identity per hour.
    pub sends_per_address_per_hour: u32,
    pub sends_per_identity_per_hour: u32,
}

impl Default for CodeConfig {
    fn default() -> Self {
        Self {
            lifespan: Duration::from_secs(15 * 60),
            max_submissions: 5,
            missing_credential_fallback_enabled: false,
            length: 6,
            resend_cooldown: Duration::from_secs(30),
            email_counts_as_aal2: true,
            identity_failure_budget: 100,
            failure_window: Duration::from_secs(24 * 3600),
            sends_per_address_per_hour: 10,
            sends_per_identity_per_hour: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    pub login: FlowConfig,
    pub registration: RegistrationFlowConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    #[serde(with = "duration")]
    pub lifespan: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            lifespan: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationFlowConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub lifespan: Duration,
}

impl Default for RegistrationFlowConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lifespan: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub default_schema_id: String,
    /// Kratos's `identity.schemas[] {id, url}` with `file://` (relative to the config file's
    /// folder or absolute), `base64://` or `https://`-less inline JSON. Empty: the built-in
    /// schema of the seed (email + phone), id `default`.
    pub schemas: Vec<SchemaReference>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            default_schema_id: "default".into(),
            schemas: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaReference {
    pub id: String,
    pub url: String,
}

/// Kratos's courier keys. Delivery gateways arrive in a later release; the keys are accepted now
/// so existing files load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CourierConfig {
    pub message_retries: u32,
    pub template_override_path: Option<String>,
    pub smtp: Option<serde_json::Value>,
    pub channels: Vec<serde_json::Value>,
    pub templates: Option<serde_json::Value>,
    pub delivery_strategy: Option<String>,
    pub http: Option<serde_json::Value>,
    /// Twofold: Twilio's Messages API for SMS.
    pub twilio: Option<serde_json::Value>,
    /// Twofold: Amazon SNS `Publish` to a phone number for SMS.
    pub sns: Option<serde_json::Value>,
    /// Twofold: which gateway sends email: `smtp` or `log`. Unset: `smtp` when
    /// `courier.smtp` is configured, else `log`.
    pub email_sender: Option<String>,
    /// Twofold: which gateway sends SMS: a `courier.channels[].id` of type http (Kratos's `sms`
    /// channel), `twilio`, `sns` or `log`. Unset: the first that is configured, else `log`.
    pub sms_sender: Option<String>,
    /// Twofold, load harness only: `{socket: PATH}`, the Unix datagram socket the `bench` sender
    /// hands codes to. Refused unless the binary was built with the `bench` feature.
    pub bench: Option<serde_json::Value>,
}

impl Default for CourierConfig {
    fn default() -> Self {
        Self {
            message_retries: 5,
            template_override_path: None,
            smtp: None,
            channels: Vec::new(),
            templates: None,
            delivery_strategy: None,
            http: None,
            twilio: None,
            sns: None,
            email_sender: None,
            sms_sender: None,
            bench: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// Kratos key; Twofold never logs sensitive values, whatever this says.
    pub leak_sensitive_values: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
            leak_sensitive_values: false,
        }
    }
}
