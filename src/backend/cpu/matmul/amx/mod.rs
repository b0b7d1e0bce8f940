//! AMX-BF16 products `C = A·Bᵀ`: bf16 A tiles, VNNI-packed bf16 B tiles, f32 accumulator tiles.
//!
//! The kernel is written once over the tile operations of [`tiles::Tiles`] and runs either on the
//! instructions ([`hw::Hw`], where [`hw::available`] says the CPU and the kernel allow it) or on the
//! software model ([`tiles::Model`], on every machine: `IDEFICS3_ISA=amx-model` and the tests).
//! Everything else — packing, blocking, ragged edges, epilogue — is the same code for both.
//!
//! Layouts (K padded with zeros to a multiple of 32, the depth of one tile step):
//! - A: bf16 rows of `kp` values, rows padded with zeros to a multiple of 16. An A tile is 16 rows ×
//!   32 values (64 bytes) read with the row stride `2·kp`.
//! - B: panels of 32 output columns; a panel holds `kp/2` rows of 32 bf16 pairs (value 2k in the low
//!   half, 2k+1 in the high half), 128 bytes per row. Its two B tiles are the left and right 64 bytes
//!   of 16 consecutive pair rows (stride 128).
//! - A C block is 32 rows × 32 columns in four accumulator tiles (tmm0–3), fed by two A tiles
//!   (tmm4–5) and two B tiles (tmm6–7), 4 tile loads per 4 TDPBF16PS. A block of the last 16 rows
//!   uses the top half only.
//!
//! Products are exact (bf16 × bf16 fits in f32), so only the f32 summation order differs from a
//! plain reference — the same rule as the `vdpbf16ps` kernel: this path runs only where both
//! operands hold bf16 values.

#[cfg(target_arch = "x86_64")]
pub mod hw;
pub mod tiles;

use super::{pool, round_bf16, AMat, Aligned, BMat, Epilogue, OutElem, SendPtr};
use crate::weights::DType;
use std::mem::MaybeUninit;
use tiles::{Model, TileConfig, Tiles};

/// Depth of one tile step (64 bytes of bf16).
const KT: usize = 32;
/// Output columns per B panel (two tiles of 16 f32).
const NP: usize = 32;
/// Rows of one A tile.
const MT: usize = 16;
/// Most rows of A per task (32 strips of 32). A task reads its rows of A once (each depth chunk of
/// a strip serves all the task's panels from L1) and its panels once per strip (from L2 after the
/// first): the bytes it reads from memory are its A rows plus its panels, and the first strip,
/// whose panels come from memory, is one in 32. Tasks of at most 1024 rows ran W1's vision
/// products 3-10% faster than tasks of 256 in alternating microbenchmark runs on the AMX machine
/// (README); fewer rows per task are used where that leaves too few tasks for the threads.
const MB: usize = 1024;
/// Tasks per thread a product is cut into at least (while a task keeps at least one strip), so
/// that a thread slowed by its neighbours does not leave the other waiting long.
const TASKS_PER_THREAD: usize = 4;
/// Bytes of B panels a task aims at (they stay in L2 while its strips pass): 16 panels of K = 768,
/// 4 of K = 3072. Tasks of 4 panels of K = 768 read about 33 GB/s per core from memory at the tile
/// peak, above what one core of the AMX machine streams (about 25 GB/s); 16 panels need about 17.
const B_TASK_BYTES: usize = 768 << 10;
/// Most panels per task (512 columns).
const PANELS_PER_TASK: usize = 16;
/// Most tile steps per depth chunk: a chunk of a 32-row strip of A is 32 rows × 256 values (16 KB,
/// a third of L1), next to the panel chunks streaming from L2 and the accumulators. On a 2-core
/// Xeon VM with AMX, a C sketch of one task with its operands in L2 ran 1.3–1.4× faster in chunks
/// of 8–12 steps than in whole-depth blocks; in the microbenchmark (three alternating runs),
/// chunks of at most 8 steps ran W1's K = 768 products 13–17% faster than chunks of at most 12
/// (three chunks of 8 instead of two of 12), K = 1536 about 10% faster, the others the same.
const CHUNK_STEPS: usize = 8;

/// Whether the epilogue can run vectorised (and so fuse GELU with the bits of the separate op).
pub fn fuses_epilogue() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // The AVX-512 kernels' features (`available_isas`): the epilogue is theirs.
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the epilogue may round and pack bf16 results with VCVTNE2PS2BF16 (AVX-512 BF16 and BW,
/// with [`fuses_epilogue`]'s features).
#[cfg(target_arch = "x86_64")]
fn has_bf16_convert() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        fuses_epilogue()
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    })
}

#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    (round_bf16(v).to_bits() >> 16) as u16
}

/// A as bf16 rows for A tiles: borrowed where bf16 rows already are tile rows (K a multiple of 32,
/// rows on 64-byte boundaries), packed into aligned rows otherwise.
pub struct TileA<'a> {
    data: Rows<'a>,
    /// Row stride of `data` in elements.
    ld: usize,
    /// Rows read in place: all rows of a packed A (padded to 16), the whole groups of 16 of a view.
    full: usize,
    /// Rows `full..m` of a view, zero-padded to 16 rows of `kp`.
    tail: Vec<u16>,
    m: usize,
    k: usize,
    kp: usize,
}

enum Rows<'a> {
    View(&'a [u16]),
    Packed(Aligned<u16>),
}

impl<'a> TileA<'a> {
    /// `a [m, k]` (rounded to bf16; exact when it holds bf16 values): bf16 rows are read in place
    /// where they can be, anything else is packed, in parallel when asked.
    pub fn new(a: AMat<'a>, m: usize, k: usize, parallel: bool) -> Self {
        assert_eq!(a.len(), m * k, "amx: A has the wrong size");
        if let AMat::Bf16(rows) = a {
            return Self::rows(rows, m, k, k, parallel);
        }
        Self::pack(m, k, parallel, |dst, i| {
            let AMat::F32(a) = a else {
                unreachable!("bf16 rows are handled above")
            };
            let src = &a[i * k..(i + 1) * k];
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                // SAFETY: AVX-512F and BW checked just now.
                return unsafe { super::x86::to_bf16_slice(src, &mut dst[..k]) };
            }
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16_bits(s);
            }
        })
    }

    /// The bf16 rows `i·ld .. i·ld + k` of `rows` for `i < m`: read in place when K is a multiple
    /// of 32 and every row starts on a 64-byte boundary (then only a last partial group of 16 rows
    /// is copied, padded with zero rows), else copied into aligned rows.
    pub fn view(rows: &'a [u16], m: usize, k: usize, ld: usize) -> Self {
        Self::rows(rows, m, k, ld, false)
    }

    fn rows(rows: &'a [u16], m: usize, k: usize, ld: usize, parallel: bool) -> Self {
        assert!(ld >= k, "amx: A rows overlap");
        assert!(
            m == 0 || (m - 1) * ld + k <= rows.len(),
            "amx: A view past its data"
        );
        let aligned = (rows.as_ptr() as usize).is_multiple_of(64) && (2 * ld).is_multiple_of(64);
        if !k.is_multiple_of(KT) || !aligned {
            return Self::pack(m, k, parallel, |dst, i| {
                dst[..k].copy_from_slice(&rows[i * ld..i * ld + k])
            });
        }
        let full = m / MT * MT;
        let mut tail = Vec::new();
        if full < m {
            tail = vec![0u16; MT * k];
            for (r, dst) in tail.chunks_exact_mut(k).take(m - full).enumerate() {
                let i = full + r;
                dst.copy_from_slice(&rows[i * ld..i * ld + k]);
            }
        }
        TileA {
            data: Rows::View(rows),
            ld,
            full,
            tail,
            m,
            k,
            kp: k,
        }
    }

    /// Rows of `kp` values (zero beyond `k`), padded to a multiple of 16 rows, row `i` written by
    /// `conv(row, i)`.
    fn pack(m: usize, k: usize, parallel: bool, conv: impl Fn(&mut [u16], usize) + Sync) -> Self {
        let kp = k.next_multiple_of(KT);
        let padded = m.next_multiple_of(MT);
        let mut data = Aligned::zeroed(padded * kp);
        if kp > 0 && m > 0 {
            let rows_per_task = 64;
            let fill = |t: usize, d: &mut [u16]| {
                for (r, dst) in d.chunks_mut(kp).enumerate() {
                    let i = t * rows_per_task + r;
                    if i < m {
                        conv(dst, i);
                    }
                }
            };
            let d = data.as_mut_slice();
            if parallel {
                pool::chunks_mut(d, kp * rows_per_task, || (), |_, t, d| fill(t, d));
            } else {
                d.chunks_mut(kp * rows_per_task)
                    .enumerate()
                    .for_each(|(t, d)| fill(t, d));
            }
        }
        TileA {
            data: Rows::Packed(data),
            ld: kp,
            full: padded,
            tail: Vec::new(),
            m,
            k,
            kp,
        }
    }

    /// The first row of the tile of rows `i..i + 16` (`i` a multiple of 16) and its row stride in
    /// bytes.
    #[inline(always)]
    fn tile(&self, i: usize) -> (*const u8, usize) {
        if i < self.full {
            let data = match &self.data {
                Rows::View(v) => v,
                Rows::Packed(p) => p.as_slice(),
            };
            // SAFETY (of the caller's loads): 16 rows from `i` lie inside `data` (whole groups).
            (data[i * self.ld..].as_ptr() as *const u8, self.ld * 2)
        } else {
            (
                self.tail[(i - self.full) * self.kp..].as_ptr() as *const u8,
                self.kp * 2,
            )
        }
    }
}

/// B packed into VNNI panels for B tiles.
pub struct TileB {
    data: Aligned<u32>,
    n: usize,
    k: usize,
    kp: usize,
}

impl std::fmt::Debug for TileB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TileB({}×{}, {} bytes)", self.n, self.k, self.bytes())
    }
}

impl TileB {
    /// Packs `b [n, k]` (values rounded to bf16; exact when they are bf16 values).
    pub fn new(b: BMat, parallel: bool) -> Self {
        let (n, k) = (b.rows(), b.cols());
        let kp = k.next_multiple_of(KT);
        let panel = kp / 2 * NP;
        let mut data = Aligned::zeroed(n.div_ceil(NP) * panel);
        if panel == 0 {
            return TileB { data, n, k, kp };
        }
        let pairs = k / 2;
        let fill = |row: &mut Vec<f32>, p: usize, dst: &mut [u32]| {
            let nr = NP.min(n - p * NP);
            match b {
                // bf16 weights: each pair is a little-endian u32 of the stored row, moved as is.
                BMat::Weight(w) if w.dtype == DType::BF16 && !w.rounds() => {
                    let rows = w.row_bytes(p * NP, p * NP + nr);
                    for j in 0..nr {
                        let r = &rows[j * k * 2..(j + 1) * k * 2];
                        for c2 in 0..pairs {
                            let q = &r[4 * c2..4 * c2 + 4];
                            dst[c2 * NP + j] = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
                        }
                        if k % 2 == 1 {
                            dst[pairs * NP + j] =
                                u16::from_le_bytes([r[2 * k - 2], r[2 * k - 1]]) as u32;
                        }
                    }
                }
                // A view whose rows are storage columns (Vᵀ in attention): read storage rows.
                BMat::View {
                    data,
                    row_stride: 1,
                    col_stride: s,
                    ..
                } if s > 1 => {
                    for c2 in 0..k.div_ceil(2) {
                        let lo = &data[2 * c2 * s + p * NP..][..nr];
                        let dst = &mut dst[c2 * NP..c2 * NP + nr];
                        if 2 * c2 + 1 < k {
                            let hi = &data[(2 * c2 + 1) * s + p * NP..][..nr];
                            for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                                *d = bf16_bits(l) as u32 | (bf16_bits(h) as u32) << 16;
                            }
                        } else {
                            for (d, &l) in dst.iter_mut().zip(lo) {
                                *d = bf16_bits(l) as u32;
                            }
                        }
                    }
                }
                // bf16 rows (K in attention): each pair of consecutive values is one u32 as stored.
                BMat::Bf16View {
                    data,
                    row_stride,
                    col_stride: 1,
                    ..
                } => {
                    #[cfg(target_arch = "x86_64")]
                    if nr == NP && super::has_avx512() {
                        // SAFETY: AVX-512F checked just now; the 32 rows of this panel lie in
                        // `data` (they are rows of the view).
                        return unsafe { gather_pairs(data, p * NP, row_stride, k, dst) };
                    }
                    for j in 0..nr {
                        let r = &data[(p * NP + j) * row_stride..][..k];
                        let col = dst[j..].iter_mut().step_by(NP);
                        for (d, pair) in col.zip(r.chunks(2)) {
                            *d = match *pair {
                                // One 32-bit load of the pair (little-endian: the first value low).
                                [lo, hi] => lo as u32 | (hi as u32) << 16,
                                [lo] => lo as u32,
                                _ => unreachable!("chunks of two"),
                            };
                        }
                    }
                }
                // bf16 rows that are storage columns (Vᵀ): pair two storage rows.
                BMat::Bf16View {
                    data,
                    row_stride: 1,
                    col_stride: s,
                    ..
                } => {
                    #[cfg(target_arch = "x86_64")]
                    if nr == NP && super::has_avx512() {
                        // SAFETY: AVX-512F checked just now; the `k` storage rows of this panel's
                        // 32 columns lie in `data` (they are columns of the view).
                        return unsafe { interleave_rows(data, p * NP, s, k, dst) };
                    }
                    for c2 in 0..k.div_ceil(2) {
                        let lo = &data[2 * c2 * s + p * NP..][..nr];
                        let dst = &mut dst[c2 * NP..c2 * NP + nr];
                        if 2 * c2 + 1 < k {
                            let hi = &data[(2 * c2 + 1) * s + p * NP..][..nr];
                            for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                                *d = l as u32 | (h as u32) << 16;
                            }
                        } else {
                            for (d, &l) in dst.iter_mut().zip(lo) {
                                *d = l as u32;
                            }
                        }
                    }
                }
                _ => {
                    for j in 0..nr {
                        b.row_into(p * NP + j, row);
                        for (c2, pair) in row.chunks(2).enumerate() {
                            let hi = pair.get(1).map_or(0, |&h| bf16_bits(h) as u32);
                            dst[c2 * NP + j] = bf16_bits(pair[0]) as u32 | hi << 16;
                        }
                    }
                }
            }
        };
        if parallel {
            pool::chunks_mut(
                data.as_mut_slice(),
                panel,
                || vec![0f32; k],
                |row, p, d| fill(row, p, d),
            );
        } else {
            let mut row = vec![0f32; k];
            data.as_mut_slice()
                .chunks_mut(panel)
                .enumerate()
                .for_each(|(p, d)| fill(&mut row, p, d));
        }
        TileB { data, n, k, kp }
    }

    /// Bytes of the packed copy.
    pub fn bytes(&self) -> usize {
        self.data.as_slice().len() * 4
    }
}

/// The panel of rows `r0..r0 + 32` of bf16 rows `data` (row stride `ld`, `k` values each): pair
/// `c2` of row `r0 + j` to `dst[c2·32 + j]`, sixteen rows per gather.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_pairs(data: &[u16], r0: usize, ld: usize, k: usize, dst: &mut [u32]) {
    use std::arch::x86_64::*;
    assert!((r0 + NP - 1) * ld + k <= data.len() && dst.len() >= k.div_ceil(2) * NP);
    assert!(
        ld * (NP - 1) + k <= i32::MAX as usize,
        "amx: rows too far apart to gather"
    );
    // Element offsets (u16 units, scale 2) of sixteen consecutive rows.
    let lanes = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(ld as i32),
    );
    let half = _mm512_set1_epi32((16 * ld) as i32);
    let base = data.as_ptr().add(r0 * ld);
    for c2 in 0..k / 2 {
        let p = base.add(2 * c2) as *const i32;
        let lo = _mm512_i32gather_epi32::<2>(lanes, p);
        let hi = _mm512_i32gather_epi32::<2>(_mm512_add_epi32(lanes, half), p);
        let d = dst.as_mut_ptr().add(c2 * NP) as *mut __m512i;
        _mm512_storeu_si512(d, lo);
        _mm512_storeu_si512(d.add(1), hi);
    }
    if k % 2 == 1 {
        // The last value alone, its pair's high half zero.
        for j in 0..NP {
            dst[k / 2 * NP + j] = data[(r0 + j) * ld + k - 1] as u32;
        }
    }
}

/// The panel of columns `c0..c0 + 32` of the `k` storage rows of `data` (row stride `ld`): storage
/// rows `2·c2` and `2·c2 + 1` paired (the first in the low half) into `dst[c2·32 ..][..32]`, the
/// pair of a last odd row zero in its high half.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn interleave_rows(data: &[u16], c0: usize, ld: usize, k: usize, dst: &mut [u32]) {
    use std::arch::x86_64::*;
    assert!(k == 0 || (k - 1) * ld + c0 + NP <= data.len());
    assert!(dst.len() >= k.div_ceil(2) * NP);
    let row = |r: usize, h: usize| {
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(
            data.as_ptr().add(r * ld + c0 + 16 * h) as *const __m256i
        ))
    };
    for c2 in 0..k.div_ceil(2) {
        for h in 0..2 {
            let lo = row(2 * c2, h);
            let pair = if 2 * c2 + 1 < k {
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(row(2 * c2 + 1, h)))
            } else {
                lo
            };
            _mm512_storeu_si512(dst.as_mut_ptr().add(c2 * NP + 16 * h) as *mut __m512i, pair);
        }
    }
}

/// `out[m, n] = A·Bᵀ` over the first `n` rows of B (row `i` of `out` at `i·ldc`), through `epi`
/// (whose GELU the caller may fuse only when [`fuses_epilogue`]); `hw` picks the instructions over
/// the model. A bf16 `out` needs `epi.round`. Every element of the `m × n` result is written;
/// those between rows (columns `n..ldc`) are not touched.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<O: OutElem>(
    hw: bool,
    a: &TileA,
    b: &TileB,
    n: usize,
    ldc: usize,
    epi: &Epilogue,
    out: &mut [MaybeUninit<O>],
    parallel: bool,
) {
    assert!(
        a.k == b.k && a.kp == b.kp && n <= b.n && n <= ldc,
        "amx: shapes disagree"
    );
    assert!(
        a.m == 0 || out.len() >= (a.m - 1) * ldc + n,
        "amx: output too small"
    );
    assert!(
        std::mem::size_of::<O>() == 4 || epi.round,
        "amx: bf16 outputs are rounded"
    );
    if hw {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                hw::available(),
                "amx: the tile instructions are not usable here"
            );
            return run::<hw::Hw, O>(a, b, n, ldc, epi, out, parallel);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("amx: no tile instructions on this architecture");
    }
    run::<Model, O>(a, b, n, ldc, epi, out, parallel)
}

const CONFIG: TileConfig = TileConfig::full();

fn run<T: Tiles, O: OutElem>(
    a: &TileA,
    b: &TileB,
    n: usize,
    ldc: usize,
    epi: &Epilogue,
    out: &mut [MaybeUninit<O>],
    parallel: bool,
) {
    let m = a.m;
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NP);
    let panel_bytes = b.kp / 2 * NP * 4;
    let most_panels = (B_TASK_BYTES / panel_bytes.max(1))
        .clamp(1, PANELS_PER_TASK)
        .min(panels);
    // Panels and rows split evenly over the tasks.
    let p_blocks = panels.div_ceil(most_panels);
    let task_panels = panels.div_ceil(p_blocks);
    let min_tasks = TASKS_PER_THREAD * pool::current_threads();
    let m_blocks = m.div_ceil(MB).max(min_tasks.div_ceil(p_blocks));
    let mb = m.div_ceil(m_blocks).next_multiple_of(2 * MT);
    let m_blocks = m.div_ceil(mb);
    let steps = a.kp / KT;
    let chunk = steps.div_ceil(steps.div_ceil(CHUNK_STEPS).max(1)).max(1);
    let out_ptr = SendPtr(out.as_mut_ptr() as *mut O);
    let vector = fuses_epilogue();
    // f32 results with nothing to add or round: the accumulators are the results.
    let plain = std::mem::size_of::<O>() == 4
        && epi.bias.is_none()
        && !epi.round
        && !epi.gelu
        && !epi.residual;
    let task = |t: usize| {
        let (bi, bp) = (t / p_blocks, t % p_blocks);
        let (m0, m1) = (bi * mb, ((bi + 1) * mb).min(m));
        let (p0, p1) = (bp * task_panels, ((bp + 1) * task_panels).min(panels));
        let mut tiles = T::new();
        // The accumulators of one 32-row strip over the task's panels, between depth chunks.
        // Not zeroed: the first chunk starts its tiles from zero and stores every element before
        // anything reads it (a 64 KB memset per task showed in profiles of attention's many
        // small products).
        let mut c = [const { MaybeUninit::<[f32; 32 * NP]>::uninit() }; PANELS_PER_TASK];
        // SAFETY: the configuration is the full palette-1 shape; every tile load reads 16 rows that
        // lie inside A's rows (`TileA::tile`), the B panel or `c`; each task writes its own rows
        // and columns of `out`; the caller chose `T::Hw` only where `hw::available()`.
        unsafe {
            tiles.configure(&CONFIG);
            for i in (m0..m1).step_by(2 * MT) {
                let rows = (m1 - i).min(2 * MT);
                let a0 = a.tile(i);
                let a1 = if rows > MT {
                    Some(a.tile(i + MT))
                } else {
                    None
                };
                // Depth chunks outside the panels: a chunk of the strip's A rows stays in L1
                // while the panels' chunks stream past it.
                for s0 in (0..steps).step_by(chunk) {
                    let s1 = (s0 + chunk).min(steps);
                    for (cq, p) in c.iter_mut().zip(p0..p1) {
                        let bpanel =
                            b.data.as_slice().as_ptr().add(p * (b.kp / 2) * NP) as *const u8;
                        let (n0, nr) = (p * NP, NP.min(n - p * NP));
                        let dst = out_ptr.get().add(i * ldc + n0);
                        // Whole f32 blocks of a plain product go from the tiles to `out`.
                        let whole = plain && rows == 2 * MT && nr == NP;
                        let direct = (s1 == steps && whole).then(|| (dst as *mut u8, ldc * 4));
                        let cp = cq.as_mut_ptr() as *mut f32;
                        block(&mut tiles, a0, a1, bpanel, s0..s1, cp, direct);
                        // The other blocks through the epilogue while their tile stores are
                        // still in L1.
                        if s1 == steps && !whole {
                            // The tiles stored 16 or 32 whole rows of the block.
                            let stored = rows.next_multiple_of(MT) * NP;
                            let cq = std::slice::from_raw_parts(cp, stored);
                            epilogue(cq, rows, dst, ldc, nr, n0, epi, vector);
                        }
                    }
                }
            }
            tiles.release();
        }
    };
    let tasks = m_blocks * p_blocks;
    if parallel && tasks > 1 {
        pool::for_each(tasks, task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// One C block: 16 rows (`a0`) or 32 (`a0` and `a1`, each a first row and a row stride in bytes)
/// × 32 columns, over the tile steps `steps` (of depth 32 each). The accumulators start from zero
/// at step 0 and from `c` (32 rows of 32, as this function stored them) after it (f32 stores and
/// loads are exact, so chunking the depth does not change the sums), and end in `c`, or in
/// `direct` (a first element and a row stride in bytes) when given.
#[inline(always)]
unsafe fn block<T: Tiles>(
    t: &mut T,
    a0: (*const u8, usize),
    a1: Option<(*const u8, usize)>,
    b: *const u8,
    steps: std::ops::Range<usize>,
    c: *mut f32,
    direct: Option<(*mut u8, usize)>,
) {
    const LDB: usize = NP * 4;
    let cp = c as *mut u8;
    let acc = if a1.is_some() { 4 } else { 2 };
    for tile in 0..acc {
        let at = cp.add((tile as usize / 2) * MT * LDB + (tile as usize % 2) * 64);
        if steps.start == 0 {
            t.zero(tile);
        } else {
            t.load(tile, at, LDB);
        }
    }
    for s in steps {
        let bp = b.add(s * MT * LDB);
        t.load(6, bp, LDB);
        t.load(7, bp.add(64), LDB);
        t.load(4, a0.0.add(s * KT * 2), a0.1);
        t.dpbf16ps(0, 4, 6);
        t.dpbf16ps(1, 4, 7);
        if let Some((p, lda)) = a1 {
            t.load(5, p.add(s * KT * 2), lda);
            t.dpbf16ps(2, 5, 6);
            t.dpbf16ps(3, 5, 7);
        }
    }
    let (dst, ld) = direct.unwrap_or((cp, LDB));
    for tile in 0..acc {
        t.store(
            tile,
            dst.add((tile as usize / 2) * MT * ld + (tile as usize % 2) * 64),
            ld,
        );
    }
}

/// Writes the live `rows × nr` part of a C block (row stride 32) to `dst` (row stride `ldc`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn epilogue<O: OutElem>(
    c: &[f32],
    rows: usize,
    dst: *mut O,
    ldc: usize,
    nr: usize,
    n0: usize,
    epi: &Epilogue,
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        if std::mem::size_of::<O>() == 2 && epi.round && !epi.gelu && has_bf16_convert() {
            // The bf16 outputs (`OutElem` is f32 or u16).
            return super::x86::store_rows_bf16(c, NP, rows, dst as *mut u16, ldc, nr, n0, epi);
        }
        return super::x86::store_rows(c, NP, rows, dst, ldc, nr, n0, epi);
    }
    let _ = vector;
    let scalar = Epilogue {
        residual: false,
        ..*epi
    };
    for i in 0..rows {
        for j in 0..nr {
            let p = dst.add(i * ldc + j);
            let mut v = scalar.apply(n0 + j, c[i * NP + j]);
            if epi.residual {
                v = epi.add_to((*p).to_f32(), v);
            }
            *p = O::from_f32(v);
        }
    }
}

/// The tile units' peak on the current pool, in FLOP/s: TDPBF16PS on resident tiles (no loads, no
/// stores), `steps` groups of four per task, eight tasks per thread. `None` where the instructions
/// are not usable. The yardstick of the GEMM microbenchmark.
pub fn peak_flops(steps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !hw::available() {
            return None;
        }
        let tasks = 8 * pool::current_threads();
        let t = std::time::Instant::now();
        pool::for_each(tasks, |_| {
            let mut tiles = hw::Hw::new();
            // SAFETY: `hw::available()` said the instructions and the tile data are usable; the
            // full configuration gives every tile its largest shape; nothing is read or written.
            unsafe {
                tiles.configure(&CONFIG);
                for i in 0..8 {
                    tiles.zero(i);
                }
                for _ in 0..steps {
                    tiles.dpbf16ps(0, 4, 6);
                    tiles.dpbf16ps(1, 4, 7);
                    tiles.dpbf16ps(2, 5, 6);
                    tiles.dpbf16ps(3, 5, 7);
                }
                tiles.release();
            }
        });
        let flops = (tasks * steps * 4 * MT * MT * KT * 2) as f64;
        Some(flops / t.elapsed().as_secs_f64())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = steps;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packing of a bf16 view (the fast paths where AVX-512 runs) equals that of the same
    /// view over the f32 values (the generic path): `n` rows of `k`, the given strides.
    fn packs_alike(n: usize, k: usize, row_stride: usize, col_stride: usize, seed: u32) {
        let len = (n - 1) * row_stride + (k - 1) * col_stride + 1;
        let bits: Vec<u16> = (0..len)
            .map(|i| ((i as u32).wrapping_mul(seed) >> 16) as u16 & 0x7f7f)
            .collect();
        let vals: Vec<f32> = bits
            .iter()
            .map(|&b| f32::from_bits((b as u32) << 16))
            .collect();
        let a = TileB::new(
            BMat::Bf16View {
                data: &bits,
                rows: n,
                cols: k,
                row_stride,
                col_stride,
            },
            false,
        );
        let b = TileB::new(
            BMat::View {
                data: &vals,
                rows: n,
                cols: k,
                row_stride,
                col_stride,
            },
            false,
        );
        assert_eq!(
            a.data.as_slice(),
            b.data.as_slice(),
            "{n}×{k}, strides {row_stride} and {col_stride}"
        );
    }

    #[test]
    fn bf16_views_pack_like_their_f32_values() {
        // Whole and partial panels, even and odd depths. K in attention: rows further apart than
        // they are long. Vᵀ: the rows of B are storage columns.
        for (n, k, stride) in [(64, 64, 96), (37, 33, 40), (32, 1, 3), (70, 7, 7)] {
            packs_alike(n, k, stride, 1, 2654435761);
        }
        for (n, k, stride) in [(64, 64, 96), (37, 33, 40), (32, 1, 32), (70, 7, 75)] {
            packs_alike(n, k, 1, stride, 2246822519);
        }
    }
}
