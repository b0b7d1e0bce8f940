//! tokenizer.json of arbitrary bytes: loading, then encoding and decoding a short text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("tokenizer.json");
    if let Ok(t) = idefics3::processor::parse_tokenizer(data, path) {
        if let Ok(enc) = t.encode("User:<image>Hello, world!", true) {
            let _ = t.decode(enc.get_ids(), true);
        }
    }
});
