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
    git_commit();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("dbmazz_descriptor.bin"))
        .compile_protos(&["proto/dbmazz.proto"], &["proto"])?;
    Ok(())
}

/// `DBMAZZ_GIT_COMMIT` for `dbmazz --version`: the short commit hash (from the environment
/// variable of that name when set, else from git), `unknown` outside a git checkout. Rebuilt when HEAD or the branch it points to moves.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    // A build without the repository (a container build: .dockerignore leaves .git out) can
    // name the commit itself.
    println!("cargo:rerun-if-env-changed=DBMAZZ_GIT_COMMIT");
    let given = std::env::var("DBMAZZ_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c != "unknown");
    let commit = given
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DBMAZZ_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
