//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use safetensors::{Dtype, SafeTensors};

/// The fixture directory of a case.
pub fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

/// Every fixture case (made by scripts/make_fixtures.py).
pub const CASES: [&str; 3] = ["idefics3_like", "smolvlm_like", "tied_text"];

/// A tensor of a safetensors file as f32 (F32 only) or i64 (I64 only).
pub struct Loaded {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

pub fn load(path: &Path, name: &str) -> Option<Loaded> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).ok()?;
    let data = t.data();
    let (mut f, mut i) = (Vec::new(), Vec::new());
    match t.dtype() {
        Dtype::F32 => {
            f = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
        Dtype::I64 => {
            i = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
        other => panic!("{name}: unexpected dtype {other:?}"),
    }
    Some(Loaded {
        shape: t.shape().to_vec(),
        f32: f,
        i64: i,
    })
}

/// max |a - b| / max |b|.
pub fn rel_max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    err / scale
}

/// mean |a - b| / max |b|.
pub fn rel_mean_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let sum: f64 = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum();
    (sum / a.len() as f64) as f32 / scale
}

/// Copies a directory (flat) into a fresh temporary directory.
pub fn copy_dir(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.path().join(e.file_name())).unwrap();
    }
    dst
}

/// The test binary's profile directory (`<target>/<profile>`; the binary lives in its `deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The simulator (`libcann_sim.so`), built once per process by cann-sim-locate in this build's target
/// directory and profile.
pub fn simulator() -> &'static Path {
    cann_sim_locate::libcann_sim()
}

/// The newest modification time of the files under `path` (itself if a file).
fn newest(path: &Path) -> SystemTime {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if !meta.is_dir() {
        return meta.modified().unwrap();
    }
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| newest(&e.unwrap().path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Builds `kernels/{matmul,flash_attention,attention_decode}.cpp` for the simulator with
/// `scripts/build_kernel_cpu.sh` into `<target>/ascend-kernels-cpu/<name>.o` (the names build.rs
/// gives the device binaries), rebuilding only those older than a kernel source, the AscendC CPU
/// runtime or the script; returns the directory. The builds run in parallel, each into a temporary
/// name renamed into place, so a concurrent test binary never loads half a file.
pub fn kernel_binaries() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = profile_dir().parent().unwrap().join("ascend-kernels-cpu");
        std::fs::create_dir_all(&dir).unwrap();
        let script = root.join("scripts/build_kernel_cpu.sh");
        let inputs = [
            newest(&root.join("kernels")),
            newest(&root.join("cann-sim/ascendc")),
            newest(&script),
        ]
        .into_iter()
        .max()
        .unwrap();
        let mut builds = Vec::new();
        for stem in ["matmul", "flash_attention", "attention_decode"] {
            let out = dir.join(format!("{stem}.o"));
            let fresh = std::fs::metadata(&out)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= inputs);
            if fresh {
                continue;
            }
            let tmp = dir.join(format!("{stem}.o.{}", std::process::id()));
            let child = Command::new("bash")
                .arg(&script)
                .arg(root.join(format!("kernels/{stem}.cpp")))
                .arg(&tmp)
                .spawn()
                .expect("run scripts/build_kernel_cpu.sh");
            builds.push((stem, child, tmp, out));
        }
        for (stem, mut child, tmp, out) in builds {
            let status = child.wait().unwrap();
            assert!(
                status.success(),
                "build_kernel_cpu.sh kernels/{stem}.cpp failed"
            );
            std::fs::rename(&tmp, &out).unwrap();
        }
        dir
    })
}
