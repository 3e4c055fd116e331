//! Compiles the gRPC contract in `proto/` into Rust with a descriptor set for reflection.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "errors", "types", "flow", "session", "identity", "code", "config", "courier",
    ]
    .map(|name| format!("proto/twofold/v1/{name}.proto"));

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("twofold_descriptor.bin"))
        .compile_with_config(config, &protos, &["proto".to_string()])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
