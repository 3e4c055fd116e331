//! The gRPC layer: convert the request, call the domain, convert the answer. Errors become
//! `tonic::Status` in `error` only; credentials are read in `auth` only.

pub mod auth;
pub mod code;
pub mod config;
pub mod convert;
pub mod courier;
pub mod error;
pub mod flow;
pub mod identity;
pub mod session;
