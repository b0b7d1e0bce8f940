//! Images and prompts to model inputs, compared with transformers' Idefics3Processor on its PIL path
//! (`load_image`, then the processor): input_ids identical, pixel_values bit-identical (sha256 of the
//! little-endian f32 bytes), on fixtures from scripts/make_processor_fixtures.py.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use idefics3::config::{ImageProcessorConfig, ModelConfig, ResizeTarget};
use idefics3::processor::image::load_image_file;
use idefics3::processor::tiling::process_image;
use idefics3::processor::{prompt::user_turn, Processor};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    common::fixture("processor")
}

fn sha256_f32(values: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn processor(checkpoint: &str) -> Processor {
    let dir = root().join(checkpoint);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    Processor::load(&dir, &cfg).unwrap()
}

#[test]
fn every_case_matches_transformers() {
    let cases: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join("cases.json")).unwrap()).unwrap();
    assert!(
        cases.len() >= 40,
        "expected the full case list, found {}",
        cases.len()
    );
    let mut procs = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, case) in &cases {
        let ck = case["checkpoint"].as_str().unwrap().to_string();
        let proc = procs.entry(ck.clone()).or_insert_with(|| processor(&ck));
        let images: Vec<_> = case["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| load_image_file(&root().join("images").join(f.as_str().unwrap())).unwrap())
            .collect();
        let text = proc
            .apply_chat_template(
                &user_turn(case["prompt"].as_str().unwrap(), images.len()),
                true,
            )
            .unwrap();
        let enc = proc.encode(&text, &images).unwrap();
        let want_ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        if enc.input_ids != want_ids {
            failures.push(format!(
                "{name}: input_ids differ ({} vs {} tokens)",
                enc.input_ids.len(),
                want_ids.len()
            ));
        }
        match (&enc.pixels, case.get("pixel_values_sha256")) {
            (Some(px), Some(want)) => {
                let shape: Vec<usize> = case["pixel_values_shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                let got_shape = vec![1, px.tiles, px.channels, px.size, px.size];
                if got_shape != shape {
                    failures.push(format!(
                        "{name}: pixel_values shape {got_shape:?} vs {shape:?}"
                    ));
                } else if sha256_f32(&px.values) != want.as_str().unwrap() {
                    let u8_sum: i64 = px
                        .values
                        .iter()
                        .map(|v| ((v * 0.5 + 0.5) * 255.0).round() as i64)
                        .sum();
                    failures.push(format!(
                        "{name}: pixel_values differ (level sum {u8_sum} vs {})",
                        case["pixel_values_u8_sum"]
                    ));
                }
                assert!(px.mask.as_ref().unwrap().iter().all(|&m| m), "{name}: mask");
            }
            (None, None) => {}
            _ => failures.push(format!("{name}: pixel_values presence differs")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The example photos at the real checkpoints' settings (Idefics3-8B 1456/364, SmolVLM 2048/512).
#[test]
fn example_photos_at_full_size_match_transformers() {
    let expected: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(root().join("realistic.json")).unwrap())
            .unwrap();
    assert_eq!(expected.len(), 8);
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    for (key, e) in &expected {
        let file = key.split('/').nth(1).unwrap();
        let cfg = ImageProcessorConfig {
            size: ResizeTarget::LongestEdge(e["longest_edge"].as_u64().unwrap() as usize),
            max_image_size: e["tile"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let img = load_image_file(&examples.join(file)).unwrap();
        let t = process_image(&img, &cfg);
        assert_eq!(
            (t.rows as u64, t.cols as u64),
            (e["rows"].as_u64().unwrap(), e["cols"].as_u64().unwrap()),
            "{key}"
        );
        let all: Vec<f32> = t.tiles.concat();
        assert_eq!(
            sha256_f32(&all),
            e["sha256"].as_str().unwrap(),
            "{key}: pixel_values differ"
        );
    }
}

#[test]
fn bad_images_and_prompts_are_clear_errors() {
    let proc = processor("llama3_style");
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("broken.png");
    let good = std::fs::read(root().join("images/one_tile.png")).unwrap();
    std::fs::write(&corrupt, &good[..good.len() / 2]).unwrap();
    let e = load_image_file(&corrupt).unwrap_err().to_string();
    assert!(e.contains("broken.png"), "{e}");
    let unknown = dir.path().join("notes.txt");
    std::fs::write(&unknown, "hello").unwrap();
    let e = load_image_file(&unknown).unwrap_err().to_string();
    assert!(e.contains("unknown image format"), "{e}");
    let e = load_image_file(&dir.path().join("missing.png"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.png"), "{e}");
    // A 0×0 BMP header.
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&[0; 12]);
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&[0; 8]);
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    let zero = dir.path().join("zero.bmp");
    std::fs::write(&zero, bmp).unwrap();
    assert!(load_image_file(&zero).is_err());

    let img = load_image_file(&root().join("images/one_tile.png")).unwrap();
    let text = proc.apply_chat_template(&user_turn("hi", 2), true).unwrap();
    let e = proc.encode(&text, &[img]).unwrap_err().to_string();
    assert!(
        e.contains("2 <image> marker") && e.contains("1 image"),
        "{e}"
    );
    let e = proc
        .apply_chat_template(&serde_json::json!([{"role": "user", "content": 5}]), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("content"), "{e}");
}
