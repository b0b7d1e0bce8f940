//! For tests only: the simulator library (`libcann_sim.so`) of the build running the test, built
//! first by a nested `cargo build -p cann-sim --lib` in the same target directory and profile, so
//! that it is never stale. One implementation for every test that loads the simulator (cann-sys,
//! cann-sim, the engine's `tests/ascend.rs`). This crate exports no C symbol: it is only a Rust
//! function, so linking it never clashes with the simulator's or the runtime's symbols.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of `libcann_sim.so` for the running test binary, built once per process. Panics with
/// the reason when the test binary is not where cargo puts tests or the build fails (a test
/// helper: the panic is the test's failure).
pub fn libcann_sim() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(build)
}

fn build() -> PathBuf {
    // cargo runs a test as <target dir>/<profile dir>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()));
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    // The `dev` and `test` profiles build into `debug`; other profiles into their own name.
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("unexpected profile directory {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "cann-sim",
            "--lib",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // This crate lives in the workspace, so cargo finds the workspace from here.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build -p cann-sim");
    assert!(status.success(), "cargo build -p cann-sim failed");
    let lib = profile_dir.join("libcann_sim.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}
