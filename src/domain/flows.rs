//! Registration and login flows. STUB.
