//! Compiles `proto/dbmazz.proto` into `OUT_DIR` (server and client side, plus the file descriptor set
//! that gRPC reflection serves). Nothing generated is committed. `protoc` comes from the
//! `protoc-bin-vendored` build dependency unless `PROTOC` already names one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/dbmazz.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("dbmazz_descriptor.bin"))
        .compile_protos(&["proto/dbmazz.proto"], &["proto"])?;
    Ok(())
}
