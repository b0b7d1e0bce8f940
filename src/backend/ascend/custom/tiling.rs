//! Host tiling of our AscendC kernels: `#[repr(C)]` mirrors of the structs in `kernels/tiling.h` and the
//! rules that fill every field from the shapes, within the 910B's on-chip buffers (UB 192 KiB per vector
//! core; L1 512 KiB, L0A/L0B 64 KiB, L0C 128 KiB per cube core; ascendc-notes.md "On-chip memory").
//! Each `*_bytes` function below repeats the `InitBuffer` calls of its kernel, so that a tiling that
//! would overflow a buffer is refused here, with the shape named, instead of failing on the device.
//! The plans also count the global-memory bytes each launch moves ([`Traffic`]), from the same fields.

use crate::backend::ActDtype;

/// `KDT_BF16` of `kernels/tiling.h`.
const KDT_BF16: u32 = 0;
/// `KDT_F16`.
const KDT_F16: u32 = 1;
/// `KDT_F32`.
const KDT_F32: u32 = 2;

/// Unified buffer of one vector core (ascendc-notes.md, "On-chip memory").
pub const UB_BYTES: u64 = 192 * 1024;
/// L1 of one cube core.
pub const L1_BYTES: u64 = 512 * 1024;
/// L0A and L0B (each) of one cube core.
pub const L0AB_BYTES: u64 = 64 * 1024;
/// L0C of one cube core.
pub const L0C_BYTES: u64 = 128 * 1024;

/// Largest value of a `uint16_t` field of the copy parameters (`Nd2NzParams::srcDValue`,
/// `DataCopyExtParams::blockCount` is smaller still: [`MAX_BLOCK_COUNT`]).
const MAX_U16: u64 = u16::MAX as u64;
/// `DataCopyExtParams::blockCount` range (ascendc-notes.md, "Data movement": 1..4095).
const MAX_BLOCK_COUNT: u64 = 4095;

/// Mirror of `MatmulTiling` (kernels/tiling.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulTiling {
    /// Rows of A and of the output.
    pub m: u32,
    /// Rows of W, columns of the output.
    pub n: u32,
    /// Columns of A and W.
    pub k: u32,
    /// `KDT_*` of A, W and bias.
    pub in_dtype: u32,
    /// `KDT_*` of the output.
    pub out_dtype: u32,
    /// 1: add bias[n].
    pub has_bias: u32,
    /// 1: GELU (tanh) after the bias.
    pub gelu: u32,
    /// GEMV: W rows reduced together.
    pub gemv_rows: u32,
    /// GEMV: K elements per step (multiple of 16).
    pub gemv_chunk: u32,
    /// GEMV: output columns per vector core.
    pub rows_per_core: u32,
    /// Cube: L0C tile rows.
    pub base_m: u32,
    /// Cube: L0C tile columns.
    pub base_n: u32,
    /// Cube: L0A/L0B depth.
    pub base_k: u32,
    /// Cube: K per L1 tile (multiple of base_k).
    pub l1_k: u32,
    /// Cube: tiles along M.
    pub tiles_m: u32,
    /// Cube: tiles along N.
    pub tiles_n: u32,
    /// Cube: rows per vector epilogue step.
    pub epilogue_rows: u32,
    /// Unused.
    pub reserved: u32,
}

/// Mirror of `DecodeTiling` (kernels/tiling.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeTiling {
    /// Query heads.
    pub heads: u32,
    /// Key/value heads.
    pub kv_heads: u32,
    /// Elements per head.
    pub head_dim: u32,
    /// Valid keys (cache rows 0..keys).
    pub keys: u32,
    /// Cache rows between consecutive kv heads.
    pub kv_stride: u32,
    /// Key ranges per kv head.
    pub splits: u32,
    /// Keys per range.
    pub keys_per_split: u32,
    /// Keys loaded per step.
    pub key_chunk: u32,
    /// `KDT_BF16` or `KDT_F16`.
    pub dtype: u32,
    /// Softmax scale.
    pub scale: f32,
    /// Unused.
    pub reserved0: u32,
    /// Unused.
    pub reserved1: u32,
}

/// Mirror of `FlashTiling` (kernels/tiling.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlashTiling {
    /// Independent sequences.
    pub batch: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads.
    pub kv_heads: u32,
    /// Elements per head.
    pub head_dim: u32,
    /// Query rows per sequence.
    pub q_len: u32,
    /// Keys per sequence.
    pub kv_len: u32,
    /// q: elements between sequences.
    pub q_batch_stride: u32,
    /// q: elements between rows.
    pub q_row_stride: u32,
    /// q: elements between heads.
    pub q_head_stride: u32,
    /// k: elements between sequences.
    pub k_batch_stride: u32,
    /// k: elements between rows.
    pub k_row_stride: u32,
    /// k: elements between heads.
    pub k_head_stride: u32,
    /// v: elements between sequences.
    pub v_batch_stride: u32,
    /// v: elements between rows.
    pub v_row_stride: u32,
    /// v: elements between heads.
    pub v_head_stride: u32,
    /// out: elements between sequences.
    pub o_batch_stride: u32,
    /// out: elements between rows.
    pub o_row_stride: u32,
    /// out: elements between heads.
    pub o_head_stride: u32,
    /// 1: query s sees keys j <= s + causal_offset.
    pub causal: u32,
    /// Keys before the first query (causal only).
    pub causal_offset: u32,
    /// 1: keyValid[batch][kv_len] bytes are read.
    pub has_key_mask: u32,
    /// `KDT_BF16` or `KDT_F16`.
    pub dtype: u32,
    /// Softmax scale.
    pub scale: f32,
    /// Query rows per step (128).
    pub block_m: u32,
    /// Keys per step (128).
    pub block_n: u32,
    /// ceil(q_len / block_m).
    pub q_tiles: u32,
}

// The sizes tiling.h asserts; a field added on one side only fails the build.
const _: () = assert!(std::mem::size_of::<MatmulTiling>() == 72);
const _: () = assert!(std::mem::size_of::<DecodeTiling>() == 48);
const _: () = assert!(std::mem::size_of::<FlashTiling>() == 104);

// SAFETY: plain data of 4-byte fields with no padding (sizes asserted above), as the kernels read it.
unsafe impl cann_sys::Plain for MatmulTiling {}
// SAFETY: as above.
unsafe impl cann_sys::Plain for DecodeTiling {}
// SAFETY: as above.
unsafe impl cann_sys::Plain for FlashTiling {}

/// AI cores a launch may use: one cube and two vector cores each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cores {
    /// Cube cores (blocks of a mixed launch).
    pub cube: u32,
    /// Vector cores (blocks of a vector-only launch).
    pub vector: u32,
}

impl Cores {
    /// The cores of a SoC as `aclrtGetSocName` names it (ascend-notes.md section 5, from CANN's
    /// platform configs: 910B1/B2 24 AI cores, 910B3/B4 20). Other 910B-family parts get 20, which is
    /// safe (fewer blocks only cost speed); a SoC outside the 910B family is refused, since the kernels
    /// are written for arch 2201 only.
    pub fn of_soc(soc: &str) -> Result<Cores, String> {
        let s = soc.to_ascii_lowercase();
        let cube = if s.starts_with("ascend910b1") || s.starts_with("ascend910b2") {
            24
        } else if s.starts_with("ascend910b") || s.starts_with("ascend910_93") {
            20
        } else {
            return Err(format!(
                "the custom kernels are written for the Ascend 910B (arch 2201); this device is {soc}"
            ));
        };
        Ok(Cores {
            cube,
            vector: 2 * cube,
        })
    }
}

/// Global-memory bytes one call moves (reads include re-reads of the same data by other cores or tiles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes read from global memory.
    pub read: u64,
    /// Bytes written to global memory.
    pub written: u64,
}

impl Traffic {
    fn add(&mut self, read: u64, written: u64) {
        self.read += read;
        self.written += written;
    }
}

/// `KDT_*` code of an input dtype (bf16 or fp16 only).
fn in_code(dtype: ActDtype, what: &str) -> Result<u32, String> {
    match dtype {
        ActDtype::Bf16 => Ok(KDT_BF16),
        ActDtype::F16 => Ok(KDT_F16),
        ActDtype::F32 => Err(format!(
            "{what} must be bf16 or fp16: the kernels read 16-bit inputs only"
        )),
    }
}

fn out_code(dtype: ActDtype) -> u32 {
    match dtype {
        ActDtype::Bf16 => KDT_BF16,
        ActDtype::F16 => KDT_F16,
        ActDtype::F32 => KDT_F32,
    }
}

fn size_of(dtype: ActDtype) -> u64 {
    match dtype {
        ActDtype::F32 => 4,
        ActDtype::Bf16 | ActDtype::F16 => 2,
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("{what} = {v} exceeds the kernels' 32-bit fields"))
}

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// What `TPipe::InitBuffer` takes for one buffer: its length rounded up to 32 bytes.
fn buf(len: u64) -> u64 {
    align(len, 32)
}

// ------------------------------------------------------------------------------------------------
// Matmul
// ------------------------------------------------------------------------------------------------

/// W rows the GEMV reduces together (one DataCopyPad of `GEMV_ROWS` strided rows per step).
const GEMV_ROWS: u32 = 8;
/// GEMV K steps tried, largest first: longer steps mean fewer, longer copies.
const GEMV_CHUNKS: [u32; 4] = [1024, 512, 256, 128];
/// Cube tile: 128×128 f32 in L0C (64 KiB of 128), K 64 per L0 load, 256 per L1 load, both double
/// buffered (L1 2·(64+64) KiB = 256 of 512 KiB; L0A/L0B 2·16 = 32 of 64 KiB).
const BASE_M: u32 = 128;
const BASE_N: u32 = 128;
const BASE_K: u32 = 64;
const L1_K: u32 = 256;
/// Rows per step of the vector epilogue (16 rows × 128 columns × f32 = 8 KiB per buffer).
const EPILOGUE_ROWS: u32 = 16;

/// UB bytes of `matmul_gemv` (kernels/matmul.cpp, `Gemv::Run`), the output buffer sized for an f32
/// output (the largest).
fn gemv_ub_bytes(k: u64, rows: u64, chunk: u64, per_core: u64) -> u64 {
    let ra = align(per_core, 8);
    buf(align(k, 8) * 4) // aF: A as f32
        + buf(chunk * 2) // inQ
        + 2 * buf(rows * chunk * 2) // wQ, depth 2
        + buf(rows * chunk * 4) // wF
        + buf(rows * chunk * 4) // acc
        + buf(rows * 8 * 4 + 256) // red
        + buf(ra * 4) // outF
        + buf(ra * 4) // tmpF
        + buf(ra * 4 + 32) // outQ
}

/// On-chip bytes of `matmul_cube` per core kind: (L1, L0A, L0B, L0C, UB of a vector core).
fn cube_bytes(t: &MatmulTiling, in_size: u64, out_size: u64) -> [u64; 5] {
    let (bm, bn, bk, l1k, er) = (
        t.base_m as u64,
        t.base_n as u64,
        t.base_k as u64,
        t.l1_k as u64,
        t.epilogue_rows as u64,
    );
    [
        2 * buf(bm * l1k * in_size) + 2 * buf(bn * l1k * in_size),
        2 * buf(bm * bk * in_size),
        2 * buf(bn * bk * in_size),
        buf(bm * bn * 4),
        buf(bn * in_size) + buf(bn * 4) + 2 * buf(er * bn * 4) + buf(er * bn * out_size),
    ]
}

/// Which matmul kernel a plan launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulPath {
    /// `matmul_gemv`: M = 1, vector cores, each W row read once.
    Gemv,
    /// `matmul_cube`: cube tiles, with a vector epilogue through a GM workspace when bias or GELU is on.
    Cube,
}

/// One matmul launch: the tiling, the kernel, its blocks and its GM workspace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulPlan {
    /// The tiling passed by value.
    pub tiling: MatmulTiling,
    /// The kernel.
    pub path: MatmulPath,
    /// Blocks to launch.
    pub blocks: u32,
    /// Workspace bytes (cube path with an epilogue only; else 0).
    pub workspace_bytes: u64,
}

/// Plans `out[m,n] = epilogue(A[m,k] · W[n,k]ᵀ + bias)`: the GEMV kernel for m = 1, the cube kernel
/// otherwise. `in_dtype` (A, W, bias) must be bf16 or fp16; `out_dtype` may also be f32.
#[allow(clippy::too_many_arguments)] // the shape of one product; grouping it would only rename it
pub fn plan_matmul(
    m: usize,
    n: usize,
    k: usize,
    in_dtype: ActDtype,
    out_dtype: ActDtype,
    bias: bool,
    gelu: bool,
    cores: Cores,
) -> Result<MatmulPlan, String> {
    if m == 0 || n == 0 || k == 0 {
        return Err(format!("empty product: m={m}, n={n}, k={k}"));
    }
    let (m32, n32, k32) = (u32_of(m, "m")?, u32_of(n, "n")?, u32_of(k, "k")?);
    let in_size = size_of(in_dtype);
    let mut t = MatmulTiling {
        m: m32,
        n: n32,
        k: k32,
        in_dtype: in_code(in_dtype, "the input dtype")?,
        out_dtype: out_code(out_dtype),
        has_bias: bias as u32,
        gelu: gelu as u32,
        ..Default::default()
    };
    if m == 1 {
        let per_core = n32.div_ceil(cores.vector);
        let chunk = GEMV_CHUNKS
            .into_iter()
            .find(|&c| gemv_ub_bytes(k as u64, GEMV_ROWS as u64, c as u64, per_core as u64) <= UB_BYTES)
            .ok_or_else(|| {
                format!(
                    "k={k} is too long for the GEMV kernel: A as f32 alone needs {} of the {UB_BYTES} bytes of UB",
                    align(k as u64, 8) * 4
                )
            })?;
        t.gemv_rows = GEMV_ROWS;
        t.gemv_chunk = chunk;
        t.rows_per_core = per_core;
        return Ok(MatmulPlan {
            tiling: t,
            path: MatmulPath::Gemv,
            blocks: n32.div_ceil(per_core),
            workspace_bytes: 0,
        });
    }
    // Nd2NzParams::srcDValue (the GM row length, k) is a uint16_t field.
    if k as u64 > MAX_U16 {
        return Err(format!(
            "k={k} exceeds {MAX_U16}, the longest row the cube kernel's ND-to-NZ copy reads"
        ));
    }
    t.base_m = BASE_M;
    t.base_n = BASE_N;
    t.base_k = BASE_K;
    t.l1_k = L1_K;
    t.tiles_m = m32.div_ceil(BASE_M);
    t.tiles_n = n32.div_ceil(BASE_N);
    t.epilogue_rows = EPILOGUE_ROWS;
    let [l1, l0a, l0b, l0c, ub] = cube_bytes(&t, in_size, size_of(out_dtype));
    debug_assert!(
        l1 <= L1_BYTES
            && l0a <= L0AB_BYTES
            && l0b <= L0AB_BYTES
            && l0c <= L0C_BYTES
            && ub <= UB_BYTES
    );
    let tiles = t.tiles_m as u64 * t.tiles_n as u64;
    let blocks = tiles.min(cores.cube as u64) as u32;
    let workspace_bytes = if bias || gelu {
        blocks as u64 * BASE_M as u64 * BASE_N as u64 * 4
    } else {
        0
    };
    Ok(MatmulPlan {
        tiling: t,
        path: MatmulPath::Cube,
        blocks,
        workspace_bytes,
    })
}

impl MatmulPlan {
    /// Global-memory bytes the launch moves, from the kernel's copies.
    pub fn traffic(&self) -> Traffic {
        let t = &self.tiling;
        let (m, n, k) = (t.m as u64, t.n as u64, t.k as u64);
        let s_in = if t.in_dtype == KDT_F32 { 4 } else { 2 };
        let s_out = if t.out_dtype == KDT_F32 { 4 } else { 2 };
        let mut tr = Traffic::default();
        match self.path {
            MatmulPath::Gemv => {
                // Every core reads all of A; each W row and bias element once.
                tr.add(self.blocks as u64 * k * s_in + n * k * s_in, n * s_out);
                if t.has_bias == 1 {
                    tr.add(n * s_in, 0);
                }
            }
            MatmulPath::Cube => {
                // Each output tile reads its A rows and W rows over the whole of K.
                tr.add(
                    m * k * s_in * t.tiles_n as u64 + n * k * s_in * t.tiles_m as u64,
                    m * n * s_out,
                );
                if t.has_bias == 1 || t.gelu == 1 {
                    // f32 tile out to the workspace and back in, by the vector cores.
                    tr.add(m * n * 4, m * n * 4);
                    if t.has_bias == 1 {
                        // Both vector cores of a block read the tile's bias slice (when they have rows).
                        let mut bias = 0;
                        for tm in 0..t.tiles_m as u64 {
                            let mt = (m - tm * t.base_m as u64).min(t.base_m as u64);
                            let cores_with_rows = if mt > 1 { 2 } else { 1 };
                            bias += cores_with_rows * n * s_in;
                        }
                        tr.add(bias, 0);
                    }
                }
            }
        }
        tr
    }
}

// ------------------------------------------------------------------------------------------------
// Flash attention
// ------------------------------------------------------------------------------------------------

/// Query rows and keys per step (the kernel keeps 64 rows of softmax state per vector core).
const FLASH_BLOCK: u32 = 128;

/// Element strides of a `[batch][rows][heads][head_dim]`-addressed tensor: element (b, s, h, d) is at
/// `b·batch + s·row + h·head + d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    /// Elements between sequences.
    pub batch: usize,
    /// Elements between rows (positions).
    pub row: usize,
    /// Elements between heads.
    pub head: usize,
}

impl Strides {
    /// Contiguous BSND: `[batch][rows][heads][head_dim]` (the projections' output).
    pub fn bsnd(rows: usize, heads: usize, head_dim: usize) -> Strides {
        Strides {
            batch: rows * heads * head_dim,
            row: heads * head_dim,
            head: head_dim,
        }
    }

    /// Head-major `[batch][heads][rows][head_dim]` (a KV cache with `rows` rows of room per head).
    pub fn head_major(rows: usize, heads: usize, head_dim: usize) -> Strides {
        Strides {
            batch: heads * rows * head_dim,
            row: head_dim,
            head: rows * head_dim,
        }
    }
}

/// The shape of one flash-attention call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlashShape {
    /// Independent sequences (vision tiles; 1 for text).
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Elements per head: a multiple of 8, at most 128.
    pub head_dim: usize,
    /// Query rows per sequence.
    pub q_len: usize,
    /// Keys per sequence.
    pub kv_len: usize,
    /// Strides of q (`heads` heads).
    pub q: Strides,
    /// Strides of k (`kv_heads` heads).
    pub k: Strides,
    /// Strides of v (`kv_heads` heads).
    pub v: Strides,
    /// Strides of out (`heads` heads).
    pub out: Strides,
    /// `Some(offset)`: causal, query s sees keys j ≤ s + offset (offset = keys cached before the
    /// first query); `None`: every (valid) key.
    pub causal: Option<usize>,
    /// Softmax scale, usually 1/√head_dim.
    pub scale: f32,
    /// bf16 or fp16 (q, k, v and out).
    pub dtype: ActDtype,
}

/// One flash-attention launch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlashPlan {
    /// The tiling passed by value.
    pub tiling: FlashTiling,
    /// Blocks (one cube + two vector cores each).
    pub blocks: u32,
    /// Workspace bytes: per block S (f32), P (16-bit) and O_step (f32).
    pub workspace_bytes: u64,
}

/// Per-block workspace of `flash_attention` (`WorkspaceBytes` in kernels/flash_attention.cpp).
fn flash_workspace_per_block(t: &FlashTiling) -> u64 {
    let (bm, bn) = (t.block_m as u64, t.block_n as u64);
    bm * bn * 4 + bm * bn * 2 + bm * align(t.head_dim as u64, 8) * 4
}

/// On-chip bytes of `flash_attention`: (L1, L0A, L0B, L0C, UB of a vector core).
fn flash_bytes(t: &FlashTiling) -> [u64; 5] {
    let (bm, bn, d) = (t.block_m as u64, t.block_n as u64, t.head_dim as u64);
    let (dp, da, r) = (align(d, 16), align(d, 8), bm.div_ceil(2));
    let wide = bn.max(dp);
    [
        buf(bm * dp * 2) + buf(bn * dp * 2) + buf(bm * bn * 2) + buf(bn * dp * 2),
        2 * buf(bm * align(wide, 16) * 2),
        buf(bn * dp * 2),
        buf(bm * wide * 4),
        buf(r * bn * 4)
            + buf(r * bn * 2)
            + buf(r * da * 4)
            + buf(align(bn, 32))
            + buf(r * align(d * 2, 32))
            + buf(r * da * 4)
            + buf(bn * 4)
            + buf(64 * 4),
    ]
}

/// Plans one flash-attention call; `key_mask` says whether a `[batch][kv_len]` byte mask is passed.
pub fn plan_flash(s: &FlashShape, key_mask: bool, cores: Cores) -> Result<FlashPlan, String> {
    let dtype = in_code(s.dtype, "the attention dtype")?;
    if s.batch == 0 || s.heads == 0 || s.kv_heads == 0 || s.q_len == 0 || s.kv_len == 0 {
        return Err(format!(
            "empty attention: batch={}, heads={}, kv_heads={}, q_len={}, kv_len={}",
            s.batch, s.heads, s.kv_heads, s.q_len, s.kv_len
        ));
    }
    if !s.heads.is_multiple_of(s.kv_heads) {
        return Err(format!(
            "{} query heads cannot share {} key/value heads evenly",
            s.heads, s.kv_heads
        ));
    }
    if s.head_dim == 0 || !s.head_dim.is_multiple_of(8) || s.head_dim > 128 {
        return Err(format!(
            "head_dim={} unsupported: the flash kernel takes multiples of 8 up to 128 (its L0A holds two 128×128 tiles)",
            s.head_dim
        ));
    }
    for (name, st) in [("q", s.q), ("k", s.k), ("v", s.v), ("out", s.out)] {
        if st.row < s.head_dim {
            return Err(format!(
                "{name}: row stride {} is shorter than head_dim {}",
                st.row, s.head_dim
            ));
        }
        // The cube side reads rows with an ND-to-NZ copy whose row stride (srcDValue) is 16-bit.
        if name != "out" && st.row as u64 > MAX_U16 {
            return Err(format!(
                "{name}: row stride {} exceeds {MAX_U16}, the longest the ND-to-NZ copy takes",
                st.row
            ));
        }
    }
    let q_tiles = u32_of(s.q_len, "q_len")?.div_ceil(FLASH_BLOCK);
    let t = FlashTiling {
        batch: u32_of(s.batch, "batch")?,
        heads: u32_of(s.heads, "heads")?,
        kv_heads: u32_of(s.kv_heads, "kv_heads")?,
        head_dim: s.head_dim as u32,
        q_len: s.q_len as u32,
        kv_len: u32_of(s.kv_len, "kv_len")?,
        q_batch_stride: u32_of(s.q.batch, "q batch stride")?,
        q_row_stride: s.q.row as u32,
        q_head_stride: u32_of(s.q.head, "q head stride")?,
        k_batch_stride: u32_of(s.k.batch, "k batch stride")?,
        k_row_stride: s.k.row as u32,
        k_head_stride: u32_of(s.k.head, "k head stride")?,
        v_batch_stride: u32_of(s.v.batch, "v batch stride")?,
        v_row_stride: s.v.row as u32,
        v_head_stride: u32_of(s.v.head, "v head stride")?,
        o_batch_stride: u32_of(s.out.batch, "out batch stride")?,
        o_row_stride: u32_of(s.out.row, "out row stride")?,
        o_head_stride: u32_of(s.out.head, "out head stride")?,
        causal: s.causal.is_some() as u32,
        causal_offset: u32_of(s.causal.unwrap_or(0), "causal offset")?,
        has_key_mask: key_mask as u32,
        dtype,
        scale: s.scale,
        block_m: FLASH_BLOCK,
        block_n: FLASH_BLOCK,
        q_tiles,
    };
    let items = t.batch as u64 * t.heads as u64 * q_tiles as u64;
    if items > u32::MAX as u64 {
        return Err(format!(
            "{items} work items (batch × heads × query tiles) exceed the kernel's 32-bit count"
        ));
    }
    let [l1, l0a, l0b, l0c, ub] = flash_bytes(&t);
    debug_assert!(
        l1 <= L1_BYTES
            && l0a <= L0AB_BYTES
            && l0b <= L0AB_BYTES
            && l0c <= L0C_BYTES
            && ub <= UB_BYTES
    );
    let blocks = items.min(cores.cube as u64) as u32;
    Ok(FlashPlan {
        tiling: t,
        blocks,
        workspace_bytes: blocks as u64 * flash_workspace_per_block(&t),
    })
}

impl FlashPlan {
    /// Global-memory bytes the launch moves, from the kernel's copies (work item by work item).
    pub fn traffic(&self) -> Traffic {
        let t = &self.tiling;
        let (d, bm, bn) = (t.head_dim as u64, t.block_m as u64, t.block_n as u64);
        let s = 2u64;
        let mut tr = Traffic::default();
        for qt in 0..t.q_tiles as u64 {
            let q0 = qt * bm;
            let mq = (t.q_len as u64 - q0).min(bm);
            let kv_end = if t.causal == 1 {
                (t.kv_len as u64).min(q0 + mq + t.causal_offset as u64)
            } else {
                t.kv_len as u64
            };
            let half0 = mq.div_ceil(2);
            let vec_cores_with_rows = if mq > half0 { 2 } else { 1 };
            let mut item = Traffic::default();
            item.add(mq * d * s, mq * d * s); // Q in, O out
            let mut k0 = 0;
            while k0 < kv_end {
                let nk = (kv_end - k0).min(bn);
                item.add(2 * nk * d * s, 0); // K and V blocks
                item.add(mq * nk * 4, mq * nk * 4); // S through the workspace
                item.add(mq * nk * s, mq * nk * s); // P through the workspace
                item.add(mq * d * 4, mq * d * 4); // O_step through the workspace
                if t.has_key_mask == 1 {
                    item.add(vec_cores_with_rows * nk, 0);
                }
                k0 += nk;
            }
            let per_tile = t.batch as u64 * t.heads as u64;
            tr.add(item.read * per_tile, item.written * per_tile);
        }
        tr
    }
}

// ------------------------------------------------------------------------------------------------
// Decode attention
// ------------------------------------------------------------------------------------------------

/// Key steps tried, largest first (64 keys of 128 elements: 3 × 32 KiB of UB).
const KEY_CHUNKS: [u32; 4] = [64, 32, 16, 8];
/// Query heads per kv head the decode kernel keeps state for (`float m[8]` in attention_decode.cpp).
const MAX_GQA_GROUP: usize = 8;
/// Largest head dim the decode kernel is planned for.
const MAX_DECODE_HEAD_DIM: usize = 256;

/// UB bytes of `attention_decode` (kernels/attention_decode.cpp, `Decode::Run`).
fn decode_ub_bytes(d: u64, g: u64, kc: u64) -> u64 {
    let dp = align(d * 2, 32) / 2;
    2 * buf(kc * dp * 2) // inQ
        + buf(kc * dp * 4) // kF
        + buf(kc * dp * 4) // vF
        + buf(g * align(d, 8) * 4) // qF
        + buf(g * align(d + 8, 8) * 4) // accF
        + buf(g * align(kc, 8) * 4) // sc
        + buf(align(d, 8) * 4 + 256) // tmp
        + buf(64 * 4) // small
        + buf(align(d + 8, 8) * 4) // outQ
}

/// UB bytes of `attention_decode_merge` (`Merge::Run`).
fn merge_ub_bytes(d: u64, splits: u64) -> u64 {
    let us = align((d + 2) * 4, 32) / 4;
    buf(splits * us * 4)
        + buf(align(d, 8) * 4)
        + buf(align(splits, 8) * 4 + 64)
        + buf(align(d * 2, 32))
}

/// One decode-attention call: two launches, the split-key pass and the merge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodePlan {
    /// The tiling both kernels take.
    pub tiling: DecodeTiling,
    /// Blocks of `attention_decode` (vector cores).
    pub blocks: u32,
    /// Blocks of `attention_decode_merge`.
    pub merge_blocks: u32,
    /// Workspace bytes: per head and split a partial row of head_dim + 8 floats.
    pub workspace_bytes: u64,
}

/// Plans decode attention of one query row per head over `keys` cached keys; the cache is
/// `[kv_heads][kv_stride][head_dim]` (rows 0..keys valid).
#[allow(clippy::too_many_arguments)] // the shape of one call, as the kernel takes it
pub fn plan_decode(
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    keys: usize,
    kv_stride: usize,
    scale: f32,
    dtype: ActDtype,
    cores: Cores,
) -> Result<DecodePlan, String> {
    let dtype = in_code(dtype, "the attention dtype")?;
    if heads == 0 || kv_heads == 0 || keys == 0 {
        return Err(format!(
            "empty attention: heads={heads}, kv_heads={kv_heads}, keys={keys}"
        ));
    }
    if !heads.is_multiple_of(kv_heads) || heads / kv_heads > MAX_GQA_GROUP {
        return Err(format!(
            "{heads} query heads over {kv_heads} key/value heads: the decode kernel needs an even split with at most {MAX_GQA_GROUP} query heads per key/value head"
        ));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(8) || head_dim > MAX_DECODE_HEAD_DIM {
        return Err(format!(
            "head_dim={head_dim} unsupported: the decode kernel takes multiples of 8 up to {MAX_DECODE_HEAD_DIM}"
        ));
    }
    if keys > kv_stride {
        return Err(format!(
            "{keys} keys do not fit a cache of {kv_stride} rows per head"
        ));
    }
    let g = (heads / kv_heads) as u64;
    let key_chunk = KEY_CHUNKS
        .into_iter()
        .find(|&c| decode_ub_bytes(head_dim as u64, g, c as u64) <= UB_BYTES)
        .ok_or_else(|| format!("head_dim={head_dim} leaves no room in UB for a key step"))?;
    let keys32 = u32_of(keys, "keys")?;
    let kv_heads32 = kv_heads as u32;
    // About two key ranges per vector core over all kv heads, each at least one key step long; the
    // split length is then evened out so that no range is empty.
    let want = (2 * cores.vector).div_ceil(kv_heads32).max(1);
    let splits = want.min(keys32.div_ceil(key_chunk));
    let keys_per_split = keys32.div_ceil(splits);
    let splits = keys32.div_ceil(keys_per_split);
    let t = DecodeTiling {
        heads: u32_of(heads, "heads")?,
        kv_heads: kv_heads32,
        head_dim: head_dim as u32,
        keys: keys32,
        kv_stride: u32_of(kv_stride, "kv_stride")?,
        splits,
        keys_per_split,
        key_chunk,
        dtype,
        scale,
        ..Default::default()
    };
    // Element offsets of the cache are computed in 64 bits by the kernel, but the merge reads all of a
    // head's partials in one copy (blockCount ≤ 4095) and keeps them in UB.
    if splits as u64 > MAX_BLOCK_COUNT || merge_ub_bytes(head_dim as u64, splits as u64) > UB_BYTES
    {
        return Err(format!(
            "{splits} key ranges are more than the merge kernel holds"
        ));
    }
    Ok(DecodePlan {
        tiling: t,
        blocks: (kv_heads32 * splits).min(cores.vector),
        merge_blocks: t.heads.min(cores.vector),
        workspace_bytes: heads as u64 * splits as u64 * (head_dim as u64 + 8) * 4,
    })
}

impl DecodePlan {
    /// Global-memory bytes of both launches, from the kernels' copies.
    pub fn traffic(&self) -> Traffic {
        let t = &self.tiling;
        let (h, kvh, d, keys) = (
            t.heads as u64,
            t.kv_heads as u64,
            t.head_dim as u64,
            t.keys as u64,
        );
        let g = h / kvh;
        let splits = t.splits as u64;
        let mut tr = Traffic::default();
        // Split pass: each (kv head, range) reads the group's queries and its keys and values once and
        // writes acc, max and sum per query head.
        tr.add(
            kvh * splits * g * d * 2 + 2 * kvh * keys * d * 2,
            h * splits * (d + 2) * 4,
        );
        // Merge: every partial once, out once.
        tr.add(h * splits * (d + 2) * 4, h * d * 2);
        tr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B3: Cores = Cores {
        cube: 20,
        vector: 40,
    };

    /// Every plan's on-chip buffers fit, over the shapes of the models we run and ragged ones.
    #[test]
    fn plans_fit_the_910b_buffers() {
        for &(m, n, k) in &[
            (1, 4096, 14336),
            (1, 128256, 4096),
            (1, 1, 1),
            (1, 77, 300),
            (676, 4304, 1152),
            (729, 1152, 4304),
            (3, 5, 7),
            (4096, 14336, 4096),
        ] {
            for out in [ActDtype::F32, ActDtype::Bf16] {
                let p = plan_matmul(m, n, k, ActDtype::Bf16, out, true, true, B3).unwrap();
                let t = &p.tiling;
                match p.path {
                    MatmulPath::Gemv => {
                        assert!(
                            gemv_ub_bytes(k as u64, 8, t.gemv_chunk as u64, t.rows_per_core as u64)
                                <= UB_BYTES
                        );
                        assert!(p.blocks <= B3.vector && p.blocks * t.rows_per_core >= t.n);
                        assert!((p.blocks - 1) * t.rows_per_core < t.n, "an idle block");
                    }
                    MatmulPath::Cube => {
                        let [l1, l0a, l0b, l0c, ub] = cube_bytes(t, 2, 4);
                        assert!(l1 <= L1_BYTES && l0a <= L0AB_BYTES && l0b <= L0AB_BYTES);
                        assert!(l0c <= L0C_BYTES && ub <= UB_BYTES);
                        assert!(p.blocks <= B3.cube && t.l1_k.is_multiple_of(t.base_k));
                    }
                }
            }
        }
        for d in [8, 64, 72, 80, 128] {
            let s = FlashShape {
                batch: 2,
                heads: 8,
                kv_heads: 2,
                head_dim: d,
                q_len: 300,
                kv_len: 300,
                q: Strides::bsnd(300, 8, d),
                k: Strides::bsnd(300, 2, d),
                v: Strides::bsnd(300, 2, d),
                out: Strides::bsnd(300, 8, d),
                causal: None,
                scale: 1.0,
                dtype: ActDtype::F16,
            };
            let p = plan_flash(&s, true, B3).unwrap();
            let [l1, l0a, l0b, l0c, ub] = flash_bytes(&p.tiling);
            assert!(l1 <= L1_BYTES && l0a <= L0AB_BYTES && l0b <= L0AB_BYTES);
            assert!(l0c <= L0C_BYTES && ub <= UB_BYTES);
            assert_eq!(p.tiling.q_tiles, 3);
        }
        for d in [64, 72, 128, 256] {
            for (h, kvh) in [(32, 8), (8, 1), (16, 16)] {
                for keys in [1, 63, 64, 65, 1000, 8192, 100_000] {
                    let p = plan_decode(h, kvh, d, keys, keys, 0.1, ActDtype::Bf16, B3).unwrap();
                    let t = &p.tiling;
                    assert!(
                        decode_ub_bytes(d as u64, (h / kvh) as u64, t.key_chunk as u64) <= UB_BYTES
                    );
                    assert!(merge_ub_bytes(d as u64, t.splits as u64) <= UB_BYTES);
                    // Ranges cover the keys exactly, none empty.
                    assert!(t.splits * t.keys_per_split >= t.keys);
                    assert!((t.splits - 1) * t.keys_per_split < t.keys);
                    assert!(p.blocks <= B3.vector);
                }
            }
        }
    }

    #[test]
    fn shapes_the_kernels_cannot_take_are_refused_with_the_reason() {
        let e = plan_matmul(
            1,
            16,
            60_000,
            ActDtype::Bf16,
            ActDtype::F32,
            false,
            false,
            B3,
        )
        .unwrap_err();
        assert!(e.contains("too long for the GEMV kernel"), "{e}");
        let e = plan_matmul(
            2,
            16,
            70_000,
            ActDtype::Bf16,
            ActDtype::F32,
            false,
            false,
            B3,
        )
        .unwrap_err();
        assert!(e.contains("exceeds 65535"), "{e}");
        let e = plan_matmul(2, 16, 8, ActDtype::F32, ActDtype::F32, false, false, B3).unwrap_err();
        assert!(e.contains("bf16 or fp16"), "{e}");
        let e = plan_matmul(0, 16, 8, ActDtype::Bf16, ActDtype::F32, false, false, B3).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = plan_decode(32, 2, 128, 10, 10, 1.0, ActDtype::Bf16, B3).unwrap_err();
        assert!(e.contains("at most 8"), "{e}");
        let e = plan_decode(8, 8, 128, 11, 10, 1.0, ActDtype::Bf16, B3).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        let e = plan_decode(8, 8, 100, 10, 10, 1.0, ActDtype::Bf16, B3).unwrap_err();
        assert!(e.contains("head_dim=100"), "{e}");
        assert!(Cores::of_soc("Ascend310P3").is_err());
        assert_eq!(Cores::of_soc("Ascend910B2").unwrap().cube, 24);
        assert_eq!(Cores::of_soc("Ascend910B3").unwrap(), B3);
    }

    fn mb(bytes: u64) -> f64 {
        bytes as f64 / 1e6
    }

    /// Global-memory traffic per call at Idefics3-8B's shapes (bf16), printed as a table
    /// (`cargo test -p idefics3 --lib traffic -- --nocapture`), with the bounds each kernel's design
    /// promises checked: the GEMV reads every weight once, decode reads the cache once, the cube path
    /// re-reads A once per 128 columns and W once per 128 rows.
    #[test]
    fn traffic_at_idefics3_8b_shapes() {
        let bf = ActDtype::Bf16;
        println!("| call | shape | kernel, blocks | read MB | written MB | workspace KiB |");
        println!("|---|---|---|---|---|---|");
        let mm = |name: &str, m: usize, n: usize, k: usize, bias: bool, gelu: bool| {
            let p = plan_matmul(m, n, k, bf, bf, bias, gelu, B3).unwrap();
            let tr = p.traffic();
            println!(
                "| {name} | m={m} n={n} k={k}{}{} | {:?}, {} | {:.2} | {:.2} | {} |",
                if bias { " +bias" } else { "" },
                if gelu { " +gelu" } else { "" },
                p.path,
                p.blocks,
                mb(tr.read),
                mb(tr.written),
                p.workspace_bytes / 1024
            );
            let (m, n, k) = (m as u64, n as u64, k as u64);
            let weights = n * k * 2;
            match p.path {
                MatmulPath::Gemv => {
                    assert!(
                        tr.read >= weights && tr.read <= weights + p.blocks as u64 * k * 2 + n * 2
                    );
                    assert_eq!(tr.written, n * 2);
                }
                MatmulPath::Cube => {
                    let plain = m * k * 2 * n.div_ceil(128) + weights * m.div_ceil(128);
                    assert!(tr.read >= plain);
                    assert!(tr.written >= m * n * 2);
                }
            }
            tr
        };
        for patches in [676usize, 729] {
            let tag = format!("vision ({patches} patches)");
            mm(
                &format!("{tag} patch embedding"),
                patches,
                1152,
                588,
                true,
                false,
            );
            mm(
                &format!("{tag} q/k/v/o projection"),
                patches,
                1152,
                1152,
                true,
                false,
            );
            mm(&format!("{tag} fc1"), patches, 4304, 1152, true, true);
            mm(&format!("{tag} fc2"), patches, 1152, 4304, true, false);
            let st = Strides::bsnd(patches, 16, 72);
            let s = FlashShape {
                batch: 1,
                heads: 16,
                kv_heads: 16,
                head_dim: 72,
                q_len: patches,
                kv_len: patches,
                q: st,
                k: st,
                v: st,
                out: st,
                causal: None,
                scale: 1.0 / 72f32.sqrt(),
                dtype: bf,
            };
            let p = plan_flash(&s, true, B3).unwrap();
            let tr = p.traffic();
            println!(
                "| {tag} attention, one tile | 16 heads, d=72, {patches} keys, key mask | flash, {} | {:.2} | {:.2} | {} |",
                p.blocks,
                mb(tr.read),
                mb(tr.written),
                p.workspace_bytes / 1024
            );
            // Q and out once; K and V once per query tile.
            let qkv = (patches * 16 * 72 * 2) as u64;
            assert!(tr.read >= qkv + 2 * qkv * p.tiling.q_tiles as u64);
        }
        mm("connector", 169, 4096, 4608, false, false);
        mm("text decode q/o projection", 1, 4096, 4096, false, false);
        mm("text decode k/v projection", 1, 1024, 4096, false, false);
        mm("text decode gate/up", 1, 14336, 4096, false, false);
        mm("text decode down", 1, 4096, 14336, false, false);
        mm("text decode lm_head", 1, 128256, 4096, false, false);
        for keys in [1024usize, 4096, 8192] {
            let p = plan_decode(32, 8, 128, keys, keys, 1.0 / 128f32.sqrt(), bf, B3).unwrap();
            let tr = p.traffic();
            println!(
                "| text decode attention | 32 heads / 8 kv, d=128, {keys} keys | decode {} + merge {}, {} splits | {:.2} | {:.3} | {} |",
                p.blocks,
                p.merge_blocks,
                p.tiling.splits,
                mb(tr.read),
                mb(tr.written),
                p.workspace_bytes / 1024
            );
            let cache = 2 * 8 * keys as u64 * 128 * 2;
            assert!(tr.read >= cache && tr.read < cache + 400_000);
        }
    }
}
