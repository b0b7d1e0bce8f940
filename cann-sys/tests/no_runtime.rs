//! With no toolkit and no simulator, the first use of cann-sys fails with an error that names
//! libascendcl.so and every place looked, and nothing panics. Loading happens once per process, so each
//! check runs in a child process (this test binary again) with a cleared environment.

use std::process::Command;

const CHILD: &str = "CANN_SYS_NO_RUNTIME_CHILD";

/// In the child: tries to use the runtime twice and prints both errors. Returns true if it was the child.
fn child_part() -> bool {
    if std::env::var_os(CHILD).is_none() {
        return false;
    }
    let message = match cann_sys::init() {
        Ok(_) => "UNEXPECTED: a CANN runtime was found".to_string(),
        Err(e) => e.to_string(),
    };
    // The second use answers with the same error (the failed load is remembered, not retried).
    let again = cann_sys::Context::new(0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    println!("\nMESSAGE: {message}");
    println!("AGAIN: {again}");
    true
}

/// Runs test `name` in a child with only `env` set; returns its error message.
fn run_child(name: &str, env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed (panic?):\n{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let field = |tag: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(str::to_string)
    };
    let message = field("MESSAGE: ").unwrap_or_else(|| panic!("child printed no error:\n{stdout}"));
    assert_eq!(field("AGAIN: ").as_deref(), Some(message.as_str()));
    message
}

#[test]
fn missing_runtime_is_a_clear_error() {
    if child_part() {
        return;
    }
    let message = run_child(
        "missing_runtime_is_a_clear_error",
        &[
            ("ASCEND_TOOLKIT_HOME", "/nonexistent/toolkit"),
            ("LD_LIBRARY_PATH", "/nonexistent/ld-path"),
        ],
    );
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
}

#[test]
fn missing_library_named_by_ascend_libs_is_a_clear_error() {
    if child_part() {
        return;
    }
    let message = run_child(
        "missing_library_named_by_ascend_libs_is_a_clear_error",
        &[("IDEFICS3_ASCEND_LIBS", "/nonexistent/libcann_sim.so")],
    );
    assert!(
        message.contains("IDEFICS3_ASCEND_LIBS entry /nonexistent/libcann_sim.so"),
        "{message}"
    );
}
