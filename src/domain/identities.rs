//! Identity administration. STUB.
