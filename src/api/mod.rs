//! The gRPC layer: convert the request, call the domain, convert the answer. Errors become
//! `tonic::Status` in `error` only.
