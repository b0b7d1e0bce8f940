//! Builds tests/c/acl_doc_check.c (a client written only from CANN's documents) with the system C compiler
//! and runs it against libcann_sim.so.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The cdylib next to this test binary (target/<profile>/), built by a nested `cargo build -p cann-sim`
/// when absent.
fn libcann_sim() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/<test>");
    let so = profile_dir.join("libcann_sim.so");
    if !so.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "cann-sim", "--lib"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("run cargo build -p cann-sim");
        assert!(st.success(), "cargo build -p cann-sim failed");
    }
    assert!(
        so.exists(),
        "{} not found after building cann-sim",
        so.display()
    );
    so
}

#[test]
fn documented_c_client_gets_correct_results_and_codes() {
    let so = libcann_sim();
    let exe = common::scratch().join("acl_doc_check");
    let include = format!("-I{}/include", env!("CARGO_MANIFEST_DIR"));
    common::cc(
        &[
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            &include,
            &common::c_source("acl_doc_check.c"),
            "-ldl",
        ],
        &exe,
    );
    let out = Command::new(&exe)
        .arg(&so)
        .output()
        .expect("run acl_doc_check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "acl_doc_check failed ({}):\n{stdout}{stderr}",
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    eprint!("{stdout}");
}
