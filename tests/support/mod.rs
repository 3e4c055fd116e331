//! Shared helpers for integration tests. PLACEHOLDER until the stores branch lands.
#![allow(dead_code)]
pub mod server;

pub async fn fresh_postgres_database() -> String {
    unimplemented!()
}

pub fn redis_url() -> String {
    unimplemented!()
}
