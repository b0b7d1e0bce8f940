//! Our own AscendC kernels (`kernels/*.cpp`), loaded once per device and enqueued on a stream: the
//! engine side of `--kernels custom`.
//!
//! # Binaries
//! One binary per kernel source, named as `build.rs` names them: `matmul.o` (`matmul_gemv`,
//! `matmul_cube`), `flash_attention.o` (`flash_attention`) and `attention_decode.o`
//! (`attention_decode`, `attention_decode_merge`). [`CustomKernels::load`] takes them from the
//! directory named by `IDEFICS3_ASCEND_KERNELS` when that is set, else from the directory `build.rs`
//! filled when this crate was built with a CANN toolkit (`IDEFICS3_ASCEND_KERNEL_DIR`). For the
//! simulator, build them with `scripts/build_kernel_cpu.sh kernels/<name>.cpp DIR/<name>.o`.
//!
//! # Calls
//! Every method enqueues on the given stream and returns once the launch is queued; a fault while the
//! kernel runs surfaces at the stream's next synchronisation. Addresses are device addresses (for
//! example [`cann_sys::DeviceBuffer::as_ptr`]); the caller keeps them alive until the stream has run
//! the work, binds the device's context on the calling thread, and passes buffers of at least the sizes
//! given below (the simulator checks every access; a device does not). Shapes the kernels cannot take
//! are refused with [`Error::Op`] before anything is enqueued; a failed runtime call is
//! [`Error::Device`] with the call, its status and the runtime's message.
//!
//! | call | dtypes | shapes | workspace |
//! |---|---|---|---|
//! | [`matmul`](CustomKernels::matmul) | A, W, bias: bf16 or fp16 (the same); out: bf16, fp16 or f32 | m = 1: k up to about 36 000 (n = 128 256) to 45 000 (n = 4 096), since A is kept as f32 in UB; m > 1: k ≤ 65 535 | m > 1 with bias or GELU: blocks × 64 KiB (1.25 MiB on a 910B3); else none |
//! | [`flash_attention`](CustomKernels::flash_attention) | q, k, v, out: bf16 or fp16 (the same) | head_dim a multiple of 8, ≤ 128; heads a multiple of kv_heads; q/k/v row strides ≤ 65 535 | blocks × (96 KiB + 512 B × head_dim), 2.6 MiB at head dim 72 on a 910B3 |
//! | [`decode_attention`](CustomKernels::decode_attention) | q, caches, out: bf16 or fp16 | head_dim a multiple of 8, ≤ 256; heads / kv_heads ≤ 8 | heads × splits × (head_dim + 8) × 4 B (splits ≤ 80) |
//!
//! Tiling is computed on the host by [`tiling`], the one implementation of the rules the kernels
//! assume.

pub mod tiling;

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cann_sys::aclnn::Workspace;
use cann_sys::kernel::{Binary, Function};
use cann_sys::{Context, Plain, Stream};

use crate::backend::ActDtype;
use crate::error::{Error, Result};

pub use tiling::{Cores, FlashShape, MatmulPath, Strides, Traffic};

/// Environment variable naming the directory of kernel binaries (overrides the build's own).
pub const KERNELS_ENV: &str = "IDEFICS3_ASCEND_KERNELS";

/// Each binary (by the stem of its source in `kernels/`) and the kernels it must hold, in the order
/// [`Module::functions`] keeps them.
const BINARIES: [(&str, &[&str]); 3] = [
    ("matmul", &["matmul_gemv", "matmul_cube"]),
    ("flash_attention", &["flash_attention"]),
    (
        "attention_decode",
        &["attention_decode", "attention_decode_merge"],
    ),
];

/// One loaded binary and its kernels, looked up once.
struct Module {
    // Declared before `binary`: fields drop in declaration order, so the functions, which borrow the
    // binary, are gone before it is unloaded.
    functions: Vec<Function<'static>>,
    #[allow(dead_code)] // held for `functions`, never read
    binary: Box<Binary>,
}

impl Module {
    fn load(ctx: &Arc<Context>, path: &Path, names: &[&str]) -> cann_sys::Result<Module> {
        let binary = Box::new(Binary::load(ctx, path)?);
        let mut functions = Vec::with_capacity(names.len());
        for name in names {
            let f = binary.function(name)?;
            // SAFETY: `f` borrows the boxed binary, whose heap address never changes and which is
            // neither moved out nor dropped before `functions` (see the field order); the 'static
            // functions never leave this struct except as borrows of it.
            functions.push(unsafe { std::mem::transmute::<Function<'_>, Function<'static>>(f) });
        }
        Ok(Module { functions, binary })
    }
}

/// The custom kernels of one device: binaries loaded, kernels looked up, core counts known.
pub struct CustomKernels {
    device: u32,
    cores: Cores,
    dir: PathBuf,
    matmul: Module,
    flash: Module,
    decode: Module,
}

// SAFETY: nothing here changes after `load`; each call builds its own argument list from immutable
// function handles, and the runtime's handles are process-wide, not tied to the loading thread.
unsafe impl Send for CustomKernels {}
// SAFETY: as above; every method takes `&self` and mutates nothing of `self`.
unsafe impl Sync for CustomKernels {}

/// Finds the kernel directory: `env` (the value of `IDEFICS3_ASCEND_KERNELS`), else `build` (the
/// directory build.rs filled). Every place looked and the ways to fill one are in the error.
fn kernel_dir(env: Option<std::ffi::OsString>, build: Option<&str>) -> Result<PathBuf> {
    let missing = |dir: &Path, looked: &[String]| -> Result<PathBuf> {
        let first = BINARIES
            .iter()
            .map(|(stem, _)| dir.join(format!("{stem}.o")))
            .find(|f| !f.is_file())
            .unwrap_or_else(|| dir.to_path_buf());
        Err(Error::io(
            first,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "the custom kernel binaries (matmul.o, flash_attention.o, attention_decode.o) were not found; \
                     looked in: {}. For the simulator, build them with `for k in matmul flash_attention attention_decode; \
                     do scripts/build_kernel_cpu.sh kernels/$k.cpp DIR/$k.o; done` and set {KERNELS_ENV}=DIR; for a 910B, \
                     build this crate with a CANN toolkit (ASCEND_TOOLKIT_HOME), whose build.rs compiles them with bisheng",
                    looked.join("; ")
                ),
            ),
        ))
    };
    let complete = |dir: &Path| {
        BINARIES
            .iter()
            .all(|(stem, _)| dir.join(format!("{stem}.o")).is_file())
    };
    if let Some(dir) = env.filter(|v| !v.is_empty()) {
        // Set on purpose, so no silent fallback to another set of binaries.
        let dir = PathBuf::from(dir);
        if complete(&dir) {
            return Ok(dir);
        }
        return missing(&dir, &[format!("{KERNELS_ENV}={}", dir.display())]);
    }
    let mut looked = vec![format!("{KERNELS_ENV} (not set)")];
    let dir = match build {
        Some(dir) if complete(Path::new(dir)) => return Ok(PathBuf::from(dir)),
        Some(dir) => {
            looked.push(format!("the build's kernel directory {dir}"));
            PathBuf::from(dir)
        }
        None => {
            looked
                .push("the build's kernel directory (none: this build had no CANN toolkit)".into());
            PathBuf::from("DIR")
        }
    };
    missing(&dir, &looked)
}

impl CustomKernels {
    /// Loads the three binaries on `ctx`'s device (binding it on this thread) and looks up their kernels.
    pub fn load(ctx: &Arc<Context>) -> Result<CustomKernels> {
        let device = ctx.device() as u32;
        let dev = |cause| Error::Device { device, cause };
        ctx.bind().map_err(dev)?;
        let soc = cann_sys::soc_name().map_err(dev)?;
        let cores = Cores::of_soc(&soc).map_err(Error::Unsupported)?;
        let dir = kernel_dir(
            std::env::var_os(KERNELS_ENV),
            option_env!("IDEFICS3_ASCEND_KERNEL_DIR"),
        )?;
        let mut modules = Vec::with_capacity(BINARIES.len());
        for (stem, names) in BINARIES {
            let file = dir.join(format!("{stem}.o"));
            // The runtime wants an absolute path (aclrtBinaryLoadFromFile.md).
            let file = std::fs::canonicalize(&file).map_err(|e| Error::io(&file, e))?;
            modules.push(Module::load(ctx, &file, names).map_err(dev)?);
        }
        let mut modules = modules.into_iter();
        let (Some(matmul), Some(flash), Some(decode)) =
            (modules.next(), modules.next(), modules.next())
        else {
            unreachable!("three binaries were loaded")
        };
        Ok(CustomKernels {
            device,
            cores,
            dir,
            matmul,
            flash,
            decode,
        })
    }

    /// The cores launches are planned for.
    pub fn cores(&self) -> Cores {
        self.cores
    }

    /// The directory the binaries came from.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    fn op_error(op: &'static str, message: impl Into<String>) -> Error {
        Error::Op {
            backend: "ascend",
            op,
            message: message.into(),
        }
    }

    fn non_null(op: &'static str, ptrs: &[(&str, *mut c_void)]) -> Result<()> {
        match ptrs.iter().find(|(_, p)| p.is_null()) {
            Some((name, _)) => Err(Self::op_error(
                op,
                format!("{name} is a null device address"),
            )),
            None => Ok(()),
        }
    }

    /// Queues `f` over `blocks` blocks with the addresses, then the tiling, as the kernel's parameters.
    fn launch<T: Plain>(
        &self,
        f: &Function<'static>,
        blocks: u32,
        stream: &Stream,
        addresses: &[*mut c_void],
        tiling: T,
    ) -> Result<()> {
        let dev = |cause| Error::Device {
            device: self.device,
            cause,
        };
        let mut args = f.args().map_err(dev)?;
        for &p in addresses {
            args.push(p as u64).map_err(dev)?;
        }
        args.push(tiling).map_err(dev)?;
        args.finalize().map_err(dev)?;
        f.launch(blocks, stream, &args).map_err(dev)
    }

    fn workspace(
        &self,
        workspace: &mut Workspace,
        bytes: u64,
        stream: &Stream,
    ) -> Result<*mut c_void> {
        workspace.get(bytes, stream).map_err(|cause| Error::Device {
            device: self.device,
            cause,
        })
    }

    /// `out[m,n] = gelu?(a[m,k] · w[n,k]ᵀ + bias[n])`, row-major, `w` as the checkpoint stores it.
    ///
    /// `a`, `w` and `bias` are `in_dtype` (bf16 or fp16), `out` is `out_dtype` (bf16, fp16 or f32);
    /// products accumulate in f32, bias and GELU (tanh form) apply in f32, the output is rounded once
    /// (nearest even). m = 1 runs the GEMV kernel on the vector cores (each weight read once; no
    /// workspace); m > 1 the cube kernel, which takes its epilogue workspace from `workspace` when a bias
    /// or GELU is asked for.
    #[allow(clippy::too_many_arguments)] // the operands and shape of one product, as the kernel takes them
    pub fn matmul(
        &self,
        stream: &Stream,
        a: *mut c_void,
        w: *mut c_void,
        bias: Option<*mut c_void>,
        out: *mut c_void,
        m: usize,
        n: usize,
        k: usize,
        in_dtype: ActDtype,
        out_dtype: ActDtype,
        gelu: bool,
        workspace: &mut Workspace,
    ) -> Result<()> {
        const OP: &str = "matmul";
        Self::non_null(OP, &[("a", a), ("w", w), ("out", out)])?;
        if let Some(b) = bias {
            Self::non_null(OP, &[("bias", b)])?;
        }
        let plan = tiling::plan_matmul(
            m,
            n,
            k,
            in_dtype,
            out_dtype,
            bias.is_some(),
            gelu,
            self.cores,
        )
        .map_err(|e| Self::op_error(OP, e))?;
        let bias = bias.unwrap_or(std::ptr::null_mut());
        match plan.path {
            MatmulPath::Gemv => self.launch(
                &self.matmul.functions[0],
                plan.blocks,
                stream,
                &[a, w, bias, out],
                plan.tiling,
            ),
            MatmulPath::Cube => {
                let ws = self.workspace(workspace, plan.workspace_bytes, stream)?;
                self.launch(
                    &self.matmul.functions[1],
                    plan.blocks,
                    stream,
                    &[a, w, bias, out, ws],
                    plan.tiling,
                )
            }
        }
    }

    /// `out = softmax(scale · q kᵀ + mask) v` per (sequence, head), GQA by `head / (heads / kv_heads)`.
    ///
    /// Tensors are addressed through `shape`'s element strides (BSND projections and head-major KV
    /// caches are read in place). `key_valid`, when given, is `[batch][kv_len]` bytes, 1 = attend. A
    /// query row that sees no key gets zeros. The workspace holds per-block S, P and O tiles.
    #[allow(clippy::too_many_arguments)] // the operands of one attention call
    pub fn flash_attention(
        &self,
        stream: &Stream,
        q: *mut c_void,
        k: *mut c_void,
        v: *mut c_void,
        out: *mut c_void,
        key_valid: Option<*mut c_void>,
        shape: &FlashShape,
        workspace: &mut Workspace,
    ) -> Result<()> {
        const OP: &str = "flash_attention";
        Self::non_null(OP, &[("q", q), ("k", k), ("v", v), ("out", out)])?;
        if let Some(m) = key_valid {
            Self::non_null(OP, &[("key_valid", m)])?;
        }
        let plan = tiling::plan_flash(shape, key_valid.is_some(), self.cores)
            .map_err(|e| Self::op_error(OP, e))?;
        let ws = self.workspace(workspace, plan.workspace_bytes, stream)?;
        let mask = key_valid.unwrap_or(std::ptr::null_mut());
        self.launch(
            &self.flash.functions[0],
            plan.blocks,
            stream,
            &[q, k, v, mask, out, ws],
            plan.tiling,
        )
    }

    /// Attention of one query row per head over a KV cache: `q` and `out` are `[heads][head_dim]`,
    /// the caches `[kv_heads][kv_stride][head_dim]` with rows `0..keys` valid. The keys are split
    /// across the vector cores and the partial softmaxes merged by a second launch; the partials live
    /// in `workspace`.
    #[allow(clippy::too_many_arguments)] // the operands and shape of one call, as the kernels take them
    pub fn decode_attention(
        &self,
        stream: &Stream,
        q: *mut c_void,
        k_cache: *mut c_void,
        v_cache: *mut c_void,
        out: *mut c_void,
        workspace: &mut Workspace,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        keys: usize,
        kv_stride: usize,
        scale: f32,
        dtype: ActDtype,
    ) -> Result<()> {
        const OP: &str = "decode_attention";
        Self::non_null(
            OP,
            &[
                ("q", q),
                ("k_cache", k_cache),
                ("v_cache", v_cache),
                ("out", out),
            ],
        )?;
        let plan = tiling::plan_decode(
            heads, kv_heads, head_dim, keys, kv_stride, scale, dtype, self.cores,
        )
        .map_err(|e| Self::op_error(OP, e))?;
        let partial = self.workspace(workspace, plan.workspace_bytes, stream)?;
        self.launch(
            &self.decode.functions[0],
            plan.blocks,
            stream,
            &[q, k_cache, v_cache, partial],
            plan.tiling,
        )?;
        self.launch(
            &self.decode.functions[1],
            plan.merge_blocks,
            stream,
            &[partial, out],
            plan.tiling,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_every_place_looked_and_how_to_build_them() {
        let tmp = std::env::temp_dir().join(format!("idefics3-no-kernels-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("matmul.o"), b"").unwrap();
        let e = kernel_dir(Some(tmp.clone().into_os_string()), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("{}", tmp.join("flash_attention.o").display())),
            "{e}"
        );
        assert!(
            e.contains(&format!("{KERNELS_ENV}={}", tmp.display())),
            "{e}"
        );
        assert!(
            e.contains("scripts/build_kernel_cpu.sh") && e.contains("CANN toolkit"),
            "{e}"
        );
        let e = kernel_dir(None, Some(tmp.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IDEFICS3_ASCEND_KERNELS (not set)"), "{e}");
        assert!(
            e.contains(&format!("the build's kernel directory {}", tmp.display())),
            "{e}"
        );
        let e = kernel_dir(None, None).unwrap_err().to_string();
        assert!(e.contains("this build had no CANN toolkit"), "{e}");
        for stem in ["flash_attention", "attention_decode"] {
            std::fs::write(tmp.join(format!("{stem}.o")), b"").unwrap();
        }
        assert_eq!(kernel_dir(None, Some(tmp.to_str().unwrap())).unwrap(), tmp);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
