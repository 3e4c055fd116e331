//! Twofold: a gRPC-first authentication backend whose core is one-time codes by SMS and email.
//!
//! The library never binds an address itself: `server::run` takes listeners, so tests and the
//! binary share one code path. Layers: `api` (gRPC only) → `domain` (flows, sessions, identities,
//! policy) → `store` (traits and backends). `config` turns files and env into validated settings.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod courier;
pub mod domain;
pub mod log_writer;
pub mod proto;
pub mod runtime_thread;
pub mod server;

pub mod store;
