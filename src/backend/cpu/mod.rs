//! The CPU backend: the reference implementation of every op, multi-threaded on [`pool::ThreadPool`].
//! Activations live in f32 `Vec`s (in bf16 mode they hold bf16-representable values); weights stay in
//! the memory-mapped checkpoint in their own dtype and are widened inside the kernels.

mod attention;
mod elementwise;
pub mod matmul;
pub mod pool;

use std::ops::Range;
use std::sync::Arc;

use super::{ActDtype, AttentionParams, Backend};
use crate::error::{Error, Result};
use crate::numeric::{convert_into, round_bf16};
use crate::weights::{DType, MappedFile, TensorRef};

/// Activations of the vision tower reach hundreds of MB per op; glibc maps blocks that large afresh
/// each time and returns them on free, so every op would page-fault its output in again. Raising the
/// thresholds keeps freed blocks in the heap for the next op (the peak RSS is unchanged).
fn keep_large_allocations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator thresholds; called once, before large allocations.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    });
}

/// Row-wise ops on at most this many rows (decoding) run on the calling thread: a fork-join costs
/// more than the work.
const SEQUENTIAL_ROWS: usize = 4;

/// An activation matrix in host memory.
#[derive(Debug, Clone)]
pub struct CpuTensor {
    /// Row-major elements.
    pub data: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

/// A layer's cached keys or values: f32 rows, or in bf16 mode the bf16 bit patterns of the rows
/// (their values are bf16 already, so this loses nothing and halves what decoding reads).
#[derive(Debug, Clone)]
pub struct CpuCache {
    f32: Vec<f32>,
    bf16: Vec<u16>,
    half: bool,
    rows: usize,
    cols: usize,
}

impl CpuCache {
    fn view(&self) -> attention::Kv<'_> {
        attention::Kv {
            data: if self.half {
                attention::KvData::Bf16(&self.bf16)
            } else {
                attention::KvData::F32(&self.f32)
            },
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A weight matrix viewed in place inside its memory-mapped file.
#[derive(Debug, Clone)]
pub struct CpuWeight {
    file: Arc<MappedFile>,
    range: Range<usize>,
    /// Storage dtype.
    pub dtype: DType,
    /// Rows (output features for a linear layer).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Round widened values to bf16 (a non-bf16 checkpoint run in bf16 mode).
    round: bool,
}

impl CpuWeight {
    /// The raw bytes of the whole matrix.
    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.range.clone()]
    }

    /// The raw bytes of rows `r0..r1`.
    pub fn row_bytes(&self, r0: usize, r1: usize) -> &[u8] {
        let s = self.cols * self.dtype.size();
        &self.bytes()[r0 * s..r1 * s]
    }

    /// Widens rows `r0..r1` into `out` (`(r1-r0)·cols` slots).
    #[inline]
    pub fn rows_into(&self, r0: usize, r1: usize, out: &mut [f32]) {
        convert_into(self.dtype, self.row_bytes(r0, r1), out);
        if self.round {
            out.iter_mut().for_each(|v| *v = round_bf16(*v));
        }
    }

    /// The whole matrix widened to f32 (for small vectors: norms and biases).
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        self.rows_into(0, self.rows, &mut out);
        out
    }

    /// Whether widened values are rounded to bf16.
    pub fn rounds(&self) -> bool {
        self.round
    }
}

/// The CPU backend.
pub struct CpuBackend {
    act: ActDtype,
    pool: pool::ThreadPool,
}

/// The thread count a backend runs on: `None` is one per available core; more than the available
/// cores is refused (workers spin between regions, so oversubscription only slows decoding down, and
/// tens of thousands of threads exhaust the process's limits).
pub fn resolve_threads(threads: Option<usize>) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match threads {
        None => Ok(cores),
        Some(0) => Err(Error::input("threads must be at least 1")),
        Some(t) if t > cores => Err(Error::input(format!(
            "{t} threads requested but this machine has {cores} cores available: use at most {cores}"
        ))),
        Some(t) => Ok(t),
    }
}

impl CpuBackend {
    /// A backend computing with activations in `act`, on `threads` threads (`None`: one per core).
    pub fn new(act: ActDtype, threads: Option<usize>) -> Result<Self> {
        keep_large_allocations();
        let threads = resolve_threads(threads)?;
        let pool = pool::ThreadPool::new(threads)
            .map_err(|e| Error::input(format!("cannot start the thread pool: {e}")))?;
        Ok(CpuBackend { act, pool })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn bf16(&self) -> bool {
        self.act == ActDtype::Bf16
    }

    fn round_all(&self, v: &mut [f32]) {
        if self.bf16() {
            v.iter_mut().for_each(|x| *x = round_bf16(*x));
        }
    }

    /// A new tensor of `x`'s shape whose rows are `f(row of x, output row)`; parallel over rows
    /// unless there are only a few.
    fn map_rows(&self, x: &CpuTensor, f: impl Fn(&[f32], &mut [f32]) + Sync) -> CpuTensor {
        let mut out = vec![0.0; x.data.len()];
        if x.rows <= SEQUENTIAL_ROWS {
            out.chunks_mut(x.cols)
                .zip(x.data.chunks(x.cols))
                .for_each(|(o, r)| f(r, o));
        } else {
            // Several rows per task keep the task counter out of the profile.
            let (cols, per_task) = (x.cols, 16);
            self.pool.install(|| {
                pool::chunks_mut(
                    &mut out,
                    cols * per_task,
                    || (),
                    |_, t, o| {
                        let src = &x.data[t * per_task * cols..][..o.len()];
                        o.chunks_mut(cols)
                            .zip(src.chunks(cols))
                            .for_each(|(o, r)| f(r, o));
                    },
                )
            });
        }
        self.tensor(out, x.rows, x.cols)
    }

    fn tensor(&self, data: Vec<f32>, rows: usize, cols: usize) -> CpuTensor {
        debug_assert_eq!(data.len(), rows * cols);
        CpuTensor { data, rows, cols }
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Cache = CpuCache;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn act_dtype(&self) -> ActDtype {
        self.act
    }

    fn load_weight(&self, t: &TensorRef, rows: usize) -> Result<CpuWeight> {
        let dtype = t.dtype()?;
        let numel = t.numel();
        if rows == 0 || !numel.is_multiple_of(rows) {
            return Err(Error::tensor(
                &t.name,
                format!("{numel} elements cannot be viewed as {rows} rows"),
            ));
        }
        Ok(CpuWeight {
            file: t.file().clone(),
            range: t.byte_range(),
            dtype,
            rows,
            cols: numel / rows,
            round: self.bf16() && dtype != DType::BF16,
        })
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> CpuTensor {
        let mut v = data.to_vec();
        self.round_all(&mut v);
        self.tensor(v, rows, cols)
    }

    fn download(&self, t: &CpuTensor) -> Vec<f32> {
        t.data.clone()
    }

    fn dims(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn cache_new(&self, cols: usize, capacity: usize) -> CpuCache {
        let half = self.bf16();
        CpuCache {
            f32: if half {
                Vec::new()
            } else {
                Vec::with_capacity(cols * capacity)
            },
            bf16: if half {
                Vec::with_capacity(cols * capacity)
            } else {
                Vec::new()
            },
            half,
            rows: 0,
            cols,
        }
    }

    fn cache_append(&self, cache: &mut CpuCache, src: &CpuTensor) {
        assert_eq!(cache.cols, src.cols, "cache_append: column mismatch");
        if cache.half {
            // Values are bf16 already in this mode: the top half of each f32 is the whole value.
            cache.bf16.extend(
                src.data
                    .iter()
                    .map(|&v| (round_bf16(v).to_bits() >> 16) as u16),
            );
        } else {
            cache.f32.extend_from_slice(&src.data);
        }
        cache.rows += src.rows;
    }

    fn embedding(&self, table: &CpuWeight, ids: &[u32]) -> CpuTensor {
        let cols = table.cols;
        let mut out = vec![0.0; ids.len() * cols];
        for (row, &id) in out.chunks_exact_mut(cols).zip(ids) {
            let id = id as usize;
            assert!(
                id < table.rows,
                "embedding id {id} out of range (checked by the model)"
            );
            table.rows_into(id, id + 1, row);
        }
        self.tensor(out, ids.len(), cols)
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight, bias: Option<&CpuWeight>) -> CpuTensor {
        assert_eq!(x.cols, w.cols, "matmul: inner dimensions differ");
        let bias = bias.map(CpuWeight::to_vec);
        let out = self
            .pool
            .install(|| matmul::matmul(&x.data, x.rows, w, bias.as_deref(), self.bf16()));
        self.tensor(out, x.rows, w.rows)
    }

    fn matmul_gelu(&self, x: &CpuTensor, w: &CpuWeight, bias: Option<&CpuWeight>) -> CpuTensor {
        assert_eq!(x.cols, w.cols, "matmul_gelu: inner dimensions differ");
        let bias = bias.map(CpuWeight::to_vec);
        let out = self
            .pool
            .install(|| matmul::matmul_gelu(&x.data, x.rows, w, bias.as_deref(), self.bf16()));
        self.tensor(out, x.rows, w.rows)
    }

    fn matmul_multi(
        &self,
        x: &CpuTensor,
        ws: &[(&CpuWeight, Option<&CpuWeight>)],
    ) -> Vec<CpuTensor> {
        let biases: Vec<Option<Vec<f32>>> =
            ws.iter().map(|(_, b)| b.map(CpuWeight::to_vec)).collect();
        let jobs: Vec<(&CpuWeight, Option<&[f32]>)> = ws
            .iter()
            .zip(&biases)
            .map(|((w, _), b)| {
                assert_eq!(x.cols, w.cols, "matmul_multi: inner dimensions differ");
                (*w, b.as_deref())
            })
            .collect();
        let outs = self
            .pool
            .install(|| matmul::matmul_multi(&x.data, x.rows, &jobs, self.bf16()));
        outs.into_iter()
            .zip(ws)
            .map(|(o, (w, _))| self.tensor(o, x.rows, w.rows))
            .collect()
    }

    fn layer_norm(&self, x: &CpuTensor, w: &CpuWeight, b: &CpuWeight, eps: f32) -> CpuTensor {
        let (w, b) = (w.to_vec(), b.to_vec());
        let round = self.bf16();
        self.map_rows(x, |r, o| {
            elementwise::layer_norm_row(r, &w, &b, eps, round, o)
        })
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuWeight, eps: f32) -> CpuTensor {
        let w = w.to_vec();
        let round = self.bf16();
        self.map_rows(x, |r, o| elementwise::rms_norm_row(r, &w, eps, round, o))
    }

    fn add_assign(&self, x: &mut CpuTensor, y: &CpuTensor) {
        assert_eq!(x.data.len(), y.data.len(), "add_assign: shapes differ");
        let round = self.bf16();
        for (a, b) in x.data.iter_mut().zip(&y.data) {
            let s = *a + *b;
            *a = if round { round_bf16(s) } else { s };
        }
    }

    fn gelu_tanh(&self, x: &mut CpuTensor) {
        let round = self.bf16();
        if x.rows <= SEQUENTIAL_ROWS {
            return elementwise::gelu_tanh(&mut x.data, round);
        }
        self.pool.install(|| {
            pool::chunks_mut(
                &mut x.data,
                4096,
                || (),
                |_, _, c| elementwise::gelu_tanh(c, round),
            )
        });
    }

    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor) -> CpuTensor {
        assert_eq!(gate.data.len(), up.data.len(), "silu_mul: shapes differ");
        let mut out = vec![0.0; gate.data.len()];
        elementwise::silu_mul(&gate.data, &up.data, self.bf16(), &mut out);
        self.tensor(out, gate.rows, gate.cols)
    }

    fn rope(&self, x: &mut CpuTensor, head_dim: usize, positions: &[u32], inv_freq: &[f32]) {
        assert_eq!(positions.len(), x.rows, "rope: one position per row");
        let round = self.bf16();
        let cols = x.cols;
        x.data
            .chunks_exact_mut(cols)
            .zip(positions)
            .for_each(|(row, &pos)| elementwise::rope_row(row, head_dim, pos, inv_freq, round));
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        p: &AttentionParams,
    ) -> CpuTensor {
        let (k, v) = (attention::Kv::of(k), attention::Kv::of(v));
        let out = self
            .pool
            .install(|| attention::attention(q, k, v, p, self.bf16()));
        self.tensor(out, q.rows, p.heads * p.head_dim)
    }

    fn cached_attention(
        &self,
        q: &CpuTensor,
        k: &CpuCache,
        v: &CpuCache,
        p: &AttentionParams,
    ) -> CpuTensor {
        let out = self
            .pool
            .install(|| attention::attention(q, k.view(), v.view(), p, self.bf16()));
        self.tensor(out, q.rows, p.heads * p.head_dim)
    }

    fn patchify(
        &self,
        pixels: &CpuTensor,
        channels: usize,
        size: usize,
        patch: usize,
    ) -> CpuTensor {
        let side = size / patch;
        let cols = channels * patch * patch;
        let tiles = pixels.rows;
        assert_eq!(pixels.cols, channels * size * size, "patchify: tile size");
        let mut out = vec![0.0; tiles * side * side * cols];
        for t in 0..tiles {
            let tile = &pixels.data[t * pixels.cols..(t + 1) * pixels.cols];
            for i in 0..side {
                for j in 0..side {
                    let row = &mut out[((t * side + i) * side + j) * cols..][..cols];
                    for c in 0..channels {
                        for u in 0..patch {
                            let src =
                                &tile[(c * size + i * patch + u) * size + j * patch..][..patch];
                            row[(c * patch + u) * patch..][..patch].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        self.tensor(out, tiles * side * side, cols)
    }

    fn pixel_shuffle(&self, x: &CpuTensor, side: usize, scale: usize) -> CpuTensor {
        let d = x.cols;
        let per_tile = side * side;
        assert_eq!(
            x.rows % per_tile,
            0,
            "pixel_shuffle: rows are not whole tiles"
        );
        let tiles = x.rows / per_tile;
        let blocks = side / scale;
        let out_cols = d * scale * scale;
        let mut out = vec![0.0; x.data.len()];
        for t in 0..tiles {
            for bi in 0..blocks {
                for bj in 0..blocks {
                    let o = &mut out[((t * blocks + bi) * blocks + bj) * out_cols..][..out_cols];
                    for a in 0..scale {
                        for b in 0..scale {
                            let src_row = t * per_tile + (bi * scale + a) * side + bj * scale + b;
                            o[(a * scale + b) * d..][..d]
                                .copy_from_slice(&x.data[src_row * d..][..d]);
                        }
                    }
                }
            }
        }
        self.tensor(out, tiles * blocks * blocks, out_cols)
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> CpuTensor {
        let mut out = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            out.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        self.tensor(out, rows.len(), x.cols)
    }

    fn scatter_rows(&self, dst: &mut CpuTensor, rows: &[usize], src: &CpuTensor) {
        assert_eq!(dst.cols, src.cols, "scatter_rows: column mismatch");
        assert_eq!(
            rows.len(),
            src.rows,
            "scatter_rows: one row index per source row"
        );
        for (j, &r) in rows.iter().enumerate() {
            dst.data[r * dst.cols..(r + 1) * dst.cols]
                .copy_from_slice(&src.data[j * src.cols..(j + 1) * src.cols]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> CpuBackend {
        CpuBackend::new(ActDtype::F32, Some(1)).unwrap()
    }

    #[test]
    fn pixel_shuffle_matches_the_hand_worked_layout() {
        // One 4×4 tile of 1-wide features holding its own patch index, s = 2: output token (I, J)
        // gathers the 2×2 block at block-row I, block-col J, row offset slowest.
        let b = backend();
        let x = b.upload(&(0..16).map(|v| v as f32).collect::<Vec<_>>(), 16, 1);
        let y = b.pixel_shuffle(&x, 4, 2);
        assert_eq!((y.rows, y.cols), (4, 4));
        assert_eq!(
            y.data,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
    }

    #[test]
    fn pixel_shuffle_keeps_feature_order_inside_each_offset() {
        // Two features per patch, 2×2 tile, s = 2: a single output token of 8 channels in
        // (a, b, d) order: patch (0,0) d0 d1, patch (0,1), patch (1,0), patch (1,1).
        let b = backend();
        let x = b.upload(&[0., 10., 1., 11., 2., 12., 3., 13.], 4, 2);
        let y = b.pixel_shuffle(&x, 2, 2);
        assert_eq!(y.data, vec![0., 10., 1., 11., 2., 12., 3., 13.]);
    }

    #[test]
    fn patchify_orders_channels_then_rows_then_columns() {
        let b = backend();
        // 2 channels, 4×4 tile, 2×2 patches: value = c·100 + y·10 + x.
        let mut px = Vec::new();
        for c in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    px.push((c * 100 + y * 10 + x) as f32);
                }
            }
        }
        let p = b.patchify(&b.upload(&px, 1, 32), 2, 4, 2);
        assert_eq!((p.rows, p.cols), (4, 8));
        // Patch (0, 1): x in 2..4, y in 0..2.
        assert_eq!(&p.data[8..16], &[2., 3., 12., 13., 102., 103., 112., 113.]);
        // Patch (1, 0): y in 2..4.
        assert_eq!(
            &p.data[16..24],
            &[20., 21., 30., 31., 120., 121., 130., 131.]
        );
    }
}
