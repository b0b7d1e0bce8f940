//! `C = A·Bᵀ (+ bias)`: activations `A [m, k]` (f32) times a matrix `B [n, k]` given row-wise, which is
//! either a checkpoint weight read in its storage dtype (bf16, f16, f32) or an f32 activation view (the
//! keys and values inside attention). Accumulation is always f32.
//!
//! Kernels, chosen at run time for the CPU:
//! - `Avx512Bf16`: `vdpbf16ps` on bf16 operands — used only when the values are bf16 already (bf16
//!   activations, bf16 or bf16-rounded weights), so the products are exact and only the f32
//!   accumulation order differs from a plain reference.
//! - `Avx512`: f32 FMA; B is packed into 32-column panels, A is broadcast (12×32 register tile).
//! - `Avx2` and `Portable`: a register-blocked dot-product kernel compiled for each target.
//! - `Amx`: the AMX-BF16 tile kernel ([`amx`]) for products with many rows whose operands are bf16
//!   values; everything else takes the AVX-512 kernels. `AmxModel` runs the same tile kernel over a
//!   software model of the tile instructions (for tests, on any machine).
//!
//! Large products are cut into (rows of A × panels of B) tasks over the thread pool; a one-row product
//! (decoding) streams the weight rows straight from the memory map instead of packing them.

use std::sync::OnceLock;

pub(super) mod amx;

#[cfg(target_arch = "x86_64")]
pub(super) use x86::to_bf16_slice;

use super::pool;
use super::CpuWeight;
use crate::numeric::{bf16_to_f32, f16_to_f32, round_bf16};
use crate::weights::DType;

/// Instruction sets the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AMX-BF16 tiles for bf16 products with many rows; AVX-512 (with BF16) for the rest.
    Amx,
    /// AVX-512F with the BF16 dot-product extension.
    Avx512Bf16,
    /// AVX-512F, BW and VL with FMA, 16 lanes.
    Avx512,
    /// AVX2 with FMA, 8 lanes.
    Avx2,
    /// Whatever the compilation target guarantees; separate multiply and add.
    Portable,
    /// The AMX tile kernel over the software model of the tile instructions, the rest on the best
    /// other instruction set: the tile code's packing, blocking and edges on any machine. Slow;
    /// chosen only by `IDEFICS3_ISA=amx-model`.
    AmxModel,
}

impl Isa {
    /// Whether products go through the tile kernel.
    pub fn is_amx(self) -> bool {
        matches!(self, Isa::Amx | Isa::AmxModel)
    }

    /// The instruction set of everything the tile kernel does not cover: itself for the others.
    pub fn base(self) -> Isa {
        // Asked for by every elementwise op: detected once.
        static BASE: OnceLock<Isa> = OnceLock::new();
        if self.is_amx() {
            *BASE.get_or_init(|| {
                available_isas()
                    .into_iter()
                    .find(|i| !i.is_amx())
                    .unwrap_or(Isa::Portable)
            })
        } else {
            self
        }
    }

    /// Order of the caps: a cap allows itself and everything below it.
    fn rank(self) -> u8 {
        match self {
            Isa::Amx => 4,
            Isa::Avx512Bf16 => 3,
            Isa::Avx512 => 2,
            Isa::Avx2 => 1,
            Isa::Portable | Isa::AmxModel => 0,
        }
    }
}

/// The instruction sets this CPU can run, best first.
pub fn available_isas() -> Vec<Isa> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if amx::hw::available() {
            v.push(Isa::Amx);
        }
        // BW and VL with F: the bf16 row passes load and store 16-bit lanes under masks and in
        // 256-bit forms. Every CPU with AVX-512 BF16 or AMX has both; only the Xeon Phi lacks
        // them, and it runs the AVX2 kernels.
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma");
        if avx512 && is_x86_feature_detected!("avx512bf16") {
            v.push(Isa::Avx512Bf16);
        }
        if avx512 {
            v.push(Isa::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
    }
    v.push(Isa::Portable);
    v.push(Isa::AmxModel);
    v
}

/// Why the AMX tiles are not used on this machine (`Ok` where they are available): the CPU lacks
/// AMX-TILE/AMX-BF16 (or AVX-512 BF16), or the kernel refused the tile data permission.
pub fn amx_status() -> Result<(), String> {
    #[cfg(target_arch = "x86_64")]
    {
        amx::hw::status()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err("AMX exists only on x86_64".into())
    }
}

/// The AMX tile units' peak FLOP/s on the current pool (see the GEMM microbenchmark); `None` where
/// the tiles are not usable.
pub fn amx_peak_flops(steps: usize) -> Option<f64> {
    amx::peak_flops(steps)
}

/// The best instruction set of this CPU, detected once; `IDEFICS3_ISA` caps it (see
/// [`choose_isa`]).
pub fn best_isa() -> Isa {
    static BEST: OnceLock<Isa> = OnceLock::new();
    *BEST.get_or_init(|| {
        let cap = std::env::var("IDEFICS3_ISA").ok();
        choose_isa(&available_isas(), cap.as_deref())
    })
}

/// The instruction set to run among `available` (best first, as [`available_isas`] lists them)
/// under the cap `cap`: `amx|avx512bf16|avx512|avx2|portable` allow that set and those below it
/// (only `amx` and no cap allow AMX); `amx-model` selects the software model of the tiles. An
/// unknown cap is reported in the log and ignored.
pub fn choose_isa(available: &[Isa], cap: Option<&str>) -> Isa {
    let cap = match cap {
        Some("amx-model") => return Isa::AmxModel,
        Some("amx") | None => Isa::Amx,
        Some("avx512bf16") => Isa::Avx512Bf16,
        Some("avx512") => Isa::Avx512,
        Some("avx2") => Isa::Avx2,
        Some("portable") => Isa::Portable,
        Some(other) => {
            tracing::warn!(
                "IDEFICS3_ISA={other:?} is not one of amx, amx-model, avx512bf16, avx512, avx2, \
                 portable; ignored"
            );
            Isa::Amx
        }
    };
    available
        .iter()
        .copied()
        .find(|&i| i != Isa::AmxModel && i.rank() <= cap.rank())
        .unwrap_or(Isa::Portable)
}

/// Whether the AVX-512 kernels run on this CPU (under AMX: for everything the tiles do not cover).
pub fn has_avx512() -> bool {
    matches!(best_isa().base(), Isa::Avx512Bf16 | Isa::Avx512)
}

/// The left-hand matrix `A [m, k]`, row-major: f32 values or bf16 bit patterns (activations of a
/// bf16-mode backend, which the bf16 kernels read without conversion).
#[derive(Clone, Copy)]
pub enum AMat<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bfloat16 bit patterns.
    Bf16(&'a [u16]),
}

impl<'a> AMat<'a> {
    fn len(&self) -> usize {
        match self {
            AMat::F32(a) => a.len(),
            AMat::Bf16(a) => a.len(),
        }
    }

    /// The values as f32, for the kernels that read f32 (borrowed when stored so).
    fn to_f32(self) -> std::borrow::Cow<'a, [f32]> {
        match self {
            AMat::F32(a) => a.into(),
            AMat::Bf16(a) => super::act::widen(a).into(),
        }
    }
}

/// The right-hand matrix `B [n, k]`, read row-wise.
#[derive(Clone, Copy)]
pub enum BMat<'a> {
    /// A checkpoint weight (rows = output features).
    Weight(&'a CpuWeight),
    /// An f32 view: element (r, c) at `data[r·row_stride + c·col_stride]`.
    View {
        /// Backing data.
        data: &'a [f32],
        /// Rows (n).
        rows: usize,
        /// Columns (k).
        cols: usize,
        /// Step between rows.
        row_stride: usize,
        /// Step between columns.
        col_stride: usize,
    },
    /// A view of bf16 bit patterns (activations of a bf16-mode backend), addressed as [`BMat::View`].
    Bf16View {
        /// Backing data.
        data: &'a [u16],
        /// Rows (n).
        rows: usize,
        /// Columns (k).
        cols: usize,
        /// Step between rows.
        row_stride: usize,
        /// Step between columns.
        col_stride: usize,
    },
}

impl BMat<'_> {
    fn rows(&self) -> usize {
        match self {
            BMat::Weight(w) => w.rows,
            BMat::View { rows, .. } | BMat::Bf16View { rows, .. } => *rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            BMat::Weight(w) => w.cols,
            BMat::View { cols, .. } | BMat::Bf16View { cols, .. } => *cols,
        }
    }

    /// Row `r` widened to f32 into `out` (`cols` slots).
    fn row_into(&self, r: usize, out: &mut [f32]) {
        match self {
            BMat::Weight(w) => w.rows_into(r, r + 1, out),
            BMat::View {
                data,
                row_stride,
                col_stride,
                ..
            } => {
                let base = r * row_stride;
                if *col_stride == 1 {
                    out.copy_from_slice(&data[base..base + out.len()]);
                } else {
                    for (c, o) in out.iter_mut().enumerate() {
                        *o = data[base + c * col_stride];
                    }
                }
            }
            BMat::Bf16View {
                data,
                row_stride,
                col_stride,
                ..
            } => {
                let base = r * row_stride;
                for (c, o) in out.iter_mut().enumerate() {
                    *o = bf16_to_f32(data[base + c * col_stride]);
                }
            }
        }
    }

    /// The same matrix cut to its first `n` rows.
    fn first_rows(self, n: usize) -> Self {
        match self {
            BMat::Weight(w) => BMat::Weight(w),
            BMat::View {
                data,
                cols,
                row_stride,
                col_stride,
                ..
            } => BMat::View {
                data,
                rows: n,
                cols,
                row_stride,
                col_stride,
            },
            BMat::Bf16View {
                data,
                cols,
                row_stride,
                col_stride,
                ..
            } => BMat::Bf16View {
                data,
                rows: n,
                cols,
                row_stride,
                col_stride,
            },
        }
    }
}

/// `x·Wᵀ (+ bias)` with the best kernel; `round` rounds each output to bf16 and says that `x` holds
/// bf16 values (the bf16 dot-product kernel is then exact on its products).
pub fn matmul(x: AMat, m: usize, w: &CpuWeight, bias: Option<&[f32]>, round: bool) -> Vec<f32> {
    let mut out = vec![0f32; m * w.rows];
    let epi = Epilogue {
        bias,
        round,
        gelu: false,
        residual: false,
    };
    gemm_epi(
        best_isa(),
        x,
        m,
        w.cols,
        BMat::Weight(w),
        &epi,
        round,
        &mut out,
    );
    out
}

/// `x·Wᵀ (+ bias)` with the kernels of `isa` (which the CPU must support).
pub fn matmul_isa(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &CpuWeight,
    bias: Option<&[f32]>,
    round: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; m * w.rows];
    let epi = Epilogue {
        bias,
        round,
        gelu: false,
        residual: false,
    };
    gemm_epi(
        isa,
        AMat::F32(x),
        m,
        w.cols,
        BMat::Weight(w),
        &epi,
        round,
        &mut out,
    );
    out
}

/// `gelu_tanh(x·Wᵀ (+ bias))` with the outputs rounded to bf16 before and after the GELU when `round`:
/// the same values as [`matmul`] followed by the GELU op, in one pass over the output where the
/// AVX-512 panel kernels run.
pub fn matmul_gelu(
    x: AMat,
    m: usize,
    w: &CpuWeight,
    bias: Option<&[f32]>,
    round: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; m * w.rows];
    let epi = Epilogue {
        bias,
        round,
        gelu: true,
        residual: false,
    };
    gemm_epi(
        best_isa(),
        x,
        m,
        w.cols,
        BMat::Weight(w),
        &epi,
        round,
        &mut out,
    );
    out
}

/// `x·Wᵢᵀ (+ bᵢ)` for each weight, GELU applied when `gelu`, as the bit patterns of the bf16 results
/// (the values [`matmul_multi`] and [`matmul_gelu`] give with `round`), written by the epilogue of
/// the AMX tile kernel or of the AVX-512 panel kernels without an f32 copy. `None` where neither runs
/// this product (a matrix-vector product, a CPU without AVX-512, or a GELU the tile epilogue cannot
/// fuse): the caller then takes the f32 path. `x` must hold bf16 values.
pub fn matmul_bf16(
    x: AMat,
    m: usize,
    ws: &[(&CpuWeight, Option<&[f32]>)],
    gelu: bool,
) -> Option<Vec<Vec<u16>>> {
    let k = ws.first()?.0.cols;
    if m <= GEMV_ROWS
        || ws.iter().any(|(w, _)| w.cols != k)
        || (gelu && best_isa().is_amx() && !amx::fuses_epilogue())
    {
        return None;
    }
    let epis = epilogues(ws, true, gelu);
    let mut outs: Vec<Vec<u16>> = ws
        .iter()
        .map(|(w, _)| Vec::with_capacity(m * w.rows))
        .collect();
    let mut spare: Vec<&mut [std::mem::MaybeUninit<u16>]> = outs
        .iter_mut()
        .zip(ws)
        .map(|(o, (w, _))| &mut o.spare_capacity_mut()[..m * w.rows])
        .collect();
    if !many_row_products(x, m, ws, &epis, true, &mut spare) {
        return None;
    }
    for ((w, _), out) in ws.iter().zip(outs.iter_mut()) {
        // SAFETY: the kernels wrote every one of the `m × rows` elements.
        unsafe { out.set_len(m * w.rows) };
    }
    Some(outs)
}

/// `acc += x·Wᵀ (+ bias)` on bf16 bit patterns, each product rounded to bf16 and then the sum, as
/// [`matmul_bf16`] followed by the residual add gives them, in one pass: the epilogue of the tile
/// kernel or of the AVX-512 panel kernels reads the residual and writes the sum in its place.
/// False, with `acc` untouched, where neither runs this product (the caller then runs the two ops).
pub fn matmul_add_bf16(
    x: AMat,
    m: usize,
    w: &CpuWeight,
    bias: Option<&[f32]>,
    acc: &mut [u16],
) -> bool {
    assert_eq!(acc.len(), m * w.rows, "matmul_add: accumulator size");
    if m <= GEMV_ROWS {
        return false;
    }
    let epi = Epilogue {
        bias,
        round: true,
        gelu: false,
        residual: true,
    };
    // The kernels read each residual element before they write its sum (`residual`), so the
    // initialised buffer may be handed over as one they write.
    many_row_products(x, m, &[(w, bias)], &[epi], true, &mut [uninit(acc)])
}

/// The epilogue of each of `ws`: its bias, then `round` and `gelu`.
fn epilogues<'a>(
    ws: &[(&CpuWeight, Option<&'a [f32]>)],
    round: bool,
    gelu: bool,
) -> Vec<Epilogue<'a>> {
    ws.iter()
        .map(|&(_, bias)| Epilogue {
            bias,
            round,
            gelu,
            residual: false,
        })
        .collect()
}

/// `x·Wᵢᵀ` through `epis[i]` into `outs[i]` (`m × rows` elements each, every one written) for
/// products of more than [`GEMV_ROWS`] rows sharing A: on the tiles where they run (`bf16_inputs`:
/// `x` and the weights hold bf16 values), else on the AVX-512 panel kernels. False, with nothing
/// written, where neither runs.
fn many_row_products<O: OutElem>(
    x: AMat,
    m: usize,
    ws: &[(&CpuWeight, Option<&[f32]>)],
    epis: &[Epilogue],
    bf16_inputs: bool,
    outs: &mut [&mut [std::mem::MaybeUninit<O>]],
) -> bool {
    debug_assert!(m > GEMV_ROWS && ws.len() == epis.len() && ws.len() == outs.len());
    let isa = best_isa();
    let k = ws[0].0.cols;
    if isa.is_amx() && bf16_inputs {
        // A is converted to tiles once for all the weights.
        let ta = amx::TileA::new(x, m, k, true);
        for (((w, _), epi), out) in ws.iter().zip(epis).zip(outs.iter_mut()) {
            assert_eq!(w.cols, k, "matmul: inner dimensions differ");
            amx::gemm(
                isa == Isa::Amx,
                &ta,
                w.tile_b(),
                w.rows,
                w.rows,
                epi,
                out,
                true,
            );
        }
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        let jobs: Vec<(&CpuWeight, &Epilogue, SendPtr<O>)> = ws
            .iter()
            .zip(epis)
            .zip(outs.iter_mut())
            .map(|((&(w, _), e), o)| {
                assert_eq!(w.cols * m, x.len(), "matmul: inner dimensions differ");
                (w, e, SendPtr(o.as_mut_ptr() as *mut O))
            })
            .collect();
        x86::gemm_multi(isa == Isa::Avx512Bf16 && bf16_inputs, x, m, k, &jobs);
        return true;
    }
    false
}

/// A zero-filled buffer whose first element sits on a 64-byte boundary. Tile rows (64 bytes) that
/// straddle two cache lines load much slower: on a 2-core Xeon VM with AMX, a product whose A and B
/// started 16 bytes past a line ran at 0.63× the speed of the aligned one.
pub struct Aligned<T: Zeroable> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

/// One cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// Element types of [`Aligned`]: plain numbers, for which all-zero bytes are a valid value.
pub trait Zeroable: Copy + Send + Sync + 'static {}
impl Zeroable for u16 {}
impl Zeroable for u32 {}
impl Zeroable for f32 {}

impl<T: Zeroable> Aligned<T> {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        Aligned {
            lines: vec![Line([0; 64]); bytes.div_ceil(64)],
            len,
            _t: std::marker::PhantomData,
        }
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the lines hold at least `len` elements of `T` (align 64 ≥ align of `T`), every
        // byte pattern written there is a valid `T` (zeros, or values stored through `as_mut_slice`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }

    /// The elements, to write.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }

    /// Grows or shrinks to `len` elements, keeping the first ones; new elements are zero.
    pub fn resize(&mut self, len: usize) {
        let bytes = len * std::mem::size_of::<T>();
        self.lines.resize(bytes.div_ceil(64), Line([0; 64]));
        self.len = len;
    }
}

/// `s` as a slice the kernels may write without reading (every value they write is a valid `T`).
fn uninit<T>(s: &mut [T]) -> &mut [std::mem::MaybeUninit<T>] {
    // SAFETY: same layout; the kernels only store initialised values through it.
    unsafe { &mut *(s as *mut [T] as *mut [std::mem::MaybeUninit<T>]) }
}

/// Several products `x·Wᵢᵀ (+ bᵢ)` of the same activations, one output each; decoding runs them in one
/// parallel region.
pub fn matmul_multi(
    x: AMat,
    m: usize,
    ws: &[(&CpuWeight, Option<&[f32]>)],
    round: bool,
) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = ws.iter().map(|(w, _)| vec![0f32; m * w.rows]).collect();
    let epis = epilogues(ws, round, false);
    if m > GEMV_ROWS {
        let mut views: Vec<_> = outs.iter_mut().map(|o| uninit(o)).collect();
        if many_row_products(x, m, ws, &epis, round, &mut views) {
            return outs;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && m > 0 {
        let jobs: Vec<(&CpuWeight, &Epilogue, SendPtr<f32>)> = ws
            .iter()
            .zip(&epis)
            .zip(outs.iter_mut())
            .map(|((&(w, _), e), o)| {
                assert_eq!(w.cols * m, x.len(), "matmul_multi: inner dimensions differ");
                (w, e, SendPtr(o.as_mut_ptr()))
            })
            .collect();
        x86::gemv_multi(&x.to_f32(), m, &jobs);
        return outs;
    }
    for (((w, _), epi), out) in ws.iter().zip(&epis).zip(outs.iter_mut()) {
        gemm_epi(best_isa(), x, m, w.cols, BMat::Weight(w), epi, round, out);
    }
    outs
}

/// `out[m, n] = a[m, k]·Bᵀ (+ bias)`, `a` row-major with row stride `k`. `bf16_inputs` promises that
/// `a` and `B` hold bf16 values (enabling the bf16 kernel); `round` rounds the outputs to bf16.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    a: &[f32],
    m: usize,
    k: usize,
    b: BMat,
    bias: Option<&[f32]>,
    bf16_inputs: bool,
    round: bool,
    out: &mut [f32],
) {
    let epi = Epilogue {
        bias,
        round,
        gelu: false,
        residual: false,
    };
    gemm_epi(isa, AMat::F32(a), m, k, b, &epi, bf16_inputs, out);
}

/// [`gemm`] through an epilogue. The panel kernels fuse its GELU; the matrix-vector and dot-product
/// paths apply the GELU op to their output instead.
#[allow(clippy::too_many_arguments)]
fn gemm_epi(
    isa: Isa,
    a: AMat,
    m: usize,
    k: usize,
    b: BMat,
    epi: &Epilogue,
    bf16_inputs: bool,
    out: &mut [f32],
) {
    let n = b.rows();
    assert_eq!(b.cols(), k, "gemm: inner dimensions differ");
    assert_eq!(a.len(), m * k, "gemm: a has the wrong size");
    assert_eq!(out.len(), m * n, "gemm: out has the wrong size");
    if let Some(bias) = epi.bias {
        assert_eq!(bias.len(), n, "gemm: bias has the wrong size");
    }
    assert!(
        available_isas().contains(&isa),
        "gemm: {isa:?} is not supported by this CPU"
    );
    if m == 0 || n == 0 {
        return;
    }
    let unfused = Epilogue {
        gelu: false,
        ..*epi
    };
    if isa.is_amx() {
        if !bf16_inputs || (m <= GEMV_ROWS && matches!(b, BMat::Weight(_))) {
            return gemm_epi(isa.base(), a, m, k, b, epi, bf16_inputs, out);
        }
        let fused = amx::fuses_epilogue();
        let e = if fused { epi } else { &unfused };
        let ta = amx::TileA::new(a, m, k, true);
        match b {
            BMat::Weight(w) => {
                amx::gemm(isa == Isa::Amx, &ta, w.tile_b(), n, n, e, uninit(out), true)
            }
            view => {
                let tb = amx::TileB::new(view, true);
                amx::gemm(isa == Isa::Amx, &ta, &tb, n, n, e, uninit(out), true)
            }
        }
        if epi.gelu && !fused {
            super::elementwise::gelu_tanh(out, epi.round);
        }
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx512 if m > GEMV_ROWS || !matches!(b, BMat::Weight(_)) => {
            return x86::gemm_packed(isa == Isa::Avx512Bf16 && bf16_inputs, a, m, k, b, epi, out);
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 | Isa::Avx512 => {
            if let BMat::Weight(w) = b {
                x86::gemv(&a.to_f32(), m, w, &unfused, out);
            }
        }
        _ => dot_gemm(isa, &a.to_f32(), m, k, b, &unfused, out),
    }
    if epi.gelu {
        super::elementwise::gelu_tanh(out, epi.round);
    }
}

/// A right-hand matrix packed once for several products on the calling thread (attention: K and Vᵀ
/// of one head serve every query block).
pub struct Packed<'a> {
    #[cfg(target_arch = "x86_64")]
    avx: Option<x86::PackedB>,
    /// B for the tile kernel, and whether the instructions (not the model) run it.
    tiles: Option<(amx::TileB, bool)>,
    b: BMat<'a>,
}

impl<'a> Packed<'a> {
    /// Packs `b` for the best kernel; `bf16_inputs` as in [`gemm`].
    pub fn new(b: BMat<'a>, bf16_inputs: bool) -> Self {
        let isa = best_isa();
        if isa.is_amx() && bf16_inputs {
            return Packed {
                #[cfg(target_arch = "x86_64")]
                avx: None,
                tiles: Some((amx::TileB::new(b, false), isa == Isa::Amx)),
                b,
            };
        }
        #[cfg(target_arch = "x86_64")]
        {
            let isa = isa.base();
            let avx = matches!(isa, Isa::Avx512Bf16 | Isa::Avx512).then(|| {
                x86::PackedB::new(b, b.cols(), isa == Isa::Avx512Bf16 && bf16_inputs, false)
            });
            Packed {
                avx,
                tiles: None,
                b,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Packed { tiles: None, b }
        }
    }

    /// `out[m, n] = a[m, k]·Bᵀ` over the first `n` rows of B, on the calling thread (no bias, no
    /// rounding of the outputs).
    pub fn gemm(&self, a: &[f32], m: usize, n: usize, out: &mut [f32]) {
        self.gemm_dense(AMat::F32(a), m, n, n, out)
    }

    /// [`Packed::gemm`] of bf16 rows: row `i` of A is `a[i·ld .. i·ld + k]`, row `i` of the result
    /// `out[i·ldc ..][..n]` (nothing else of `out` is written). The tile kernel reads the rows in
    /// place when K is a multiple of 32, the AVX-512 BF16 kernel when K and `ld` are even (whole
    /// pairs); otherwise they are copied into dense rows first.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(&self, a: &[u16], m: usize, ld: usize, n: usize, ldc: usize, out: &mut [f32]) {
        let k = self.b.cols();
        if let Some((t, hw)) = &self.tiles {
            if k.is_multiple_of(32) {
                let ta = amx::TileA::view(a, m, k, ld);
                return amx::gemm(*hw, &ta, t, n, ldc, &PLAIN, uninit(out), false);
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = self.avx.as_ref().filter(|p| p.is_bf16()) {
            if k.is_multiple_of(2) && ld.is_multiple_of(2) {
                let rows = x86::ARows::Pairs {
                    data: a,
                    stride: ld / 2,
                };
                return x86::gemm_prepacked(rows, m, p, n, ldc, &PLAIN, uninit(out), false);
            }
        }
        let dense: Vec<u16> = (0..m)
            .flat_map(|i| &a[i * ld..i * ld + k])
            .copied()
            .collect();
        self.gemm_dense(AMat::Bf16(&dense), m, n, ldc, out)
    }

    /// The product of dense rows `a` (`m × k`) into rows of `out` `ldc` apart.
    fn gemm_dense(&self, a: AMat, m: usize, n: usize, ldc: usize, out: &mut [f32]) {
        let k = self.b.cols();
        if let Some((t, hw)) = &self.tiles {
            let ta = amx::TileA::new(a, m, k, false);
            return amx::gemm(*hw, &ta, t, n, ldc, &PLAIN, uninit(out), false);
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = &self.avx {
            return x86::gemm_dense(a, m, p, n, ldc, &PLAIN, uninit(out), false);
        }
        let (isa, b) = (best_isa().base(), self.b.first_rows(n));
        if ldc == n {
            return dot_gemm(isa, &a.to_f32(), m, k, b, &PLAIN, &mut out[..m * n]);
        }
        let mut dense = vec![0f32; m * n];
        dot_gemm(isa, &a.to_f32(), m, k, b, &PLAIN, &mut dense);
        for (dst, src) in out.chunks_mut(ldc).zip(dense.chunks_exact(n)) {
            dst[..n].copy_from_slice(src);
        }
    }
}

/// No bias, no rounding: the epilogue of attention's products.
const PLAIN: Epilogue<'static> = Epilogue {
    bias: None,
    round: false,
    gelu: false,
    residual: false,
};

/// At most this many rows of A go through the streaming (matrix-vector) path.
const GEMV_ROWS: usize = 4;

/// Bias and rounding applied to each output.
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    round: bool,
    /// GELU (tanh) after the bias and rounding, rounded again: `gelu_tanh(matmul(..))` in one pass.
    /// Only the AVX-512 panel kernels fuse it; other paths apply the separate op afterwards.
    gelu: bool,
    /// The output holds a residual stream that each result is added to, in place: `out = round(out
    /// + result)` with `round` (`add_assign` after the product, in one pass). Only the tile and
    /// AVX-512 panel epilogues ([`many_row_products`]) take it.
    residual: bool,
}

impl Epilogue<'_> {
    #[inline(always)]
    fn apply(&self, col: usize, v: f32) -> f32 {
        debug_assert!(!self.gelu, "scalar epilogues do not fuse GELU");
        debug_assert!(!self.residual, "scalar epilogues add residuals in `add_to`");
        let v = match self.bias {
            Some(b) => v + b[col],
            None => v,
        };
        if self.round {
            round_bf16(v)
        } else {
            v
        }
    }

    /// `old + v` rounded as the outputs are: the residual add after [`Epilogue::apply`].
    #[inline(always)]
    fn add_to(&self, old: f32, v: f32) -> f32 {
        let s = old + v;
        if self.round {
            round_bf16(s)
        } else {
            s
        }
    }
}

/// A pointer into one output buffer whose disjoint parts the pool's tasks write.
pub(super) struct SendPtr<T>(pub(super) *mut T);
// SAFETY: used only to let tasks write disjoint parts of one output buffer.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(super) fn get(self) -> *mut T {
        self.0
    }
}

/// An output element of the products: f32, or the bit pattern of a bf16 value (the epilogue then
/// rounds, so the bits are exact).
pub(super) trait OutElem: Copy + Send + Sync + 'static {
    /// `v` (already through the epilogue) as this element.
    fn from_f32(v: f32) -> Self;
    /// The value held (a residual the epilogue adds to).
    fn to_f32(self) -> f32;
}

impl OutElem for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl OutElem for u16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        (round_bf16(v).to_bits() >> 16) as u16
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        crate::numeric::bf16_to_f32(self)
    }
}

// ---------------------------------------------------------------------------------------------------
// Dot-product kernel (AVX2 and portable): rows of B widened into a small buffer, MR×4 dot products.

const DOT_MB: usize = 64;
const DOT_NB: usize = 32;

fn dot_gemm(isa: Isa, a: &[f32], m: usize, k: usize, b: BMat, epi: &Epilogue, out: &mut [f32]) {
    let n = b.rows();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let m_blocks = m.div_ceil(DOT_MB);
    let n_blocks = n.div_ceil(DOT_NB);
    pool::for_each_init(m_blocks * n_blocks, Vec::new, |pack: &mut Vec<f32>, t| {
        let (bi, bj) = (t / n_blocks, t % n_blocks);
        let (n0, n1) = (bj * DOT_NB, ((bj + 1) * DOT_NB).min(n));
        let nr = n1 - n0;
        pack.clear();
        pack.resize(nr.div_ceil(4) * 4 * k, 0.0);
        for j in 0..nr {
            b.row_into(n0 + j, &mut pack[j * k..(j + 1) * k]);
        }
        let args = DotArgs {
            x: a,
            k,
            m0: bi * DOT_MB,
            m1: ((bi + 1) * DOT_MB).min(m),
            pack,
            nr,
            n,
            n0,
            out: out_ptr,
            epi,
        };
        // SAFETY: tiles write disjoint (row, column) ranges of `out`; the ISA was checked.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => dot_tile_avx2(&args),
                _ => dot_tile::<Plain, 8>(&args),
            }
        }
    });
}

struct DotArgs<'a> {
    x: &'a [f32],
    k: usize,
    m0: usize,
    m1: usize,
    pack: &'a [f32],
    nr: usize,
    n: usize,
    n0: usize,
    out: SendPtr<f32>,
    epi: &'a Epilogue<'a>,
}

trait Madd {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add (only where the target has FMA: elsewhere `mul_add` is a slow library call).
#[cfg(target_arch = "x86_64")]
struct Fused;
#[cfg(target_arch = "x86_64")]
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
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_tile_avx2(a: &DotArgs) {
    dot_tile::<Fused, 8>(a)
}

#[inline(always)]
unsafe fn dot_tile<M: Madd, const L: usize>(t: &DotArgs) {
    let k = t.k;
    let xrow = |i: usize| &t.x[i * k..(i + 1) * k];
    let wrow = |j: usize| &t.pack[j * k..(j + 1) * k];
    let mut i = t.m0;
    while i < t.m1 {
        if i + 4 <= t.m1 {
            let a = [xrow(i), xrow(i + 1), xrow(i + 2), xrow(i + 3)];
            for j in (0..t.nr).step_by(4) {
                let r = dot::<4, M, L>(&a, &[wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)], k);
                dot_store(t, i, j, &r);
            }
            i += 4;
        } else {
            let a = [xrow(i)];
            for j in (0..t.nr).step_by(4) {
                let r = dot::<1, M, L>(&a, &[wrow(j), wrow(j + 1), wrow(j + 2), wrow(j + 3)], k);
                dot_store(t, i, j, &r);
            }
            i += 1;
        }
    }
}

#[inline(always)]
unsafe fn dot_store<const MR: usize>(t: &DotArgs, i: usize, j: usize, r: &[[f32; 4]; MR]) {
    for (ii, row) in r.iter().enumerate() {
        for (jj, &v) in row.iter().enumerate() {
            if j + jj < t.nr {
                let col = t.n0 + j + jj;
                // SAFETY: (i + ii, col) lies in this tile, which no other task writes.
                *t.out.get().add((i + ii) * t.n + col) = t.epi.apply(col, v);
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

// ---------------------------------------------------------------------------------------------------
// AVX-512 kernels.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{bf16_to_f32, f16_to_f32, uninit, AMat, BMat, DType, Epilogue, OutElem, SendPtr};
    use crate::backend::cpu::elementwise::simd::{
        bf16_lookup, gelu_bf16_table, gelu_ps, live_lanes, round_bf16_ps,
    };
    use crate::backend::cpu::{pool, CpuWeight};

    /// Columns of B per panel (two zmm registers).
    const NR: usize = 32;
    /// Rows of A per register tile.
    const MR: usize = 12;
    /// Rows of A per task.
    const MB: usize = 192;
    /// Panels per task.
    const PANELS_PER_TASK: usize = 4;

    fn to_bf16_bits(v: f32) -> u16 {
        (crate::numeric::round_bf16(v).to_bits() >> 16) as u16
    }

    /// Calls the register-tile kernel instantiated for `mr` (1–12) rows.
    macro_rules! dispatch_mr {
        ($mr:expr, $f:ident, $($arg:expr),*) => {
            match $mr {
                1 => $f::<1, _>($($arg),*), 2 => $f::<2, _>($($arg),*),
                3 => $f::<3, _>($($arg),*), 4 => $f::<4, _>($($arg),*),
                5 => $f::<5, _>($($arg),*), 6 => $f::<6, _>($($arg),*),
                7 => $f::<7, _>($($arg),*), 8 => $f::<8, _>($($arg),*),
                9 => $f::<9, _>($($arg),*), 10 => $f::<10, _>($($arg),*),
                11 => $f::<11, _>($($arg),*), _ => $f::<12, _>($($arg),*),
            }
        };
    }

    /// B packed into panels of NR columns: f32 `[k][NR]`, or bf16 pairs `[ceil(k/2)][NR][2]`.
    pub struct PackedB {
        bf16: bool,
        n: usize,
        k: usize,
        pf: Vec<f32>,
        ph: Vec<u16>,
    }

    impl PackedB {
        /// Whether B is packed as bf16 pairs (for the bf16 kernel).
        pub fn is_bf16(&self) -> bool {
            self.bf16
        }

        /// Packs `b` (in parallel over panels when `parallel`).
        pub fn new(b: BMat, k: usize, bf16: bool, parallel: bool) -> Self {
            let n = b.rows();
            let panels = n.div_ceil(NR);
            let k2 = k.div_ceil(2);
            let (mut pf, mut ph) = (Vec::new(), Vec::new());
            // Each panel is zeroed (its padding) by the task that fills it.
            if bf16 {
                // Scratch per thread: one row widened to f32, and a panel's rows as bf16 bits.
                type Scratch = (Vec<f32>, Vec<u16>);
                let fill = |(row, bits): &mut Scratch, (p, panel): (usize, &mut [u16])| {
                    let (first, nr) = (p * NR, NR.min(n - p * NR));
                    if let Some((data, s)) = transposed(&b) {
                        return pack_transposed(data, s, first, nr, k, panel);
                    }
                    // The panel's rows as bf16 bits, `ld` elements apart: bf16 storage read as it
                    // is (its values are bf16 already), anything else widened and rounded.
                    let (src, ld): (&[u8], usize) = match b {
                        BMat::Bf16View {
                            data,
                            row_stride,
                            col_stride,
                            ..
                        } if row_stride == 1 && col_stride > 1 => {
                            return pack_transposed(data, col_stride, first, nr, k, panel);
                        }
                        BMat::Bf16View {
                            data,
                            row_stride,
                            col_stride: 1,
                            ..
                        } => {
                            let rows = &data[first * row_stride..][..(nr - 1) * row_stride + k];
                            (u16_bytes(rows), row_stride)
                        }
                        BMat::Weight(w) if w.dtype == DType::BF16 => {
                            (w.row_bytes(first, first + nr), k)
                        }
                        _ => {
                            bits.resize(nr * k, 0);
                            for (j, dst) in bits.chunks_exact_mut(k).enumerate() {
                                b.row_into(first + j, row);
                                // SAFETY: AVX-512 is checked by the caller.
                                unsafe { to_bf16_slice(row, dst) };
                            }
                            (u16_bytes(bits), k)
                        }
                    };
                    transpose_pairs(src, ld, nr, k, panel);
                };
                ph = pool::filled(
                    panels * k2 * NR * 2,
                    k2 * NR * 2,
                    parallel,
                    || (vec![0f32; k], Vec::new()),
                    |r, p, c| fill(r, (p, c)),
                );
            } else {
                let fill = |row: &mut Vec<f32>, (p, panel): (usize, &mut [f32])| {
                    let nr = NR.min(n - p * NR);
                    if let Some((data, s)) = transposed(&b) {
                        for c in 0..k {
                            panel[c * NR..c * NR + nr]
                                .copy_from_slice(&data[c * s + p * NR..][..nr]);
                        }
                        return;
                    }
                    for j in 0..nr {
                        b.row_into(p * NR + j, row);
                        for (c, &v) in row.iter().enumerate() {
                            panel[c * NR + j] = v;
                        }
                    }
                };
                pf = pool::filled(
                    panels * k * NR,
                    k * NR,
                    parallel,
                    || vec![0f32; k],
                    |r, p, c| fill(r, (p, c)),
                );
            }
            PackedB { bf16, n, k, pf, ph }
        }
    }

    /// `dst[i] = bf16 bits of round(src[i])` (AVX-512; the ISA was checked by the caller).
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(in crate::backend::cpu) unsafe fn to_bf16_slice(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let full = n / 16 * 16;
        for c in (0..full).step_by(16) {
            let v = round_bf16_ps(_mm512_loadu_ps(src.as_ptr().add(c)));
            let h = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(_mm512_castps_si512(v)));
            _mm256_storeu_si256(dst.as_mut_ptr().add(c) as *mut __m256i, h);
        }
        for (d, &x) in dst[full..n].iter_mut().zip(&src[full..n]) {
            *d = to_bf16_bits(x);
        }
    }

    /// One depth pair (`lo`, `hi`: the `nr` ≤ 32 values of two consecutive depths of a transposed
    /// view) into a bf16 panel row of `NR` pairs.
    #[target_feature(enable = "avx512f")]
    unsafe fn pair_to_bf16(lo: &[f32], hi: Option<&[f32]>, nr: usize, dst: *mut u32) {
        for h in 0..2 {
            let live = nr.saturating_sub(16 * h).min(16);
            if live == 0 {
                break;
            }
            let m = live_lanes(live);
            let a = round_bf16_ps(_mm512_maskz_loadu_ps(m, lo.as_ptr().add(16 * h)));
            let b = match hi {
                Some(hi) => round_bf16_ps(_mm512_maskz_loadu_ps(m, hi.as_ptr().add(16 * h))),
                None => _mm512_setzero_ps(),
            };
            let pair = _mm512_or_si512(
                _mm512_and_si512(
                    _mm512_castps_si512(b),
                    _mm512_set1_epi32(0xffff_0000u32 as i32),
                ),
                _mm512_srli_epi32::<16>(_mm512_castps_si512(a)),
            );
            _mm512_mask_storeu_epi32(dst.add(16 * h) as *mut i32, m, pair);
        }
    }

    /// The bytes of bf16 bit patterns (little-endian, as checkpoints store them).
    fn u16_bytes(v: &[u16]) -> &[u8] {
        // SAFETY: any u16 is two initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, 2 * v.len()) }
    }

    /// The `nr` rows of `k` bf16 values in `src` (little-endian bytes, rows `ld` values apart, on
    /// any byte) into a panel of depth pairs `[ceil(k/2)][NR][2]`; an odd depth's last pair is
    /// completed with zero (the panel comes zeroed).
    fn transpose_pairs(src: &[u8], ld: usize, nr: usize, k: usize, panel: &mut [u16]) {
        assert!(
            nr <= NR
                && src.len() >= 2 * ((nr - 1) * ld + k)
                && panel.len() >= k.div_ceil(2) * NR * 2
        );
        let (s, d) = (src.as_ptr(), panel.as_mut_ptr());
        // Depth outermost: the panel is written in order, the rows' cache lines stay in L1.
        for c2 in 0..k / 2 {
            for j in 0..nr {
                // SAFETY: depths 2·c2 + 1 < k of row j: inside `src` by the assert; pair (c2, j)
                // inside `panel`.
                unsafe {
                    let pair = (s.add(2 * (j * ld + 2 * c2)) as *const u32).read_unaligned();
                    (d.add((c2 * NR + j) * 2) as *mut u32).write_unaligned(pair);
                }
            }
        }
        if k % 2 == 1 {
            for j in 0..nr {
                let o = 2 * (j * ld + k - 1);
                panel[(k / 2 * NR + j) * 2] = u16::from_le_bytes([src[o], src[o + 1]]);
            }
        }
    }

    /// Elements of a view whose rows are its storage's columns, packed into bf16 panels.
    trait TransposedElem: Copy {
        /// The `nr` ≤ 32 values of two consecutive depths (`hi` absent past an odd depth) into a
        /// panel row of `NR` pairs at `dst` (AVX-512, checked by the caller).
        unsafe fn pair_row(lo: &[Self], hi: Option<&[Self]>, nr: usize, dst: *mut u32);
    }

    impl TransposedElem for f32 {
        unsafe fn pair_row(lo: &[f32], hi: Option<&[f32]>, nr: usize, dst: *mut u32) {
            pair_to_bf16(lo, hi, nr, dst)
        }
    }

    impl TransposedElem for u16 {
        unsafe fn pair_row(lo: &[u16], hi: Option<&[u16]>, nr: usize, dst: *mut u32) {
            interleave_bf16(lo, hi, nr, dst)
        }
    }

    /// Columns `first..first + nr` of a transposed view (storage row `d` holds depth `d`, rows
    /// `s` apart) into a bf16 panel: its storage rows read whole, two per pair row.
    fn pack_transposed<T: TransposedElem>(
        data: &[T],
        s: usize,
        first: usize,
        nr: usize,
        k: usize,
        panel: &mut [u16],
    ) {
        assert!(panel.len() >= k.div_ceil(2) * NR * 2);
        for c2 in 0..k.div_ceil(2) {
            let lo = &data[2 * c2 * s + first..][..nr];
            let hi = (2 * c2 + 1 < k).then(|| &data[(2 * c2 + 1) * s + first..][..nr]);
            // SAFETY: AVX-512 is checked by the caller; the pair row lies in `panel` (assert).
            unsafe { T::pair_row(lo, hi, nr, panel.as_mut_ptr().add(c2 * NR * 2) as *mut u32) };
        }
    }

    /// [`pair_to_bf16`] of bf16 storage: two storage rows' values interleaved as pairs.
    #[target_feature(enable = "avx512f")]
    unsafe fn interleave_bf16(lo: &[u16], hi: Option<&[u16]>, nr: usize, dst: *mut u32) {
        assert!(lo.len() >= nr && hi.is_none_or(|h| h.len() >= nr));
        let widen = |s: &[u16], j: usize| {
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(s.as_ptr().add(j) as *const __m256i))
        };
        let mut j = 0;
        while j + 16 <= nr {
            let mut pairs = widen(lo, j);
            if let Some(hi) = hi {
                pairs = _mm512_or_si512(pairs, _mm512_slli_epi32::<16>(widen(hi, j)));
            }
            _mm512_storeu_si512(dst.add(j) as *mut __m512i, pairs);
            j += 16;
        }
        for j in j..nr {
            let h = hi.map_or(0, |h| h[j]);
            dst.add(j).write_unaligned(lo[j] as u32 | (h as u32) << 16);
        }
    }

    /// The data and column stride of a view whose rows are its storage's columns (Vᵀ in attention):
    /// such a view is packed by reading whole storage rows instead of gathering down columns.
    fn transposed<'a>(b: &BMat<'a>) -> Option<(&'a [f32], usize)> {
        match *b {
            BMat::View {
                data,
                row_stride: 1,
                col_stride,
                ..
            } if col_stride > 1 => Some((data, col_stride)),
            _ => None,
        }
    }

    /// A as bf16 pairs, rows padded to an even length: borrowed when A is stored as bf16 with an
    /// even length already.
    fn pack_a_bf16(a: AMat<'_>, k: usize, parallel: bool) -> std::borrow::Cow<'_, [u16]> {
        let a = match a {
            AMat::Bf16(a) if k.is_multiple_of(2) => return a.into(),
            AMat::Bf16(a) => {
                let mut v = vec![0u16; a.len() / k * (k + 1)];
                for (d, s) in v.chunks_mut(k + 1).zip(a.chunks(k)) {
                    d[..k].copy_from_slice(s);
                }
                return v.into();
            }
            AMat::F32(a) => a,
        };
        let k2 = k.div_ceil(2);
        let m = a.len() / k.max(1);
        let mut v = vec![0u16; m * k2 * 2];
        // SAFETY: AVX-512 is checked by the caller.
        let conv = |(d, s): (&mut [u16], &[f32])| unsafe { to_bf16_slice(s, d) };
        if parallel {
            // Many rows per task: one row is too little work to hand out alone.
            let rows = 64;
            pool::chunks_mut(
                &mut v,
                k2 * 2 * rows,
                || (),
                |_, t, d| {
                    let src = &a[t * rows * k..((t + 1) * rows * k).min(a.len())];
                    d.chunks_mut(k2 * 2).zip(src.chunks(k)).for_each(conv);
                },
            );
        } else {
            v.chunks_mut(k2 * 2).zip(a.chunks(k)).for_each(conv);
        }
        v.into()
    }

    pub(super) fn gemm_packed(
        bf16: bool,
        a: AMat,
        m: usize,
        k: usize,
        b: BMat,
        epi: &Epilogue,
        out: &mut [f32],
    ) {
        let packed = PackedB::new(b, k, bf16, true);
        gemm_dense(a, m, &packed, packed.n, packed.n, epi, uninit(out), true);
    }

    /// [`gemm_prepacked`] of dense rows `a` (`m × k`), converted to the form B's kernel reads.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_dense<O: OutElem>(
        a: AMat,
        m: usize,
        b: &PackedB,
        n: usize,
        ldc: usize,
        epi: &Epilogue,
        out: &mut [MaybeUninit<O>],
        parallel: bool,
    ) {
        if b.bf16 {
            let ah = pack_a_bf16(a, b.k, parallel);
            gemm_prepacked(ARows::dense(&ah, b.k), m, b, n, ldc, epi, out, parallel);
        } else {
            let a = a.to_f32();
            gemm_prepacked(ARows::F32(&a), m, b, n, ldc, epi, out, parallel);
        }
    }

    /// Several weights times the same many-row A: A is converted to bf16 once for all of them.
    /// Each job's output is `m × rows` elements, all of which are written.
    pub(super) fn gemm_multi<O: OutElem>(
        bf16: bool,
        a: AMat,
        m: usize,
        k: usize,
        jobs: &[(&CpuWeight, &Epilogue, SendPtr<O>)],
    ) {
        let (ah, wide) = if bf16 {
            (pack_a_bf16(a, k, true), Default::default())
        } else {
            (Default::default(), a.to_f32())
        };
        let rows = if bf16 {
            ARows::dense(&ah, k)
        } else {
            ARows::F32(&wide)
        };
        for (w, epi, out) in jobs {
            let packed = PackedB::new(BMat::Weight(w), k, bf16, true);
            // SAFETY: `out` points to an `m × rows` buffer owned by the caller for this call.
            let out = unsafe {
                std::slice::from_raw_parts_mut(out.get() as *mut MaybeUninit<O>, m * w.rows)
            };
            gemm_prepacked(rows, m, &packed, w.rows, w.rows, epi, out, true);
        }
    }

    /// The left-hand rows as the panel kernels read them.
    #[derive(Clone, Copy)]
    pub(super) enum ARows<'a> {
        /// `k` f32 values per row, rows contiguous (the f32 kernel).
        F32(&'a [f32]),
        /// bf16 pairs (the bf16 kernel): row `i` is the `ceil(k/2)` pairs from pair `i·stride` on.
        Pairs {
            /// The pairs' bf16 halves, low first.
            data: &'a [u16],
            /// Pairs from one row to the next.
            stride: usize,
        },
    }

    impl<'a> ARows<'a> {
        /// Dense pair rows as [`pack_a_bf16`] makes them for depth `k`.
        fn dense(data: &'a [u16], k: usize) -> Self {
            ARows::Pairs {
                data,
                stride: k.div_ceil(2),
            }
        }
    }

    /// `out[i·ldc ..][..n]` = row `i` of `a·Bᵀ` over the first `n` rows of a packed B, for the `m`
    /// rows of `a` (in the form of B's kernel). Only those elements of `out` are written.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_prepacked<O: OutElem>(
        a: ARows,
        m: usize,
        b: &PackedB,
        n: usize,
        ldc: usize,
        epi: &Epilogue,
        out: &mut [MaybeUninit<O>],
        parallel: bool,
    ) {
        let (k, bf16) = (b.k, b.bf16);
        let k2 = k.div_ceil(2);
        let rows_fit = |len: usize, ld: usize, width: usize| m == 0 || (m - 1) * ld + width <= len;
        assert!(
            n <= b.n && ldc >= n && rows_fit(out.len(), ldc, n),
            "gemm_prepacked: output shape"
        );
        let (a, ah, lda2) = match a {
            ARows::F32(a) => {
                assert!(!bf16 && a.len() == m * k, "gemm_prepacked: f32 rows");
                (a, &[][..], 0)
            }
            ARows::Pairs { data, stride } => {
                assert!(
                    bf16 && stride >= k2 && rows_fit(data.len(), 2 * stride, 2 * k2),
                    "gemm_prepacked: bf16 rows"
                );
                (&[][..], data, stride)
            }
        };
        let (pf, ph) = (&b.pf, &b.ph);
        let panels = n.div_ceil(NR);
        let task_panels = PANELS_PER_TASK.min(panels);
        let p_blocks = panels.div_ceil(task_panels);
        let m_blocks = m.div_ceil(MB);
        let out_ptr = SendPtr(out.as_mut_ptr() as *mut O);
        let task = |t: usize| {
            let (bi, bp) = (t / p_blocks, t % p_blocks);
            let (m0, m1) = (bi * MB, ((bi + 1) * MB).min(m));
            for p in bp * task_panels..((bp + 1) * task_panels).min(panels) {
                let n0 = p * NR;
                let nr = NR.min(n - n0);
                let mut i = m0;
                while i < m1 {
                    let mr = MR.min(m1 - i);
                    // SAFETY: the CPU has AVX-512 (checked by the caller); each task writes its own rows
                    // and columns of `out`; the panels and rows read are in bounds.
                    unsafe {
                        let c = out_ptr.get().add(i * ldc + n0);
                        if bf16 {
                            let ap = ah.as_ptr().add(i * lda2 * 2) as *const u32;
                            let bp = ph.as_ptr().add(p * k2 * NR * 2);
                            dispatch_mr!(mr, kernel_bf16, k2, ap, lda2, bp, c, ldc, nr, n0, epi);
                        } else {
                            let ap = a.as_ptr().add(i * k);
                            let bp = pf.as_ptr().add(p * k * NR);
                            dispatch_mr!(mr, kernel_f32, k, ap, k, bp, c, ldc, nr, n0, epi);
                        }
                    }
                    i += mr;
                }
            }
        };
        if parallel {
            pool::for_each(m_blocks * p_blocks, task);
        } else {
            (0..m_blocks * p_blocks).for_each(task);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_f32<const R: usize, O: OutElem>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut O,
        ldc: usize,
        nr: usize,
        n0: usize,
        epi: &Epilogue,
    ) {
        if k == 0 {
            return store(&[[_mm512_setzero_ps(); 2]; R], c, ldc, nr, n0, epi);
        }
        // The first step sets the accumulators: zeroing them instead compiles, for the larger R,
        // to a memset of the whole array on each call (it lives in memory for the epilogue).
        let (b0, b1) = (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)));
        let mut acc: [[__m512; 2]; R] = std::array::from_fn(|i| {
            let av = _mm512_set1_ps(*a.add(i * lda));
            [_mm512_mul_ps(av, b0), _mm512_mul_ps(av, b1)]
        });
        for p in 1..k {
            let b0 = _mm512_loadu_ps(b.add(p * NR));
            let b1 = _mm512_loadu_ps(b.add(p * NR + 16));
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + p));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        store(&acc, c, ldc, nr, n0, epi);
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_bf16<const R: usize, O: OutElem>(
        k2: usize,
        a: *const u32,
        lda2: usize,
        b: *const u16,
        c: *mut O,
        ldc: usize,
        nr: usize,
        n0: usize,
        epi: &Epilogue,
    ) {
        if k2 == 0 {
            return store(&[[_mm512_setzero_ps(); 2]; R], c, ldc, nr, n0, epi);
        }
        // As in `kernel_f32`, the first step sets the accumulators.
        let zero = _mm512_setzero_ps();
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(32) as *const _));
        let mut acc: [[__m512; 2]; R] = std::array::from_fn(|i| {
            let pair = a.add(i * lda2).read_unaligned();
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
            [
                _mm512_dpbf16_ps(zero, av, b0),
                _mm512_dpbf16_ps(zero, av, b1),
            ]
        });
        for p in 1..k2 {
            let b0: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR * 2) as *const _));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * NR * 2 + 32) as *const _));
            for (i, row) in acc.iter_mut().enumerate() {
                // bf16 rows read in place may sit on any even byte.
                let pair = a.add(i * lda2 + p).read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        store(&acc, c, ldc, nr, n0, epi);
    }

    /// Writes `rows` rows of 32 accumulated columns (`c`, row stride `ldb`) through the epilogue:
    /// the tile kernel's stores, with the same vector code as the register kernels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn store_rows<O: OutElem>(
        c: &[f32],
        ldb: usize,
        rows: usize,
        out: *mut O,
        ldc: usize,
        nr: usize,
        n0: usize,
        epi: &Epilogue,
    ) {
        for i in 0..rows {
            let p = c.as_ptr().add(i * ldb);
            let acc = [[_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))]];
            store::<1, O>(&acc, out.add(i * ldc), ldc, nr, n0, epi);
        }
    }

    /// [`store_rows`] of bf16 results of a rounded product without GELU: VCVTNE2PS2BF16 rounds
    /// (to nearest even, as `round_bf16_ps`) and packs a row's 32 columns in one instruction. It
    /// reads f32 denormals as zero where `round_bf16_ps` rounds them, so a row holding one (in the
    /// product, or in its sum with the residual) goes through [`store`] instead: the same bits
    /// either way. A residual is read, added to the rounded product (widened back: exact) and the
    /// sum rounded the same way.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn store_rows_bf16(
        c: &[f32],
        ldb: usize,
        rows: usize,
        out: *mut u16,
        ldc: usize,
        nr: usize,
        n0: usize,
        epi: &Epilogue,
    ) {
        debug_assert!(epi.round && !epi.gelu && (rows == 0 || (rows - 1) * ldb + 32 <= c.len()));
        let live = if nr >= 32 { u32::MAX } else { (1u32 << nr) - 1 };
        let mut bias = [_mm512_setzero_ps(); 2];
        if let Some(b) = epi.bias {
            for (h, bv) in bias.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_ps(
                    (live >> (16 * h)) as __mmask16,
                    b.as_ptr().add(n0 + 16 * h),
                );
            }
        }
        let exponent = _mm512_set1_epi32(0x7f80_0000);
        let magnitude = _mm512_set1_epi32(0x7fff_ffff);
        for i in 0..rows {
            let p = c.as_ptr().add(i * ldb);
            let lo = _mm512_add_ps(_mm512_loadu_ps(p), bias[0]);
            let hi = _mm512_add_ps(_mm512_loadu_ps(p.add(16)), bias[1]);
            // Lanes with a zero exponent and a nonzero magnitude: the denormals.
            let denormal = |v: __m512| {
                let u = _mm512_castps_si512(v);
                _mm512_mask_test_epi32_mask(_mm512_testn_epi32_mask(u, exponent), u, magnitude)
            };
            let dst = out.add(i * ldc);
            let fallback = || {
                store::<1, u16>(
                    &[[lo, hi]],
                    dst,
                    ldc,
                    nr,
                    0,
                    &Epilogue { bias: None, ..*epi },
                )
            };
            if denormal(lo) | denormal(hi) != 0 {
                fallback();
                continue;
            }
            let mut packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            if epi.residual {
                let old = _mm512_maskz_loadu_epi16(live, dst as *const i16);
                let widen = |h: __m256i| {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                };
                let slo = _mm512_add_ps(
                    widen(_mm512_castsi512_si256(old)),
                    widen(_mm512_castsi512_si256(packed)),
                );
                let shi = _mm512_add_ps(
                    widen(_mm512_extracti64x4_epi64::<1>(old)),
                    widen(_mm512_extracti64x4_epi64::<1>(packed)),
                );
                if denormal(slo) | denormal(shi) != 0 {
                    fallback();
                    continue;
                }
                packed = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(shi, slo));
            }
            _mm512_mask_storeu_epi16(dst as *mut i16, live, packed);
        }
    }

    /// Writes an accumulator tile through the epilogue, sixteen columns at a time (partial panels
    /// under a mask).
    #[inline(always)]
    unsafe fn store<const R: usize, O: OutElem>(
        acc: &[[__m512; 2]; R],
        c: *mut O,
        ldc: usize,
        nr: usize,
        n0: usize,
        epi: &Epilogue,
    ) {
        let live = if nr >= 32 { u32::MAX } else { (1u32 << nr) - 1 };
        let masks = [live as __mmask16, (live >> 16) as __mmask16];
        let mut bias = [_mm512_setzero_ps(); 2];
        if let Some(b) = epi.bias {
            for (h, bv) in bias.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_ps(masks[h], b.as_ptr().add(n0 + 16 * h));
            }
        }
        // Rounded GELU inputs are bf16 values: one lookup gives the rounded result.
        let gelu_table = (epi.gelu && epi.round).then(gelu_bf16_table);
        for (i, row) in acc.iter().enumerate() {
            for h in 0..2 {
                if masks[h] == 0 {
                    continue;
                }
                let mut v = row[h];
                if epi.bias.is_some() {
                    v = _mm512_add_ps(v, bias[h]);
                }
                if epi.round {
                    v = round_bf16_ps(v);
                }
                if epi.gelu {
                    v = match gelu_table {
                        Some(t) => bf16_lookup(v, t),
                        None => gelu_ps(v),
                    };
                }
                let p = c.add(i * ldc + 16 * h);
                if epi.residual {
                    // `old + v`, the order of the residual add.
                    v = _mm512_add_ps(get(p, masks[h]), v);
                    if epi.round {
                        v = round_bf16_ps(v);
                    }
                }
                put(p, masks[h], v);
            }
        }
    }

    /// The live lanes at `p` as f32 (bf16 widened: exact), the others zero.
    #[inline(always)]
    unsafe fn get<O: OutElem>(p: *const O, m: __mmask16) -> __m512 {
        if std::mem::size_of::<O>() == 4 {
            return _mm512_maskz_loadu_ps(m, p as *const f32);
        }
        let h = _mm256_maskz_loadu_epi16(m, p as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// Stores the live lanes of `v` as `O` (bf16: the top halves, exact on rounded values).
    #[inline(always)]
    unsafe fn put<O: OutElem>(p: *mut O, m: __mmask16, v: __m512) {
        if std::mem::size_of::<O>() == 4 {
            _mm512_mask_storeu_ps(p as *mut f32, m, v);
        } else {
            let bits = _mm512_srli_epi32::<16>(_mm512_castps_si512(v));
            _mm512_mask_cvtepi32_storeu_epi16(p as *mut i16, m, bits);
        }
    }

    /// Few rows of A: stream each weight row once from the mapped file, widening in registers.
    pub(super) fn gemv(a: &[f32], m: usize, w: &CpuWeight, epi: &Epilogue, out: &mut [f32]) {
        gemv_multi(a, m, &[(w, epi, SendPtr(out.as_mut_ptr()))]);
    }

    /// Several products of the same few rows of A in one parallel region (q/k/v, gate/up), so that
    /// decoding pays one fork-join per group instead of one per weight.
    pub(super) fn gemv_multi(a: &[f32], m: usize, jobs: &[(&CpuWeight, &Epilogue, SendPtr<f32>)]) {
        let total: usize = jobs.iter().map(|(w, _, _)| w.rows).sum();
        let threads = pool::current_threads();
        // Two chunks per thread balance well; more only add scheduling.
        let chunk = total.div_ceil(threads * 2).max(64).next_multiple_of(4);
        let mut parts = Vec::new();
        for (j, (w, _, _)) in jobs.iter().enumerate() {
            let mut r = 0;
            while r < w.rows {
                parts.push((j, r, (r + chunk).min(w.rows)));
                r += chunk;
            }
        }
        let run = |&(j, r0, r1): &(usize, usize, usize)| {
            let (w, epi, out) = jobs[j];
            let (n, k) = (w.rows, w.cols);
            let bytes = w.bytes();
            let es = w.dtype.size();
            for i in 0..m {
                let x = &a[i * k..(i + 1) * k];
                let mut r = r0;
                while r < r1 {
                    let rows = 4.min(r1 - r);
                    let mut sums = [0f32; 4];
                    // SAFETY: AVX-512 was checked by the caller; rows r..r+rows are in bounds.
                    unsafe {
                        let p = bytes.as_ptr().add(r * k * es);
                        dot_rows(w.dtype, w.rounds(), x, p, k, rows, &mut sums);
                    }
                    for (jj, &s) in sums.iter().enumerate().take(rows) {
                        // SAFETY: each part writes its own columns of its own output.
                        unsafe { *out.get().add(i * n + r + jj) = epi.apply(r + jj, s) };
                    }
                    r += rows;
                }
            }
        };
        if parts.len() == 1 {
            run(&parts[0]);
        } else {
            pool::for_each(parts.len(), |i| run(&parts[i]));
        }
    }

    /// Dot products of `x` with `rows` (≤ 4) consecutive weight rows starting at `p`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn dot_rows(
        dtype: DType,
        round: bool,
        x: &[f32],
        p: *const u8,
        k: usize,
        rows: usize,
        sums: &mut [f32; 4],
    ) {
        macro_rules! go {
            ($r:literal) => {
                match (dtype, round) {
                    (DType::BF16, _) => dot_rows_n::<$r, 0, false>(x, p, k, sums),
                    (DType::F16, false) => dot_rows_n::<$r, 1, false>(x, p, k, sums),
                    (DType::F16, true) => dot_rows_n::<$r, 1, true>(x, p, k, sums),
                    (DType::F32, false) => dot_rows_n::<$r, 2, false>(x, p, k, sums),
                    (DType::F32, true) => dot_rows_n::<$r, 2, true>(x, p, k, sums),
                }
            };
        }
        match rows {
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            _ => go!(1),
        }
    }

    /// Sixteen weights of dtype `D` (0 bf16, 1 f16, 2 f32) at `src`, widened (and rounded to bf16).
    #[inline(always)]
    unsafe fn load16<const D: u8, const ROUND: bool>(src: *const u8) -> __m512 {
        let v = match D {
            0 => {
                let h = _mm256_loadu_si256(src as *const __m256i);
                _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
            }
            1 => _mm512_cvtph_ps(_mm256_loadu_si256(src as *const __m256i)),
            _ => _mm512_loadu_ps(src as *const f32),
        };
        if ROUND {
            round_bf16_ps(v)
        } else {
            v
        }
    }

    /// How far ahead of the rows being read the streaming matrix-vector kernel prefetches.
    const PREFETCH_BYTES: usize = 8192;

    #[target_feature(enable = "avx512f,avx512bw,fma")]
    unsafe fn dot_rows_n<const R: usize, const D: u8, const ROUND: bool>(
        x: &[f32],
        p: *const u8,
        k: usize,
        sums: &mut [f32; 4],
    ) {
        let es = if D == 2 { 4 } else { 2 };
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let full = k / 32 * 32;
        let ahead = PREFETCH_BYTES.div_ceil(k * es).max(4) * k * es;
        let mut c = 0;
        while c < full {
            let x0 = _mm512_loadu_ps(x.as_ptr().add(c));
            let x1 = _mm512_loadu_ps(x.as_ptr().add(c + 16));
            for (j, a) in acc.iter_mut().enumerate() {
                let src = p.add((j * k + c) * es);
                // Rows are short (a few KB): prefetch about 8 KB ahead so that DRAM latency
                // overlaps with this group's arithmetic (may point past the matrix; prefetches
                // never fault). Into L2, not L1: L1 prefetches of a whole stream tie up the few L1
                // fill buffers and measured 25–40% slower on this machine.
                _mm_prefetch::<_MM_HINT_T1>(src.wrapping_add(ahead) as *const i8);
                a[0] = _mm512_fmadd_ps(x0, load16::<D, ROUND>(src), a[0]);
                a[1] = _mm512_fmadd_ps(x1, load16::<D, ROUND>(src.add(16 * es)), a[1]);
            }
            c += 32;
        }
        for (j, a) in acc.iter().enumerate() {
            let mut t = _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1]));
            for (q, &xq) in x.iter().enumerate().skip(full) {
                let src = p.add((j * k + q) * es);
                let mut wv = match D {
                    0 => bf16_to_f32(u16::from_le_bytes([*src, *src.add(1)])),
                    1 => f16_to_f32(u16::from_le_bytes([*src, *src.add(1)])),
                    _ => f32::from_le_bytes([*src, *src.add(1), *src.add(2), *src.add(3)]),
                };
                if ROUND {
                    wv = crate::numeric::round_bf16(wv);
                }
                t += xq * wv;
            }
            sums[j] = t;
        }
    }
}
