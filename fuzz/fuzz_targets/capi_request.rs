//! The C ABI's request validation: image fields (path / data / rgb, width, height, len) and request
//! fields from arbitrary bytes, with buffers exactly as long as `len` says, against the tiny SmolVLM
//! fixture (at most one new token).
#![no_main]
use std::ffi::{CStr, CString};
use std::sync::OnceLock;

use idefics3::capi::*;
use libfuzzer_sys::fuzz_target;

struct Model(*mut Idefics3Model);
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let dir = CString::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/processor/smolvlm_style"
        ))
        .unwrap();
        let opts = Idefics3LoadOptions {
            dtype: IDEFICS3_DTYPE_F32,
            threads: 1,
            backend: IDEFICS3_BACKEND_CPU,
            device: 0,
        };
        let mut m = std::ptr::null_mut();
        let rc = unsafe { idefics3_model_load(dir.as_ptr(), &opts, &mut m) };
        assert_eq!(rc, IDEFICS3_OK);
        Model(m)
    })
}

fn u32_at(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let flags = data[0];
    let (w, h) = (u32_at(data, 1) % 4096, u32_at(data, 5) % 4096);
    let len = u32_at(data, 9) as usize % (1 << 16);
    let body = &data[13..];
    // The buffer really is `len` bytes long: the library must never read past it.
    let buf: Vec<u8> = body.iter().copied().cycle().take(len).collect();
    let path = CString::new("/nonexistent/x.png").unwrap();
    let mut img = Idefics3Image {
        path: std::ptr::null(),
        data: std::ptr::null(),
        len,
        rgb: std::ptr::null(),
        width: w,
        height: h,
    };
    if flags & 1 != 0 {
        img.path = path.as_ptr();
    }
    if flags & 2 != 0 && !buf.is_empty() {
        img.data = buf.as_ptr();
    }
    if flags & 4 != 0 && !buf.is_empty() {
        img.rgb = buf.as_ptr();
    }
    let prompt = CString::new(String::from_utf8_lossy(body).replace('\0', " ")).unwrap();
    let req = Idefics3Request {
        prompt: prompt.as_ptr(),
        chat_json: std::ptr::null(),
        images: &img,
        n_images: if flags & 8 != 0 { 1 } else { 0 },
        max_new_tokens: 1,
        temperature: if flags & 16 != 0 {
            f32::from_bits(u32_at(data, 1))
        } else {
            0.0
        },
        top_k: 0,
        top_p: 0.0,
        repetition_penalty: 0.0,
        seed: 0,
    };
    let mut out = std::ptr::null_mut();
    let rc = unsafe { idefics3_generate(model().0, &req, None, std::ptr::null_mut(), &mut out) };
    if rc == IDEFICS3_OK {
        unsafe { idefics3_string_free(out) };
    } else {
        assert!(out.is_null());
        let msg = unsafe { CStr::from_ptr(idefics3_last_error()) };
        assert!(!msg.to_bytes().is_empty());
        assert_ne!(rc, IDEFICS3_ERR_INTERNAL, "{msg:?}");
    }
});
