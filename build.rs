//! Build script: compiles the AscendC kernels in `kernels/` into device objects for the Ascend NPU when
//! a CANN toolkit is installed (`ASCEND_TOOLKIT_HOME`, or `ASCEND_HOME_PATH`), and does nothing —
//! silently — elsewhere. The engine loads the objects at run time with `aclrtBinaryLoadFromFile`, from
//! the directory exported as `IDEFICS3_ASCEND_KERNEL_DIR` (one `<name>.o` per `kernels/<name>.cpp`).
//!
//! Invocation (CANN 8.x single-source mixed kernels, ascend-notes.md section 4, "Toolchain"):
//! `<toolkit>/compiler/ccec_compiler/bin/bisheng -xcce --cce-aicore-only --cce-aicore-arch=dav-c220
//! -O3 -std=c++17 -mllvm -cce-aicore-stack-size=0x8000 -I<toolkit>/compiler/tikcpp/tikcfw{,/impl,/interface}
//! -I<toolkit>/include -Ikernels -c kernels/<name>.cpp -o $OUT_DIR/ascend-kernels/<name>.o`.
//! `SOC_VERSION` (default Ascend910B3) selects the architecture; the 910B and 910_93 parts are dav-c220.
//! `IDEFICS3_SKIP_ASCEND_KERNELS=1` skips the device build on a machine that has a toolkit.
//! The device build has not yet been run on a real toolkit (none is available where this was written).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "ASCEND_TOOLKIT_HOME",
        "ASCEND_HOME_PATH",
        "SOC_VERSION",
        "IDEFICS3_SKIP_ASCEND_KERNELS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let toolkit = env::var_os("ASCEND_TOOLKIT_HOME")
        .or_else(|| env::var_os("ASCEND_HOME_PATH"))
        .filter(|v| !v.is_empty());
    let Some(toolkit) = toolkit else { return };
    if env::var("IDEFICS3_SKIP_ASCEND_KERNELS").is_ok_and(|v| v == "1") {
        return;
    }
    if let Err(msg) = build_device_kernels(Path::new(&toolkit)) {
        panic!("building the AscendC kernels with CANN failed: {msg}\n(set IDEFICS3_SKIP_ASCEND_KERNELS=1 to build without them)");
    }
}

/// Architecture flag of CANN's compiler for a SoC name (ascend-notes.md section 4).
fn aicore_arch(soc: &str) -> Result<&'static str, String> {
    let s = soc.to_ascii_lowercase();
    if s.starts_with("ascend910b") || s.starts_with("ascend910_93") {
        Ok("dav-c220")
    } else {
        Err(format!(
            "SOC_VERSION {soc} is not supported by kernels/ (written for the 910B: Ascend910B1..B4, Ascend910_93xx)"
        ))
    }
}

fn build_device_kernels(toolkit: &Path) -> Result<(), String> {
    let soc = env::var("SOC_VERSION").unwrap_or_else(|_| "Ascend910B3".to_string());
    let arch = aicore_arch(&soc)?;
    let bisheng = toolkit.join("compiler/ccec_compiler/bin/bisheng");
    if !bisheng.is_file() {
        return Err(format!("{} not found in the toolkit", bisheng.display()));
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let kernels = manifest.join("kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?).join("ascend-kernels");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let tik = toolkit.join("compiler/tikcpp/tikcfw");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .map_err(|e| format!("{}: {e}", kernels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    sources.sort();
    for src in &sources {
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("kernel");
        let obj = out.join(format!("{stem}.o"));
        let mut cmd = Command::new(&bisheng);
        cmd.args(["-xcce", "--cce-aicore-only"])
            .arg(format!("--cce-aicore-arch={arch}"))
            .args([
                "-O3",
                "-std=c++17",
                "-mllvm",
                "-cce-aicore-stack-size=0x8000",
            ])
            .arg(format!("-I{}", tik.display()))
            .arg(format!("-I{}", tik.join("impl").display()))
            .arg(format!("-I{}", tik.join("interface").display()))
            .arg(format!("-I{}", toolkit.join("include").display()))
            .arg(format!("-I{}", kernels.display()))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(&obj);
        let res = cmd
            .output()
            .map_err(|e| format!("running {}: {e}", bisheng.display()))?;
        if !res.status.success() {
            return Err(format!(
                "{:?} exited with {}:\n{}",
                cmd,
                res.status,
                String::from_utf8_lossy(&res.stderr)
            ));
        }
    }
    println!(
        "cargo:rustc-env=IDEFICS3_ASCEND_KERNEL_DIR={}",
        out.display()
    );
    Ok(())
}
