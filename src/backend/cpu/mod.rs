//! The CPU backend: the reference implementation of every op, multi-threaded on [`pool::ThreadPool`].
//! Activations live in f32 `Vec`s, except in bf16 mode, where they are kept as bf16 bit patterns
//! ([`act`]: every op's output is rounded to bf16 there, so nothing is lost); f16 mode keeps f32
//! storage holding f16 values. Weights stay in the memory-mapped checkpoint in their own dtype and are widened inside the
//! kernels, except in f16 mode, where a checkpoint in another dtype is converted once at load to an
//! f16 copy (`model.to(torch.float16)`), so that the kernels read f16 weights as they read a
//! checkpoint stored in f16.
//!
//! The matmul and attention kernels know one rounding, bf16's (the AVX-512 BF16 path depends on
//! it). In f16 mode they run unrounded, in f32, and their outputs are rounded to f16 afterwards,
//! which is where transformers in float16 rounds a linear layer's output. One difference remains
//! inside attention: torch rounds the softmax numerators to the activation dtype before
//! multiplying them with V, which the kernels do for bf16 only; in f16 mode they stay f32 there.

mod act;
mod attention;
mod elementwise;
pub mod matmul;
pub mod pool;

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use super::{checks, ActDtype, AttentionParams, Backend};
use crate::error::{Error, Result};
use crate::numeric::{convert_into, round_bf16, round_f16};
use crate::weights::{DType, MappedFile, TensorRef};
use act::{ActData, Elem};

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

/// Rows per task of the parallel row-wise and elementwise ops: several rows keep the task counter
/// out of the profile.
const ROWS_PER_TASK: usize = 16;

/// An activation matrix in host memory: f32, or bf16 bit patterns in bf16 mode.
#[derive(Debug, Clone)]
pub struct CpuTensor {
    /// Row-major elements.
    data: ActData,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

impl CpuTensor {
    /// The values as f32 (what [`Backend::download`] returns).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.to_f32().into_owned()
    }

    /// Bytes the elements occupy (two per element in bf16 mode, four otherwise).
    pub fn bytes(&self) -> usize {
        match &self.data {
            ActData::F32(v) => v.len() * 4,
            ActData::Bf16(v) => v.len() * 2,
        }
    }
}

/// `$body` over the elements `$d` of `$data` in either storage, its `Vec` result wrapped in the same
/// storage.
macro_rules! same_storage {
    ($data:expr, $d:ident => $body:expr) => {
        match $data {
            ActData::F32($d) => ActData::F32($body),
            ActData::Bf16($d) => ActData::Bf16($body),
        }
    };
}

/// `$body` over the elements `$d` of `$data` in either storage.
macro_rules! any_storage {
    ($data:expr, $d:ident => $body:expr) => {
        match $data {
            ActData::F32($d) => $body,
            ActData::Bf16($d) => $body,
        }
    };
}

/// `$body` over two tensors' elements `$a`, `$b` in the same storage (the second converted to the
/// first's if a tensor of a backend in another mode is passed).
macro_rules! pair_storage {
    ($x:expr, $y:expr, $a:ident, $b:ident => $body:expr) => {
        match ($x, $y) {
            (ActData::F32($a), ActData::F32($b)) => $body,
            (ActData::Bf16($a), ActData::Bf16($b)) => $body,
            (ActData::F32($a), y @ ActData::Bf16(_)) => {
                let $b = &y.to_f32()[..];
                $body
            }
            (ActData::Bf16($a), ActData::F32(y)) => {
                let $b = &act::narrow(y)[..];
                $body
            }
        }
    };
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

/// Where a weight's bytes live.
#[derive(Debug, Clone)]
enum Storage {
    /// In place in the memory-mapped checkpoint.
    Mapped(Arc<MappedFile>, Range<usize>),
    /// A converted copy (f16 mode over a checkpoint in another dtype).
    Owned(Arc<[u8]>),
}

/// A weight matrix, viewed in place inside its memory-mapped file or converted once at load.
#[derive(Debug, Clone)]
pub struct CpuWeight {
    storage: Storage,
    /// Storage dtype.
    pub dtype: DType,
    /// Rows (output features for a linear layer).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Round widened values to bf16 (a non-bf16 checkpoint run in bf16 mode).
    round: bool,
    /// The matrix packed for the AMX tiles, made on its first product there and kept (shared by
    /// clones): packing per call would cost about as much as an AMX product of a few hundred rows.
    tiles: Arc<OnceLock<matmul::amx::TileB>>,
}

impl CpuWeight {
    /// The raw bytes of the whole matrix.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(file, range) => &file.bytes()[range.clone()],
            Storage::Owned(bytes) => bytes,
        }
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

    /// The matrix in the AMX tile layout (packed on first use, in parallel on the current pool).
    /// The copy costs the matrix's size in bf16 (padded to 32 rows and 32 columns) for as long as
    /// the weight lives; the mapped file is not touched.
    fn tile_b(&self) -> &matmul::amx::TileB {
        self.tiles
            .get_or_init(|| matmul::amx::TileB::new(matmul::BMat::Weight(self), true))
    }

    /// Bytes of the tile-layout copy made so far (0 until the weight has run on the tiles).
    pub fn tile_bytes(&self) -> usize {
        self.tiles.get().map_or(0, |t| t.bytes())
    }
}

/// The CPU backend.
pub struct CpuBackend {
    act: ActDtype,
    pool: pool::ThreadPool,
    /// The last rotary table: a forward ropes q and k of every layer at the same positions.
    rope: std::sync::Mutex<Option<RopeTable>>,
}

/// Rotary cos/sin pairs ([`crate::backend::rope_cos_sin`]) and what they were made for.
struct RopeTable {
    positions: Vec<u32>,
    inv_freq: Vec<f32>,
    cs: std::sync::Arc<Vec<(f32, f32)>>,
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
        Ok(CpuBackend {
            act,
            pool,
            rope: Default::default(),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// The rotary pairs for `positions`, computed once for all the q and k of a forward.
    fn rope_table(&self, positions: &[u32], inv_freq: &[f32]) -> std::sync::Arc<Vec<(f32, f32)>> {
        // A poisoned lock only means a panic elsewhere mid-update; the table is rebuilt below.
        let mut last = self.rope.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some(t) if t.positions == positions && t.inv_freq == inv_freq => t.cs.clone(),
            _ => {
                let cs = std::sync::Arc::new(crate::backend::rope_cos_sin(
                    positions, inv_freq, self.act,
                ));
                *last = Some(RopeTable {
                    positions: positions.to_vec(),
                    inv_freq: inv_freq.to_vec(),
                    cs: cs.clone(),
                });
                cs
            }
        }
    }

    /// Whether the kernels that only know bf16 rounding (matmul, attention, GELU) round.
    fn bf16(&self) -> bool {
        self.act == ActDtype::Bf16
    }

    fn round_all(&self, v: &mut [f32]) {
        if self.act != ActDtype::F32 {
            let act = self.act;
            v.iter_mut().for_each(|x| *x = act.round(*x));
        }
    }

    /// In f16 mode, rounds the output of a kernel that ran unrounded (see the module doc).
    fn round_f16_output(&self, v: &mut [f32]) {
        if self.act == ActDtype::F16 {
            v.iter_mut().for_each(|x| *x = round_f16(*x));
        }
    }

    /// `f(x_rows, y_rows)` over matching pieces of whole rows of `x` and `y`, spread over the pool
    /// when there are many rows (elementwise ops: the result does not depend on the split).
    fn zip_rows<E: Elem>(
        &self,
        x: &mut [E],
        y: &[E],
        cols: usize,
        f: impl Fn(&mut [E], &[E]) + Sync,
    ) {
        debug_assert_eq!(x.len(), y.len());
        if cols == 0 || x.len() <= SEQUENTIAL_ROWS * cols {
            return f(x, y);
        }
        let chunk = cols * ROWS_PER_TASK;
        self.pool.install(|| {
            pool::chunks_mut(x, chunk, || (), |_, t, c| f(c, &y[t * chunk..][..c.len()]))
        });
    }

    /// `f(x_rows, out_rows)` over matching runs of whole rows of `x` and of a new output of the same
    /// size, spread over the pool when there are many rows (row-wise ops: the result does not depend
    /// on the split).
    fn map_rows<E: Elem>(&self, x: &[E], cols: usize, f: impl Fn(&[E], &mut [E]) + Sync) -> Vec<E> {
        let few = cols == 0 || x.len() <= SEQUENTIAL_ROWS * cols;
        let chunk = if few { x.len() } else { cols * ROWS_PER_TASK };
        self.pool.install(|| {
            pool::filled(
                x.len(),
                chunk,
                !few,
                || (),
                |_, t, o| f(&x[t * chunk..][..o.len()], o),
            )
        })
    }

    /// A tensor of f32 results (already rounded to the activation dtype), stored in 16 bits in bf16
    /// mode.
    fn tensor(&self, data: Vec<f32>, rows: usize, cols: usize) -> CpuTensor {
        debug_assert_eq!(data.len(), rows * cols);
        let data = if self.bf16() {
            ActData::Bf16(self.pool.install(|| act::narrow(&data)))
        } else {
            ActData::F32(data)
        };
        CpuTensor { data, rows, cols }
    }

    /// The result of [`attention::attention`] as a tensor of this backend's storage.
    fn attention_output(&self, out: ActData, rows: usize, cols: usize) -> CpuTensor {
        match out {
            ActData::F32(mut d) => {
                self.round_f16_output(&mut d);
                self.tensor(d, rows, cols)
            }
            bits => self.stored(bits, rows, cols),
        }
    }

    /// A tensor of elements already in this backend's storage.
    fn stored(&self, data: ActData, rows: usize, cols: usize) -> CpuTensor {
        debug_assert_eq!(data.len(), rows * cols);
        CpuTensor { data, rows, cols }
    }

    /// `t` in this backend's storage (converted only when it comes from a backend in another mode).
    fn own<'a>(&self, t: &'a CpuTensor) -> std::borrow::Cow<'a, CpuTensor> {
        match (&t.data, self.bf16()) {
            (ActData::F32(d), true) => std::borrow::Cow::Owned(CpuTensor {
                data: ActData::Bf16(act::narrow(d)),
                ..*t
            }),
            (ActData::Bf16(d), false) => std::borrow::Cow::Owned(CpuTensor {
                data: ActData::F32(act::widen(d)),
                ..*t
            }),
            _ => std::borrow::Cow::Borrowed(t),
        }
    }

    /// Converts `t` in place to this backend's storage (see [`CpuBackend::own`]).
    fn adopt(&self, t: &mut CpuTensor) {
        if let std::borrow::Cow::Owned(o) = self.own(t) {
            *t = o;
        }
    }

    /// The products of `x` (in this backend's storage) with `ws` as bf16 tensors straight from the
    /// tile kernel, where it runs them in bf16 mode; `None` sends the caller down the f32 path.
    fn matmul_bf16(
        &self,
        x: &CpuTensor,
        ws: &[(&CpuWeight, Option<&[f32]>)],
        gelu: bool,
    ) -> Option<Vec<CpuTensor>> {
        if !self.bf16() {
            return None;
        }
        let outs = self
            .pool
            .install(|| matmul::matmul_bf16(Self::amat(x), x.rows, ws, gelu))?;
        Some(
            outs.into_iter()
                .zip(ws)
                .map(|(o, (w, _))| self.stored(ActData::Bf16(o), x.rows, w.rows))
                .collect(),
        )
    }

    /// `x` as the left operand of a product.
    fn amat(x: &CpuTensor) -> matmul::AMat<'_> {
        match &x.data {
            ActData::F32(d) => matmul::AMat::F32(d),
            ActData::Bf16(d) => matmul::AMat::Bf16(d),
        }
    }
}

/// `Err(Error::Op)` for `op` unless `ok`; the message is built only on failure.
fn check(ok: bool, op: &'static str, message: impl FnOnce() -> String) -> Result<()> {
    checks::check("cpu", ok, op, message)
}

/// Checks that `x` and `w` can be multiplied (`x·Wᵀ`) and that a bias has one value per output.
fn check_matmul(
    op: &'static str,
    x: &CpuTensor,
    w: &CpuWeight,
    bias: Option<&CpuWeight>,
) -> Result<()> {
    checks::matmul(
        "cpu",
        op,
        (x.rows, x.cols),
        (w.rows, w.cols),
        bias.map(|b| b.rows * b.cols),
    )
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
        let storage = Storage::Mapped(t.file().clone(), t.byte_range());
        let (storage, dtype) = if self.act == ActDtype::F16 && dtype != DType::F16 {
            let wide = crate::numeric::to_f32(dtype, &t.file().bytes()[t.byte_range()]);
            let bytes: Vec<u8> = wide
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect();
            (Storage::Owned(bytes.into()), DType::F16)
        } else {
            (storage, dtype)
        };
        Ok(CpuWeight {
            storage,
            dtype,
            rows,
            cols: numel / rows,
            round: self.bf16() && dtype != DType::BF16,
            tiles: Arc::default(),
        })
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuTensor> {
        check(data.len() == rows * cols, "upload", || {
            format!("{} values for a [{rows}, {cols}] tensor", data.len())
        })?;
        if self.bf16() {
            return Ok(self.stored(ActData::Bf16(act::narrow(data)), rows, cols));
        }
        let mut v = data.to_vec();
        self.round_all(&mut v);
        Ok(self.tensor(v, rows, cols))
    }

    fn download(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(t.to_f32())
    }

    fn argmax_last(&self, x: &CpuTensor) -> Result<Option<u32>> {
        check(x.rows > 0 && x.cols > 0, "argmax_last", || {
            format!("empty tensor [{}, {}]", x.rows, x.cols)
        })?;
        let last = (x.rows - 1) * x.cols;
        let row: std::borrow::Cow<[f32]> = match &x.data {
            ActData::F32(d) => d[last..].into(),
            ActData::Bf16(d) => d[last..].iter().map(|&b| b.get()).collect(),
        };
        let row = &row[..];
        Ok(row
            .iter()
            .all(|v| v.is_finite())
            .then(|| crate::generate::argmax(row)))
    }

    fn dims(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn cache_new(&self, cols: usize, capacity: usize) -> Result<CpuCache> {
        let half = self.bf16();
        Ok(CpuCache {
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
        })
    }

    fn cache_append(&self, cache: &mut CpuCache, src: &CpuTensor) -> Result<()> {
        check(cache.cols == src.cols, "cache_append", || {
            format!(
                "the cache has {} columns, the new rows {}",
                cache.cols, src.cols
            )
        })?;
        match (&src.data, cache.half) {
            (ActData::Bf16(d), true) => cache.bf16.extend_from_slice(d),
            (ActData::F32(d), true) => cache.bf16.extend(d.iter().map(|&v| act::bf16_bits(v))),
            (data, false) => cache.f32.extend_from_slice(&data.to_f32()),
        }
        cache.rows += src.rows;
        Ok(())
    }

    fn embedding(&self, table: &CpuWeight, ids: &[u32]) -> Result<CpuTensor> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.rows) {
            return Err(Error::Op {
                backend: "cpu",
                op: "embedding",
                message: format!("id {id} is outside the table's {} rows", table.rows),
            });
        }
        let cols = table.cols;
        let mut out = vec![0.0; ids.len() * cols];
        for (row, &id) in out.chunks_exact_mut(cols).zip(ids) {
            let id = id as usize;
            table.rows_into(id, id + 1, row);
        }
        Ok(self.tensor(out, ids.len(), cols))
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight, bias: Option<&CpuWeight>) -> Result<CpuTensor> {
        check_matmul("matmul", x, w, bias)?;
        let bias = bias.map(CpuWeight::to_vec);
        let x = self.own(x);
        if let Some(t) = self.matmul_bf16(&x, &[(w, bias.as_deref())], false) {
            return Ok(t.into_iter().next().expect("one product"));
        }
        let mut out = self
            .pool
            .install(|| matmul::matmul(Self::amat(&x), x.rows, w, bias.as_deref(), self.bf16()));
        self.round_f16_output(&mut out);
        Ok(self.tensor(out, x.rows, w.rows))
    }

    fn matmul_gelu(
        &self,
        x: &CpuTensor,
        w: &CpuWeight,
        bias: Option<&CpuWeight>,
    ) -> Result<CpuTensor> {
        check_matmul("matmul_gelu", x, w, bias)?;
        if self.act == ActDtype::F16 {
            // transformers rounds the product, then the GELU of it.
            let mut y = self.matmul(x, w, bias)?;
            self.gelu_tanh(&mut y)?;
            return Ok(y);
        }
        let bias = bias.map(CpuWeight::to_vec);
        let x = self.own(x);
        if let Some(t) = self.matmul_bf16(&x, &[(w, bias.as_deref())], true) {
            return Ok(t.into_iter().next().expect("one product"));
        }
        let out = self.pool.install(|| {
            matmul::matmul_gelu(Self::amat(&x), x.rows, w, bias.as_deref(), self.bf16())
        });
        Ok(self.tensor(out, x.rows, w.rows))
    }

    fn matmul_add(
        &self,
        acc: &mut CpuTensor,
        x: &CpuTensor,
        w: &CpuWeight,
        bias: Option<&CpuWeight>,
    ) -> Result<()> {
        check_matmul("matmul_add", x, w, bias)?;
        check(
            (acc.rows, acc.cols) == (x.rows, w.rows),
            "matmul_add",
            || {
                format!(
                    "[{}, {}] += [{}, {}]·[{}, {}]ᵀ",
                    acc.rows, acc.cols, x.rows, x.cols, w.rows, w.cols
                )
            },
        )?;
        if self.bf16() {
            // bf16 mode: the product's epilogue adds it to the residual stream in place.
            self.adopt(acc);
            let b = bias.map(CpuWeight::to_vec);
            let x = self.own(x);
            if let ActData::Bf16(a) = &mut acc.data {
                let fused = self.pool.install(|| {
                    matmul::matmul_add_bf16(Self::amat(&x), x.rows, w, b.as_deref(), a)
                });
                if fused {
                    return Ok(());
                }
            }
        }
        let y = self.matmul(x, w, bias)?;
        self.add_assign(acc, &y)
    }

    fn matmul_multi(
        &self,
        x: &CpuTensor,
        ws: &[(&CpuWeight, Option<&CpuWeight>)],
    ) -> Result<Vec<CpuTensor>> {
        for (w, b) in ws {
            check_matmul("matmul_multi", x, w, *b)?;
        }
        let biases: Vec<Option<Vec<f32>>> =
            ws.iter().map(|(_, b)| b.map(CpuWeight::to_vec)).collect();
        let jobs: Vec<(&CpuWeight, Option<&[f32]>)> = ws
            .iter()
            .zip(&biases)
            .map(|((w, _), b)| (*w, b.as_deref()))
            .collect();
        let x = self.own(x);
        if let Some(t) = self.matmul_bf16(&x, &jobs, false) {
            return Ok(t);
        }
        let outs = self
            .pool
            .install(|| matmul::matmul_multi(Self::amat(&x), x.rows, &jobs, self.bf16()));
        Ok(outs
            .into_iter()
            .zip(ws)
            .map(|(mut o, (w, _))| {
                self.round_f16_output(&mut o);
                self.tensor(o, x.rows, w.rows)
            })
            .collect())
    }

    fn layer_norm(
        &self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: &CpuWeight,
        eps: f32,
    ) -> Result<CpuTensor> {
        let (w, b) = (w.to_vec(), b.to_vec());
        check(w.len() == x.cols && b.len() == x.cols, "layer_norm", || {
            format!(
                "rows of {} columns, weight of {} and bias of {} values",
                x.cols,
                w.len(),
                b.len()
            )
        })?;
        let (act, x) = (self.act, self.own(x));
        let data = same_storage!(&x.data, d => self.map_rows(d, x.cols, |r, o| {
            elementwise::layer_norm_rows(r, &w, &b, eps, act, o)
        }));
        Ok(self.stored(data, x.rows, x.cols))
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuWeight, eps: f32) -> Result<CpuTensor> {
        let w = w.to_vec();
        check(w.len() == x.cols, "rms_norm", || {
            format!("rows of {} columns, weight of {} values", x.cols, w.len())
        })?;
        let (act, x) = (self.act, self.own(x));
        let data = same_storage!(&x.data, d => self.map_rows(d, x.cols, |r, o| {
            elementwise::rms_norm_rows(r, &w, eps, act, o)
        }));
        Ok(self.stored(data, x.rows, x.cols))
    }

    fn add_assign(&self, x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
        check((x.rows, x.cols) == (y.rows, y.cols), "add_assign", || {
            format!("[{}, {}] += [{}, {}]", x.rows, x.cols, y.rows, y.cols)
        })?;
        self.adopt(x);
        let (act, cols) = (self.act, x.cols);
        match (&mut x.data, &y.data) {
            (ActData::Bf16(a), ActData::Bf16(b)) => {
                self.zip_rows(a, b, cols, elementwise::add_assign_bf16)
            }
            (x, y) => pair_storage!(x, y, a, b => self.zip_rows(a, b, cols, |a, b| {
                elementwise::add_assign(a, b, act)
            })),
        }
        Ok(())
    }

    fn gelu_tanh(&self, x: &mut CpuTensor) -> Result<()> {
        self.adopt(x);
        let few = x.rows <= SEQUENTIAL_ROWS;
        match &mut x.data {
            // bf16 mode: rounded to bf16 in the kernel.
            ActData::Bf16(d) if few => elementwise::gelu_tanh_bf16(d),
            ActData::Bf16(d) => self.pool.install(|| {
                pool::chunks_mut(d, 4096, || (), |_, _, c| elementwise::gelu_tanh_bf16(c))
            }),
            // f32 and f16 modes: unrounded, then rounded to f16 in f16 mode.
            ActData::F32(d) => {
                if few {
                    elementwise::gelu_tanh(d, false);
                } else {
                    self.pool.install(|| {
                        pool::chunks_mut(d, 4096, || (), |_, _, c| elementwise::gelu_tanh(c, false))
                    });
                }
                self.round_f16_output(d);
            }
        }
        Ok(())
    }

    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        check(
            (gate.rows, gate.cols) == (up.rows, up.cols),
            "silu_mul",
            || {
                format!(
                    "gate [{}, {}] and up [{}, {}] differ",
                    gate.rows, gate.cols, up.rows, up.cols
                )
            },
        )?;
        let (act, gate) = (self.act, self.own(gate));
        let cols = gate.cols;
        let data = match (&gate.data, &up.data) {
            (ActData::Bf16(g), ActData::Bf16(u)) => {
                let mut out = g.to_vec();
                self.zip_rows(&mut out, u, cols, elementwise::silu_mul_bf16);
                ActData::Bf16(out)
            }
            _ => pair_storage!(&gate.data, &up.data, g, u => {
                let mut out = g.to_vec();
                self.zip_rows(&mut out, u, cols, |o, u| elementwise::silu_mul_inplace(o, u, act));
                ActData::from(out)
            }),
        };
        Ok(self.stored(data, gate.rows, gate.cols))
    }

    fn rope(
        &self,
        x: &mut CpuTensor,
        head_dim: usize,
        positions: &[u32],
        inv_freq: &[f32],
    ) -> Result<()> {
        checks::rope(
            "cpu",
            (x.rows, x.cols),
            head_dim,
            positions.len(),
            inv_freq.len(),
        )?;
        self.adopt(x);
        let (act, cols, half) = (self.act, x.cols, head_dim / 2);
        let cs = self.rope_table(positions, inv_freq);
        fn rope<E: Elem>(d: &mut [E], cols: usize, cs: &[(f32, f32)], hd: usize, act: ActDtype) {
            d.chunks_exact_mut(cols)
                .zip(cs.chunks_exact(hd / 2))
                .for_each(|(row, cs)| elementwise::rope_row(row, hd, cs, act))
        }
        any_storage!(&mut x.data, d => {
            if x.rows <= SEQUENTIAL_ROWS {
                rope(d, cols, &cs, head_dim, act);
            } else {
                self.pool.install(|| {
                    pool::chunks_mut(d, cols * ROWS_PER_TASK, || (), |_, t, c| {
                        rope(c, cols, &cs[t * ROWS_PER_TASK * half..], head_dim, act)
                    })
                });
            }
        });
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuTensor,
        k: &CpuTensor,
        v: &CpuTensor,
        p: &AttentionParams,
    ) -> Result<CpuTensor> {
        let (q, k, v) = (self.own(q), self.own(k), self.own(v));
        let (k, v) = (attention::Kv::of(&k), attention::Kv::of(&v));
        check_attention("attention", &q, &k, &v, p)?;
        let qv = attention::Kv::of(&q);
        let out = self
            .pool
            .install(|| attention::attention(qv, k, v, p, self.bf16()));
        Ok(self.attention_output(out, q.rows, p.heads * p.head_dim))
    }

    fn cached_attention(
        &self,
        q: &CpuTensor,
        k: &CpuCache,
        v: &CpuCache,
        p: &AttentionParams,
    ) -> Result<CpuTensor> {
        let q = self.own(q);
        let (k, v) = (k.view(), v.view());
        check_attention("cached_attention", &q, &k, &v, p)?;
        let qv = attention::Kv::of(&q);
        let out = self
            .pool
            .install(|| attention::attention(qv, k, v, p, self.bf16()));
        Ok(self.attention_output(out, q.rows, p.heads * p.head_dim))
    }

    fn patchify(
        &self,
        pixels: &CpuTensor,
        channels: usize,
        size: usize,
        patch: usize,
    ) -> Result<CpuTensor> {
        check(
            patch > 0 && pixels.cols == channels * size * size,
            "patchify",
            || {
                format!(
                    "tiles of {} values are not {channels}×{size}×{size} (patch {patch})",
                    pixels.cols
                )
            },
        )?;
        let pixels = self.own(pixels);
        let (side, tiles) = (size / patch, pixels.rows);
        let data = same_storage!(&pixels.data, d => patchify(d, tiles, channels, size, patch));
        Ok(self.stored(data, tiles * side * side, channels * patch * patch))
    }

    fn pixel_shuffle(&self, x: &CpuTensor, side: usize, scale: usize) -> Result<CpuTensor> {
        let d_cols = x.cols;
        let per_tile = side * side;
        check(
            per_tile > 0
                && x.rows.is_multiple_of(per_tile)
                && scale > 0
                && side.is_multiple_of(scale),
            "pixel_shuffle",
            || {
                format!(
                    "{} rows are not whole tiles of side {side} divisible by the scale {scale}",
                    x.rows
                )
            },
        )?;
        let x = self.own(x);
        let data = same_storage!(&x.data, d => pixel_shuffle(d, x.rows, d_cols, side, scale));
        Ok(self.stored(data, x.rows / (scale * scale), d_cols * scale * scale))
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        check_rows("gather_rows", rows, x.rows)?;
        let (x, cols) = (self.own(x), x.cols);
        let data = same_storage!(&x.data, d => {
            let mut out = Vec::with_capacity(rows.len() * cols);
            for &r in rows {
                out.extend_from_slice(&d[r * cols..(r + 1) * cols]);
            }
            out
        });
        Ok(self.stored(data, rows.len(), cols))
    }

    fn scatter_rows(&self, dst: &mut CpuTensor, rows: &[usize], src: &CpuTensor) -> Result<()> {
        check(
            dst.cols == src.cols && rows.len() == src.rows,
            "scatter_rows",
            || {
                format!(
                    "{} row indices, source [{}, {}], destination of {} columns",
                    rows.len(),
                    src.rows,
                    src.cols,
                    dst.cols
                )
            },
        )?;
        check_rows("scatter_rows", rows, dst.rows)?;
        self.adopt(dst);
        let cols = dst.cols;
        pair_storage!(&mut dst.data, &src.data, d, s => {
            for (j, &r) in rows.iter().enumerate() {
                d[r * cols..(r + 1) * cols].copy_from_slice(&s[j * cols..(j + 1) * cols]);
            }
        });
        Ok(())
    }
}

/// Cuts tiles `[tiles, C·S·S]` into patches (see [`Backend::patchify`]).
fn patchify<E: Copy + Default>(
    px: &[E],
    tiles: usize,
    channels: usize,
    size: usize,
    patch: usize,
) -> Vec<E> {
    let side = size / patch;
    let cols = channels * patch * patch;
    let tile_len = channels * size * size;
    let mut out = vec![E::default(); tiles * side * side * cols];
    for t in 0..tiles {
        let tile = &px[t * tile_len..(t + 1) * tile_len];
        for i in 0..side {
            for j in 0..side {
                let row = &mut out[((t * side + i) * side + j) * cols..][..cols];
                for c in 0..channels {
                    for u in 0..patch {
                        let src = &tile[(c * size + i * patch + u) * size + j * patch..][..patch];
                        row[(c * patch + u) * patch..][..patch].copy_from_slice(src);
                    }
                }
            }
        }
    }
    out
}

/// Pixel shuffle of `rows` rows of `d` values (see [`Backend::pixel_shuffle`]).
fn pixel_shuffle<E: Copy + Default>(
    x: &[E],
    rows: usize,
    d: usize,
    side: usize,
    scale: usize,
) -> Vec<E> {
    let per_tile = side * side;
    let tiles = rows / per_tile;
    let blocks = side / scale;
    let out_cols = d * scale * scale;
    let mut out = vec![E::default(); x.len()];
    for t in 0..tiles {
        for bi in 0..blocks {
            for bj in 0..blocks {
                let o = &mut out[((t * blocks + bi) * blocks + bj) * out_cols..][..out_cols];
                for a in 0..scale {
                    for b in 0..scale {
                        let src_row = t * per_tile + (bi * scale + a) * side + bj * scale + b;
                        o[(a * scale + b) * d..][..d].copy_from_slice(&x[src_row * d..][..d]);
                    }
                }
            }
        }
    }
    out
}

/// Every row index must lie below `len`.
fn check_rows(op: &'static str, rows: &[usize], len: usize) -> Result<()> {
    checks::rows("cpu", op, rows, len)
}

/// q, k and v must have the widths the heads give, k and v the same length, and the heads must
/// group evenly over the key/value heads.
fn check_attention(
    op: &'static str,
    q: &CpuTensor,
    k: &attention::Kv,
    v: &attention::Kv,
    p: &AttentionParams,
) -> Result<()> {
    checks::attention(
        "cpu",
        op,
        (q.rows, q.cols),
        (k.rows, k.cols),
        (v.rows, v.cols),
        p,
    )
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
        let x = b
            .upload(&(0..16).map(|v| v as f32).collect::<Vec<_>>(), 16, 1)
            .unwrap();
        let y = b.pixel_shuffle(&x, 4, 2).unwrap();
        assert_eq!((y.rows, y.cols), (4, 4));
        assert_eq!(
            y.to_f32(),
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
    }

    #[test]
    fn pixel_shuffle_keeps_feature_order_inside_each_offset() {
        // Two features per patch, 2×2 tile, s = 2: a single output token of 8 channels in
        // (a, b, d) order: patch (0,0) d0 d1, patch (0,1), patch (1,0), patch (1,1).
        let b = backend();
        let x = b
            .upload(&[0., 10., 1., 11., 2., 12., 3., 13.], 4, 2)
            .unwrap();
        let y = b.pixel_shuffle(&x, 2, 2).unwrap();
        assert_eq!(y.to_f32(), vec![0., 10., 1., 11., 2., 12., 3., 13.]);
    }

    #[test]
    fn inconsistent_operands_are_errors_naming_the_op() {
        let b = backend();
        let x = b.upload(&[1.0; 6], 2, 3).unwrap();
        let y = b.upload(&[1.0; 4], 2, 2).unwrap();
        let op = |e: Error| match e {
            Error::Op { op, message, .. } => format!("{op}: {message}"),
            other => panic!("not an op error: {other}"),
        };
        let e = op(b.silu_mul(&x, &y).unwrap_err());
        assert!(e.starts_with("silu_mul: gate [2, 3] and up [2, 2]"), "{e}");
        let e = op(b.add_assign(&mut x.clone(), &y).unwrap_err());
        assert!(e.starts_with("add_assign"), "{e}");
        let e = op(b.gather_rows(&x, &[0, 2]).unwrap_err());
        assert_eq!(e, "gather_rows: row 2 of a tensor of 2 rows");
        let e = op(b.upload(&[1.0; 5], 2, 3).unwrap_err());
        assert!(e.starts_with("upload: 5 values"), "{e}");
        let e = op(b.pixel_shuffle(&x, 2, 2).unwrap_err());
        assert!(e.starts_with("pixel_shuffle"), "{e}");
        let e = op(b.rope(&mut x.clone(), 3, &[0, 1], &[1.0]).unwrap_err());
        assert!(e.starts_with("rope"), "{e}");
    }

    #[test]
    fn argmax_last_reads_the_last_row_like_argmax() {
        let b = backend();
        let x = b
            .upload(&[0.0, 9.0, 0.0, 1.0, 3.0, 1.0, 3.0, 2.0], 2, 4)
            .unwrap();
        // Row 0's 9 is ignored; in row 1 the first 3 wins the tie.
        assert_eq!(b.argmax_last(&x).unwrap(), Some(0));
        let y = b.upload(&[0.0, -1.0, 5.0, 5.0], 1, 4).unwrap();
        assert_eq!(b.argmax_last(&y).unwrap(), Some(2));
        // A NaN or an infinity in the last row is reported, not chosen around.
        for bad in [f32::NAN, f32::INFINITY] {
            let z = b.upload(&[0.0, bad, 1.0, 2.0], 1, 4).unwrap();
            assert_eq!(b.argmax_last(&z).unwrap(), None);
        }
        assert!(b.argmax_last(&b.upload(&[], 0, 4).unwrap()).is_err());
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
        let p = b.patchify(&b.upload(&px, 1, 32).unwrap(), 2, 4, 2).unwrap();
        assert_eq!((p.rows, p.cols), (4, 8));
        // Patch (0, 1): x in 2..4, y in 0..2.
        assert_eq!(
            &p.to_f32()[8..16],
            &[2., 3., 12., 13., 102., 103., 112., 113.]
        );
        // Patch (1, 0): y in 2..4.
        assert_eq!(
            &p.to_f32()[16..24],
            &[20., 21., 30., 31., 120., 121., 130., 131.]
        );
    }
}
