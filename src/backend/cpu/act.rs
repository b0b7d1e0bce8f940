//! Storage of activations between ops: f32, or in bf16 mode the bf16 bit patterns. Every op of a
//! bf16-mode model rounds its outputs to bf16 (spec section 10), so keeping them in 16 bits loses
//! nothing and halves the bytes each later pass reads and writes. The kernels read the narrow form
//! and widen it in registers (a shift: exact); f16 mode keeps f32 storage, since its kernels run
//! unrounded in f32 and round afterwards.

use super::pool;
use crate::backend::ActDtype;
use crate::numeric::{bf16_to_f32, round_bf16};

/// The elements of an activation matrix.
#[derive(Debug, Clone)]
pub enum ActData {
    /// f32 values (f32 mode; f16 mode, holding f16 values).
    F32(Vec<f32>),
    /// bfloat16 bit patterns (bf16 mode).
    Bf16(Vec<u16>),
}

impl ActData {
    /// Elements held.
    pub fn len(&self) -> usize {
        match self {
            ActData::F32(v) => v.len(),
            ActData::Bf16(v) => v.len(),
        }
    }

    /// The values as f32 (borrowed when stored so).
    pub fn to_f32(&self) -> std::borrow::Cow<'_, [f32]> {
        match self {
            ActData::F32(v) => v.into(),
            ActData::Bf16(v) => widen(v).into(),
        }
    }
}

impl From<Vec<f32>> for ActData {
    fn from(v: Vec<f32>) -> Self {
        ActData::F32(v)
    }
}

impl From<Vec<u16>> for ActData {
    fn from(v: Vec<u16>) -> Self {
        ActData::Bf16(v)
    }
}

/// One element of activation storage.
pub trait Elem: Copy + Default + Send + Sync + 'static {
    /// The value.
    fn get(self) -> f32;
    /// `v` rounded to `act` and stored; a 16-bit element holds bf16, the only mode that uses it.
    fn put(v: f32, act: ActDtype) -> Self;
    /// The elements as bf16 bit patterns, when that is what they are (for kernels written for
    /// bf16 storage only).
    fn as_bf16(_x: &[Self]) -> Option<&[u16]> {
        None
    }
    /// [`Elem::as_bf16`], to write.
    fn as_bf16_mut(_x: &mut [Self]) -> Option<&mut [u16]> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(v: f32, act: ActDtype) -> f32 {
        act.round(v)
    }
}

impl Elem for u16 {
    #[inline(always)]
    fn get(self) -> f32 {
        bf16_to_f32(self)
    }
    #[inline(always)]
    fn put(v: f32, _: ActDtype) -> u16 {
        bf16_bits(v)
    }
    fn as_bf16(x: &[u16]) -> Option<&[u16]> {
        Some(x)
    }
    fn as_bf16_mut(x: &mut [u16]) -> Option<&mut [u16]> {
        Some(x)
    }
}

/// The bf16 bit pattern of `v` rounded to nearest even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    (round_bf16(v).to_bits() >> 16) as u16
}

/// Above this many elements a conversion runs over the pool.
const PARALLEL_ELEMS: usize = 1 << 16;

/// `src` widened to f32.
pub fn widen(src: &[u16]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    let conv = |s: &[u16], d: &mut [f32]| {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = bf16_to_f32(s);
        }
    };
    if src.len() <= PARALLEL_ELEMS {
        conv(src, &mut out);
    } else {
        let chunk = 1 << 14;
        pool::chunks_mut(&mut out, chunk, || (), |_, t, d| conv(&src[t * chunk..], d));
    }
    out
}

/// `src` rounded to bf16 bit patterns (exact for values that are bf16 already).
pub fn narrow(src: &[f32]) -> Vec<u16> {
    let mut out = vec![0u16; src.len()];
    if src.len() <= PARALLEL_ELEMS {
        narrow_into(src, &mut out);
    } else {
        let chunk = 1 << 14;
        pool::chunks_mut(
            &mut out,
            chunk,
            || (),
            |_, t, d| narrow_into(&src[t * chunk..][..d.len()], d),
        );
    }
    out
}

/// `dst[i]` = the bf16 bits of `src[i]` rounded (same lengths).
pub fn narrow_into(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx512() {
        // SAFETY: the CPU has AVX-512F and BW (`has_avx512` checks both).
        return unsafe { super::matmul::to_bf16_slice(src, dst) };
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_bits(s);
    }
}
