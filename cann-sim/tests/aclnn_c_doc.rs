//! Builds `tests/c/aclnn_doc_test.c` (a C program written only from CANN's documents, with its own
//! declarations) against `libcann_sim.so` with the system C compiler, runs it, and requires it to pass.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_program_from_the_documents_gets_results_and_status_codes() {
    // The directory holding this build's `libcann_sim.so`.
    let lib = cann_sim_locate::libcann_sim()
        .parent()
        .expect("the library is in a directory");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/aclnn_doc_test.c");
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = tmp.path().join("aclnn_doc_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lcann_sim", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(
        out.status.success(),
        "compiling {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run aclnn_doc_test");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "aclnn_doc_test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
