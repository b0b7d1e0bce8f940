//! The C ABI (`include/idefics3.h` is its header). A loaded model is shared read-only: several threads
//! may call [`idefics3_generate`] on one model at once, each call with its own KV cache. Panics never
//! cross the boundary; NULL pointers, invalid UTF-8 and bad values return error codes, with a message
//! in [`idefics3_last_error`] (per thread).

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use crate::backend::{ActDtype, BackendKind};
use crate::engine::{Conversation, Engine, EngineOptions};
use crate::error::Error;
use crate::limits::check_conversation_bytes;
use crate::processor::image::{RgbImage, MAX_PIXELS};
use crate::processor::{AnyImage, ImageFile};

/// Success.
pub const IDEFICS3_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const IDEFICS3_ERR_NULL_ARGUMENT: i32 = 1;
/// A string argument is not valid UTF-8.
pub const IDEFICS3_ERR_INVALID_UTF8: i32 = 2;
/// An argument has a value outside its range (sampling settings, image fields, options).
pub const IDEFICS3_ERR_INVALID_ARGUMENT: i32 = 3;
/// A file could not be read.
pub const IDEFICS3_ERR_IO: i32 = 4;
/// The checkpoint is invalid (configuration, weights, tokenizer files).
pub const IDEFICS3_ERR_MODEL: i32 = 5;
/// The request cannot be processed (undecodable image, image count, prompt, chat, context length).
pub const IDEFICS3_ERR_INPUT: i32 = 6;
/// An internal error (a bug): the call was abandoned safely.
pub const IDEFICS3_ERR_INTERNAL: i32 = 7;
/// The device backend failed or is unavailable (runtime missing, device call failed, not supported).
pub const IDEFICS3_ERR_DEVICE: i32 = 8;

/// Backend for [`Idefics3LoadOptions::backend`]: the CPU (the default).
pub const IDEFICS3_BACKEND_CPU: u32 = 0;
/// An Ascend NPU through the CANN runtime.
pub const IDEFICS3_BACKEND_ASCEND: u32 = 1;

/// Activation precision for [`Idefics3LoadOptions::dtype`]: the default (bf16).
pub const IDEFICS3_DTYPE_DEFAULT: u32 = 0;
/// f32 activations (the exact reference).
pub const IDEFICS3_DTYPE_F32: u32 = 1;
/// bf16 activations, as transformers in bfloat16.
pub const IDEFICS3_DTYPE_BF16: u32 = 2;
/// IEEE half activations, as transformers in float16.
pub const IDEFICS3_DTYPE_F16: u32 = 3;

/// How to load a model; zero fields mean defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Idefics3LoadOptions {
    /// `IDEFICS3_DTYPE_*`.
    pub dtype: u32,
    /// Worker threads of the CPU backend; 0: one per core.
    pub threads: u32,
    /// `IDEFICS3_BACKEND_*`; 0: the CPU.
    pub backend: u32,
    /// Device number for the Ascend backend; 0: the first.
    pub device: u32,
}

/// One image: a file path, encoded bytes in memory, or raw RGB8 pixels; exactly one of `path`,
/// `data`, `rgb` must be set (non-NULL), else the call fails with `IDEFICS3_ERR_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Idefics3Image {
    /// A file (PNG, JPEG, WebP, GIF, BMP), or NULL.
    pub path: *const c_char,
    /// Encoded bytes in memory, or NULL.
    pub data: *const u8,
    /// The size in bytes of the buffer `data` or `rgb` points to; for `rgb` it must equal
    /// `width·height·3` exactly (checked before the buffer is read).
    pub len: usize,
    /// Raw RGB8 pixels, row-major, `width·height·3` bytes, or NULL.
    pub rgb: *const u8,
    /// Width of `rgb`.
    pub width: u32,
    /// Height of `rgb`.
    pub height: u32,
}

/// A generation request; zero or NULL fields mean their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Idefics3Request {
    /// One user turn through the chat template (images first, then this text), or NULL.
    pub prompt: *const c_char,
    /// A whole conversation in transformers' message format (JSON), or NULL.
    pub chat_json: *const c_char,
    /// The images, in order.
    pub images: *const Idefics3Image,
    /// Number of images.
    pub n_images: usize,
    /// Most new tokens; 0: the model's default.
    pub max_new_tokens: u32,
    /// Sampling temperature; 0: greedy.
    pub temperature: f32,
    /// Top-k when sampling; 0: 50 (transformers' default).
    pub top_k: u32,
    /// Top-p when sampling; 0: 1 (no limit).
    pub top_p: f32,
    /// Repetition penalty; 0: 1 (none).
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

/// Called with each new piece of UTF-8 text; return false to stop generating.
pub type Idefics3TokenCallback =
    Option<unsafe extern "C" fn(piece: *const c_char, user_data: *mut c_void) -> bool>;

/// A loaded model (opaque to C).
pub struct Idefics3Model {
    engine: Engine,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn fail(code: i32, msg: impl AsRef<str>) -> i32 {
    set_error(msg.as_ref());
    code
}

fn code_of(e: &Error) -> i32 {
    match e {
        Error::Io { .. } => IDEFICS3_ERR_IO,
        Error::Json { .. }
        | Error::Config { .. }
        | Error::Safetensors { .. }
        | Error::Tensor { .. } => IDEFICS3_ERR_MODEL,
        Error::Input(_) => IDEFICS3_ERR_INPUT,
        // Inconsistent operands reaching an op are a bug of the engine, not of the request.
        Error::Op { .. } => IDEFICS3_ERR_INTERNAL,
        Error::Device { .. } | Error::Unsupported(_) => IDEFICS3_ERR_DEVICE,
    }
}

/// Runs `f`, turning panics into `IDEFICS3_ERR_INTERNAL`.
fn guard(f: impl FnOnce() -> i32) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => {
            if code == IDEFICS3_OK {
                set_error("");
            }
            code
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            fail(IDEFICS3_ERR_INTERNAL, format!("internal error: {msg}"))
        }
    }
}

/// A C string argument as UTF-8; `what` names it in errors.
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, i32> {
    if p.is_null() {
        return Err(fail(IDEFICS3_ERR_NULL_ARGUMENT, format!("{what} is NULL")));
    }
    CStr::from_ptr(p).to_str().map_err(|e| {
        fail(
            IDEFICS3_ERR_INVALID_UTF8,
            format!("{what} is not valid UTF-8: {e}"),
        )
    })
}

/// Loads a checkpoint directory. `options` may be NULL (defaults). On success `*out_model` owns the
/// model; free it with [`idefics3_model_free`].
///
/// # Safety
/// `model_dir` must be a NUL-terminated string; `options` NULL or valid; `out_model` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn idefics3_model_load(
    model_dir: *const c_char,
    options: *const Idefics3LoadOptions,
    out_model: *mut *mut Idefics3Model,
) -> i32 {
    guard(|| {
        if out_model.is_null() {
            return fail(IDEFICS3_ERR_NULL_ARGUMENT, "out_model is NULL");
        }
        *out_model = std::ptr::null_mut();
        let dir = match str_arg(model_dir, "model_dir") {
            Ok(d) => d,
            Err(c) => return c,
        };
        let opts = if options.is_null() {
            Idefics3LoadOptions::default()
        } else {
            *options
        };
        let dtype = match opts.dtype {
            IDEFICS3_DTYPE_DEFAULT | IDEFICS3_DTYPE_BF16 => ActDtype::Bf16,
            IDEFICS3_DTYPE_F32 => ActDtype::F32,
            IDEFICS3_DTYPE_F16 => ActDtype::F16,
            other => {
                return fail(
                    IDEFICS3_ERR_INVALID_ARGUMENT,
                    format!("options.dtype {other} is not an IDEFICS3_DTYPE_* value"),
                )
            }
        };
        let threads = (opts.threads > 0).then_some(opts.threads as usize);
        if let Err(e) = crate::backend::cpu::resolve_threads(threads) {
            return fail(
                IDEFICS3_ERR_INVALID_ARGUMENT,
                e.within("options.threads").to_string(),
            );
        }
        let backend = match opts.backend {
            IDEFICS3_BACKEND_CPU => BackendKind::Cpu,
            IDEFICS3_BACKEND_ASCEND => BackendKind::Ascend,
            other => {
                return fail(
                    IDEFICS3_ERR_INVALID_ARGUMENT,
                    format!("options.backend {other} is not an IDEFICS3_BACKEND_* value"),
                )
            }
        };
        let opts = EngineOptions {
            dtype,
            threads,
            backend,
            device: opts.device,
            ..EngineOptions::default()
        };
        match Engine::load(Path::new(dir), opts) {
            Ok(engine) => {
                *out_model = Box::into_raw(Box::new(Idefics3Model { engine }));
                IDEFICS3_OK
            }
            Err(e) => fail(code_of(&e), e.to_string()),
        }
    })
}

/// Frees a model; NULL is a no-op.
///
/// # Safety
/// `model` must be NULL or a pointer from [`idefics3_model_load`] not freed before, with no call using
/// it still running.
#[no_mangle]
pub unsafe extern "C" fn idefics3_model_free(model: *mut Idefics3Model) {
    if !model.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(model))));
    }
}

unsafe fn image_arg(img: &Idefics3Image, i: usize) -> Result<AnyImage, i32> {
    let what = format!("images[{i}]");
    let sources: Vec<&str> = [
        (!img.path.is_null(), "path"),
        (!img.data.is_null(), "data"),
        (!img.rgb.is_null(), "rgb"),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|&(_, name)| name)
    .collect();
    match sources.len() {
        0 => {
            return Err(fail(
                IDEFICS3_ERR_NULL_ARGUMENT,
                format!("{what} has none of path, data, rgb"),
            ))
        }
        1 => {}
        _ => {
            return Err(fail(
                IDEFICS3_ERR_INVALID_ARGUMENT,
                format!(
                    "{what} sets {}; set exactly one of path, data, rgb",
                    sources.join(" and ")
                ),
            ))
        }
    }
    if !img.path.is_null() {
        let p = str_arg(img.path, &format!("{what}.path"))?;
        return ImageFile::open(Path::new(p))
            .map(AnyImage::File)
            .map_err(|e| fail(code_of(&e), e.to_string()));
    }
    if !img.data.is_null() {
        if img.len == 0 {
            return Err(fail(
                IDEFICS3_ERR_INVALID_ARGUMENT,
                format!("{what}.len is 0"),
            ));
        }
        let bytes = std::slice::from_raw_parts(img.data, img.len);
        return ImageFile::from_bytes(bytes.to_vec(), what)
            .map(AnyImage::File)
            .map_err(|e| fail(IDEFICS3_ERR_INPUT, e.to_string()));
    }
    // Every check comes before the buffer is touched: the pixel limit bounds width·height, so the
    // byte count below cannot overflow, and `len` must be exactly that count.
    let needed = raw_rgb_len(img.width, img.height)
        .map_err(|e| fail(IDEFICS3_ERR_INVALID_ARGUMENT, format!("{what}: {e}")))?;
    if img.len != needed {
        return Err(fail(
            IDEFICS3_ERR_INVALID_ARGUMENT,
            format!(
                "{what}.len is {} but a {}×{} RGB image needs width·height·3 = {needed} bytes",
                img.len, img.width, img.height
            ),
        ));
    }
    let pixels = std::slice::from_raw_parts(img.rgb, needed).to_vec();
    RgbImage::from_raw(img.width as usize, img.height as usize, pixels)
        .map(AnyImage::Rgb)
        .map_err(|e| fail(IDEFICS3_ERR_INVALID_ARGUMENT, e.within(&what).to_string()))
}

/// The byte count of a raw RGB8 image of `width × height` pixels, after the pixel limit.
fn raw_rgb_len(width: u32, height: u32) -> Result<usize, String> {
    if width == 0 || height == 0 {
        return Err("width and height must be non-zero".into());
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "{width}×{height} = {pixels} pixels exceeds the limit of {MAX_PIXELS}"
        ));
    }
    pixels
        .checked_mul(3)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{width}×{height}×3 bytes do not fit in memory"))
}

/// Text that can cross into C: interior NULs (never produced by real tokenizers) become U+FFFD.
fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{fffd}")).unwrap_or_default()
}

/// Generates an answer. `on_token` (may be NULL) receives each new piece of UTF-8 text and may stop
/// generation by returning false; the text generated so far is still returned. On success `*out_text`
/// holds the whole answer; free it with [`idefics3_string_free`].
///
/// # Safety
/// `model` must come from [`idefics3_model_load`]; `request` must point to a valid request whose
/// strings are NUL-terminated and whose `images` array has `n_images` entries; `out_text` must be
/// a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn idefics3_generate(
    model: *mut Idefics3Model,
    request: *const Idefics3Request,
    on_token: Idefics3TokenCallback,
    user_data: *mut c_void,
    out_text: *mut *mut c_char,
) -> i32 {
    guard(|| {
        if out_text.is_null() {
            return fail(IDEFICS3_ERR_NULL_ARGUMENT, "out_text is NULL");
        }
        *out_text = std::ptr::null_mut();
        if model.is_null() {
            return fail(IDEFICS3_ERR_NULL_ARGUMENT, "model is NULL");
        }
        if request.is_null() {
            return fail(IDEFICS3_ERR_NULL_ARGUMENT, "request is NULL");
        }
        let engine = &(*model).engine;
        let req = &*request;
        let conversation = match (req.prompt.is_null(), req.chat_json.is_null()) {
            (false, true) => match str_arg(req.prompt, "request.prompt") {
                Ok(p) => {
                    if let Err(e) = check_conversation_bytes(p.len() as u64, "request.prompt") {
                        return fail(IDEFICS3_ERR_INPUT, e.to_string());
                    }
                    Conversation::Prompt(p.to_string())
                }
                Err(c) => return c,
            },
            (true, false) => {
                let text = match str_arg(req.chat_json, "request.chat_json") {
                    Ok(t) => t,
                    Err(c) => return c,
                };
                if let Err(e) = check_conversation_bytes(text.len() as u64, "request.chat_json") {
                    return fail(IDEFICS3_ERR_INPUT, e.to_string());
                }
                match serde_json::from_str(text) {
                    Ok(v) => Conversation::Chat(v),
                    Err(e) => {
                        return fail(
                            IDEFICS3_ERR_INPUT,
                            format!("request.chat_json is not valid JSON: {e}"),
                        )
                    }
                }
            }
            (true, true) => {
                return fail(
                    IDEFICS3_ERR_NULL_ARGUMENT,
                    "request has neither prompt nor chat_json",
                )
            }
            (false, false) => {
                return fail(
                    IDEFICS3_ERR_INVALID_ARGUMENT,
                    "request has both prompt and chat_json; set one",
                )
            }
        };
        if req.n_images > 0 && req.images.is_null() {
            return fail(
                IDEFICS3_ERR_NULL_ARGUMENT,
                "request.images is NULL but n_images > 0",
            );
        }
        let most = engine.processor().max_images();
        if req.n_images > most {
            return fail(
                IDEFICS3_ERR_INPUT,
                format!(
                    "request.n_images is {}, but the model's context holds at most {most} images",
                    req.n_images
                ),
            );
        }
        let mut images = Vec::with_capacity(req.n_images);
        for i in 0..req.n_images {
            match image_arg(&*req.images.add(i), i) {
                Ok(img) => images.push(img),
                Err(c) => return c,
            }
        }
        let mut params = engine.default_params();
        if req.max_new_tokens > 0 {
            params.max_new_tokens = req.max_new_tokens as usize;
        }
        params.temperature = req.temperature;
        if req.temperature > 0.0 {
            params.top_k = if req.top_k == 0 {
                50
            } else {
                req.top_k as usize
            };
            params.top_p = if req.top_p == 0.0 { 1.0 } else { req.top_p };
        }
        if req.repetition_penalty != 0.0 {
            params.repetition_penalty = req.repetition_penalty;
        }
        params.seed = req.seed;
        if let Err(e) = params.validate() {
            return fail(IDEFICS3_ERR_INVALID_ARGUMENT, e.to_string());
        }
        let encoded = match engine.encode(&conversation, &images) {
            Ok(e) => e,
            Err(e) => return fail(code_of(&e), e.to_string()),
        };
        let answer = engine.generate(&encoded, &params, |piece| match on_token {
            Some(cb) => {
                let c = c_text(piece);
                cb(c.as_ptr(), user_data)
            }
            None => true,
        });
        match answer {
            Ok(a) => {
                *out_text = c_text(&a.text).into_raw();
                IDEFICS3_OK
            }
            Err(e) => fail(code_of(&e), e.to_string()),
        }
    })
}

/// Frees a string returned by [`idefics3_generate`]; NULL is a no-op.
///
/// # Safety
/// `text` must be NULL or a string from this library not freed before.
#[no_mangle]
pub unsafe extern "C" fn idefics3_string_free(text: *mut c_char) {
    if !text.is_null() {
        drop(CString::from_raw(text));
    }
}

/// This thread's last failure as UTF-8 (empty when the last call succeeded). Valid until the next call
/// into the library on this thread; never NULL.
#[no_mangle]
pub extern "C" fn idefics3_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn idefics3_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
