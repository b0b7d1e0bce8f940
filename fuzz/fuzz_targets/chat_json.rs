//! The `--chat` / `chat_json` text: parsing and the message checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = idefics3::processor::prompt::count_image_items(&v);
    }
});
