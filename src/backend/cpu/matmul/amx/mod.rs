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

use super::{pool, round_bf16, AMat, BMat, Epilogue, SendPtr};
use crate::weights::DType;
use tiles::{Model, TileConfig, Tiles};

/// Depth of one tile step (64 bytes of bf16).
const KT: usize = 32;
/// Output columns per B panel (two tiles of 16 f32).
const NP: usize = 32;
/// Rows of one A tile.
const MT: usize = 16;
/// Rows of A per task: 8 C blocks, whose A rows stay in L2 while the task's panels pass over them.
const MB: usize = 256;
/// Panels per task (128 columns; four panels of K = 768 are 192 KB).
const PANELS_PER_TASK: usize = 4;

/// Whether the epilogue can run vectorised (and so fuse GELU with the bits of the separate op).
pub fn fuses_epilogue() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    (round_bf16(v).to_bits() >> 16) as u16
}

/// A as bf16 rows for A tiles.
pub struct TileA {
    data: Vec<u16>,
    m: usize,
    k: usize,
    kp: usize,
}

impl TileA {
    /// Packs `a [m, k]` (rounded to bf16; exact when it holds bf16 values; bf16 rows are copied),
    /// in parallel when asked.
    pub fn new(a: AMat, m: usize, k: usize, parallel: bool) -> Self {
        assert_eq!(a.len(), m * k, "amx: A has the wrong size");
        let kp = k.next_multiple_of(KT);
        let mut data = vec![0u16; m.next_multiple_of(MT) * kp];
        if kp == 0 || m == 0 {
            return TileA { data, m, k, kp };
        }
        #[cfg(target_arch = "x86_64")]
        let wide = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
        let conv = |dst: &mut [u16], i: usize| {
            let src = match a {
                AMat::Bf16(a) => return dst[..k].copy_from_slice(&a[i * k..(i + 1) * k]),
                AMat::F32(a) => &a[i * k..(i + 1) * k],
            };
            #[cfg(target_arch = "x86_64")]
            if wide {
                // SAFETY: AVX-512F and BW checked above.
                return unsafe { super::x86::to_bf16_slice(src, &mut dst[..src.len()]) };
            }
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16_bits(s);
            }
        };
        let rows_per_task = 64;
        let fill = |t: usize, d: &mut [u16]| {
            for (r, dst) in d.chunks_mut(kp).enumerate() {
                let i = t * rows_per_task + r;
                if i < m {
                    conv(dst, i);
                }
            }
        };
        if parallel {
            pool::chunks_mut(&mut data, kp * rows_per_task, || (), |_, t, d| fill(t, d));
        } else {
            data.chunks_mut(kp * rows_per_task)
                .enumerate()
                .for_each(|(t, d)| fill(t, d));
        }
        TileA { data, m, k, kp }
    }
}

/// B packed into VNNI panels for B tiles.
pub struct TileB {
    data: Vec<u32>,
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
        let mut data = vec![0u32; n.div_ceil(NP) * panel];
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
                &mut data,
                panel,
                || vec![0f32; k],
                |row, p, d| fill(row, p, d),
            );
        } else {
            let mut row = vec![0f32; k];
            data.chunks_mut(panel)
                .enumerate()
                .for_each(|(p, d)| fill(&mut row, p, d));
        }
        TileB { data, n, k, kp }
    }

    /// Bytes of the packed copy.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// `out[m, n] = A·Bᵀ` over the first `n` rows of B, through `epi` (whose GELU the caller may fuse
/// only when [`fuses_epilogue`]); `hw` picks the instructions over the model.
pub(super) fn gemm(
    hw: bool,
    a: &TileA,
    b: &TileB,
    n: usize,
    epi: &Epilogue,
    out: &mut [f32],
    parallel: bool,
) {
    assert!(
        a.k == b.k && a.kp == b.kp && n <= b.n && out.len() == a.m * n,
        "amx: shapes disagree"
    );
    if hw {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                hw::available(),
                "amx: the tile instructions are not usable here"
            );
            return run::<hw::Hw>(a, b, n, epi, out, parallel);
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("amx: no tile instructions on this architecture");
    }
    run::<Model>(a, b, n, epi, out, parallel)
}

const CONFIG: TileConfig = TileConfig::full();

fn run<T: Tiles>(a: &TileA, b: &TileB, n: usize, epi: &Epilogue, out: &mut [f32], parallel: bool) {
    let m = a.m;
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NP);
    let task_panels = PANELS_PER_TASK.min(panels);
    let p_blocks = panels.div_ceil(task_panels);
    let m_blocks = m.div_ceil(MB);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let vector = fuses_epilogue();
    let task = |t: usize| {
        let (bi, bp) = (t / p_blocks, t % p_blocks);
        let (m0, m1) = (bi * MB, ((bi + 1) * MB).min(m));
        let mut tiles = T::new();
        let mut c = [0f32; 32 * NP];
        // SAFETY: the configuration is the full palette-1 shape; every tile load reads 16 rows that
        // lie inside the padded A rows or the B panel; each task writes its own rows and columns of
        // `out`; the caller chose `T::Hw` only where `hw::available()`.
        unsafe {
            tiles.configure(&CONFIG);
            for p in bp * task_panels..((bp + 1) * task_panels).min(panels) {
                let n0 = p * NP;
                let nr = NP.min(n - n0);
                let bpanel = b.data.as_ptr().add(p * (b.kp / 2) * NP) as *const u8;
                for i in (m0..m1).step_by(2 * MT) {
                    let rows = (m1 - i).min(2 * MT);
                    let arows = a.data.as_ptr().add(i * a.kp) as *const u8;
                    block(
                        &mut tiles,
                        rows > MT,
                        arows,
                        a.kp * 2,
                        bpanel,
                        a.kp / KT,
                        &mut c,
                    );
                    let dst = out_ptr.get().add(i * n + n0);
                    epilogue(&c, rows, dst, n, nr, n0, epi, vector);
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

/// One C block: 16 or 32 rows (`two` A tiles) × 32 columns, over `steps` tile steps of depth 32.
#[inline(always)]
unsafe fn block<T: Tiles>(
    t: &mut T,
    two: bool,
    a: *const u8,
    lda: usize,
    b: *const u8,
    steps: usize,
    c: &mut [f32; 32 * NP],
) {
    const LDB: usize = NP * 4;
    t.zero(0);
    t.zero(1);
    if two {
        t.zero(2);
        t.zero(3);
    }
    for s in 0..steps {
        let ap = a.add(s * KT * 2);
        let bp = b.add(s * MT * LDB);
        t.load(6, bp, LDB);
        t.load(7, bp.add(64), LDB);
        t.load(4, ap, lda);
        t.dpbf16ps(0, 4, 6);
        t.dpbf16ps(1, 4, 7);
        if two {
            t.load(5, ap.add(MT * lda), lda);
            t.dpbf16ps(2, 5, 6);
            t.dpbf16ps(3, 5, 7);
        }
    }
    let cp = c.as_mut_ptr() as *mut u8;
    t.store(0, cp, LDB);
    t.store(1, cp.add(64), LDB);
    if two {
        t.store(2, cp.add(MT * LDB), LDB);
        t.store(3, cp.add(MT * LDB + 64), LDB);
    }
}

/// Writes the live `rows × nr` part of a C block (row stride 32) to `dst` (row stride `ldc`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn epilogue(
    c: &[f32; 32 * NP],
    rows: usize,
    dst: *mut f32,
    ldc: usize,
    nr: usize,
    n0: usize,
    epi: &Epilogue,
    vector: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if vector {
        return super::x86::store_rows(c, NP, rows, dst, ldc, nr, n0, epi);
    }
    let _ = vector;
    for i in 0..rows {
        for j in 0..nr {
            *dst.add(i * ldc + j) = epi.apply(n0 + j, c[i * NP + j]);
        }
    }
}
