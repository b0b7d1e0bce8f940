//! The C interface: a C program written only from `include/idefics3.h` (tests/c/capi_test.c) is
//! compiled against the static and the shared library and must print the same texts as the Rust API
//! on the same requests; the header and the Rust exports must agree.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use idefics3::backend::ActDtype;
use idefics3::engine::{Conversation, Engine, EngineOptions};
use idefics3::generate::SamplingParams;
use idefics3::processor::image::{load_image_file, RgbImage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds libidefics3.a and libidefics3.so (`cargo test` builds only the rlib) in the same target
/// directory (cargo has released its lock by the time tests run, and the dependencies are reused),
/// and returns the directory holding them.
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let test_target = std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf();
            let target = test_target.clone();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--lib", "--quiet", "--manifest-path"])
                .arg(root().join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .unwrap();
            assert!(status.success(), "building the C libraries failed");
            target.join("debug")
        })
        .clone()
}

fn compile(out: &Path, shared: bool) {
    let lib = lib_dir();
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args([
        "-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-pthread",
    ])
    .arg("-I")
    .arg(root().join("include"))
    .arg(root().join("tests/c/capi_test.c"))
    .arg("-o")
    .arg(out);
    if shared {
        cmd.arg(format!("-L{}", lib.display()))
            .arg("-lidefics3")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    } else {
        cmd.arg(lib.join("libidefics3.a")).args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ]);
    }
    let status = cmd
        .status()
        .expect("a C compiler (cc) is needed for this test");
    assert!(status.success(), "compiling the C test failed");
}

fn expected() -> Vec<(String, String)> {
    let dir = common::fixture("processor/smolvlm_style");
    let engine = Engine::load(
        &dir,
        EngineOptions {
            dtype: ActDtype::F32,
            threads: Some(2),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let image = load_image_file(&common::fixture("processor/images/one_tile.png")).unwrap();
    let params = SamplingParams::greedy(12);
    let ask = |images: &[RgbImage], conv: Conversation| {
        let enc = engine.encode(&conv, images).unwrap();
        engine.generate(&enc, &params, |_| true).unwrap().text
    };
    let prompt = || Conversation::Prompt("Describe this image.".into());
    let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| ((i * 7) % 251) as u8).collect();
    let raw = RgbImage::from_raw(40, 30, rgb).unwrap();
    let chat: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("processor/chat.json")).unwrap(),
    )
    .unwrap();
    let file = ask(std::slice::from_ref(&image), prompt());
    vec![
        ("file".into(), file.clone()),
        ("memory".into(), file.clone()),
        ("rgb".into(), ask(&[raw], prompt())),
        ("stream".into(), file),
        (
            "chat".into(),
            ask(&[image.clone(), image], Conversation::Chat(chat)),
        ),
    ]
}

/// Runs the C test program and checks its answers against the Rust API's.
fn run_c_program(exe: &std::path::Path, what: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let want = expected();
    let mut cmd = Command::new(exe);
    cmd.arg(common::fixture("processor/smolvlm_style"))
        .arg(common::fixture("processor/images/one_tile.png"))
        .arg(common::fixture("processor/chat.json"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "C test failed ({what}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    for (name, text) in &want {
        let line = format!("{name}\t{text}");
        assert!(
            stdout.lines().any(|l| l == line),
            "{what}, {name}: C printed\n{stdout}\nRust: {text:?}"
        );
    }
    assert!(stdout.lines().any(|l| l == "cancel\t2"), "{stdout}");
}

#[test]
fn c_program_matches_the_rust_api() {
    let tmp = tempfile::tempdir().unwrap();
    for shared in [false, true] {
        let exe = tmp
            .path()
            .join(if shared { "capi_shared" } else { "capi_static" });
        compile(&exe, shared);
        run_c_program(&exe, if shared { "shared" } else { "static" }, &[]);
    }
}

/// The same C program with the model on the Ascend backend (our CANN simulator) gives the CPU's
/// answers (f32, greedy).
#[test]
fn c_program_on_the_ascend_backend_matches_the_rust_api() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("capi_ascend");
    compile(&exe, true);
    let sim = common::simulator();
    run_c_program(
        &exe,
        "ascend",
        &[
            ("IDEFICS3_TEST_BACKEND", "ascend".as_ref()),
            ("IDEFICS3_ASCEND_LIBS", sim.as_os_str()),
        ],
    );
}

/// Every function, struct field and constant of the header matches the Rust exports, in order.
#[test]
fn header_and_exports_agree() {
    let header = std::fs::read_to_string(root().join("include/idefics3.h")).unwrap();
    let rust = std::fs::read_to_string(root().join("src/capi.rs")).unwrap();
    let mut rust_fns: Vec<String> = rust
        .lines()
        .filter_map(|l| l.split("extern \"C\" fn ").nth(1))
        .map(|rest| rest.split('(').next().unwrap().to_string())
        .collect();
    let mut header_fns: Vec<String> = header
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("typedef")
                && !l.trim_start().starts_with('/')
                && !l.trim_start().starts_with('*')
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.trim_start_matches('*').starts_with("idefics3_"))
        })
        .map(|w| {
            w.trim_start_matches('*')
                .split('(')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    rust_fns.sort();
    header_fns.sort();
    assert_eq!(rust_fns, header_fns, "functions");

    for name in ["Idefics3LoadOptions", "Idefics3Image", "Idefics3Request"] {
        let body = header
            .split(&format!("typedef struct {name} {{"))
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        let header_fields: Vec<String> = body
            .lines()
            .map(|l| l.split("/*").next().unwrap())
            .flat_map(|l| l.split(';'))
            .filter(|d| !d.trim().is_empty())
            .flat_map(|d| {
                // `uint32_t width, height` declares two fields: the last word of the first declarator,
                // then every further name.
                let mut names = d.trim().split(',');
                let first = names.next().unwrap();
                let first = first.split([' ', '*']).next_back().unwrap().to_string();
                std::iter::once(first)
                    .chain(names.map(|n| n.trim().to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let rust_body = rust
            .split(&format!("pub struct {name} {{"))
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        let rust_fields: Vec<String> = rust_body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub "))
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect();
        assert!(
            rust_fields.len() >= 2,
            "{name}: no fields parsed from src/capi.rs"
        );
        assert_eq!(header_fields, rust_fields, "fields of {name}");
    }
    for line in rust
        .lines()
        .filter(|l| l.starts_with("pub const IDEFICS3_"))
    {
        let name = line
            .split(':')
            .next()
            .unwrap()
            .trim_start_matches("pub const ");
        let value = line
            .rsplit('=')
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(';');
        assert!(
            header.contains(&format!("#define {name} {value}")),
            "constant {name} = {value} missing from the header"
        );
    }
}
