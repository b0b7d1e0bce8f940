//! Element access to device memory through the runtime's shadow mapping, on the stream worker thread.
//!
//! A [`View`] is a snapshot of a tensor descriptor taken when a task is enqueued (the address may change later
//! through `aclSetInputTensorAddr`). Loads widen to f32/f64/i64; stores round to the element type:
//! round-to-nearest-even for FLOAT16 and BFLOAT16 (the `half` crate's conversions), truncation toward zero for
//! integers with NaN giving 0 (aclnnCast.md: "nan转换为0"), non-zero for BOOL.

use super::tensor::TensorDesc;
use super::types::DType;
use crate::mem;

/// Reads one element at `p` as f64.
///
/// # Safety
/// `p` points at a readable element of `dtype`.
pub unsafe fn load_f64(p: *const u8, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => (p as *const f32).read_unaligned() as f64,
        DType::F16 => half::f16::from_bits((p as *const u16).read_unaligned()).to_f64(),
        DType::BF16 => half::bf16::from_bits((p as *const u16).read_unaligned()).to_f64(),
        DType::F64 => (p as *const f64).read_unaligned(),
        _ => load_i64(p, dtype) as f64,
    }
}

/// Reads one element at `p` as i64 (floats truncated toward zero).
///
/// # Safety
/// `p` points at a readable element of `dtype`.
pub unsafe fn load_i64(p: *const u8, dtype: DType) -> i64 {
    match dtype {
        DType::I8 => (p as *const i8).read() as i64,
        DType::U8 => p.read() as i64,
        DType::Bool => (p.read() != 0) as i64,
        DType::I16 => (p as *const i16).read_unaligned() as i64,
        DType::U16 => (p as *const u16).read_unaligned() as i64,
        DType::I32 => (p as *const i32).read_unaligned() as i64,
        DType::U32 => (p as *const u32).read_unaligned() as i64,
        DType::I64 => (p as *const i64).read_unaligned(),
        DType::U64 => (p as *const u64).read_unaligned() as i64,
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => load_f64(p, dtype) as i64,
        DType::Other(_) => 0,
    }
}

/// Writes `v` at `p`, rounded to `dtype`.
///
/// # Safety
/// `p` points at a writable element of `dtype`.
pub unsafe fn store_f64(p: *mut u8, dtype: DType, v: f64) {
    match dtype {
        DType::F32 => (p as *mut f32).write_unaligned(v as f32),
        DType::F16 => (p as *mut u16).write_unaligned(half::f16::from_f64(v).to_bits()),
        DType::BF16 => (p as *mut u16).write_unaligned(half::bf16::from_f64(v).to_bits()),
        DType::F64 => (p as *mut f64).write_unaligned(v),
        DType::Bool => p.write((v != 0.0) as u8),
        // `as` truncates toward zero, saturates and maps NaN to 0.
        _ => store_i64(p, dtype, v as i64),
    }
}

/// Writes an f32 result at `p`, rounded once to `dtype`.
///
/// # Safety
/// `p` points at a writable element of `dtype`.
pub unsafe fn store_f32(p: *mut u8, dtype: DType, v: f32) {
    match dtype {
        DType::F16 => (p as *mut u16).write_unaligned(half::f16::from_f32(v).to_bits()),
        DType::BF16 => (p as *mut u16).write_unaligned(half::bf16::from_f32(v).to_bits()),
        _ => store_f64(p, dtype, v as f64),
    }
}

/// Writes an integer at `p` (wrapping to the width of `dtype`, as a C cast does).
///
/// # Safety
/// `p` points at a writable element of `dtype`.
pub unsafe fn store_i64(p: *mut u8, dtype: DType, v: i64) {
    match dtype {
        DType::I8 | DType::U8 => p.write(v as u8),
        DType::Bool => p.write((v != 0) as u8),
        DType::I16 | DType::U16 => (p as *mut u16).write_unaligned(v as u16),
        DType::I32 | DType::U32 => (p as *mut u32).write_unaligned(v as u32),
        DType::I64 | DType::U64 => (p as *mut u64).write_unaligned(v as u64),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => store_f64(p, dtype, v as f64),
        DType::Other(_) => {}
    }
}

/// A tensor as a task sees it: the descriptor with its address fixed at enqueue time.
#[derive(Clone, Debug)]
pub struct View {
    /// Name of the argument (for messages).
    pub name: String,
    /// View shape.
    pub dims: Vec<i64>,
    /// View strides in elements.
    pub strides: Vec<i64>,
    /// View offset in elements.
    pub offset: i64,
    /// Element type.
    pub dtype: DType,
    /// Device address of the storage start.
    pub addr: u64,
    /// Storage size in bytes.
    pub storage_bytes: u64,
}

impl View {
    /// Snapshot of `t` at its current address.
    pub fn of(name: &str, t: &TensorDesc) -> View {
        View {
            name: name.to_string(),
            dims: t.dims.clone(),
            strides: t.strides.clone(),
            offset: t.offset,
            dtype: t.dtype,
            addr: t.addr(),
            storage_bytes: (t.storage_numel().max(0) as u64) * t.dtype.size() as u64,
        }
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<i64>() as usize
    }

    /// Bytes the view covers (for the counters).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }

    /// Checks that the storage lies in one live allocation.
    pub fn check(&self) -> Result<(), String> {
        if self.storage_bytes == 0 && self.numel() == 0 {
            return Ok(());
        }
        mem::check_range(self.addr, self.storage_bytes).map_err(|m| {
            format!(
                "{} ({} bytes at {:#x}): {m}",
                self.name, self.storage_bytes, self.addr
            )
        })
    }

    /// The same data seen with shape `out` by broadcasting (stride 0 on stretched and added leading dims).
    pub fn broadcast_to(&self, out: &[i64]) -> View {
        let lead = out.len() - self.dims.len();
        let mut strides = vec![0i64; out.len()];
        for (i, (d, s)) in self.dims.iter().zip(&self.strides).enumerate() {
            strides[lead + i] = if *d == 1 && out[lead + i] != 1 { 0 } else { *s };
        }
        View {
            dims: out.to_vec(),
            strides,
            ..self.clone()
        }
    }

    /// The view with its axes reordered: axis i of the result is axis `perm[i]` of `self`.
    pub fn permuted(&self, perm: &[usize]) -> View {
        View {
            dims: perm.iter().map(|p| self.dims[*p]).collect(),
            strides: perm.iter().map(|p| self.strides[*p]).collect(),
            ..self.clone()
        }
    }

    /// Element offsets (in elements from the storage start) in row-major order of the view.
    pub fn offsets(&self) -> impl Iterator<Item = i64> + '_ {
        let n = self.numel();
        let rank = self.dims.len();
        let mut idx = vec![0i64; rank];
        let mut cur = self.offset;
        (0..n).map(move |k| {
            if k > 0 {
                for a in (0..rank).rev() {
                    idx[a] += 1;
                    cur += self.strides[a];
                    if idx[a] < self.dims[a] {
                        break;
                    }
                    cur -= self.strides[a] * self.dims[a];
                    idx[a] = 0;
                }
            }
            cur
        })
    }

    /// Host pointer of the element at storage offset `off`.
    ///
    /// # Safety
    /// Only after [`View::check`] succeeded, and `off` inside the storage.
    pub unsafe fn ptr(&self, off: i64) -> *mut u8 {
        mem::shadow(self.addr).add(off as usize * self.dtype.size())
    }

    /// All elements as f32, row-major.
    pub fn read_f32(&self) -> Vec<f32> {
        // SAFETY: callers run after check(); offsets stay inside the storage (checked at phase 1).
        self.offsets()
            .map(|o| unsafe { load_f64(self.ptr(o), self.dtype) as f32 })
            .collect()
    }

    /// All elements as i64, row-major.
    pub fn read_i64(&self) -> Vec<i64> {
        // SAFETY: as in read_f32.
        self.offsets()
            .map(|o| unsafe { load_i64(self.ptr(o), self.dtype) })
            .collect()
    }

    /// Writes f32 results, row-major, each rounded once to the element type.
    pub fn write_f32(&self, vals: &[f32]) {
        for (o, v) in self.offsets().zip(vals) {
            // SAFETY: as in read_f32.
            unsafe { store_f32(self.ptr(o), self.dtype, *v) }
        }
    }

    /// Writes integer results, row-major.
    pub fn write_i64(&self, vals: &[i64]) {
        for (o, v) in self.offsets().zip(vals) {
            // SAFETY: as in read_f32.
            unsafe { store_i64(self.ptr(o), self.dtype, *v) }
        }
    }

    /// Raw bytes of every element, row-major (for data movement that must be exact for every type).
    pub fn read_raw(&self) -> Vec<u8> {
        let es = self.dtype.size();
        let mut out = Vec::with_capacity(self.numel() * es);
        for o in self.offsets() {
            // SAFETY: as in read_f32.
            unsafe { out.extend_from_slice(std::slice::from_raw_parts(self.ptr(o), es)) }
        }
        out
    }

    /// Writes raw element bytes, row-major.
    pub fn write_raw(&self, bytes: &[u8]) {
        let es = self.dtype.size();
        for (o, chunk) in self.offsets().zip(bytes.chunks_exact(es)) {
            // SAFETY: as in read_f32.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), self.ptr(o), es) }
        }
    }
}

/// Row-major strides of a shape.
pub fn contiguous_strides(dims: &[i64]) -> Vec<i64> {
    let mut s = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1].max(1);
    }
    s
}
