//! Shared helpers of the aclnn tests: device set-up, buffers, tensors, the two-phase call, our own dtype
//! conversions (through `half`, not the simulator's code) and a small deterministic RNG.
#![allow(dead_code)]

use cann_sim::aclnn::executor::AclOpExecutor;
use cann_sim::aclnn::tensor::{aclCreateTensor, aclDestroyTensor, AclTensor};
use std::ffi::{c_void, CStr};
use std::ptr::null_mut;

pub const F32: i32 = 0;
pub const F16: i32 = 1;
pub const I8: i32 = 2;
pub const I32: i32 = 3;
pub const U8: i32 = 4;
pub const I64: i32 = 9;
pub const BOOL: i32 = 12;
pub const BF16: i32 = 27;
pub const ND: i32 = 2;

pub const NULLPTR: i32 = 161001;
pub const INVALID: i32 = 161002;
pub const TILING: i32 = 561002;

/// A context bound on this thread and a stream of its own.
pub struct Dev {
    pub stream: *mut c_void,
}

impl Drop for Dev {
    fn drop(&mut self) {
        unsafe { cann_sim::stream::aclrtDestroyStream(self.stream) };
    }
}

pub fn setup() -> Dev {
    unsafe {
        // A second aclInit in the same process reports "repeat initialize", which is fine here.
        let _ = cann_sim::runtime::aclInit(std::ptr::null());
        assert_eq!(
            cann_sim::runtime::aclrtSetDevice(0),
            0,
            "aclrtSetDevice: {}",
            recent()
        );
        let mut s = null_mut();
        assert_eq!(
            cann_sim::stream::aclrtCreateStream(&mut s),
            0,
            "aclrtCreateStream: {}",
            recent()
        );
        Dev { stream: s }
    }
}

pub fn recent() -> String {
    let p = cann_sim::errors::aclGetRecentErrMsg();
    if p.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Device memory that frees itself.
pub struct Buf {
    pub ptr: *mut c_void,
    pub bytes: usize,
}

impl Drop for Buf {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            unsafe { cann_sim::mem::aclrtFree(self.ptr) };
        }
    }
}

pub fn alloc(bytes: usize) -> Buf {
    let mut p = null_mut();
    let rc = unsafe { cann_sim::mem::aclrtMalloc(&mut p, bytes.max(1), 0) };
    assert_eq!(rc, 0, "aclrtMalloc({bytes}): {}", recent());
    Buf { ptr: p, bytes }
}

pub fn upload(data: &[u8]) -> Buf {
    let b = alloc(data.len());
    if !data.is_empty() {
        let rc = unsafe {
            cann_sim::copy::aclrtMemcpy(
                b.ptr,
                b.bytes,
                data.as_ptr() as *const c_void,
                data.len(),
                1,
            )
        };
        assert_eq!(rc, 0, "aclrtMemcpy H2D: {}", recent());
    }
    b
}

pub fn download(b: &Buf) -> Vec<u8> {
    let mut out = vec![0u8; b.bytes];
    if b.bytes > 0 {
        let rc = unsafe {
            cann_sim::copy::aclrtMemcpy(out.as_mut_ptr() as *mut c_void, b.bytes, b.ptr, b.bytes, 2)
        };
        assert_eq!(rc, 0, "aclrtMemcpy D2H: {}", recent());
    }
    out
}

pub fn size_of(dtype: i32) -> usize {
    match dtype {
        F32 | I32 => 4,
        F16 | BF16 => 2,
        I64 => 8,
        I8 | U8 | BOOL => 1,
        _ => panic!("dtype {dtype}"),
    }
}

/// Values rounded to `dtype` (round-to-nearest-even through `half`), encoded little-endian.
pub fn encode(vals: &[f64], dtype: i32) -> Vec<u8> {
    let mut out = Vec::new();
    for v in vals {
        match dtype {
            F32 => out.extend((*v as f32).to_le_bytes()),
            F16 => out.extend(half::f16::from_f32(*v as f32).to_bits().to_le_bytes()),
            BF16 => out.extend(half::bf16::from_f32(*v as f32).to_bits().to_le_bytes()),
            I32 => out.extend((*v as i32).to_le_bytes()),
            I64 => out.extend((*v as i64).to_le_bytes()),
            I8 => out.push(*v as i8 as u8),
            U8 | BOOL => out.push(*v as u8),
            _ => panic!("dtype {dtype}"),
        }
    }
    out
}

pub fn decode(bytes: &[u8], dtype: i32) -> Vec<f64> {
    bytes
        .chunks_exact(size_of(dtype))
        .map(|c| match dtype {
            F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
            F16 => half::f16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
            BF16 => half::bf16::from_bits(u16::from_le_bytes(c.try_into().unwrap())).to_f64(),
            I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
            I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
            I8 => c[0] as i8 as f64,
            U8 | BOOL => c[0] as f64,
            _ => panic!("dtype {dtype}"),
        })
        .collect()
}

/// Rounds through `dtype` (what a value looks like once stored).
pub fn round(v: f64, dtype: i32) -> f64 {
    decode(&encode(&[v], dtype), dtype)[0]
}

/// A device tensor: its descriptor and the storage it views.
pub struct T {
    pub h: *mut AclTensor,
    pub buf: Buf,
    pub dtype: i32,
    pub dims: Vec<i64>,
}

impl Drop for T {
    fn drop(&mut self) {
        if !self.h.is_null() {
            unsafe { aclDestroyTensor(self.h) };
        }
    }
}

impl T {
    /// The whole storage, decoded.
    pub fn storage(&self) -> Vec<f64> {
        decode(&download(&self.buf), self.dtype)
    }
    /// Gives up ownership of the descriptor (for tensor lists, which own theirs).
    pub fn release(&mut self) -> *mut AclTensor {
        std::mem::replace(&mut self.h, null_mut())
    }
}

pub fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
    let mut s = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1].max(1);
    }
    s
}

/// A view over an explicit storage (values of the whole storage, row-major 1-D).
pub fn view(storage: &[f64], dims: &[i64], strides: &[i64], offset: i64, dtype: i32) -> T {
    let buf = upload(&encode(storage, dtype));
    let sd = [storage.len() as i64];
    let h = unsafe {
        aclCreateTensor(
            dims.as_ptr(),
            dims.len() as u64,
            dtype,
            strides.as_ptr(),
            offset,
            ND,
            sd.as_ptr(),
            1,
            buf.ptr,
        )
    };
    assert!(!h.is_null(), "aclCreateTensor: {}", recent());
    T {
        h,
        buf,
        dtype,
        dims: dims.to_vec(),
    }
}

/// A contiguous tensor holding `vals`.
pub fn tensor(vals: &[f64], dims: &[i64], dtype: i32) -> T {
    assert_eq!(vals.len() as i64, dims.iter().product::<i64>());
    view(vals, dims, &contiguous_strides(dims), 0, dtype)
}

/// A contiguous tensor of zeros.
pub fn zeros(dims: &[i64], dtype: i32) -> T {
    tensor(
        &vec![0.0; dims.iter().product::<i64>() as usize],
        dims,
        dtype,
    )
}

/// Elements of a view in row-major order, read back from its storage.
pub fn gather(t: &T, strides: &[i64], offset: i64) -> Vec<f64> {
    let s = t.storage();
    let n: i64 = t.dims.iter().product();
    let mut out = Vec::with_capacity(n as usize);
    for k in 0..n {
        let mut rem = k;
        let mut off = offset;
        for a in (0..t.dims.len()).rev() {
            off += (rem % t.dims[a]) * strides[a];
            rem /= t.dims[a];
        }
        out.push(s[off as usize]);
    }
    out
}

/// Phase 2 with a fresh workspace of the reported size, then a stream synchronisation; returns the status of
/// phase 2 and that of the synchronisation.
pub fn run(
    dev: &Dev,
    ws: u64,
    ex: *mut AclOpExecutor,
    phase2: unsafe extern "C" fn(*mut c_void, u64, *mut AclOpExecutor, *mut c_void) -> i32,
) -> (i32, i32) {
    let wbuf = if ws > 0 {
        Some(alloc(ws as usize))
    } else {
        None
    };
    let wp = wbuf.as_ref().map_or(null_mut(), |b| b.ptr);
    let rc = unsafe { phase2(wp, ws, ex, dev.stream) };
    let sync = unsafe { cann_sim::stream::aclrtSynchronizeStream(dev.stream) };
    (rc, sync)
}

/// Asserts phase 1 succeeded, runs phase 2 and the synchronisation, and asserts both succeeded.
#[track_caller]
pub fn ok(
    dev: &Dev,
    rc: i32,
    ws: u64,
    ex: *mut AclOpExecutor,
    phase2: unsafe extern "C" fn(*mut c_void, u64, *mut AclOpExecutor, *mut c_void) -> i32,
) {
    assert_eq!(rc, 0, "phase 1: {}", recent());
    let (r2, sync) = run(dev, ws, ex, phase2);
    assert_eq!(r2, 0, "phase 2: {}", recent());
    assert_eq!(sync, 0, "synchronize: {}", recent());
}

/// Asserts a phase-1 status and that the recent message mentions `needle`.
#[track_caller]
pub fn fails(rc: i32, code: i32, needle: &str) {
    let m = recent();
    assert_eq!(rc, code, "expected {code}, got {rc}: {m}");
    assert!(
        m.contains(needle),
        "message {m:?} does not mention {needle:?}"
    );
}

/// Deterministic xorshift numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.f()).collect()
    }
    /// Values already representable in `dtype`.
    pub fn vec_in(&mut self, n: usize, dtype: i32) -> Vec<f64> {
        (0..n).map(|_| round(self.f(), dtype)).collect()
    }
}

/// Largest |a-b| / (atol + rtol·|b|) over the elements; panics with the worst index when above 1.
#[track_caller]
pub fn close(got: &[f64], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

/// Tolerances of a single rounding to `dtype` plus f32 arithmetic.
pub fn tol(dtype: i32) -> (f64, f64) {
    match dtype {
        F32 => (1e-6, 1e-5),
        F16 => (1e-3, 2e-3),
        BF16 => (8e-3, 1.6e-2),
        _ => (0.0, 0.0),
    }
}

/// Runs a phase-1 call; returns its status, the workspace size and the executor.
pub fn p1(
    f: impl FnOnce(*mut u64, *mut *mut AclOpExecutor) -> i32,
) -> (i32, u64, *mut AclOpExecutor) {
    let (mut ws, mut ex) = (0u64, null_mut());
    let rc = f(&mut ws, &mut ex);
    (rc, ws, ex)
}

/// The float dtypes most operators accept.
pub const FLOATS: [i32; 3] = [F32, F16, BF16];

/// An f32 scalar.
pub fn scalar(v: f32) -> *mut cann_sim::aclnn::tensor::AclScalar {
    let mut v = v;
    unsafe { cann_sim::aclnn::tensor::aclCreateScalar(&mut v as *mut f32 as *mut c_void, F32) }
}

/// An int array.
pub fn ints(v: &[i64]) -> *mut cann_sim::aclnn::tensor::AclIntArray {
    unsafe { cann_sim::aclnn::tensor::aclCreateIntArray(v.as_ptr(), v.len() as u64) }
}

/// A transposed view: storage holds `rows × cols` row-major, the view is `[cols, rows]` with strides (1, cols).
pub fn transposed(storage: &[f64], rows: i64, cols: i64, dtype: i32) -> T {
    view(storage, &[cols, rows], &[1, cols], 0, dtype)
}
