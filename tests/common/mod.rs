//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// Builds the simulator once per test binary, in this build's target directory and profile.
pub fn simulator() -> &'static PathBuf {
    static SIM: OnceLock<PathBuf> = OnceLock::new();
    SIM.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The test binary lives in target/<profile>/deps.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let profile = profile_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "cann-sim", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "cargo build -p cann-sim failed");
        let lib = profile_dir.join("libcann_sim.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}
