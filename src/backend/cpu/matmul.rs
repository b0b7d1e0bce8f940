//! `out = x·Wᵀ (+ b)` for f32 activations `x [m, k]` and a weight `W [n, k]` read in its storage dtype
//! (bf16, f16, f32), accumulated in f32. The work is cut into tiles of rows of x × rows of W; each tile
//! widens its rows of W once into a small f32 buffer and runs a register-blocked dot-product kernel.
//! The kernel body is written once and compiled for several instruction sets, chosen at run time.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::CpuWeight;
use crate::numeric::round_bf16;

/// Rows of x per task.
const MB: usize = 64;
/// Rows of W per task (a multiple of the kernel's 4).
const NB: usize = 32;

/// Instruction sets the kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F with FMA, 16 lanes.
    Avx512,
    /// AVX2 with FMA, 8 lanes.
    Avx2,
    /// Whatever the compilation target guarantees; separate multiply and add.
    Portable,
}

/// The instruction sets this CPU can run, best first.
pub fn available_isas() -> Vec<Isa> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
    }
    v.push(Isa::Portable);
    v
}

/// The best instruction set of this CPU (detected once).
pub fn best_isa() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| available_isas()[0])
}

/// `x·Wᵀ (+ bias)` with the best kernel; `round` rounds each output to bf16.
pub fn matmul(x: &[f32], m: usize, w: &CpuWeight, bias: Option<&[f32]>, round: bool) -> Vec<f32> {
    matmul_isa(best_isa(), x, m, w, bias, round)
}

/// `x·Wᵀ (+ bias)` with the kernel compiled for `isa` (which the CPU must support).
pub fn matmul_isa(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &CpuWeight,
    bias: Option<&[f32]>,
    round: bool,
) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    assert_eq!(x.len(), m * k, "matmul: x has the wrong size");
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "matmul: bias has the wrong size");
    }
    assert!(
        available_isas().contains(&isa),
        "matmul: {isa:?} is not supported by this CPU"
    );
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let out_ptr = SendPtr(out.as_mut_ptr());
    let m_blocks = m.div_ceil(MB);
    let n_blocks = n.div_ceil(NB);
    (0..m_blocks * n_blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |pack: &mut Vec<f32>, t| {
            let (bi, bj) = (t / n_blocks, t % n_blocks);
            let (n0, n1) = (bj * NB, ((bj + 1) * NB).min(n));
            let nr = n1 - n0;
            pack.clear();
            pack.resize(nr.div_ceil(4) * 4 * k, 0.0);
            w.rows_into(n0, n1, &mut pack[..nr * k]);
            let args = TileArgs {
                x,
                k,
                m0: bi * MB,
                m1: ((bi + 1) * MB).min(m),
                pack,
                nr,
                n,
                n0,
                out: out_ptr,
                bias,
                round,
            };
            // SAFETY: tiles write disjoint (row, column) ranges of `out`; the ISA was checked above.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => tile_avx512(&args),
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => tile_avx2(&args),
                    _ => tile::<Plain, 8>(&args),
                }
            }
        });
    out
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to let tasks write disjoint parts of one output buffer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

struct TileArgs<'a> {
    x: &'a [f32],
    k: usize,
    m0: usize,
    m1: usize,
    /// `nr` widened rows of W, zero-padded to a multiple of 4 rows.
    pack: &'a [f32],
    nr: usize,
    n: usize,
    n0: usize,
    out: SendPtr,
    bias: Option<&'a [f32]>,
    round: bool,
}

trait Madd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add (only where the target has FMA: elsewhere `mul_add` is a slow library call).
struct Fused;
impl Madd for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

struct Plain;
impl Madd for Plain {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn tile_avx512(a: &TileArgs) {
    tile::<Fused, 16>(a)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(a: &TileArgs) {
    tile::<Fused, 8>(a)
}

#[inline(always)]
unsafe fn tile<M: Madd, const L: usize>(t: &TileArgs) {
    let k = t.k;
    let xrow = |i: usize| &t.x[i * k..(i + 1) * k];
    let wrow = |j: usize| &t.pack[j * k..(j + 1) * k];
    let mut i = t.m0;
    while i < t.m1 {
        if i + 4 <= t.m1 {
            let a = [xrow(i), xrow(i + 1), xrow(i + 2), xrow(i + 3)];
            for j in (0..t.nr).step_by(4) {
                let r = dot::<4, M, L>(&a, &[wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)], k);
                store(t, i, j, &r);
            }
            i += 4;
        } else {
            let a = [xrow(i)];
            for j in (0..t.nr).step_by(4) {
                let r = dot::<1, M, L>(&a, &[wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)], k);
                store(t, i, j, &r);
            }
            i += 1;
        }
    }
}

#[inline(always)]
unsafe fn store<const MR: usize>(t: &TileArgs, i: usize, j: usize, r: &[[f32; 4]; MR]) {
    for (ii, row) in r.iter().enumerate() {
        for (jj, &v) in row.iter().enumerate() {
            if j + jj < t.nr {
                let col = t.n0 + j + jj;
                let mut v = v;
                if let Some(b) = t.bias {
                    v += b[col];
                }
                if t.round {
                    v = round_bf16(v);
                }
                // SAFETY: (i + ii, col) lies in this tile, which no other task writes.
                *t.out.0.add((i + ii) * t.n + col) = v;
            }
        }
    }
}

/// MR×4 dot products of length k, each over L independent lanes summed at the end.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // explicit lane indices are what the vectoriser maps to SIMD lanes
fn dot<const MR: usize, M: Madd, const L: usize>(
    a: &[&[f32]; MR],
    b: &[&[f32]; 4],
    k: usize,
) -> [[f32; 4]; MR] {
    let mut acc = [[[0f32; L]; 4]; MR];
    let kc = k / L * L;
    let mut p = 0;
    while p < kc {
        let bv: [&[f32; L]; 4] = std::array::from_fn(|jj| b[jj][p..p + L].try_into().unwrap());
        for ii in 0..MR {
            let av: &[f32; L] = a[ii][p..p + L].try_into().unwrap();
            for jj in 0..4 {
                for l in 0..L {
                    acc[ii][jj][l] = M::madd(av[l], bv[jj][l], acc[ii][jj][l]);
                }
            }
        }
        p += L;
    }
    let mut res = [[0f32; 4]; MR];
    for ii in 0..MR {
        for jj in 0..4 {
            let mut s = 0f32;
            for l in 0..L {
                s += acc[ii][jj][l];
            }
            for q in kc..k {
                s = M::madd(a[ii][q], b[jj][q], s);
            }
            res[ii][jj] = s;
        }
    }
    res
}
