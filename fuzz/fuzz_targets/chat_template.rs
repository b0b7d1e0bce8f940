//! A chat template and a conversation of arbitrary text (split at the first NUL byte).
#![no_main]
use idefics3::processor::prompt::{count_image_items, render_chat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, chat) = text.split_once('\0').unwrap_or((text, "[]"));
    let messages: serde_json::Value = match serde_json::from_str(chat) {
        Ok(v) => v,
        Err(_) => {
            serde_json::json!([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": chat}]}])
        }
    };
    if count_image_items(&messages).is_err() {
        return;
    }
    let special = serde_json::json!({"bos_token": "<s>", "eos_token": "</s>"});
    let _ = render_chat(template, &messages, true, &special);
});
