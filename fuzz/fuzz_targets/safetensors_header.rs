//! A safetensors file of arbitrary bytes: opening it is an error or a checkpoint, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, data).unwrap();
    if let Ok(ck) = idefics3::weights::Checkpoint::open_files(&[path]) {
        // Every tensor's byte range must lie inside its file.
        for name in ck.names() {
            let t = ck.get(name).unwrap();
            let _ = t.bytes().len();
        }
        let _ = ck.layers_present("model.text_model.layers.");
    }
});
