//! Hostile input (issue 13): every case ends in a named error, quickly and with bounded memory, or
//! works; nothing panics (exit 101), aborts, or writes through a planted link.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixture;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_idefics3"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn smol() -> PathBuf {
    fixture("processor/smolvlm_style")
}

/// A failure with a message containing every needle, no panic, and the normal failure status.
fn refused(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn thread_counts_beyond_the_machine_are_refused() {
    let m = smol();
    for t in ["30000", "4294967296", "100000000000"] {
        let t0 = Instant::now();
        let out = run(&[
            "generate",
            "--model",
            s(&m),
            "--prompt",
            "hi",
            "--threads",
            t,
        ]);
        refused(&out, &["threads requested", "use at most"]);
        assert!(t0.elapsed() < Duration::from_secs(20));
    }
    let out = run(&["bench", "--model", s(&m), "--threads", "100000"]);
    refused(&out, &["100000 threads requested"]);
}

#[test]
fn negative_numbers_get_a_proper_message() {
    let m = smol();
    for (flag, v) in [
        ("--threads", "-1"),
        ("--max-new-tokens", "-5"),
        ("--top-k", "-1"),
        ("--seed", "-3"),
    ] {
        let out = run(&["generate", "--model", s(&m), "--prompt", "hi", flag, v]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(flag) && !err.contains("unexpected argument"),
            "{err}"
        );
        assert!(err.contains("≥ 0") || err.contains("from 0"), "{err}");
    }
    // A negative float reaches the value check, which names it.
    let out = run(&[
        "generate",
        "--model",
        s(&m),
        "--prompt",
        "hi",
        "--temperature",
        "-1",
    ]);
    refused(&out, &["temperature -1 must be ≥ 0"]);
}

#[test]
fn closed_stdout_ends_quietly_and_a_full_one_is_an_error() {
    let m = smol();
    for json in [false, true] {
        let mut args = vec!["generate", "--model", s(&m), "--prompt", "hi"];
        args.extend(["--max-new-tokens", "40"]);
        if json {
            args.push("--json");
        }
        // The reader goes away before the first byte.
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "closed pipe (json {json}): {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = bin().args(&args).stdout(full).output().unwrap();
        refused(&out, &["stdout", "No space left on device"]);
    }
}

#[test]
fn each_cause_is_printed_once() {
    let m = smol();
    let out = run(&[
        "generate",
        "--model",
        s(&m),
        "--chat",
        "/nonexistent/chat.json",
    ]);
    let err = refused(&out, &["/nonexistent/chat.json"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let chat = tmp.path().join("f.json");
    std::fs::write(&chat, r#"[{"content": []}]"#).unwrap();
    let out = run(&["generate", "--model", s(&m), "--chat", s(&chat)]);
    let err = refused(&out, &["f.json: chat: message 0"]);
    assert_eq!(err.matches("invalid input").count(), 1, "{err}");

    // A directory that is not a checkpoint is named as such.
    let out = run(&["generate", "--model", s(tmp.path()), "--prompt", "hi"]);
    refused(&out, &["not an Idefics3 checkpoint"]);
}

fn preprocess(out: &Path) -> Output {
    let img = fixture("processor/images/one_tile.png");
    run(&[
        "preprocess",
        "--model",
        s(&smol()),
        "--image",
        s(&img),
        "--prompt",
        "hi",
        "--out",
        s(out),
    ])
}

#[test]
fn outputs_never_replace_special_files_or_follow_links() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();

    refused(
        &preprocess(Path::new("/dev/full")),
        &["/dev/full", "character device", "refusing"],
    );
    let dir = tmp.path().join("a_dir");
    std::fs::create_dir(&dir).unwrap();
    refused(&preprocess(&dir), &["a directory"]);

    // A link at the target is refused, and the file it points to is untouched.
    let victim = tmp.path().join("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    let link = tmp.path().join("out.safetensors");
    symlink(&victim, &link).unwrap();
    refused(&preprocess(&link), &["symbolic link"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    std::fs::remove_file(&link).unwrap();

    let out = preprocess(&link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // The output gets the usual mode for a new file, and no temporary file is left.
    let mode = std::fs::metadata(&link).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
    assert_eq!(mode & 0o002, 0, "world-writable: {mode:o}");
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // Replacing a regular file keeps its mode.
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(preprocess(&link).status.success());
    let mode = std::fs::metadata(&link).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn a_bad_output_location_is_found_before_the_work() {
    let t0 = Instant::now();
    let out = preprocess(Path::new("/nonexistent_dir/x.safetensors"));
    refused(&out, &["/nonexistent_dir", "cannot be used"]);
    let dir = fixture("smolvlm_like");
    let out = run(&[
        "forward",
        "--model",
        s(&dir.join("model")),
        "--inputs",
        s(&dir.join("inputs.safetensors")),
        "--out",
        "/proc/x.safetensors",
    ]);
    refused(&out, &["/proc"]);
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn greedy_and_bench_counts_are_checked_against_the_context() {
    let dir = fixture("smolvlm_like");
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("o.safetensors");
    for n in ["100000", "18446744073709551615"] {
        let t0 = Instant::now();
        let out = run(&[
            "forward",
            "--model",
            s(&dir.join("model")),
            "--inputs",
            s(&dir.join("inputs.safetensors")),
            "--out",
            s(&out_path),
            "--greedy",
            n,
        ]);
        refused(
            &out,
            &["greedy tokens", "exceed the model's context", "at most"],
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(!out_path.exists());
    }
    let out = run(&[
        "bench",
        "--model",
        s(&smol()),
        "--prompt",
        "hi",
        "--new-tokens",
        "1000000",
        "--runs",
        "1",
        "--warmup",
        "0",
    ]);
    refused(&out, &["--new-tokens 1000000", "new tokens fit"]);
}

#[test]
fn forward_inputs_longer_than_the_context_are_refused() {
    let dir = fixture("smolvlm_like");
    let tmp = tempfile::tempdir().unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model/config.json")).unwrap())
            .unwrap();
    let ctx = config["text_config"]["max_position_embeddings"]
        .as_u64()
        .unwrap() as usize;
    let ids: Vec<u8> = (0..ctx + 1).flat_map(|_| 1i64.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, ctx + 1], &ids)
            .unwrap();
    let inputs = tmp.path().join("long.safetensors");
    std::fs::write(
        &inputs,
        safetensors::serialize(vec![("input_ids", view)], None).unwrap(),
    )
    .unwrap();
    let out = run(&[
        "forward",
        "--model",
        s(&dir.join("model")),
        "--inputs",
        s(&inputs),
        "--out",
        s(&tmp.path().join("o.safetensors")),
    ]);
    refused(&out, &[&format!("{} tokens", ctx + 1), "context holds"]);
}

const IDEFICS3_TEMPLATE: &str = "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

#[test]
fn chat_templates_are_bounded_in_time_and_memory() {
    use idefics3::processor::prompt::{count_image_items, render_chat};
    let one = serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]);
    // The largest conversation allowed renders with the real template within the fuel.
    let msg = serde_json::json!({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a question of some length"}]});
    let many = serde_json::Value::Array(vec![msg; idefics3::limits::MAX_MESSAGES]);
    count_image_items(&many).unwrap();
    let t0 = Instant::now();
    let text = render_chat(IDEFICS3_TEMPLATE, &many, true, &serde_json::Value::Null).unwrap();
    assert!(text.len() > 300_000);
    assert!(t0.elapsed() < Duration::from_secs(5));
    for (template, needle) in [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "ran out of fuel",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(30) %}{% set ns.s = ns.s ~ 'x' %}{% endfor %}{% for i in range(10000) %}{% for j in range(1000) %}{{ ns.s|length }}{% endfor %}{% endfor %}",
            "ran out of fuel",
        ),
        ("{{ 'x' * 100000000 }}", "refused: `*` of a string"),
        ("{{ 'x' * 10000000 }}", "output exceeds 8388608 bytes"),
        ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", "output exceeds"),
    ] {
        let t0 = Instant::now();
        let e = render_chat(template, &one, true, &serde_json::Value::Null)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{template}: {e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{template}: {:?}", t0.elapsed());
    }
}

/// Values that double (or grow by a factor) in one cheap step: each is refused when it would pass
/// the template value limit, in well under a second and before it is built.
#[test]
fn chat_templates_cannot_build_huge_values() {
    use idefics3::processor::prompt::render_chat;
    let one = serde_json::json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]);
    for (template, needle) in [
        (
            "{% set ns = namespace(l=['x']) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
            "`+` of two lists",
        ),
        (
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "`~`",
        ),
        (
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "`+` of two strings",
        ),
        ("{{ (['x' * 100] * 100000000)|length }}", "`*` of a list"),
        ("{{ ((['x'] * 1000) * 1000) * 1000 }}", "`*` of a list"),
        ("{{ ('' ~ (['x' * 100] * 1000000)) | length }}", "`~`"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [ns.s, ns.s]|join('') %}{% endfor %}",
            "`join`",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = [[ns.s, ns.s]|join, [ns.s]|join]|join %}{% endfor %}",
            "`join`",
        ),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ''.join([ns.s, ns.s]) %}{% endfor %}",
            "`join`",
        ),
        (
            "{% macro f(x, n) %}{% if n > 0 %}{{ f(x + x, n - 1) }}{% endif %}{% endmacro %}{{ f(['x'], 40) }}",
            "`+` of two lists",
        ),
        ("{{ ('x' * 1000000)|replace('x', 'y' * 1000000) }}", "`replace`"),
        ("{{ ('x\n' * 1000000)|indent(1000000) }}", "`indent`"),
        ("{{ (['x' * 100] * 1000000)|tojson }}", "`tojson`"),
        ("{{ (['x' * 100] * 1000000)|string }}", "`string`"),
        ("{{ '{:>999999999}'.format('x') }}", "`format`"),
        ("{{ '%999999999s'|format('x') }}", "`format`"),
    ] {
        let t0 = Instant::now();
        let e = render_chat(template, &one, true, &serde_json::Value::Null)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the chat template is refused")
                && e.contains(needle)
                && e.contains("template value limit (16777216 bytes of string, 1000000 list items)"),
            "{template}: {e}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{template}: {:?}",
            t0.elapsed()
        );
    }
    // Appending item by item (quadratic work) runs out of fuel instead of time.
    let t0 = Instant::now();
    let e = render_chat(
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i] %}{% endfor %}",
        &one,
        true,
        &serde_json::Value::Null,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ran out of fuel"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn conversations_are_bounded_before_rendering() {
    use idefics3::processor::prompt::count_image_items;
    let msg = serde_json::json!({"role": "user", "content": "hi"});
    let t0 = Instant::now();
    let e = count_image_items(&serde_json::Value::Array(vec![msg; 1_000_000]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("1000000 messages exceed the limit of 10000"),
        "{e}"
    );
    let item = serde_json::json!({"type": "text", "text": "x"});
    let wide = serde_json::json!([{"role": "user", "content": vec![item; 200_000]}]);
    let e = count_image_items(&wide).unwrap_err().to_string();
    assert!(e.contains("200000 content items exceed"), "{e}");
    let long = serde_json::json!([{"role": "user", "content": "x".repeat(5 << 20)}]);
    let e = count_image_items(&long).unwrap_err().to_string();
    assert!(e.contains("bytes of text exceed"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(20));

    // A chat file over the size limit is refused before it is read.
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = run(&["generate", "--model", s(&smol()), "--chat", s(&big)]);
    refused(
        &out,
        &["big.json is 67108864 bytes long", "limit of 4194304"],
    );
}

#[test]
fn prompts_longer_than_the_context_are_refused_before_the_images_are_processed() {
    let m = smol();
    let img = fixture("processor/images/large.jpg");
    // 200 images: more image tokens than the context holds.
    let mut args = vec!["generate", "--model", s(&m), "--prompt", "hi"];
    for _ in 0..200 {
        args.extend(["--image", s(&img)]);
    }
    let out = run(&args);
    refused(&out, &["image tokens but the model's context holds"]);
    // A long text is refused from its length, before tokenizing.
    let tmp = tempfile::tempdir().unwrap();
    let chat = tmp.path().join("long.json");
    let text = "word ".repeat(800_000);
    std::fs::write(
        &chat,
        serde_json::json!([{"role": "user", "content": [{"type": "text", "text": text}]}])
            .to_string(),
    )
    .unwrap();
    let out = run(&["generate", "--model", s(&m), "--chat", s(&chat)]);
    refused(&out, &["bytes long: at least", "context holds 4096"]);
}

#[test]
fn layer_counts_are_checked_against_the_weights_first() {
    let d = common::copy_dir(&fixture("tied_text").join("model"));
    let path = d.path().join("config.json");
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (section, n) in [
        ("text_config", 1_000_000_000u64),
        ("vision_config", 4_294_967_296),
        ("text_config", 16_777_216),
        ("vision_config", 3),
    ] {
        let mut c = orig.clone();
        c[section]["num_hidden_layers"] = n.into();
        std::fs::write(&path, c.to_string()).unwrap();
        let t0 = Instant::now();
        let e = match idefics3::model::Idefics3::load(
            d.path(),
            idefics3::backend::cpu::CpuBackend::new(idefics3::backend::ActDtype::F32, Some(1))
                .unwrap(),
        ) {
            Ok(_) => panic!("{section}.num_hidden_layers = {n} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{n}: {:?}",
            t0.elapsed()
        );
        let field = format!("{section}.num_hidden_layers");
        assert!(
            e.contains(&field) && (e.contains("the weights hold") || e.contains("exceeds")),
            "{e}"
        );
    }
    // Widths are bounded too, so that no product of them overflows.
    let mut c = orig.clone();
    c["text_config"]["hidden_size"] = (1u64 << 40).into();
    std::fs::write(&path, c.to_string()).unwrap();
    let e = idefics3::config::ModelConfig::from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hidden_size") && e.contains("exceeds the largest supported value"),
        "{e}"
    );
}

#[test]
fn a_truncated_jpeg_is_an_error_as_in_pillow() {
    use idefics3::processor::image::decode_image;
    let jpg = std::fs::read(fixture("processor/images/large.jpg")).unwrap();
    decode_image(&jpg, "large.jpg").unwrap();
    for cut in [jpg.len() / 2, jpg.len() - 2, 700] {
        let e = decode_image(&jpg[..cut], "half.jpg")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("half.jpg: image file is truncated"),
            "{cut}: {e}"
        );
    }
    let prog = std::fs::read(fixture("processor/images/progressive.jpg")).unwrap();
    let e = decode_image(&prog[..prog.len() / 2], "p.jpg")
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
}
#[test]
fn non_finite_logits_stop_generation_naming_the_weights() {
    use idefics3::backend::{cpu::CpuBackend, ActDtype};
    use idefics3::model::Idefics3;
    use safetensors::SafeTensors;
    let d = common::copy_dir(&fixture("tied_text").join("model"));
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let target = "model.text_model.norm.weight";
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let mut data = t.data().to_vec();
            if n == target {
                let nan: &[u8] = match t.dtype() {
                    safetensors::Dtype::F32 => &[0, 0, 0xc0, 0x7f],
                    _ => &[0xc0, 0x7f],
                };
                data[..nan.len()].copy_from_slice(nan);
            }
            (n, t.dtype(), t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let model = Idefics3::load(d.path(), CpuBackend::new(ActDtype::F32, Some(1)).unwrap()).unwrap();
    let e = match idefics3::generate::greedy(&model, &[1, 2, 3], None, 4, false) {
        Ok(o) => panic!("NaN weights gave tokens {:?}", o.ids),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("non-finite logits") && e.contains(target), "{e}");
    let params = idefics3::generate::SamplingParams::greedy(4);
    let e = idefics3::generate::generate(&model, &[1, 2, 3], None, &params, &[], |_| true)
        .expect_err("NaN weights must fail")
        .to_string();
    assert!(e.contains("non-finite logits") && e.contains(target), "{e}");
}

/// Rewrites the JSON header of a safetensors file (the data is kept as it is).
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut h = header.to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn safetensors_errors_name_the_file_and_the_tensor_in_words() {
    use idefics3::backend::{cpu::CpuBackend, ActDtype};
    let load = |dir: &Path| match idefics3::model::Idefics3::load(
        dir,
        CpuBackend::new(ActDtype::F32, Some(1)).unwrap(),
    ) {
        Ok(_) => panic!("a damaged file loaded"),
        Err(e) => e.to_string(),
    };
    let names = |path: &Path| -> Vec<(String, u64)> {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let mut v: Vec<(String, u64)> = h
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .map(|(k, t)| (k.clone(), t["data_offsets"][0].as_u64().unwrap()))
            .collect();
        v.sort_by_key(|x| x.1);
        v
    };
    // A tensor's entry deleted from the header: named is the next one, with the reason.
    let d = common::copy_dir(&fixture("tied_text").join("model"));
    let path = d.path().join("model.safetensors");
    let order = names(&path);
    let (gone, next) = (order[1].0.clone(), order[2].0.clone());
    edit_header(&path, |h| {
        h.remove(&gone);
    });
    let e = load(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains(&format!("`{next}`")),
        "{e}"
    );
    assert!(e.contains("entry was removed"), "{e}");
    assert!(!e.contains("InvalidOffset"), "{e}");

    // A shape that contradicts the offsets.
    let d = common::copy_dir(&fixture("tied_text").join("model"));
    let path = d.path().join("model.safetensors");
    let first = names(&path)[0].0.clone();
    edit_header(&path, |h| {
        h.get_mut(&first).unwrap()["shape"] = serde_json::json!([3, 5, 7]);
    });
    let e = load(d.path());
    assert!(
        e.contains(&format!("tensor `{first}`: its shape and dtype need")),
        "{e}"
    );
    assert!(!e.contains("TensorInvalidInfo"), "{e}");

    // A shape whose size overflows.
    edit_header(&path, |h| {
        h.get_mut(&first).unwrap()["shape"] = serde_json::json!([u64::MAX, 4]);
    });
    let e = load(d.path());
    assert!(
        e.contains(&format!("`{first}`")) && e.contains("overflows"),
        "{e}"
    );
    assert!(!e.contains("ValidationOverflow"), "{e}");
}

#[test]
fn fuzz_found_a_tokenizer_json_that_panics_the_tokenizers_crate() {
    let bytes = std::fs::read(fixture("fuzz/tokenizer_decoder_panic.json")).unwrap();
    let e = idefics3::processor::parse_tokenizer(&bytes, Path::new("tokenizer.json"))
        .err()
        .map(|e| e.to_string())
        .expect("a malformed tokenizer.json must be an error");
    assert!(
        e.contains("tokenizer.json") && e.contains("not a tokenizer"),
        "{e}"
    );
}

/// `large.jpg` with everything after its scan header replaced by garbage: the header (size,
/// markers) reads fine, decoding the pixels fails.
fn jpeg_with_garbage_body() -> Vec<u8> {
    let jpg = std::fs::read(fixture("processor/images/large.jpg")).unwrap();
    let sos = jpg
        .windows(2)
        .position(|w| w == [0xff, 0xda])
        .expect("a JPEG has a start-of-scan marker");
    let header_len = u16::from_be_bytes([jpg[sos + 2], jpg[sos + 3]]) as usize;
    let mut out = jpg[..sos + 2 + header_len].to_vec();
    out.extend((0..jpg.len()).map(|i| (i * 7 + 3) as u8 | 0x01));
    out
}

#[test]
fn image_tokens_are_counted_from_the_headers_before_any_image_is_decoded() {
    use idefics3::processor::{ImageFile, ImageSource};
    let garbage = jpeg_with_garbage_body();
    let one = ImageFile::from_bytes(garbage.clone(), "garbage.jpg".into()).unwrap();
    let e = one.pixels().unwrap_err().to_string();
    assert!(e.contains("garbage.jpg"), "{e}");
    let large = idefics3::processor::image::load_image_file(&fixture("processor/images/large.jpg"))
        .unwrap();
    assert_eq!(one.size(), (large.width, large.height));

    // Through the CLI: the context error, not the decode error, so nothing was decoded.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("garbage.jpg");
    std::fs::write(&path, &garbage).unwrap();
    let m = smol();
    let mut args = vec!["generate", "--model", s(&m), "--prompt", "hi"];
    for _ in 0..200 {
        args.extend(["--image", s(&path)]);
    }
    let err = refused(&run(&args), &["image tokens but the model's context holds"]);
    assert!(!err.contains("decode"), "{err}");

    // In the library: 200 large images are refused in well under a second.
    let config = idefics3::config::ModelConfig::from_file(&m.join("config.json")).unwrap();
    let processor = idefics3::processor::Processor::load(&m, &config).unwrap();
    let jpg = std::fs::read(fixture("processor/images/large.jpg")).unwrap();
    let t0 = Instant::now();
    let images: Vec<ImageFile> = (0..200)
        .map(|i| ImageFile::from_bytes(jpg.clone(), format!("{i}.jpg")).unwrap())
        .collect();
    let text = "<image>".repeat(200);
    let e = processor.encode(&text, &images).unwrap_err().to_string();
    let elapsed = t0.elapsed();
    assert!(e.contains("the 200 image(s) need"), "{e}");
    assert!(elapsed < Duration::from_millis(300), "{elapsed:?}");
}

#[test]
fn the_pixel_limit_is_checked_from_the_header() {
    use idefics3::processor::ImageFile;
    // A BMP header for 20000×20000 pixels (4·10⁸, over the limit) and no pixel data.
    let (w, h) = (20_000i32, 20_000i32);
    let mut bmp = b"BM".to_vec();
    bmp.extend(54u32.to_le_bytes()); // file size (wrong, unchecked)
    bmp.extend([0u8; 4]);
    bmp.extend(54u32.to_le_bytes()); // pixel data offset
    bmp.extend(40u32.to_le_bytes()); // BITMAPINFOHEADER
    bmp.extend(w.to_le_bytes());
    bmp.extend(h.to_le_bytes());
    bmp.extend(1u16.to_le_bytes());
    bmp.extend(24u16.to_le_bytes());
    bmp.extend([0u8; 24]);
    let t0 = Instant::now();
    let e = ImageFile::from_bytes(bmp, "bomb.bmp".into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bomb.bmp: 20000×20000 = 400000000 pixels exceeds the limit of 178956970"),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_millis(100));
}

/// An image file larger than the limit is refused from its size, before a byte of it is read (a
/// sparse 1 GiB file: reading it would take a second and a gigabyte).
#[test]
fn an_oversized_image_file_is_refused_before_it_is_read() {
    use idefics3::processor::ImageFile;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.png");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(1 << 30).unwrap();
    let t0 = Instant::now();
    let e = ImageFile::open(&path).unwrap_err().to_string();
    assert!(
        e.contains(
            "big.png: the image file has 1073741824 bytes, more than the limit of 268435456"
        ),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_millis(100));
}
