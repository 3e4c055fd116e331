//! Rules that cross keys or ranges that serde cannot express. STUB.
use super::{Config, ConfigProblem};

pub fn validate(config: &Config) -> Vec<ConfigProblem> {
    let _ = config;
    Vec::new()
}
