//! Scaled dot-product attention with the numerics of torch's CPU flash attention: scores in f32,
//! softmax in f32, the unnormalised probabilities multiplied with V in the activation dtype, the f32
//! row sum divided out last. Queries are processed in blocks: a block's scores over the keys it may see
//! live in a buffer of `block × keys`, so the full score matrix of a long sequence is never built.
//! Blocks of many queries use the matmul kernels (Q·Kᵀ and P·V); a few queries (decoding) use a
//! row-by-row loop parallel over heads.

use rayon::prelude::*;

use super::matmul::{has_avx512, BMat, Packed};
use super::CpuTensor;
use crate::backend::{AttentionMask, AttentionParams};
use crate::numeric::round_bf16;

/// Queries per block in the matmul path.
const Q_BLOCK: usize = 128;
/// Below this many query rows the row-by-row path is used.
const MIN_GEMM_ROWS: usize = 16;

#[inline(always)]
fn r(v: f32, round: bool) -> f32 {
    if round {
        round_bf16(v)
    } else {
        v
    }
}

/// Attention of every query row of `q` over the keys it may see.
pub fn attention(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    p: &AttentionParams,
    round: bool,
) -> Vec<f32> {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    assert_eq!(q.cols, q_cols, "attention: q width");
    assert_eq!(k.cols, kv_cols, "attention: k width");
    assert_eq!(v.cols, kv_cols, "attention: v width");
    assert_eq!(k.rows, v.rows, "attention: k and v lengths differ");
    let mut out = vec![0f32; q.rows * q_cols];
    if q.rows < MIN_GEMM_ROWS {
        rows_path(q, k, v, p, round, &mut out);
    } else {
        blocked_path(q, k, v, p, round, &mut out);
    }
    out
}

/// Keys visible to query row `i`: a range, and the validity mask of the bidirectional case.
fn key_range(p: &AttentionParams, i: usize) -> (usize, usize) {
    match p.mask {
        AttentionMask::Bidirectional { seq_len, .. } => {
            let s = i / seq_len;
            (s * seq_len, (s + 1) * seq_len)
        }
        AttentionMask::Causal { offset } => (0, offset + i + 1),
    }
}

fn key_valid<'a>(p: &AttentionParams<'a>) -> Option<&'a [bool]> {
    match p.mask {
        AttentionMask::Bidirectional { key_valid, .. } => key_valid,
        AttentionMask::Causal { .. } => None,
    }
}

/// Softmax numerators of one row of scores, in place; returns the f32 sum. Masked entries are −∞.
#[inline]
fn softmax_numerators(scores: &mut [f32], round: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx512() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { super::elementwise::simd::softmax_numerators(scores, round) };
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        let e = (*s - max).exp();
        sum += e;
        *s = r(e, round);
    }
    sum
}

fn blocked_path(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    p: &AttentionParams,
    round: bool,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    let group = p.heads / p.kv_heads;
    // Blocks never straddle two bidirectional sequences.
    let seq = match p.mask {
        AttentionMask::Bidirectional { seq_len, .. } => seq_len,
        AttentionMask::Causal { .. } => q.rows,
    };
    let n_seqs = q.rows / seq;
    let tasks: Vec<(usize, usize)> = (0..n_seqs)
        .flat_map(|s| (0..p.heads).map(move |h| (s, h)))
        .collect();
    let valid = key_valid(p);
    let results: Vec<(usize, usize, Vec<f32>)> = tasks
        .into_par_iter()
        .map(|(s, h)| {
            let g = h / group;
            let (i0, i1) = (s * seq, (s + 1) * seq);
            let (k0, _) = key_range(p, i0);
            let (_, k1) = key_range(p, i1 - 1);
            let keys = k1 - k0;
            // K and Vᵀ of this head, packed once for every query block.
            let kp = Packed::new(
                BMat::View {
                    data: &k.data[k0 * kv_cols + g * hd..],
                    rows: keys,
                    cols: hd,
                    row_stride: kv_cols,
                    col_stride: 1,
                },
                round,
            );
            let vp = Packed::new(
                BMat::View {
                    data: &v.data[k0 * kv_cols + g * hd..],
                    rows: hd,
                    cols: keys,
                    row_stride: 1,
                    col_stride: kv_cols,
                },
                round,
            );
            let mut o = vec![0f32; seq * hd];
            let mut qh = Vec::with_capacity(Q_BLOCK * hd);
            let mut scores = Vec::new();
            let mut probs = Vec::new();
            let mut ob = Vec::new();
            for b0 in (i0..i1).step_by(Q_BLOCK) {
                let b1 = (b0 + Q_BLOCK).min(i1);
                let rows = b1 - b0;
                let (_, visible) = key_range(p, b1 - 1);
                let nk = visible - k0;
                qh.clear();
                for i in b0..b1 {
                    qh.extend_from_slice(&q.data[i * q_cols + h * hd..i * q_cols + (h + 1) * hd]);
                }
                // Scores over the keys visible to the block's last row; the rest of P stays zero.
                // Every entry is overwritten by the product: only the length matters.
                scores.resize(rows * nk, 0.0);
                kp.gemm(&qh, rows, nk, &mut scores);
                let mut sums = vec![0f32; rows];
                for (ri, row) in scores.chunks_exact_mut(nk).enumerate() {
                    let (_, end) = key_range(p, b0 + ri);
                    for (j, sc) in row.iter_mut().enumerate() {
                        let key = k0 + j;
                        let ok = key < end && valid.is_none_or(|m| m[key]);
                        *sc = if ok { *sc * p.scale } else { f32::NEG_INFINITY };
                    }
                    sums[ri] = softmax_numerators(row, round);
                }
                // P·V over all the head's keys: a causal block that sees fewer is padded with zeros.
                if nk < keys {
                    probs.clear();
                    probs.resize(rows * keys, 0.0);
                    for (ri, row) in scores.chunks_exact(nk).enumerate() {
                        probs[ri * keys..ri * keys + nk].copy_from_slice(row);
                    }
                }
                let pmat = if nk < keys { &probs } else { &scores };
                ob.clear();
                ob.resize(rows * hd, 0.0);
                vp.gemm(pmat, rows, hd, &mut ob);
                for (ri, row) in ob.chunks_exact(hd).enumerate() {
                    let inv = 1.0 / sums[ri];
                    let dst = &mut o[(b0 - i0 + ri) * hd..(b0 - i0 + ri + 1) * hd];
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = r(x * inv, round);
                    }
                }
            }
            (s, h, o)
        })
        .collect();
    for (s, h, o) in results {
        for ri in 0..seq {
            let i = s * seq + ri;
            out[i * q_cols + h * hd..i * q_cols + (h + 1) * hd]
                .copy_from_slice(&o[ri * hd..(ri + 1) * hd]);
        }
    }
}

fn rows_path(
    q: &CpuTensor,
    k: &CpuTensor,
    v: &CpuTensor,
    p: &AttentionParams,
    round: bool,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    let group = p.heads / p.kv_heads;
    let valid = key_valid(p);
    let tasks: Vec<(usize, usize)> = (0..q.rows)
        .flat_map(|i| (0..p.heads).map(move |h| (i, h)))
        .collect();
    let one = |scores: &mut Vec<f32>, (i, h): (usize, usize)| {
        let (k0, k1) = key_range(p, i);
        let g = h / group;
        let qv = &q.data[i * q_cols + h * hd..][..hd];
        let kh = &k.data[g * hd..];
        let vh = &v.data[g * hd..];
        let mut acc = vec![0f32; hd];
        let sum = attend_row(
            qv, kh, vh, kv_cols, k0, k1, valid, p.scale, round, scores, &mut acc,
        );
        let inv = 1.0 / sum;
        acc.iter_mut().for_each(|a| *a = r(*a * inv, round));
        (i, h, acc)
    };
    // Short contexts are cheaper on one thread than a fork-join.
    let work = q.rows * p.heads * k.rows * hd;
    let results: Vec<(usize, usize, Vec<f32>)> = if work < 1 << 18 {
        let mut scores = Vec::new();
        tasks.into_iter().map(|t| one(&mut scores, t)).collect()
    } else {
        tasks.into_par_iter().map_init(Vec::new, one).collect()
    };
    for (i, h, acc) in results {
        out[i * q_cols + h * hd..i * q_cols + (h + 1) * hd].copy_from_slice(&acc);
    }
}

/// Scores of one query against keys `k0..k1` (rows of `kh` with stride `ld`), softmax numerators, and
/// their weighted sum of the value rows into `acc`; returns the softmax denominator.
#[allow(clippy::too_many_arguments)]
fn attend_row(
    qv: &[f32],
    kh: &[f32],
    vh: &[f32],
    ld: usize,
    k0: usize,
    k1: usize,
    valid: Option<&[bool]>,
    scale: f32,
    round: bool,
    scores: &mut Vec<f32>,
    acc: &mut [f32],
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe {
            attend_row_avx512(qv, kh, vh, ld, k0, k1, valid, scale, round, scores, acc)
        };
    }
    attend_row_generic(qv, kh, vh, ld, k0, k1, valid, scale, round, scores, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_row_avx512(
    qv: &[f32],
    kh: &[f32],
    vh: &[f32],
    ld: usize,
    k0: usize,
    k1: usize,
    valid: Option<&[bool]>,
    scale: f32,
    round: bool,
    scores: &mut Vec<f32>,
    acc: &mut [f32],
) -> f32 {
    attend_row_generic(qv, kh, vh, ld, k0, k1, valid, scale, round, scores, acc)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_row_generic(
    qv: &[f32],
    kh: &[f32],
    vh: &[f32],
    ld: usize,
    k0: usize,
    k1: usize,
    valid: Option<&[bool]>,
    scale: f32,
    round: bool,
    scores: &mut Vec<f32>,
    acc: &mut [f32],
) -> f32 {
    let hd = qv.len();
    scores.clear();
    for j in k0..k1 {
        let s = if valid.is_some_and(|m| !m[j]) {
            f32::NEG_INFINITY
        } else {
            dot(qv, &kh[j * ld..j * ld + hd]) * scale
        };
        scores.push(s);
    }
    let sum = softmax_numerators(scores, round);
    for (j, &w) in (k0..k1).zip(scores.iter()) {
        if w != 0.0 {
            axpy(w, &vh[j * ld..j * ld + hd], acc);
        }
    }
    sum
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = a.len() / 16 * 16;
    for c in (0..chunks).step_by(16) {
        for l in 0..16 {
            acc[l] += a[c + l] * b[c + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline(always)]
fn axpy(w: f32, x: &[f32], acc: &mut [f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}
