//! Pieces shared by the SQL backends (row decoding, error classification). STUB.
