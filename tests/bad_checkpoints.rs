//! Every kind of bad checkpoint or input gets an error that names what is wrong; nothing panics.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use idefics3::backend::{cpu::CpuBackend, ActDtype};
use idefics3::model::Idefics3;
use idefics3::tensor_io::read_inputs;
use safetensors::{Dtype, SafeTensors};

fn load_err(dir: &Path) -> String {
    match Idefics3::load(dir, CpuBackend::new(ActDtype::F32, Some(1)).unwrap()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites `model.safetensors` of `dir` after `edit` changes its tensors (name → dtype, shape, bytes).
fn rewrite(dir: &Path, edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

fn tied() -> tempfile::TempDir {
    copy_dir(&fixture("tied_text").join("model"))
}

const NORM: &str = "model.text_model.norm.weight";

#[test]
fn the_fixture_itself_loads() {
    let d = tied();
    Idefics3::load(d.path(), CpuBackend::new(ActDtype::F32, Some(1)).unwrap()).unwrap();
}

#[test]
fn missing_directory_and_files() {
    let d = tied();
    let e = load_err(&d.path().join("nope"));
    assert!(e.contains("nope") && e.contains("not found"), "{e}");

    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");

    let d = tied();
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn malformed_config_json() {
    let d = tied();
    std::fs::write(
        d.path().join("config.json"),
        "{\"model_type\": \"idefics3\",",
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors() {
    let d = tied();
    let path = d.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    std::fs::write(&path, &bytes[..5]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn wrong_shape() {
    let d = tied();
    rewrite(d.path(), |m| {
        m.insert(NORM.into(), (Dtype::F16, vec![81], vec![0; 162]));
    });
    let e = load_err(d.path());
    assert!(
        e.contains(NORM) && e.contains("[81]") && e.contains("[80]"),
        "{e}"
    );
}

#[test]
fn wrong_dtype() {
    let d = tied();
    rewrite(d.path(), |m| {
        m.insert(NORM.into(), (Dtype::I32, vec![80], vec![0; 320]));
    });
    let e = load_err(d.path());
    assert!(e.contains(NORM) && e.contains("I32"), "{e}");
}

#[test]
fn missing_and_unexpected_tensors() {
    let d = tied();
    let up = "model.text_model.layers.1.mlp.up_proj.weight";
    rewrite(d.path(), |m| {
        m.remove(up);
    });
    let e = load_err(d.path());
    assert!(e.contains(up) && e.contains("missing"), "{e}");

    let d = tied();
    rewrite(d.path(), |m| {
        m.insert(
            "model.text_model.layers.7.mlp.up_proj.weight".into(),
            (Dtype::F16, vec![2], vec![0; 4]),
        );
    });
    let e = load_err(d.path());
    assert!(
        e.contains("layers.7.mlp.up_proj.weight") && e.contains("unexpected"),
        "{e}"
    );
}

#[test]
fn config_that_contradicts_the_weights() {
    let d = tied();
    let path = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["text_config"]["intermediate_size"] = 100.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("mlp") && e.contains("contradicts") && e.contains("100"),
        "{e}"
    );

    // An untied config over a checkpoint that has no lm_head.
    let d = tied();
    let path = d.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["tie_word_embeddings"] = false.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");
}

#[test]
fn sharded_checkpoint_with_a_missing_shard() {
    let d = copy_dir(&fixture("idefics3_like").join("model"));
    std::fs::remove_file(d.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00003.safetensors"), "{e}");
}

#[test]
fn image_token_count_must_match_the_features() {
    let dir = fixture("idefics3_like");
    let mut inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
    let model = Idefics3::load(
        &dir.join("model"),
        CpuBackend::new(ActDtype::F32, Some(1)).unwrap(),
    )
    .unwrap();
    let img = model.config().image_token_id;
    let pos = inputs.input_ids.iter().position(|&t| t == img).unwrap();
    inputs.input_ids.remove(pos);
    let mut cache = model.new_cache(inputs.input_ids.len()).unwrap();
    let e = model
        .prefill(&inputs.input_ids, inputs.pixels.as_ref(), &mut cache, false)
        .err()
        .expect("a count mismatch must fail")
        .to_string();
    // 3 real tiles × 16 tokens = 48 features, 47 tokens left.
    assert!(e.contains("47") && e.contains("48"), "{e}");

    let e = model
        .prefill(&[0, 5000], None, &mut model.new_cache(2).unwrap(), false)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("5000"), "{e}");
}

#[test]
fn forward_cli_fails_cleanly_without_output() {
    let dir = fixture("smolvlm_like");
    let tmp = tempfile::tempdir().unwrap();
    // Inputs whose pixel mask does not match the pixel values.
    let bytes = std::fs::read(dir.join("inputs.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let pv = st.tensor("pixel_values").unwrap();
    let mask =
        safetensors::tensor::TensorView::new(Dtype::BOOL, vec![1, 1, 4, 4], &[1u8; 16]).unwrap();
    let bad = safetensors::serialize(
        vec![
            ("input_ids", ids),
            ("pixel_values", pv),
            ("pixel_attention_mask", mask),
        ],
        None,
    )
    .unwrap();
    let inputs = tmp.path().join("bad.safetensors");
    std::fs::write(&inputs, bad).unwrap();
    let out = tmp.path().join("out.safetensors");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_idefics3"))
        .args(["forward", "--model"])
        .arg(dir.join("model"))
        .arg("--inputs")
        .arg(&inputs)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("pixel_attention_mask") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no stray temporary file"
    );
}
