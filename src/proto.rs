//! Generated code for the `twofold.v1` contract, plus the descriptor set served by reflection.

#[allow(clippy::all, clippy::pedantic)]
pub mod twofold {
    pub mod v1 {
        tonic::include_proto!("twofold.v1");
    }
}

pub use twofold::v1;

/// Encoded `FileDescriptorSet` of every `twofold.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("twofold_descriptor");

/// `google.rpc.ErrorInfo.domain` for every error Twofold returns.
pub const ERROR_DOMAIN: &str = "twofold";

impl v1::ErrorReason {
    /// The `ErrorInfo.reason` string: the enum value name without its `ERROR_REASON_` prefix.
    pub fn reason(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix("ERROR_REASON_").unwrap_or(name)
    }
}
