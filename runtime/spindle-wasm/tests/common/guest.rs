//! Building the Rust test guests under `tests/guests/` (shared by the tests and the
//! benchmarks; each guest crate is a workspace of its own).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `$CARGO_TARGET_DIR/wasm-guests`, or `wasm-guests` in the target directory this test
/// binary was built into.
pub fn guest_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // <target>/<profile>/deps/<binary> (tests) or <target>/<profile>/deps (benches)
            let exe = std::env::current_exe().ok()?;
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "deps"))
                .and_then(|deps| deps.parent()?.parent())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("wasm-guests")
}

/// Builds the guest crate in `tests/guests/<name>` for `wasm32-wasip2` (release) and
/// returns the component's path. Cargo's lock serialises concurrent builds.
pub fn build_guest(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/guests")
        .join(name)
        .join("Cargo.toml");
    let target = "wasm32-wasip2";
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--target", target])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", guest_target_dir())
        // Flags meant for the host build must not leak into the guest's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building guest {name} for {target} failed (rustup target add {target}?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = guest_target_dir()
        .join(target)
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} missing after build", path.display());
    path
}

/// The `http-hello` wasi:http guest (built once per process).
pub fn http_hello() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| build_guest("http-hello")).clone()
}
