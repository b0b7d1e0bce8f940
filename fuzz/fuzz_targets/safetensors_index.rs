//! A sharded checkpoint's index of arbitrary bytes beside one small valid shard.
#![no_main]
use libfuzzer_sys::fuzz_target;

const SHARD: &[u8] = include_bytes!("../seeds/shard.safetensors");

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.safetensors"), SHARD).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, data).unwrap();
    let _ = idefics3::weights::Checkpoint::open_index(&index);
});
