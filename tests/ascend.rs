//! `--backend ascend` over our CANN simulator (libcann_sim.so, built here by a nested
//! `cargo build -p cann-sim`): the runtime loads through cann-sys and the device opens. The op set is
//! not implemented on the device yet, so loading a model there is an error that says so; a device the
//! runtime does not have is an error naming the count.

mod common;

use std::process::{Command, Output};

fn on_simulator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idefics3"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("IDEFICS3_ASCEND_LIBS", common::simulator())
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
