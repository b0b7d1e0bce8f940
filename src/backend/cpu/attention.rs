//! Scaled dot-product attention with the numerics of torch's CPU flash attention: scores in f32,
//! softmax in f32, the unnormalised probabilities multiplied with V in the activation dtype, the f32
//! row sum divided out last.
//!
//! Many queries (prefill, vision tiles) go through the matmul kernels in blocks of queries: a block's
//! scores over the keys it may see live in a buffer of `block × keys`, so the full score matrix of a
//! long sequence is never built. A few queries (decoding) take the split-key path: the keys are cut
//! into runs, each run is attended by all query heads that share a key head (so each cached key and
//! value is read once per token), the runs are spread over the threads, and their partial softmaxes
//! are merged by rescaling to the largest maximum, as torch merges its key blocks.

use super::act::ActData;
use super::matmul::{has_avx512, Aligned, BMat, Packed, SendPtr};
use super::{pool, CpuTensor};
use crate::backend::{AttentionMask, AttentionParams};
use crate::numeric::{bf16_to_f32, round_bf16};

/// Queries per block in the matmul path.
const Q_BLOCK: usize = 128;
/// Below this many query rows the split-key path is used.
const MIN_GEMM_ROWS: usize = 16;
/// Keys per run of the split-key path are at least this many.
const MIN_RUN: usize = 64;
/// The split-key path aims at this many runs per call (enough to balance up to 8 threads). It is a
/// constant rather than the thread count so that results do not depend on `--threads`.
const RUNS_PER_CALL: usize = 8;

#[inline(always)]
fn r(v: f32, round: bool) -> f32 {
    if round {
        round_bf16(v)
    } else {
        v
    }
}

/// Keys or values, `rows × cols` row-major, in the storage of a cache.
#[derive(Clone, Copy)]
pub enum KvData<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bfloat16 bit patterns (the values of a bf16-mode cache, stored without loss in half the bytes).
    Bf16(&'a [u16]),
}

/// A key or value matrix: `rows` positions of `cols` (kv_heads·head_dim) values.
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    /// Elements.
    pub data: KvData<'a>,
    /// Positions.
    pub rows: usize,
    /// Values per position.
    pub cols: usize,
}

impl<'a> Kv<'a> {
    /// An activation matrix, in its storage.
    pub fn of(t: &'a CpuTensor) -> Self {
        Kv {
            data: match &t.data {
                ActData::F32(d) => KvData::F32(d),
                ActData::Bf16(d) => KvData::Bf16(d),
            },
            rows: t.rows,
            cols: t.cols,
        }
    }

    /// Appends the `len` values from element `start` on, widened to f32, to `out`.
    fn extend_f32(&self, start: usize, len: usize, out: &mut Vec<f32>) {
        match self.data {
            KvData::F32(d) => out.extend_from_slice(&d[start..start + len]),
            KvData::Bf16(d) => out.extend(d[start..start + len].iter().map(|&b| bf16_to_f32(b))),
        }
    }

    fn to_f32(self) -> std::borrow::Cow<'a, [f32]> {
        match self.data {
            KvData::F32(d) => d.into(),
            KvData::Bf16(d) => d.iter().map(|&b| bf16_to_f32(b)).collect(),
        }
    }
}

/// Attention of every query row of `q` over the keys it may see: bf16 bit patterns where the bf16
/// kernels ran (bf16 mode: `round` and bf16 q, k, v), f32 values otherwise.
pub fn attention(q: Kv, k: Kv, v: Kv, p: &AttentionParams, round: bool) -> ActData {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    assert_eq!(q.cols, q_cols, "attention: q width");
    assert_eq!(k.cols, kv_cols, "attention: k width");
    assert_eq!(v.cols, kv_cols, "attention: v width");
    assert_eq!(k.rows, v.rows, "attention: k and v lengths differ");
    if let (true, KvData::Bf16(qd), KvData::Bf16(kd), KvData::Bf16(vd)) = (
        q.rows >= MIN_GEMM_ROWS && round && bf16_kernels_run(hd),
        q.data,
        k.data,
        v.data,
    ) {
        let mut out = Vec::with_capacity(q.rows * q_cols);
        bf16_path(
            qd,
            kd,
            vd,
            q.rows,
            p,
            &mut out.spare_capacity_mut()[..q.rows * q_cols],
        );
        // SAFETY: `bf16_path` wrote every element (its tasks cover every sequence and head).
        unsafe { out.set_len(q.rows * q_cols) };
        return ActData::Bf16(out);
    }
    let mut out = vec![0f32; q.rows * q_cols];
    if q.rows < MIN_GEMM_ROWS {
        match (k.data, v.data) {
            (KvData::F32(kd), KvData::F32(vd)) => split_key_path(&q, kd, vd, p, round, &mut out),
            (KvData::Bf16(kd), KvData::Bf16(vd)) => split_key_path(&q, kd, vd, p, round, &mut out),
            _ => {
                let (kd, vd) = (k.to_f32(), v.to_f32());
                split_key_path(&q, &kd[..], &vd[..], p, round, &mut out)
            }
        }
    } else {
        let (kd, vd) = (k.to_f32(), v.to_f32());
        blocked_path(&q, &kd, &vd, p, round, &mut out);
    }
    ActData::F32(out)
}

/// Whether bf16 kernels (the AMX tiles or AVX-512 BF16) run the products of bf16 attention with
/// heads of `hd` values. The queries are read in place where the kernel takes them so (the tiles:
/// `hd` a multiple of 32, as in SmolVLM's 64; AVX-512 BF16: any even `hd`), and copied per query
/// block otherwise (Idefics3-8B's vision heads of 72 on the tiles).
fn bf16_kernels_run(hd: usize) -> bool {
    use super::matmul::{best_isa, Isa};
    let isa = best_isa();
    (isa.is_amx() || isa == Isa::Avx512Bf16) && hd.is_multiple_of(2)
}

/// Sets the scores of keys that query row `i` may not see to −∞ (`row` holds the scores of keys
/// `k0..k0 + row.len()`).
fn mask_row(row: &mut [f32], p: &AttentionParams, i: usize, k0: usize, valid: Option<&[bool]>) {
    let (_, end) = key_range(p, i);
    if end - k0 < row.len() {
        row[end - k0..].fill(f32::NEG_INFINITY);
    }
    if let Some(m) = valid {
        for (sc, _) in row.iter_mut().zip(&m[k0..]).filter(|(_, &ok)| !ok) {
            *sc = f32::NEG_INFINITY;
        }
    }
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

/// Softmax numerators of one row of scores multiplied by `scale` (> 0), in place, or as bf16 bit
/// patterns into `bits` (with `round`; the scores are then left as they were); returns the max of
/// the scaled row and the f32 sum of the numerators. Masked entries are −∞; a fully masked row gives
/// zeros, max −∞ and sum 0.
#[inline]
fn softmax_numerators(
    scores: &mut [f32],
    scale: f32,
    round: bool,
    bits: Option<&mut [u16]>,
) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx512() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { super::elementwise::simd::softmax_numerators(scores, scale, round, bits) };
    }
    let max = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
    let mut sum = 0f32;
    let mut numerator = |s: f32| {
        if max == f32::NEG_INFINITY {
            return 0.0;
        }
        let e = (s * scale - max).exp();
        sum += e;
        r(e, round)
    };
    match bits {
        Some(b) => {
            for (b, &s) in b.iter_mut().zip(scores.iter()) {
                *b = (numerator(s).to_bits() >> 16) as u16;
            }
        }
        None => scores.iter_mut().for_each(|s| *s = numerator(*s)),
    }
    (max, sum)
}

fn blocked_path(q: &Kv, k: &[f32], v: &[f32], p: &AttentionParams, round: bool, out: &mut [f32]) {
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
    let results: Vec<(usize, usize, Vec<f32>)> = pool::map(tasks.len(), |t| {
        let (s, h) = tasks[t];
        let g = h / group;
        let (i0, i1) = (s * seq, (s + 1) * seq);
        let (k0, _) = key_range(p, i0);
        let (_, k1) = key_range(p, i1 - 1);
        let keys = k1 - k0;
        // K and Vᵀ of this head, packed once for every query block.
        let kp = Packed::new(
            BMat::View {
                data: &k[k0 * kv_cols + g * hd..],
                rows: keys,
                cols: hd,
                row_stride: kv_cols,
                col_stride: 1,
            },
            round,
        );
        let vp = Packed::new(
            BMat::View {
                data: &v[k0 * kv_cols + g * hd..],
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
                q.extend_f32(i * q_cols + h * hd, hd, &mut qh);
            }
            // Scores over the keys visible to the block's last row; the rest of P stays zero.
            // Every entry is overwritten by the product: only the length matters.
            scores.resize(rows * nk, 0.0);
            kp.gemm(&qh, rows, nk, &mut scores);
            let mut sums = vec![0f32; rows];
            for (ri, row) in scores.chunks_exact_mut(nk).enumerate() {
                // Masked keys become −∞ here; the scale is applied inside the softmax pass.
                mask_row(row, p, b0 + ri, k0, valid);
                sums[ri] = softmax_numerators(row, p.scale, round, None).1;
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
    });
    for (s, h, o) in results {
        for ri in 0..seq {
            let i = s * seq + ri;
            out[i * q_cols + h * hd..i * q_cols + (h + 1) * hd]
                .copy_from_slice(&o[ri * hd..(ri + 1) * hd]);
        }
    }
}

/// Query blocks, bucketed by sequence and head, as [`blocked_path`] runs them, for bf16
/// activations on the bf16 kernels (tiles or AVX-512 BF16): queries, keys and values are read as
/// stored (no f32 copy), the softmax writes the probabilities as the bf16 rows of the P·V product,
/// and the results go out as bf16. The same products, sums and roundings as [`blocked_path`] with
/// `round`, so the same bits.
fn bf16_path(
    q: &[u16],
    k: &[u16],
    v: &[u16],
    rows: usize,
    p: &AttentionParams,
    out: &mut [std::mem::MaybeUninit<u16>],
) {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    assert_eq!(out.len(), rows * q_cols, "attention: output size");
    let group = p.heads / p.kv_heads;
    let seq = match p.mask {
        AttentionMask::Bidirectional { seq_len, .. } => seq_len,
        AttentionMask::Causal { .. } => rows,
    };
    let tasks: Vec<(usize, usize)> = (0..rows / seq)
        .flat_map(|s| (0..p.heads).map(move |h| (s, h)))
        .collect();
    let valid = key_valid(p);
    // Written, never read, through this pointer: every element once.
    let out_ptr = SendPtr(out.as_mut_ptr() as *mut u16);
    /// A thread's buffers, kept across its tasks (tile operands and results on cache-line
    /// boundaries, see `Aligned`).
    struct Scratch {
        scores: Aligned<f32>,
        probs: Aligned<u16>,
        ob: Aligned<f32>,
    }
    let scratch = || Scratch {
        scores: Aligned::zeroed(0),
        probs: Aligned::zeroed(0),
        ob: Aligned::zeroed(Q_BLOCK * hd),
    };
    pool::for_each_init(tasks.len(), scratch, |sc, t| {
        let (s, h) = tasks[t];
        let g = h / group;
        let (i0, i1) = (s * seq, (s + 1) * seq);
        let (k0, _) = key_range(p, i0);
        let (_, k1) = key_range(p, i1 - 1);
        let keys = k1 - k0;
        let kp = Packed::new(
            BMat::Bf16View {
                data: &k[k0 * kv_cols + g * hd..],
                rows: keys,
                cols: hd,
                row_stride: kv_cols,
                col_stride: 1,
            },
            true,
        );
        let vp = Packed::new(
            BMat::Bf16View {
                data: &v[k0 * kv_cols + g * hd..],
                rows: hd,
                cols: keys,
                row_stride: 1,
                col_stride: kv_cols,
            },
            true,
        );
        for b0 in (i0..i1).step_by(Q_BLOCK) {
            let b1 = (b0 + Q_BLOCK).min(i1);
            let rows = b1 - b0;
            let (_, visible) = key_range(p, b1 - 1);
            let nk = visible - k0;
            // Rows one cache line longer than a multiple of 64 bytes: rows of 4 KB (1024 keys in
            // f32) or 2 KB (in bf16) would put a tile's 16 rows into one or two L1 sets.
            let (lds, ldp) = (nk.next_multiple_of(16) + 16, keys.next_multiple_of(32) + 32);
            sc.scores.resize(rows * lds);
            let scores = sc.scores.as_mut_slice();
            kp.gemm_bf16(&q[b0 * q_cols + h * hd..], rows, q_cols, nk, lds, scores);
            // P over all the head's keys; those a causal block cannot see are zero.
            sc.probs.resize(rows * ldp);
            let probs = sc.probs.as_mut_slice();
            let mut sums = [0f32; Q_BLOCK];
            for (ri, (row, bits)) in scores
                .chunks_exact_mut(lds)
                .zip(probs.chunks_exact_mut(ldp))
                .enumerate()
            {
                let (row, bits) = (&mut row[..nk], &mut bits[..keys]);
                mask_row(row, p, b0 + ri, k0, valid);
                sums[ri] = softmax_numerators(row, p.scale, true, Some(&mut bits[..nk])).1;
                bits[nk..].fill(0);
            }
            let ob = &mut sc.ob.as_mut_slice()[..rows * hd];
            vp.gemm_bf16(probs, rows, ldp, hd, hd, ob);
            for (ri, row) in ob.chunks_exact_mut(hd).enumerate() {
                let inv = 1.0 / sums[ri];
                row.iter_mut().for_each(|x| *x *= inv);
                // SAFETY: row b0 + ri, columns of head h: this task's own part of `out`
                // (tasks are distinct (sequence, head) pairs), inside it by the assert above.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.get().add((b0 + ri) * q_cols + h * hd),
                        hd,
                    )
                };
                super::act::narrow_into(row, dst);
            }
        }
    });
}

/// Cached key or value elements the split-key path reads directly.
trait KvElem: Copy + Sync {
    /// `src` widened to f32 into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Sixteen consecutive elements at `p` widened to f32 (AVX-512F).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl KvElem for f32 {
    #[inline(always)]
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
}

impl KvElem for u16 {
    #[inline(always)]
    fn widen(src: &[u16], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16_to_f32(s);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }
}

/// Softmax state of one query head over one run of keys.
struct Partial {
    /// Largest score per head of the group (−∞ when every key was masked).
    max: Vec<f32>,
    /// Sum of the numerators per head.
    sum: Vec<f32>,
    /// Numerator-weighted sum of values, `[group, head_dim]`.
    acc: Vec<f32>,
}

/// One task of the split-key path: query row, key head, and the run of keys `j0..j1`.
#[derive(Clone, Copy)]
struct Run {
    row: usize,
    group: usize,
    j0: usize,
    j1: usize,
}

fn split_key_path<E: KvElem>(
    q: &Kv,
    k: &[E],
    v: &[E],
    p: &AttentionParams,
    round: bool,
    out: &mut [f32],
) {
    let hd = p.head_dim;
    let (q_cols, kv_cols) = (p.heads * hd, p.kv_heads * hd);
    let group = p.heads / p.kv_heads;
    let valid = key_valid(p);
    // Enough runs to balance the threads, none shorter than MIN_RUN; one run per row and key head when
    // the whole call is too small to be worth a parallel region.
    let keys_max = (0..q.rows)
        .map(|i| key_range(p, i))
        .map(|(a, b)| b - a)
        .max();
    let keys_max = keys_max.unwrap_or(0);
    let work = q.rows * p.heads * keys_max * hd;
    let runs_per_head = if work < 1 << 15 {
        1
    } else {
        RUNS_PER_CALL.div_ceil(q.rows * p.kv_heads)
    };
    let run_len = keys_max
        .div_ceil(runs_per_head)
        .next_multiple_of(MIN_RUN)
        .max(MIN_RUN);
    let mut runs = Vec::new();
    for row in 0..q.rows {
        let (k0, k1) = key_range(p, row);
        for g in 0..p.kv_heads {
            let mut j0 = k0;
            while j0 < k1 {
                let j1 = (j0 + run_len).min(k1);
                runs.push(Run {
                    row,
                    group: g,
                    j0,
                    j1,
                });
                j0 = j1;
            }
        }
    }
    let partials = pool::map(runs.len(), |t| {
        let run = runs[t];
        let mut qg = Vec::with_capacity(group * hd);
        q.extend_f32(
            run.row * q_cols + run.group * group * hd,
            group * hd,
            &mut qg,
        );
        let col = run.group * hd;
        attend_run(&qg, hd, k, v, kv_cols, col, run, valid, p.scale, round)
    });
    // Merge the runs of each (row, key head), in key order.
    let mut t = 0;
    while t < runs.len() {
        let (row, g) = (runs[t].row, runs[t].group);
        let mut end = t;
        while end < runs.len() && runs[end].row == row && runs[end].group == g {
            end += 1;
        }
        let parts = &partials[t..end];
        for h in 0..group {
            let m = parts
                .iter()
                .map(|pt| pt.max[h])
                .fold(f32::NEG_INFINITY, f32::max);
            let dst = &mut out[row * q_cols + (g * group + h) * hd..][..hd];
            if parts.len() == 1 {
                let inv = 1.0 / parts[0].sum[h];
                for (d, &a) in dst.iter_mut().zip(&parts[0].acc[h * hd..(h + 1) * hd]) {
                    *d = r(a * inv, round);
                }
                continue;
            }
            let mut sum = 0f32;
            let mut acc = vec![0f32; hd];
            for pt in parts.iter().filter(|pt| pt.max[h] > f32::NEG_INFINITY) {
                let f = (pt.max[h] - m).exp();
                sum += pt.sum[h] * f;
                axpy(f, &pt.acc[h * hd..(h + 1) * hd], &mut acc);
            }
            let inv = 1.0 / sum;
            for (d, &a) in dst.iter_mut().zip(&acc) {
                *d = r(a * inv, round);
            }
        }
        t = end;
    }
}

/// The partial softmax of the query heads `qg` (`[group, head_dim]`) over one run of keys (rows of
/// `k` and `v` with stride `ld`, columns from `col`).
#[allow(clippy::too_many_arguments)]
fn attend_run<E: KvElem>(
    qg: &[f32],
    hd: usize,
    k: &[E],
    v: &[E],
    ld: usize,
    col: usize,
    run: Run,
    valid: Option<&[bool]>,
    scale: f32,
    round: bool,
) -> Partial {
    let n = run.j1 - run.j0;
    let group = qg.len() / hd;
    let mut scores = vec![0f32; group * n];
    let (kr, vr) = (&k[run.j0 * ld + col..], &v[run.j0 * ld + col..]);
    #[cfg(target_arch = "x86_64")]
    let wide = has_avx512() && hd.is_multiple_of(16) && hd <= 128;
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    if wide {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has AVX-512F and FMA; the rows read lie inside `k`.
        unsafe {
            x86::scores(qg, hd, kr, ld, n, scale, &mut scores)
        };
    } else {
        scores_generic(qg, hd, kr, ld, n, scale, &mut scores);
    }
    if let Some(m) = valid {
        for (jj, _) in m[run.j0..run.j1].iter().enumerate().filter(|(_, &ok)| !ok) {
            for h in 0..group {
                scores[h * n + jj] = f32::NEG_INFINITY;
            }
        }
    }
    let mut max = vec![0f32; group];
    let mut sum = vec![0f32; group];
    for h in 0..group {
        (max[h], sum[h]) = softmax_numerators(&mut scores[h * n..(h + 1) * n], 1.0, round, None);
    }
    let mut acc = vec![0f32; group * hd];
    if wide {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for `v`.
        unsafe {
            x86::values(&scores, hd, vr, ld, n, &mut acc)
        };
    } else {
        values_generic(&scores, hd, vr, ld, n, &mut acc);
    }
    Partial { max, sum, acc }
}

/// `scores[h·n + j] = q_h · k_j · scale` for the `n` key rows of `k` (stride `ld`).
fn scores_generic<E: KvElem>(
    qg: &[f32],
    hd: usize,
    k: &[E],
    ld: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
) {
    let group = qg.len() / hd;
    let row = &mut vec![0f32; hd][..];
    for j in 0..n {
        E::widen(&k[j * ld..][..hd], row);
        for h in 0..group {
            scores[h * n + j] = dot(&qg[h * hd..(h + 1) * hd], row) * scale;
        }
    }
}

/// `acc_h += Σ_j p[h·n + j] · v_j` over the `n` value rows of `v` (stride `ld`).
fn values_generic<E: KvElem>(p: &[f32], hd: usize, v: &[E], ld: usize, n: usize, acc: &mut [f32]) {
    let group = acc.len() / hd;
    let row = &mut vec![0f32; hd][..];
    for j in 0..n {
        if (0..group).all(|h| p[h * n + j] == 0.0) {
            continue;
        }
        E::widen(&v[j * ld..][..hd], row);
        for h in 0..group {
            let w = p[h * n + j];
            if w != 0.0 {
                axpy(w, row, &mut acc[h * hd..(h + 1) * hd]);
            }
        }
    }
}

/// AVX-512 tiles of the split-key path for head widths that are multiples of 16 (up to 128): a key
/// or value row is loaded (and widened) once for up to four query heads, and sixteen keys' dot
/// products are reduced together by a transpose-and-add.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::KvElem;

    /// Rows ahead of the one being read that are prefetched. Cached rows of one key head sit a whole
    /// cache row apart (all heads of a position are adjacent), a stride the hardware prefetcher
    /// follows poorly: without this the split-key path ran at about a third of the DRAM bandwidth.
    const AHEAD: usize = 16;

    /// Prefetches the `len` elements at `p` (may point past the cache: prefetches never fault).
    #[inline(always)]
    unsafe fn prefetch_row<E>(p: *const E, len: usize) {
        let bytes = len * std::mem::size_of::<E>();
        let b = p as *const i8;
        for off in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(off));
        }
    }

    /// Lane i of the result is the sum of the lanes of `v[i]`.
    #[inline(always)]
    unsafe fn transpose_sum(v: &[__m512; 16]) -> __m512 {
        let mut a = [_mm512_setzero_ps(); 8];
        for i in 0..8 {
            let (x, y) = (v[2 * i], v[2 * i + 1]);
            a[i] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
        }
        let mut b = [_mm512_setzero_ps(); 4];
        for i in 0..4 {
            let (x, y) = (_mm512_castps_pd(a[2 * i]), _mm512_castps_pd(a[2 * i + 1]));
            // 64-bit unpacks move lane pairs; the sums are f32 sums.
            b[i] = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(x, y)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)),
            );
        }
        // Each 128-bit block of b[i] now holds partial sums of v[4i..4i+4], in order.
        let c0 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(b[0], b[1]),
            _mm512_shuffle_f32x4::<0xDD>(b[0], b[1]),
        );
        let c1 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(b[2], b[3]),
            _mm512_shuffle_f32x4::<0xDD>(b[2], b[3]),
        );
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(c0, c1),
            _mm512_shuffle_f32x4::<0xDD>(c0, c1),
        )
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn scores<E: KvElem>(
        qg: &[f32],
        hd: usize,
        k: &[E],
        ld: usize,
        n: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let group = qg.len() / hd;
        let mut h0 = 0;
        while h0 < group {
            match group - h0 {
                1 => scores_tile::<E, 1>(qg, h0, hd, k, ld, n, scale, out),
                2 => scores_tile::<E, 2>(qg, h0, hd, k, ld, n, scale, out),
                3 => scores_tile::<E, 3>(qg, h0, hd, k, ld, n, scale, out),
                _ => scores_tile::<E, 4>(qg, h0, hd, k, ld, n, scale, out),
            }
            h0 += 4;
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores_tile<E: KvElem, const HG: usize>(
        qg: &[f32],
        h0: usize,
        hd: usize,
        k: &[E],
        ld: usize,
        n: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let q = qg.as_ptr().add(h0 * hd);
        let sv = _mm512_set1_ps(scale);
        let mut part = [[_mm512_setzero_ps(); 16]; HG];
        let mut j0 = 0;
        while j0 < n {
            let len = 16.min(n - j0);
            for (kk, j) in (j0..j0 + len).enumerate() {
                let mut acc = [_mm512_setzero_ps(); HG];
                let kp = k.as_ptr().add(j * ld);
                prefetch_row(kp.wrapping_add(AHEAD * ld), hd);
                for c in (0..hd).step_by(16) {
                    let kv = E::load16(kp.add(c));
                    for (h, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(h * hd + c)), kv, *a);
                    }
                }
                for h in 0..HG {
                    part[h][kk] = acc[h];
                }
            }
            for p in part.iter_mut() {
                p[len..].fill(_mm512_setzero_ps());
            }
            for (h, p) in part.iter().enumerate() {
                let s = _mm512_mul_ps(transpose_sum(p), sv);
                let mut buf = [0f32; 16];
                _mm512_storeu_ps(buf.as_mut_ptr(), s);
                out[(h0 + h) * n + j0..][..len].copy_from_slice(&buf[..len]);
            }
            j0 += 16;
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn values<E: KvElem>(
        p: &[f32],
        hd: usize,
        v: &[E],
        ld: usize,
        n: usize,
        acc: &mut [f32],
    ) {
        let group = acc.len() / hd;
        let mut h0 = 0;
        while h0 < group {
            for c0 in (0..hd).step_by(64) {
                let cn = (hd - c0).min(64) / 16;
                macro_rules! go {
                    ($hg:literal) => {
                        match cn {
                            1 => values_tile::<E, $hg, 1>(p, h0, c0, hd, v, ld, n, acc),
                            2 => values_tile::<E, $hg, 2>(p, h0, c0, hd, v, ld, n, acc),
                            3 => values_tile::<E, $hg, 3>(p, h0, c0, hd, v, ld, n, acc),
                            _ => values_tile::<E, $hg, 4>(p, h0, c0, hd, v, ld, n, acc),
                        }
                    };
                }
                match group - h0 {
                    1 => go!(1),
                    2 => go!(2),
                    3 => go!(3),
                    _ => go!(4),
                }
            }
            h0 += 4;
        }
    }

    /// Heads `h0..h0+HG`, columns `c0..c0+16·CN`: the accumulators stay in registers over all keys.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values_tile<E: KvElem, const HG: usize, const CN: usize>(
        p: &[f32],
        h0: usize,
        c0: usize,
        hd: usize,
        v: &[E],
        ld: usize,
        n: usize,
        acc: &mut [f32],
    ) {
        let mut a = [[_mm512_setzero_ps(); CN]; HG];
        for j in 0..n {
            let vp = v.as_ptr().add(j * ld + c0);
            prefetch_row(vp.wrapping_add(AHEAD * ld), 16 * CN);
            let vv: [__m512; CN] = std::array::from_fn(|c| E::load16(vp.add(16 * c)));
            for (h, ah) in a.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p.get_unchecked((h0 + h) * n + j));
                for c in 0..CN {
                    ah[c] = _mm512_fmadd_ps(w, vv[c], ah[c]);
                }
            }
        }
        for (h, ah) in a.iter().enumerate() {
            let dst = acc.as_mut_ptr().add((h0 + h) * hd + c0);
            for (c, &x) in ah.iter().enumerate() {
                _mm512_storeu_ps(
                    dst.add(16 * c),
                    _mm512_add_ps(_mm512_loadu_ps(dst.add(16 * c)), x),
                );
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_bits(n: usize, seed: &mut u64, scale: f32) -> Vec<u16> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let u = ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                (round_bf16(u * scale).to_bits() >> 16) as u16
            })
            .collect()
    }

    /// The bf16 path reads bf16 storage in place; it must give the blocked path's bits on the same
    /// values (under `IDEFICS3_ISA=amx-model` and on AMX machines through the tiles, with AVX-512
    /// BF16 through its kernel, elsewhere through the dense fallback of `Packed::gemm_bf16`).
    #[test]
    fn bf16_path_gives_the_bits_of_the_blocked_path() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let widen = |v: &[u16]| v.iter().map(|&b| bf16_to_f32(b)).collect::<Vec<f32>>();
        // (heads, kv_heads, head_dim, rows, mask): vision-like sequences with and without padded
        // keys, and causal prefills whose key counts are not multiples of 32.
        let valid: Vec<bool> = (0..2 * 160).map(|j| j % 160 % 7 != 5).collect();
        let cases: [(usize, usize, usize, usize, AttentionMask); 5] = [
            (
                4,
                4,
                64,
                2 * 160,
                AttentionMask::Bidirectional {
                    seq_len: 160,
                    key_valid: None,
                },
            ),
            (
                4,
                2,
                32,
                2 * 160,
                AttentionMask::Bidirectional {
                    seq_len: 160,
                    key_valid: Some(&valid),
                },
            ),
            (6, 2, 64, 150, AttentionMask::Causal { offset: 0 }),
            (2, 1, 32, 40, AttentionMask::Causal { offset: 0 }),
            // Odd key counts (probability rows that are not whole pairs) and a head width that
            // is not a multiple of 32.
            (3, 1, 48, 151, AttentionMask::Causal { offset: 0 }),
        ];
        for (heads, kv_heads, hd, rows, mask) in cases {
            let p = AttentionParams {
                heads,
                kv_heads,
                head_dim: hd,
                scale: (hd as f32).powf(-0.5),
                mask,
            };
            let q = bf16_bits(rows * heads * hd, &mut seed, 2.0);
            let k = bf16_bits(rows * kv_heads * hd, &mut seed, 2.0);
            let v = bf16_bits(rows * kv_heads * hd, &mut seed, 1.0);
            // A NaN pattern the results never take: `attention` relies on every element being
            // written.
            const UNWRITTEN: u16 = 0x7fc1;
            let mut bits = vec![std::mem::MaybeUninit::new(UNWRITTEN); rows * heads * hd];
            bf16_path(&q, &k, &v, rows, &p, &mut bits);
            // SAFETY: initialised above (and possibly overwritten by `bf16_path`).
            let bits: Vec<u16> = bits.iter().map(|b| unsafe { b.assume_init() }).collect();
            assert!(
                !bits.contains(&UNWRITTEN),
                "{heads} heads of {hd}, {rows} rows: elements left unwritten"
            );
            let tiles = widen(&bits);
            let mut blocked = vec![0f32; rows * heads * hd];
            let qf = widen(&q);
            let qv = Kv {
                data: KvData::F32(&qf),
                rows,
                cols: heads * hd,
            };
            blocked_path(&qv, &widen(&k), &widen(&v), &p, true, &mut blocked);
            let differ = tiles
                .iter()
                .zip(&blocked)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{heads}/{kv_heads} heads of {hd}, {rows} rows, {mask:?}"
            );
            assert!(tiles.iter().all(|x| x.is_finite()));
        }
    }
}
