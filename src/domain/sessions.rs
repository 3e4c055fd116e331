//! Session checks. STUB.
