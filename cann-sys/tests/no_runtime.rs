//! With no toolkit and no simulator, the first use of cann-sys fails with an error that names
//! libascendcl.so and every place looked, and nothing panics. Loading happens once per process, so the
//! check runs in a child process with a cleared environment.

use std::process::Command;

const CHILD: &str = "CANN_SYS_NO_RUNTIME_CHILD";

#[test]
fn missing_runtime_is_a_clear_error() {
    if std::env::var_os(CHILD).is_some() {
        let message = match cann_sys::init() {
            Ok(_) => "UNEXPECTED: a CANN runtime was found".to_string(),
            Err(e) => e.to_string(),
        };
        // The second use answers with the same error (the failed load is remembered, not retried).
        let again = cann_sys::Context::new(0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        println!("MESSAGE: {message}");
        println!("AGAIN: {again}");
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new(exe)
        .args([
            "--exact",
            "missing_runtime_is_a_clear_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD, "1")
        .env("ASCEND_TOOLKIT_HOME", "/nonexistent/toolkit")
        .env("LD_LIBRARY_PATH", "/nonexistent/ld-path")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed (panic?):\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let message = stdout
        .lines()
        .find_map(|l| l.split_once("MESSAGE: ").map(|(_, m)| m))
        .expect("child printed its error");
    for needle in [
        "libascendcl.so",
        "libacl_rt.so",
        "/nonexistent/toolkit/lib64",
        "/usr/local/Ascend/ascend-toolkit/latest/lib64",
        "/nonexistent/ld-path",
        "dynamic linker search",
    ] {
        assert!(
            message.contains(needle),
            "error should mention {needle:?}: {message}"
        );
    }
    let again = stdout
        .lines()
        .find_map(|l| l.split_once("AGAIN: ").map(|(_, m)| m))
        .unwrap_or_default();
    assert_eq!(again, message);
}
