//! The domain: identities, sessions, flows and policy. Nothing here knows about gRPC, SQL or
//! Redis; it talks to storage through the traits in `crate::store`.

pub mod aal;
pub mod clock;
pub mod error;
pub mod flows;
pub mod identities;
pub mod identity;
pub mod mask;
pub mod password;
pub mod schema;
pub mod session;
pub mod sessions;
pub mod token;

pub use error::{DomainError, FieldViolation};
