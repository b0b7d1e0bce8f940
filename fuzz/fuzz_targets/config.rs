//! config.json, preprocessor / processor settings and generation_config.json of arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = idefics3::config::ModelConfig::from_json_str(text, "config.json") else {
        return;
    };
    // A configuration that resolves must give an expected-tensor list of bounded size.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("preprocessor_config.json"), text).unwrap();
    std::fs::write(dir.path().join("generation_config.json"), text).unwrap();
    let _ = idefics3::config::ProcessorConfig::from_dir(dir.path(), &config);
    let _ = idefics3::config::GenerationConfig::from_dir(dir.path());
    let _ = config.image_seq_len();
});
