//! The domain: identities, sessions, flows and policy. Nothing here knows about gRPC, SQL or
//! Redis; it talks to storage through the traits in `crate::store`.

pub mod aal;
pub mod clock;
pub mod code;
pub mod error;
pub mod flows;
pub mod identities;
pub mod identity;
pub mod mask;
pub mod password;
pub mod schema;
pub mod seal;
pub mod session;
pub mod sessions;
pub mod token;

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
}

/// Everything a domain operation needs: settings, storage and the clock.
#[derive(Clone)]
pub struct Context {
    settings: Arc<Settings>,
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
}

impl Context {
    pub fn new(settings: Settings, stores: Stores, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings: Arc::new(settings),
            stores,
            clock,
        }
    }

    /// One consistent snapshot of the settings for the current request.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.clone()
    }
}
