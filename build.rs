//! Compiles `proto/` with protox (no system `protoc`) into Rust types and tonic
//! services, and writes the file descriptor set that server reflection serves.

use prost::Message;
use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/fedreg/v1/objects.proto",
    "proto/fedreg/v1/registry.proto",
    "proto/fedreg/v1/peering.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The migrations are embedded in the binary (`embed_migrations!`), which
    // does not notice a new migration directory by itself.
    println!("cargo:rerun-if-changed=migrations");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("fedreg_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
