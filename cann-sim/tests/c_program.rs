//! Builds tests/c/acl_doc_check.c (a client written only from CANN's documents) with the system C compiler
//! and runs it against libcann_sim.so.

mod common;

use std::process::Command;

#[test]
fn documented_c_client_gets_correct_results_and_codes() {
    let so = cann_sim_locate::libcann_sim();
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
        .arg(so)
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
