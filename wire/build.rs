//! Generates the etcd v3 protobuf API (prost messages, tonic clients and
//! servers) from `proto/`. `protoc` comes from `protoc-bin-vendored`, so a
//! fresh machine needs no system protobuf compiler and no network.

use std::io;
use std::path::PathBuf;

const PROTO_ROOT: &str = "proto";
const PROTOS: [&str; 5] = [
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
];

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("protoc-bin-vendored has no protoc for this host: {e}"),
        )
    })?;
    let include = protoc_bin_vendored::include_path().map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("protoc-bin-vendored has no include dir: {e}"),
        )
    })?;

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Keys and values decode as `bytes::Bytes`: slices of the receive buffer,
    // so the gateway forwards them without copying.
    config.bytes(["."]);
    // The descriptors of every message, for the HTTP/JSON gateway's proto3
    // JSON mapping (`proto::FILE_DESCRIPTOR_SET`).
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "OUT_DIR is not set by cargo")
        })?);
    config.file_descriptor_set_path(out_dir.join("etcd_descriptors.bin"));

    let include: PathBuf = include;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &PROTOS.map(PathBuf::from),
            &[PathBuf::from(PROTO_ROOT), include],
        )?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
