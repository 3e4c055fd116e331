//! Which gateway serves each channel, from `courier.*`. PLACEHOLDER until the gateways land.
use super::Senders;
use super::log_sender::LogSender;
use crate::config::{Config, ConfigProblem};
use std::sync::Arc;

pub async fn senders(config: &Config) -> Result<Senders, String> {
    let _ = config;
    Ok(Senders::single(Arc::new(LogSender)))
}

pub fn check(config: &Config) -> Vec<ConfigProblem> {
    let _ = config;
    Vec::new()
}
