//! `--backend ascend` over our CANN simulator (libcann_sim.so, built here by a nested
//! `cargo build -p cann-sim`): the runtime loads through cann-sys and the device opens. The op set is
//! not implemented on the device yet, so loading a model there is an error that says so; a device the
//! runtime does not have is an error naming the count.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Builds the simulator once per test binary, in this build's target directory and profile.
fn simulator() -> &'static PathBuf {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The test binary lives in target/<profile>/deps.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "cann-sim", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "cargo build -p cann-sim failed");
        let lib = profile_dir.join("libcann_sim.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

fn on_simulator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idefics3"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("IDEFICS3_ASCEND_LIBS", simulator())
        .output()
        .unwrap()
}

#[test]
fn the_simulated_device_opens_and_the_missing_op_set_is_reported() {
    let model = common::fixture("processor/smolvlm_style");
    let model = model.to_str().unwrap();
    let out = on_simulator(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "Hi",
        "--backend",
        "ascend",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the Ascend runtime loaded and device 0 (Ascend910B3) opened")
            && err.contains("op set is not implemented yet"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = on_simulator(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "Hi",
        "--backend",
        "ascend",
        "--device",
        "3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--device 3: the Ascend runtime sees 1 device(s)"),
        "{err}"
    );
}
