//! Types and services generated from `proto/fedreg/v1`.

#![allow(missing_docs, clippy::all)]

/// `fedreg.v1`: the registry, peering and token APIs.
pub mod v1 {
    tonic::include_proto!("fedreg.v1");
}

/// Encoded `FileDescriptorSet` of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fedreg_descriptor");
