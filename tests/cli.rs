//! The `generate` and `preprocess` commands end to end: image files and conversations in, the same
//! tokens as transformers' generate() out; every kind of bad input a clear error with no panic and
//! no output file; model ids resolved from the Hugging Face cache with no network.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    common::fixture("processor")
}

fn idefics3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idefics3"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn expected_generations() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("generate.json")).unwrap()).unwrap()
}

#[test]
fn generate_replays_the_two_image_two_turn_conversation() {
    let gens = expected_generations();
    for ck in ["llama3_style", "smolvlm_style"] {
        let want = &gens[ck];
        let images: Vec<PathBuf> = want["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| root().join("images").join(f.as_str().unwrap()))
            .collect();
        let model = root().join(ck);
        let chat = root().join("chat.json");
        let mut args = vec![
            "generate",
            "--model",
            s(&model),
            "--chat",
            s(&chat),
            "--dtype",
            "f32",
            "--json",
        ];
        for i in &images {
            args.extend(["--image", s(i)]);
        }
        args.extend(["--max-new-tokens", "24"]);
        let out = idefics3(&args);
        assert!(
            out.status.success(),
            "{ck}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["token_ids"], want["generated_ids"], "{ck}: tokens");
        assert_eq!(got["text"], want["text"], "{ck}: text");
        assert_eq!(
            got["prompt_tokens"].as_u64().unwrap() as usize,
            want["prompt_ids"].as_array().unwrap().len()
        );

        // Streaming prints the same text.
        let args: Vec<&str> = args.into_iter().filter(|a| *a != "--json").collect();
        let out = idefics3(&args);
        assert!(out.status.success());
        let streamed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            streamed.trim_end_matches('\n'),
            want["text"].as_str().unwrap(),
            "{ck}: streamed text"
        );
    }
}

#[test]
fn generate_stops_at_end_of_utterance_and_max_tokens() {
    let model = root().join("llama3_style");
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(got["new_tokens"].as_u64().unwrap() <= 3);
    // Sampling with a seed is reproducible.
    let run = |seed: &str| {
        let out = idefics3(&[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.0",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--json",
        ]);
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["token_ids"].clone()
    };
    assert_eq!(run("5"), run("5"));
}

#[test]
fn preprocess_writes_the_processor_tensors() {
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("cases.json")).unwrap()).unwrap();
    let case = &cases["smolvlm_style__two_images"];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("inputs.safetensors");
    let model = root().join("smolvlm_style");
    let imgs: Vec<PathBuf> = case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| root().join("images").join(f.as_str().unwrap()))
        .collect();
    let res = idefics3(&[
        "preprocess",
        "--model",
        s(&model),
        "--image",
        s(&imgs[0]),
        "--image",
        s(&imgs[1]),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--out",
        s(&out),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let ids = common::load(&out, "input_ids").unwrap();
    let want: Vec<i64> = case["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.shape, vec![1, want.len()]);
    assert_eq!(ids.i64, want);
    let pv = common::load(&out, "pixel_values").unwrap();
    let shape: Vec<usize> = case["pixel_values_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(pv.shape, shape);
    let mask = common::load(&out, "pixel_attention_mask").unwrap();
    assert_eq!(mask.shape, vec![shape[0], shape[1], shape[3], shape[4]]);
    assert!(mask.i64.iter().all(|&m| m == 1));
}

fn assert_clean_failure(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = root().join("llama3_style");
    let img = root().join("images/one_tile.png");
    let out_file = tmp.path().join("out.safetensors");

    // More <image> items than images.
    let out = idefics3(&[
        "preprocess",
        "--model",
        s(&model),
        "--prompt",
        "x",
        "--out",
        s(&out_file),
        "--image",
        s(&img),
        "--image",
        s(&img),
        "--image",
        s(&img),
    ]);
    assert!(
        out.status.success(),
        "three images, three markers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&out_file).unwrap();
    let chat = tmp.path().join("chat.json");
    std::fs::write(
        &chat,
        r#"[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]"#,
    )
    .unwrap();
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--chat",
        s(&chat),
        "--image",
        s(&img),
        "--image",
        s(&img),
    ]);
    assert_clean_failure(&out, "1 image item");

    // Unreadable, corrupt, unknown and empty images.
    let out = idefics3(&[
        "preprocess",
        "--model",
        s(&model),
        "--prompt",
        "x",
        "--out",
        s(&out_file),
        "--image",
        "/nonexistent/cat.png",
    ]);
    assert_clean_failure(&out, "/nonexistent/cat.png");
    let corrupt = tmp.path().join("cut.jpg");
    let jpg = std::fs::read(root().join("images/large.jpg")).unwrap();
    std::fs::write(&corrupt, &jpg[..600]).unwrap();
    let out = idefics3(&[
        "preprocess",
        "--model",
        s(&model),
        "--prompt",
        "x",
        "--out",
        s(&out_file),
        "--image",
        s(&corrupt),
    ]);
    assert_clean_failure(&out, "cut.jpg");
    let text = tmp.path().join("notes.png");
    std::fs::write(&text, "not really a picture").unwrap();
    let out = idefics3(&[
        "preprocess",
        "--model",
        s(&model),
        "--prompt",
        "x",
        "--out",
        s(&out_file),
        "--image",
        s(&text),
    ]);
    assert_clean_failure(&out, "unknown image format");
    assert!(!out_file.exists(), "no output after a failure");

    // Malformed chat JSON and messages.
    std::fs::write(&chat, "[{\"role\": \"user\",").unwrap();
    let out = idefics3(&["generate", "--model", s(&model), "--chat", s(&chat)]);
    assert_clean_failure(&out, "chat.json");
    std::fs::write(
        &chat,
        r#"[{"role": "user", "content": [{"type": "audio"}]}]"#,
    )
    .unwrap();
    let out = idefics3(&["generate", "--model", s(&model), "--chat", s(&chat)]);
    assert_clean_failure(&out, "\"type\"");

    // Missing tokenizer and missing template.
    let broken = common::copy_dir(&model);
    std::fs::remove_file(broken.path().join("tokenizer.json")).unwrap();
    let out = idefics3(&["generate", "--model", s(broken.path()), "--prompt", "hi"]);
    assert_clean_failure(&out, "tokenizer.json");
    let broken = common::copy_dir(&model);
    std::fs::remove_file(broken.path().join("chat_template.json")).unwrap();
    let out = idefics3(&["generate", "--model", s(broken.path()), "--prompt", "hi"]);
    assert_clean_failure(&out, "chat template");

    // A prompt longer than the context.
    let small = common::copy_dir(&model);
    let cfg_path = small.path().join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["text_config"]["max_position_embeddings"] = 40.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = idefics3(&[
        "generate",
        "--model",
        s(small.path()),
        "--prompt",
        "hi",
        "--image",
        s(&img),
    ]);
    assert_clean_failure(&out, "context");

    // Bad sampling values.
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "hi",
        "--top-p",
        "1.5",
    ]);
    assert_clean_failure(&out, "top_p");
}

#[test]
fn model_ids_come_from_the_cache_or_fail_clearly_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--tiny-org--tiny-idefics3");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for e in std::fs::read_dir(root().join("smolvlm_style")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snapshot.join(e.file_name())).unwrap();
    }
    let run = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_idefics3"))
            .args([
                "generate",
                "--model",
                id,
                "--prompt",
                "Hi",
                "--max-new-tokens",
                "2",
                "--json",
            ])
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    let out = run("tiny-org/tiny-idefics3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("tiny-org/not-cached");
    assert_clean_failure(&out, "not in the Hugging Face cache");
    let out = run("./no/such/dir");
    assert_clean_failure(&out, "no such model directory");
}

/// Without a CANN runtime (none is installed here; the search variables are cleared so that none is
/// found), `--backend ascend` fails at once on generate, forward and bench with the loader's error:
/// the library it wants and the places it looked. A bad backend name or a device number on the CPU
/// is an error naming the flag's value.
#[test]
fn ascend_backend_without_a_runtime_fails_with_the_loaders_error() {
    let model = root().join("smolvlm_style");
    let inputs = common::fixture("idefics3_like").join("inputs.safetensors");
    let tmp = tempfile::tempdir().unwrap();
    let out_file = tmp.path().join("out.safetensors");
    let runs: [Vec<&str>; 3] = [
        vec!["generate", "--model", s(&model), "--prompt", "Hi"],
        vec![
            "forward",
            "--model",
            s(&model),
            "--inputs",
            s(&inputs),
            "--out",
            s(&out_file),
        ],
        vec!["bench", "--model", s(&model), "--prompt", "Hi"],
    ];
    for args in runs {
        let mut all = args.clone();
        all.extend(["--backend", "ascend", "--device", "0"]);
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_idefics3"))
            .args(&all)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("IDEFICS3_ASCEND_LIBS")
            .env_remove("ASCEND_TOOLKIT_HOME")
            .env_remove("ASCEND_HOME_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert_clean_failure(&out, "Ascend device 0: CANN runtime not available");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("libascendcl.so") && err.contains("looked in"),
            "{}: {err}",
            args[0]
        );
        assert!(
            started.elapsed().as_secs() < 10,
            "{}: took {:?}",
            args[0],
            started.elapsed()
        );
        assert!(!out_file.exists(), "forward wrote a file");
    }
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Hi",
        "--backend",
        "tpu",
    ]);
    assert_clean_failure(&out, "unknown backend \"tpu\"; expected cpu or ascend");
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Hi",
        "--device",
        "1",
    ]);
    assert_clean_failure(
        &out,
        "device 1 was asked for, but the CPU backend has no devices",
    );
    let out = idefics3(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        "Hi",
        "--dtype",
        "half",
    ]);
    assert_clean_failure(&out, "expected f32, bf16 or fp16");
}
