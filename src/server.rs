//! Wiring of listeners, services and shutdown. STUB.
