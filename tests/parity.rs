//! Parity with Hugging Face transformers (5.24, torch 2.15) on tiny random checkpoints made by
//! scripts/make_fixtures.py: logits of every prompt position, image features and greedy tokens,
//! in f32 and in bf16; fp16 against the f32 reference within f16's own rounding.

mod common;

use common::*;
use idefics3::backend::{cpu::CpuBackend, ActDtype, Backend};
use idefics3::generate::greedy;
use idefics3::model::Idefics3;
use idefics3::tensor_io::read_inputs;

#[path = "common/parity_checks.rs"]
mod checks;

use checks::{check_bf16, check_f16, check_f32, expected, Run, N};

fn run(case: &str, dtype: ActDtype) -> Run {
    let dir = fixture(case);
    let inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
    let model = Idefics3::load(&dir.join("model"), CpuBackend::new(dtype, None).unwrap()).unwrap();
    let out = greedy(&model, &inputs.input_ids, inputs.pixels.as_ref(), N, true).unwrap();
    Run {
        logits: out.prompt_logits,
        features: out.image_features,
        ids: out.ids.iter().map(|&i| i as i64).collect(),
    }
}

#[test]
fn f32_matches_transformers() {
    for case in CASES {
        check_f32(case, run(case, ActDtype::F32));
    }
}

#[test]
fn bf16_matches_transformers_bf16() {
    for case in CASES {
        check_bf16(case, run(case, ActDtype::Bf16));
    }
}

#[test]
fn f16_is_within_f16_rounding_of_transformers_f32() {
    for case in CASES {
        check_f16(case, run(case, ActDtype::F16));
    }
}

/// The `forward` command writes the same tensors the library computes, and nothing on failure.
#[test]
fn forward_cli_writes_logits_features_and_tokens() {
    let case = "idefics3_like";
    let dir = fixture(case);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_idefics3"))
        .args(["forward", "--model"])
        .arg(dir.join("model"))
        .arg("--inputs")
        .arg(dir.join("inputs.safetensors"))
        .arg("--out")
        .arg(&out)
        .args(["--greedy", "16", "--threads", "2"])
        .status()
        .unwrap();
    assert!(status.success());
    let logits = load(&out, "logits").unwrap();
    let want = expected(case, "f32", "logits").unwrap();
    assert_eq!(logits.shape, want.shape);
    assert!(rel_max_err(&logits.f32, &want.f32) < 1e-4);
    let feats = load(&out, "image_features").unwrap();
    assert_eq!(
        feats.shape,
        expected(case, "f32", "image_features").unwrap().shape
    );
    let ids = load(&out, "generated_ids").unwrap();
    assert_eq!(ids.shape, vec![16]);
    assert_eq!(
        ids.i64,
        expected(case, "f32", "generated_ids").unwrap().i64[..16]
    );
}

/// The vision tower encodes tiles a few at a time. Any grouping (one, two or all of the 3 real tiles
/// per group) must meet the same bounds against transformers as the default, and grouping keeps the
/// tiles in order. (Bits may differ across groupings: a group of one small fixture tile has so few
/// connector rows that its product takes the matrix-vector kernel, which sums in another order.)
#[test]
fn image_features_match_transformers_for_any_tile_grouping() {
    for case in ["idefics3_like", "smolvlm_like"] {
        let dir = fixture(case);
        let inputs = read_inputs(&dir.join("inputs.safetensors")).unwrap();
        let px = inputs.pixels.as_ref().unwrap();
        for (dtype, mode, bound) in [(ActDtype::F32, "f32", 1e-4), (ActDtype::Bf16, "bf16", 0.03)] {
            let want = expected(case, mode, "image_features").unwrap().f32;
            let model =
                Idefics3::load(&dir.join("model"), CpuBackend::new(dtype, Some(2)).unwrap())
                    .unwrap();
            let b = model.backend();
            for group in [1, 2, 64] {
                let got = b
                    .download(&model.image_features_grouped(px, group).unwrap().unwrap())
                    .unwrap();
                assert_eq!(got.len(), want.len(), "{case} {mode} group {group}: shape");
                let err = rel_max_err(&got, &want);
                assert!(
                    err < bound,
                    "{case} {mode} group {group}: features differ by {err}"
                );
            }
        }
    }
}
