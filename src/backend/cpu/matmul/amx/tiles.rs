//! The tile operations the AMX kernel is written over, and their software model.
//!
//! The kernel in `super` calls only the operations of [`Tiles`]; it is compiled once over the real
//! instructions (`super::hw::Hw`) and once over [`Model`], so that the packing, blocking, edge
//! handling and epilogue are the same code in both and are tested on every machine.
//!
//! The model follows the Intel SDM (Vol. 2, "TDPBF16PS", "TILELOADD", "TILESTORED", "TILEZERO",
//! "LDTILECFG"; Vol. 1 ch. 18 for the palette-1 configuration layout): 8 tiles of at most 16 rows of
//! 64 bytes, rows past a tile's configured row count and bytes past its configured width read as
//! zero, and TDPBF16PS's order of operations exactly as its pseudocode gives it. For each row `m` of
//! the destination it keeps two f32 partial sums per output column, one for the even and one for the
//! odd element of the bf16 pairs; for each pair index `k` in order it adds
//! `a[m].bf16[2k] · b[k].bf16[2n]` to the even sum and `a[m].bf16[2k+1] · b[k].bf16[2n+1]` to the odd
//! sum, each as one f32 fused multiply-add; after the last pair it adds even + odd, and adds that to
//! the destination element. Every step rounds to nearest even, treats denormal inputs as zero (DAZ)
//! and flushes denormal results to zero (FTZ); MXCSR plays no part. (Older editions of Intel's
//! intrinsics guide describe a single running sum per column; the SDM's current pseudocode, which
//! this follows, has the even/odd split. On an AMX machine `tests/kernels.rs` compares this model with
//! the instructions bit for bit.)

/// The palette-1 tile configuration LDTILECFG reads: 64 bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct TileConfig {
    /// Palette 1: 8 tiles of up to 16 rows × 64 bytes.
    pub palette: u8,
    /// Restart row of an interrupted tile load or store; 0 for a new configuration.
    pub start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row of each tile (only the first 8 exist in palette 1).
    pub colsb: [u16; 16],
    /// Rows of each tile.
    pub rows: [u8; 16],
}

impl TileConfig {
    /// Every one of the 8 tiles at its full shape: 16 rows of 64 bytes.
    pub const fn full() -> Self {
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        let mut t = 0;
        while t < TILES {
            colsb[t] = ROW_BYTES as u16;
            rows[t] = ROWS as u8;
            t += 1;
        }
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        }
    }
}

/// Tiles of palette 1.
pub const TILES: usize = 8;
/// Most rows of a tile.
pub const ROWS: usize = 16;
/// Most bytes of a tile row.
pub const ROW_BYTES: usize = 64;

/// The tile operations of AMX-TILE and AMX-BF16 the kernel uses. Tile numbers are 0–7; pointers
/// must cover `rows × stride` bytes of the tile's configured shape.
pub trait Tiles {
    /// A fresh tile state (no configuration loaded).
    fn new() -> Self;
    /// LDTILECFG.
    ///
    /// # Safety
    /// For the instructions: the CPU has AMX and the process may use tile data.
    unsafe fn configure(&mut self, cfg: &TileConfig);
    /// TILEZERO.
    ///
    /// # Safety
    /// A configuration is loaded.
    unsafe fn zero(&mut self, t: u8);
    /// TILELOADD: row `r` from `src + r·stride`.
    ///
    /// # Safety
    /// A configuration is loaded; the rows read are in bounds.
    unsafe fn load(&mut self, t: u8, src: *const u8, stride: usize);
    /// TDPBF16PS `c += a · b` (bf16 pairs in `a` and `b`, f32 in `c`).
    ///
    /// # Safety
    /// A configuration is loaded and the three shapes agree.
    unsafe fn dpbf16ps(&mut self, c: u8, a: u8, b: u8);
    /// TILESTORED: row `r` to `dst + r·stride`.
    ///
    /// # Safety
    /// A configuration is loaded; the rows written are in bounds.
    unsafe fn store(&mut self, t: u8, dst: *mut u8, stride: usize);
    /// TILERELEASE.
    ///
    /// # Safety
    /// As for [`Tiles::configure`].
    unsafe fn release(&mut self);
}

/// The software model of the tile unit (one per thread, as the tile registers are).
pub struct Model {
    cfg: Option<TileConfig>,
    /// Tile t, row r, dword c at `data[t][r * 16 + c]`.
    data: Box<[[u32; ROWS * ROW_BYTES / 4]; TILES]>,
}

impl Model {
    fn shape(&self, t: u8) -> (usize, usize) {
        let cfg = self
            .cfg
            .as_ref()
            .expect("tile model: a tile instruction ran before LDTILECFG");
        let t = t as usize;
        assert!(t < TILES, "tile model: tmm{t} does not exist in palette 1");
        let (rows, colsb) = (cfg.rows[t] as usize, cfg.colsb[t] as usize);
        assert!(
            rows > 0 && colsb > 0,
            "tile model: tmm{t} is not configured"
        );
        (rows, colsb)
    }
}

/// bf16 bits widened, with denormals treated as zero.
#[inline(always)]
fn widen_daz(bits: u16) -> f32 {
    let bits = if bits & 0x7f80 == 0 {
        bits & 0x8000
    } else {
        bits
    };
    f32::from_bits((bits as u32) << 16)
}

/// Denormal results flushed to a zero of the same sign.
#[inline(always)]
fn ftz(v: f32) -> f32 {
    if v.is_subnormal() {
        0f32.copysign(v)
    } else {
        v
    }
}

/// An f32 input with denormals treated as zero.
#[inline(always)]
fn daz(v: f32) -> f32 {
    ftz(v)
}

/// TDPBF16PS on the model's rows. `mul_add` is one correctly rounded (round-to-nearest-even) fused
/// multiply-add, so each step is the SDM's FP32 FMA; a denormal result is then flushed. (A result
/// that rounds up to the smallest normal is kept. Whether the hardware flushes such a result depends
/// on where it detects tininess; only values within half an ulp below 2^-126 could tell the
/// difference, and the kernel's inputs never come near them.)
#[inline(always)]
fn dot_rows(
    c: &mut [u32; 256],
    a: &[u32; 256],
    b: &[u32; 256],
    rows: usize,
    pairs: usize,
    cols: usize,
) {
    for m in 0..rows {
        let mut even = [0f32; 16];
        let mut odd = [0f32; 16];
        for k in 0..pairs {
            let ap = a[m * 16 + k];
            let (a0, a1) = (widen_daz(ap as u16), widen_daz((ap >> 16) as u16));
            for n in 0..cols {
                let bp = b[k * 16 + n];
                let (b0, b1) = (widen_daz(bp as u16), widen_daz((bp >> 16) as u16));
                even[n] = ftz(a0.mul_add(b0, even[n]));
                odd[n] = ftz(a1.mul_add(b1, odd[n]));
            }
        }
        for n in 0..cols {
            let sum = ftz(daz(even[n]) + daz(odd[n]));
            let dst = daz(f32::from_bits(c[m * 16 + n]));
            c[m * 16 + n] = ftz(dst + sum).to_bits();
        }
    }
}

/// [`dot_rows`] compiled with FMA instructions (without them `mul_add` is a slow library call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dot_rows_fma(
    c: &mut [u32; 256],
    a: &[u32; 256],
    b: &[u32; 256],
    rows: usize,
    pairs: usize,
    cols: usize,
) {
    dot_rows(c, a, b, rows, pairs, cols)
}

impl Tiles for Model {
    fn new() -> Self {
        Model {
            cfg: None,
            data: Box::new([[0; 256]; TILES]),
        }
    }

    unsafe fn configure(&mut self, cfg: &TileConfig) {
        assert_eq!(cfg.palette, 1, "tile model: only palette 1 is modelled");
        for t in 0..TILES {
            assert!(
                cfg.rows[t] as usize <= ROWS && cfg.colsb[t] as usize <= ROW_BYTES,
                "tile model: tmm{t} configured past 16 rows × 64 bytes"
            );
        }
        // LDTILECFG zeroes every tile.
        self.data.iter_mut().for_each(|t| t.fill(0));
        self.cfg = Some(*cfg);
    }

    unsafe fn zero(&mut self, t: u8) {
        self.shape(t);
        self.data[t as usize].fill(0);
    }

    unsafe fn load(&mut self, t: u8, src: *const u8, stride: usize) {
        let (rows, colsb) = self.shape(t);
        let tile = &mut self.data[t as usize];
        tile.fill(0);
        for r in 0..rows {
            let mut row = [0u8; ROW_BYTES];
            std::ptr::copy_nonoverlapping(src.add(r * stride), row.as_mut_ptr(), colsb);
            for (c, w) in row.chunks_exact(4).enumerate() {
                tile[r * 16 + c] = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            }
        }
    }

    unsafe fn dpbf16ps(&mut self, c: u8, a: u8, b: u8) {
        let ((cr, cc), (ar, ac), (br, bc)) = (self.shape(c), self.shape(a), self.shape(b));
        assert!(
            c != a && c != b && a != b,
            "tile model: TDPBF16PS needs three distinct tiles"
        );
        assert!(
            cr == ar && cc == bc && ac / 4 == br && cc % 4 == 0 && ac % 4 == 0,
            "tile model: TDPBF16PS shapes disagree"
        );
        let (ai, bi, ci) = (a as usize, b as usize, c as usize);
        let (at, bt) = (self.data[ai], self.data[bi]);
        let ct = &mut self.data[ci];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            return dot_rows_fma(ct, &at, &bt, cr, ac / 4, cc / 4);
        }
        dot_rows(ct, &at, &bt, cr, ac / 4, cc / 4)
    }

    unsafe fn store(&mut self, t: u8, dst: *mut u8, stride: usize) {
        let (rows, colsb) = self.shape(t);
        let tile = &self.data[t as usize];
        for r in 0..rows {
            let mut row = [0u8; ROW_BYTES];
            for (c, w) in row.chunks_exact_mut(4).enumerate() {
                w.copy_from_slice(&tile[r * 16 + c].to_le_bytes());
            }
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(r * stride), colsb);
        }
    }

    unsafe fn release(&mut self) {
        self.cfg = None;
        self.data.iter_mut().for_each(|t| t.fill(0));
    }
}
