//! tokenizer.json of arbitrary bytes: loading, then encoding and decoding a short text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // libFuzzer's panic hook aborts even on panics that `parse_tokenizer` catches (the tokenizers
    // crate panics on some malformed files); a panic that escapes still aborts, as libfuzzer-sys
    // treats the unwinding closure as a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let path = std::path::Path::new("tokenizer.json");
    if let Ok(t) = idefics3::processor::parse_tokenizer(data, path) {
        if let Ok(enc) = t.encode("User:<image>Hello, world!", true) {
            let _ = t.decode(enc.get_ids(), true);
        }
    }
});
