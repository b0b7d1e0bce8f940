//! `forward --inputs` files of arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inputs.safetensors");
    std::fs::write(&path, data).unwrap();
    if let Ok(inputs) = idefics3::tensor_io::read_inputs(&path) {
        if let Some(px) = inputs.pixels {
            assert_eq!(px.values.len(), px.tiles * px.channels * px.size * px.size);
        }
    }
});
