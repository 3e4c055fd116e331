//! The domain: identities, sessions, flows and policy. Nothing here knows about gRPC, SQL or
//! Redis; it talks to storage through the traits in `crate::store`.

pub mod aal;
pub mod challenges;
pub mod clock;
pub mod code;
pub mod configuration;
pub mod courier_admin;
pub mod courier_handoff;
pub mod error;
pub mod flows;
pub mod identities;
pub mod identity;
pub mod login_code;
pub mod mask;
pub mod paging;
pub mod password;
pub mod schema;
pub mod seal;
pub mod session;
pub mod sessions;
pub mod token;
pub mod verification;

pub use error::{DomainError, FieldViolation};

use crate::config::Config;
use crate::store::Stores;
use clock::Clock;
use schema::SchemaRegistry;
use std::sync::Arc;

/// The configuration in force together with the identity schemas compiled from it. A request
/// takes one snapshot and uses it throughout, so a change mid-request cannot mix two versions.
#[derive(Debug)]
pub struct Settings {
    pub config: Config,
    pub schemas: SchemaRegistry,
    /// The stored configuration version this is (0 before any was stored).
    pub version: u64,
    pub etag: String,
    code_mac: code::CodeMac,
    sealer: seal::Sealer,
    templates: crate::courier::templates::Templates,
}

impl Settings {
    /// Derives the keys for code MACs (`secrets.default`) and sealing (`secrets.cipher`, else
    /// `secrets.default`). Without configured secrets a random one is made for this process:
    /// fine for a single embedded server, but codes then die with a restart and replicas
    /// disagree, so it is announced.
    pub fn new(mut config: Config, schemas: SchemaRegistry) -> Self {
        if config.secrets.default.is_empty() {
            tracing::warn!(
                "no secrets.default configured; using a random secret for this process (codes do not survive a restart)"
            );
            config
                .secrets
                .default
                .push(token::SessionToken::generate().expose().to_owned());
        }
        let cipher_secrets = if config.secrets.cipher.is_empty() {
            &config.secrets.default
        } else {
            &config.secrets.cipher
        };
        let sealer = seal::Sealer::new(cipher_secrets);
        let code_mac = code::CodeMac::new(&config.secrets.default);
        // Loading validated the templates; if their files changed since, fall back to the
        // built-in texts rather than stop delivering.
        let templates =
            crate::courier::templates::Templates::compile(&config).unwrap_or_else(|problems| {
                tracing::error!(
                    problems = problems.len(),
                    "message templates no longer compile; using the built-in texts"
                );
                crate::courier::templates::Templates::built_in()
            });
        Self {
            config,
            schemas,
            version: 0,
            etag: String::new(),
            code_mac,
            sealer,
            templates,
        }
    }

    pub fn templates(&self) -> &crate::courier::templates::Templates {
        &self.templates
    }

    /// The same settings, marked as stored version `version`.
    pub fn at_version(mut self, version: u64, etag: String) -> Self {
        self.version = version;
        self.etag = etag;
        self
    }

    pub fn code_mac(&self) -> &code::CodeMac {
        &self.code_mac
    }

    pub fn sealer(&self) -> &seal::Sealer {
        &self.sealer
    }
}

/// Everything a domain operation needs: settings, storage and the clock.
#[derive(Clone)]
pub struct Context {
    /// Swapped whole when the configuration changes; readers clone the inner `Arc` once per
    /// request, so a request never sees two versions.
    settings: Arc<std::sync::RwLock<Arc<Settings>>>,
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    /// Wakes the courier worker when a message was queued to be claimed, so delivery starts at
    /// once instead of at the next poll.
    pub courier_wakeup: Arc<tokio::sync::Notify>,
    /// Takes queued messages straight to this process's courier worker while one runs.
    pub courier_handoff: Arc<courier_handoff::CourierHandoff>,
}

impl Context {
    pub fn new(settings: Settings, stores: Stores, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings: Arc::new(std::sync::RwLock::new(Arc::new(settings))),
            stores,
            clock,
            courier_wakeup: Arc::new(tokio::sync::Notify::new()),
            courier_handoff: Arc::default(),
        }
    }

    /// One consistent snapshot of the settings for the current request.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts new settings in force for every request that starts from now on.
    pub fn replace_settings(&self, settings: Settings) {
        *self
            .settings
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(settings);
    }
}
