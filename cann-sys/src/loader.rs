//! Finds and opens the CANN libraries at run time, once per process, and resolves every function the
//! engine calls. Nothing is linked at build time, so every build runs everywhere and says clearly, at
//! first use, what is missing.
//!
//! Order: `IDEFICS3_ASCEND_LIBS` (a colon-separated list of libraries, loaded instead of searching; the
//! simulator is used this way), else the directories `$ASCEND_TOOLKIT_HOME/lib64`, `$ASCEND_HOME_PATH/lib64`,
//! the default install `/usr/local/Ascend/ascend-toolkit/latest/lib64`, each `LD_LIBRARY_PATH` entry, and
//! finally the dynamic linker's own search. Libraries: `libascendcl.so` (or `libacl_rt.so`),
//! `libnnopbase.so`, and the operator libraries (`libopapi.so` and/or the split `libopapi_{nn,math,
//! transformer}.so`, plus any `libaclnn_*.so`). Each symbol is looked up in every loaded library in that
//! order. Libraries are never unloaded: they live in a process-wide `OnceLock`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;

use crate::bindings::*;
use crate::error::{Error, Result};

/// The default install location of the CANN toolkit's libraries.
pub const DEFAULT_LIB_DIR: &str = "/usr/local/Ascend/ascend-toolkit/latest/lib64";

/// Maps bindgen's `Option<fn>` pointer types to the plain function pointer stored after resolution.
pub trait Pfn {
    /// The non-null function pointer type.
    type F: Copy;
}
impl<F: Copy> Pfn for Option<F> {
    type F = F;
}

/// A symbol that a runtime may lack (kernel launch, optional operators): resolved at load, checked at use.
#[derive(Clone, Copy)]
pub struct Sym<F: Copy> {
    name: &'static str,
    f: Option<F>,
}

impl<F: Copy> Sym<F> {
    /// The function, or an error naming the symbol and the libraries searched.
    pub fn get(&self) -> Result<F> {
        self.f.ok_or_else(|| Error::Symbol {
            symbol: self.name,
            libraries: library_names(),
        })
    }

    /// Whether the loaded runtime provides it.
    pub fn is_available(&self) -> bool {
        self.f.is_some()
    }
}

struct Loaded {
    path: String,
    lib: Library,
}

macro_rules! api_table {
    (required { $($r:ident : $rt:ident),* $(,)? } optional { $($o:ident : $ot:ident),* $(,)? }) => {
        /// Every CANN function cann-sys calls, resolved from the loaded libraries.
        #[allow(non_snake_case, missing_docs)]
        pub struct Api {
            $(pub $r: <$rt as Pfn>::F,)*
            $(pub $o: Sym<<$ot as Pfn>::F>,)*
            libraries: Vec<Loaded>,
        }

        impl Api {
            fn resolve(libraries: Vec<Loaded>) -> Result<Api> {
                Ok(Api {
                    $($r: find::<<$rt as Pfn>::F>(&libraries, stringify!($r))
                        .ok_or_else(|| Error::Symbol {
                            symbol: stringify!($r),
                            libraries: libraries.iter().map(|l| l.path.clone()).collect(),
                        })?,)*
                    $($o: Sym { name: stringify!($o), f: find(&libraries, stringify!($o)) },)*
                    libraries,
                })
            }
        }

        /// The C names of every function in the table (kept equal to the header's list by a test).
        pub const FUNCTION_NAMES: &[&str] = &[$(stringify!($r),)* $(stringify!($o),)*];
    };
}

api_table! {
    required {
        aclInit: cann_pfn_aclInit,
        aclFinalize: cann_pfn_aclFinalize,
        aclGetRecentErrMsg: cann_pfn_aclGetRecentErrMsg,
        aclrtSetDevice: cann_pfn_aclrtSetDevice,
        aclrtResetDevice: cann_pfn_aclrtResetDevice,
        aclrtGetDevice: cann_pfn_aclrtGetDevice,
        aclrtGetDeviceCount: cann_pfn_aclrtGetDeviceCount,
        aclrtSynchronizeDevice: cann_pfn_aclrtSynchronizeDevice,
        aclrtGetSocName: cann_pfn_aclrtGetSocName,
        aclrtCreateContext: cann_pfn_aclrtCreateContext,
        aclrtDestroyContext: cann_pfn_aclrtDestroyContext,
        aclrtSetCurrentContext: cann_pfn_aclrtSetCurrentContext,
        aclrtGetCurrentContext: cann_pfn_aclrtGetCurrentContext,
        aclrtCreateStream: cann_pfn_aclrtCreateStream,
        aclrtCreateStreamWithConfig: cann_pfn_aclrtCreateStreamWithConfig,
        aclrtSynchronizeStream: cann_pfn_aclrtSynchronizeStream,
        aclrtDestroyStream: cann_pfn_aclrtDestroyStream,
        aclrtStreamWaitEvent: cann_pfn_aclrtStreamWaitEvent,
        aclrtCreateEvent: cann_pfn_aclrtCreateEvent,
        aclrtCreateEventWithFlag: cann_pfn_aclrtCreateEventWithFlag,
        aclrtRecordEvent: cann_pfn_aclrtRecordEvent,
        aclrtSynchronizeEvent: cann_pfn_aclrtSynchronizeEvent,
        aclrtQueryEventStatus: cann_pfn_aclrtQueryEventStatus,
        aclrtEventElapsedTime: cann_pfn_aclrtEventElapsedTime,
        aclrtDestroyEvent: cann_pfn_aclrtDestroyEvent,
        aclrtMalloc: cann_pfn_aclrtMalloc,
        aclrtFree: cann_pfn_aclrtFree,
        aclrtGetMemInfo: cann_pfn_aclrtGetMemInfo,
        aclrtMallocHost: cann_pfn_aclrtMallocHost,
        aclrtFreeHost: cann_pfn_aclrtFreeHost,
        aclrtMemcpy: cann_pfn_aclrtMemcpy,
        aclrtMemcpyAsync: cann_pfn_aclrtMemcpyAsync,
        aclrtMemset: cann_pfn_aclrtMemset,
        aclrtMemsetAsync: cann_pfn_aclrtMemsetAsync,
        aclCreateTensor: cann_pfn_aclCreateTensor,
        aclCreateScalar: cann_pfn_aclCreateScalar,
        aclCreateIntArray: cann_pfn_aclCreateIntArray,
        aclCreateTensorList: cann_pfn_aclCreateTensorList,
        aclDestroyTensor: cann_pfn_aclDestroyTensor,
        aclDestroyScalar: cann_pfn_aclDestroyScalar,
        aclDestroyIntArray: cann_pfn_aclDestroyIntArray,
        aclDestroyTensorList: cann_pfn_aclDestroyTensorList,
        aclSetAclOpExecutorRepeatable: cann_pfn_aclSetAclOpExecutorRepeatable,
        aclDestroyAclOpExecutor: cann_pfn_aclDestroyAclOpExecutor,
    }
    optional {
        aclrtSynchronizeStreamWithTimeout: cann_pfn_aclrtSynchronizeStreamWithTimeout,
        aclrtMallocAlign32: cann_pfn_aclrtMallocAlign32,
        aclCreateFloatArray: cann_pfn_aclCreateFloatArray,
        aclCreateBoolArray: cann_pfn_aclCreateBoolArray,
        aclDestroyFloatArray: cann_pfn_aclDestroyFloatArray,
        aclDestroyBoolArray: cann_pfn_aclDestroyBoolArray,
        aclSetInputTensorAddr: cann_pfn_aclSetInputTensorAddr,
        aclSetOutputTensorAddr: cann_pfn_aclSetOutputTensorAddr,
        aclrtBinaryLoadFromFile: cann_pfn_aclrtBinaryLoadFromFile,
        aclrtBinaryGetFunction: cann_pfn_aclrtBinaryGetFunction,
        aclrtBinaryUnLoad: cann_pfn_aclrtBinaryUnLoad,
        aclrtKernelArgsInit: cann_pfn_aclrtKernelArgsInit,
        aclrtKernelArgsAppend: cann_pfn_aclrtKernelArgsAppend,
        aclrtKernelArgsFinalize: cann_pfn_aclrtKernelArgsFinalize,
        aclrtLaunchKernelWithConfig: cann_pfn_aclrtLaunchKernelWithConfig,
        aclnnMmGetWorkspaceSize: cann_pfn_aclnnMmGetWorkspaceSize,
        aclnnMm: cann_pfn_aclnnMm,
        aclnnMatmulGetWorkspaceSize: cann_pfn_aclnnMatmulGetWorkspaceSize,
        aclnnMatmul: cann_pfn_aclnnMatmul,
        aclnnAddGetWorkspaceSize: cann_pfn_aclnnAddGetWorkspaceSize,
        aclnnAdd: cann_pfn_aclnnAdd,
        aclnnInplaceAddGetWorkspaceSize: cann_pfn_aclnnInplaceAddGetWorkspaceSize,
        aclnnInplaceAdd: cann_pfn_aclnnInplaceAdd,
        aclnnMulGetWorkspaceSize: cann_pfn_aclnnMulGetWorkspaceSize,
        aclnnMul: cann_pfn_aclnnMul,
        aclnnRmsNormGetWorkspaceSize: cann_pfn_aclnnRmsNormGetWorkspaceSize,
        aclnnRmsNorm: cann_pfn_aclnnRmsNorm,
        aclnnLayerNormGetWorkspaceSize: cann_pfn_aclnnLayerNormGetWorkspaceSize,
        aclnnLayerNorm: cann_pfn_aclnnLayerNorm,
        aclnnGeluV2GetWorkspaceSize: cann_pfn_aclnnGeluV2GetWorkspaceSize,
        aclnnGeluV2: cann_pfn_aclnnGeluV2,
        aclnnSiluGetWorkspaceSize: cann_pfn_aclnnSiluGetWorkspaceSize,
        aclnnSilu: cann_pfn_aclnnSilu,
        aclnnSwiGluGetWorkspaceSize: cann_pfn_aclnnSwiGluGetWorkspaceSize,
        aclnnSwiGlu: cann_pfn_aclnnSwiGlu,
        aclnnRotaryPositionEmbeddingGetWorkspaceSize: cann_pfn_aclnnRotaryPositionEmbeddingGetWorkspaceSize,
        aclnnRotaryPositionEmbedding: cann_pfn_aclnnRotaryPositionEmbedding,
        aclnnFlashAttentionScoreGetWorkspaceSize: cann_pfn_aclnnFlashAttentionScoreGetWorkspaceSize,
        aclnnFlashAttentionScore: cann_pfn_aclnnFlashAttentionScore,
        aclnnFusedInferAttentionScoreV2GetWorkspaceSize: cann_pfn_aclnnFusedInferAttentionScoreV2GetWorkspaceSize,
        aclnnFusedInferAttentionScoreV2: cann_pfn_aclnnFusedInferAttentionScoreV2,
        aclnnEmbeddingGetWorkspaceSize: cann_pfn_aclnnEmbeddingGetWorkspaceSize,
        aclnnEmbedding: cann_pfn_aclnnEmbedding,
        aclnnIndexSelectGetWorkspaceSize: cann_pfn_aclnnIndexSelectGetWorkspaceSize,
        aclnnIndexSelect: cann_pfn_aclnnIndexSelect,
        aclnnInplaceIndexCopyGetWorkspaceSize: cann_pfn_aclnnInplaceIndexCopyGetWorkspaceSize,
        aclnnInplaceIndexCopy: cann_pfn_aclnnInplaceIndexCopy,
        aclnnPermuteGetWorkspaceSize: cann_pfn_aclnnPermuteGetWorkspaceSize,
        aclnnPermute: cann_pfn_aclnnPermute,
        aclnnCastGetWorkspaceSize: cann_pfn_aclnnCastGetWorkspaceSize,
        aclnnCast: cann_pfn_aclnnCast,
        aclnnArgMaxGetWorkspaceSize: cann_pfn_aclnnArgMaxGetWorkspaceSize,
        aclnnArgMax: cann_pfn_aclnnArgMax,
        aclnnInplaceCopyGetWorkspaceSize: cann_pfn_aclnnInplaceCopyGetWorkspaceSize,
        aclnnInplaceCopy: cann_pfn_aclnnInplaceCopy,
    }
}

impl Api {
    /// The libraries loaded, in lookup order.
    pub fn library_paths(&self) -> Vec<String> {
        self.libraries.iter().map(|l| l.path.clone()).collect()
    }

    /// A function our header does not declare, looked up in the loaded libraries in order: the
    /// simulator's own `cannSim*` functions, which a real runtime lacks (`None` there).
    ///
    /// # Safety
    /// `F` must be the function pointer type of the symbol as its library defines it.
    pub unsafe fn extra_symbol<F: Copy>(&self, name: &str) -> Option<F> {
        find(&self.libraries, name)
    }
}

static API: OnceLock<Result<Api>> = OnceLock::new();

/// The loaded CANN API; loads the libraries on first use. A failed load is remembered: the process
/// answers every later call with the same error.
pub fn api() -> Result<&'static Api> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn library_names() -> Vec<String> {
    match API.get() {
        Some(Ok(api)) => api.library_paths(),
        _ => Vec::new(),
    }
}

fn find<F: Copy>(libraries: &[Loaded], name: &str) -> Option<F> {
    libraries.iter().find_map(|l| {
        // SAFETY: F is the pointer type bindgen generated from our declaration of `name`; the symbol is
        // only called through that type. The library outlives the pointer (never unloaded).
        unsafe { l.lib.get::<F>(name.as_bytes()) }.ok().map(|s| *s)
    })
}

fn open(path: &Path) -> std::result::Result<Library, String> {
    use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_NOW};
    // RTLD_GLOBAL: CANN's operator libraries resolve nnopbase/runtime symbols from those loaded before them.
    // SAFETY: loading runs the library's initialisers; these are CANN's (or the simulator's) own libraries.
    unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map(Library::from)
        .map_err(|e| e.to_string())
}

fn load() -> Result<Api> {
    let libraries = match std::env::var_os("IDEFICS3_ASCEND_LIBS") {
        Some(list) => explicit(&list)?,
        None => search()?,
    };
    Api::resolve(libraries)
}

fn explicit(list: &OsStr) -> Result<Vec<Loaded>> {
    let list = list.to_string_lossy();
    let paths: Vec<&str> = list.split(':').filter(|p| !p.is_empty()).collect();
    if paths.is_empty() {
        return Err(Error::Load {
            library: "libascendcl.so".into(),
            looked: vec!["IDEFICS3_ASCEND_LIBS is set but lists no library".into()],
        });
    }
    paths
        .into_iter()
        .map(|p| {
            open(Path::new(p))
                .map(|lib| Loaded {
                    path: p.to_string(),
                    lib,
                })
                .map_err(|e| Error::Load {
                    library: p.to_string(),
                    looked: vec![format!("IDEFICS3_ASCEND_LIBS entry {p}: {e}")],
                })
        })
        .collect()
}

/// The directories searched, each with where it came from.
fn search_dirs() -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    for var in ["ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"] {
        if let Some(home) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            dirs.push((format!("${var}/lib64"), PathBuf::from(home).join("lib64")));
        }
    }
    dirs.push(("default install".into(), PathBuf::from(DEFAULT_LIB_DIR)));
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        for dir in std::env::split_paths(&paths).filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(("LD_LIBRARY_PATH".into(), dir));
        }
    }
    dirs
}

/// Opens the first of `names` found in `dirs`, else asks the dynamic linker; the error lists every try.
fn open_first(names: &[&str], dirs: &[(String, PathBuf)]) -> Result<Loaded> {
    let mut looked = Vec::new();
    for name in names {
        for (origin, dir) in dirs {
            let path = dir.join(name);
            if !path.is_file() {
                looked.push(format!("{origin} {}: no {name}", dir.display()));
                continue;
            }
            match open(&path) {
                Ok(lib) => {
                    return Ok(Loaded {
                        path: path.display().to_string(),
                        lib,
                    })
                }
                Err(e) => looked.push(format!("{origin} {}: {e}", path.display())),
            }
        }
    }
    for name in names {
        match open(Path::new(name)) {
            Ok(lib) => {
                return Ok(Loaded {
                    path: name.to_string(),
                    lib,
                })
            }
            Err(e) => looked.push(format!("dynamic linker search for {name}: {e}")),
        }
    }
    Err(Error::Load {
        library: names.join(" (or ") + &")".repeat(names.len() - 1),
        looked,
    })
}

fn search() -> Result<Vec<Loaded>> {
    let dirs = search_dirs();
    let mut libraries = vec![
        open_first(&["libascendcl.so", "libacl_rt.so"], &dirs)?,
        open_first(&["libnnopbase.so"], &dirs)?,
    ];
    // Operator libraries: the monolithic libopapi.so and/or the split ones; every one present is loaded.
    let mut ops = Vec::new();
    for name in [
        "libopapi.so",
        "libopapi_nn.so",
        "libopapi_math.so",
        "libopapi_transformer.so",
    ] {
        if let Ok(lib) = open_first(&[name], &dirs) {
            ops.push(lib);
        }
    }
    for (_, dir) in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libaclnn_") && n.ends_with(".so"))
            })
            .collect();
        extra.sort();
        for path in extra {
            let shown = path.display().to_string();
            if ops.iter().any(|l: &Loaded| l.path == shown) {
                continue;
            }
            let lib = open(&path).map_err(|e| Error::Load {
                library: shown.clone(),
                looked: vec![e],
            })?;
            ops.push(Loaded { path: shown, lib });
        }
    }
    if ops.is_empty() {
        // Reported with the same detail as the runtime library.
        open_first(&["libopapi.so"], &dirs)?;
    }
    libraries.extend(ops);
    Ok(libraries)
}
