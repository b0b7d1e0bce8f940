//! Our AscendC kernels (kernels/*.cpp) compiled with scripts/build_kernel_cpu.sh against the CPU
//! implementation of the AscendC API, then loaded and launched through the ACL calls the engine makes on a
//! 910B (aclrtBinaryLoadFromFile, aclrtBinaryGetFunction, aclrtKernelArgs*, aclrtLaunchKernelWithConfig),
//! here served by the simulator: the custom-kernel path end to end, checked against a plain reference.
//! (The kernels' full test matrix is cann-sim/ascendc/tests/run.sh; this is the launch path.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cann_sys::{Context, DeviceBuffer, Plain, Stream};

/// Mirror of `MatmulTiling` in kernels/tiling.h (all fields 4 bytes, 72 bytes, no padding).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct MatmulTiling {
    m: u32,
    n: u32,
    k: u32,
    in_dtype: u32,
    out_dtype: u32,
    has_bias: u32,
    gelu: u32,
    gemv_rows: u32,
    gemv_chunk: u32,
    rows_per_core: u32,
    base_m: u32,
    base_n: u32,
    base_k: u32,
    l1_k: u32,
    tiles_m: u32,
    tiles_n: u32,
    epilogue_rows: u32,
    reserved: u32,
}

// SAFETY: plain data of 4-byte fields with no padding, as the kernel reads it.
unsafe impl Plain for MatmulTiling {}

const KDT_BF16: u32 = 0;
const KDT_F32: u32 = 2;
const UB_BYTES: u32 = 192 * 1024;
/// Vector and cube cores of a 910B3.
const VEC_CORES: u32 = 40;
const CUBE_CORES: u32 = 20;

fn div_up(x: u32, a: u32) -> u32 {
    x.div_ceil(a)
}

fn align_up(x: u32, a: u32) -> u32 {
    x.div_ceil(a) * a
}

/// UB bytes matmul_gemv's buffers take (kernels/matmul.cpp, Gemv::Run).
fn gemv_ub_bytes(k: u32, rows: u32, chunk: u32, per_core: u32) -> u32 {
    let ra = align_up(per_core, 8);
    align_up(align_up(k, 8) * 4, 32)
        + chunk * 2
        + 2 * rows * chunk * 2
        + 2 * rows * chunk * 4
        + align_up(rows * 32 + 256, 32)
        + 2 * ra * 4
        + align_up(ra * 4 + 32, 32)
}

/// The tiling and the number of blocks to launch, within the 910B's buffer sizes.
fn tiling(m: u32, n: u32, k: u32, bias: bool) -> (MatmulTiling, u32) {
    let rows_per_core = div_up(n, VEC_CORES);
    let gemv_chunk = [1024, 512, 256, 128]
        .into_iter()
        .find(|&c| gemv_ub_bytes(k, 8, c, rows_per_core) <= UB_BYTES)
        .expect("K fits the GEMV path");
    let t = MatmulTiling {
        m,
        n,
        k,
        in_dtype: KDT_BF16,
        out_dtype: KDT_F32,
        has_bias: bias as u32,
        gemv_rows: 8,
        gemv_chunk,
        rows_per_core,
        base_m: 128,
        base_n: 128,
        base_k: 64,
        l1_k: 256,
        tiles_m: div_up(m, 128),
        tiles_n: div_up(n, 128),
        epilogue_rows: 16,
        ..Default::default()
    };
    let blocks = if m == 1 {
        div_up(n, rows_per_core)
    } else {
        CUBE_CORES.min(t.tiles_m * t.tiles_n)
    };
    (t, blocks)
}

fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn bf16_value(b: u16) -> f64 {
    f32::from_bits((b as u32) << 16) as f64
}

fn matmul_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::env::temp_dir().join(format!("idefics3-matmul-{}.so", std::process::id()));
    let status = Command::new("bash")
        .arg(root.join("scripts/build_kernel_cpu.sh"))
        .arg(root.join("kernels/matmul.cpp"))
        .arg(&out)
        .status()
        .expect("run scripts/build_kernel_cpu.sh");
    assert!(
        status.success(),
        "build_kernel_cpu.sh kernels/matmul.cpp failed"
    );
    out
}

fn run(ctx: &Arc<Context>, binary: &cann_sys::kernel::Binary, m: u32, n: u32, k: u32, bias: bool) {
    let stream = Stream::new(ctx).unwrap();
    let (t, blocks) = tiling(m, n, k, bias);
    let a: Vec<u16> = common::values((m * k) as usize, 11)
        .into_iter()
        .map(bf16_bits)
        .collect();
    let w: Vec<u16> = common::values((n * k) as usize, 12)
        .into_iter()
        .map(|v| bf16_bits(v * 0.5))
        .collect();
    let b: Vec<u16> = common::values(n as usize, 13)
        .into_iter()
        .map(bf16_bits)
        .collect();
    let upload = |v: &[u16]| {
        let mut d = DeviceBuffer::new(ctx, v.len() * 2).unwrap();
        d.copy_from_host(0, v).unwrap();
        d
    };
    let (da, dw, db) = (upload(&a), upload(&w), upload(&b));
    let dout = DeviceBuffer::new(ctx, (m * n) as usize * 4).unwrap();
    let name = if m == 1 { "matmul_gemv" } else { "matmul_cube" };
    let f = binary.function(name).unwrap();
    let mut args = f.args().unwrap();
    for p in [&da, &dw, &db, &dout] {
        args.push(p.as_ptr() as u64).unwrap();
    }
    let workspace;
    if m != 1 {
        workspace = DeviceBuffer::new(ctx, (blocks * t.base_m * t.base_n * 4) as usize).unwrap();
        args.push(workspace.as_ptr() as u64).unwrap();
    }
    args.push(t).unwrap();
    args.finalize().unwrap();
    f.launch(blocks, &stream, &args).unwrap();
    stream.synchronize().unwrap();
    let got = dout.to_vec::<f32>().unwrap();
    let (m, n, k) = (m as usize, n as usize, k as usize);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut mag) = (0f64, 0f64);
            for t in 0..k {
                let p = bf16_value(a[i * k + t]) * bf16_value(w[j * k + t]);
                s += p;
                mag += p.abs();
            }
            if bias {
                s += bf16_value(b[j]);
                mag += bf16_value(b[j]).abs();
            }
            let g = got[i * n + j] as f64;
            // f32 accumulation in any order: within 2·k·2^-24 of the sum of |products|.
            let tol = 2.0 * (k as f64 + 1.0) * 2f64.powi(-24) * mag + 1e-30;
            assert!(
                (g - s).abs() <= tol,
                "{name} m={m} n={n} k={k}: out[{i},{j}] = {g}, reference {s} (tolerance {tol})"
            );
        }
    }
}

#[test]
fn matmul_kernels_launch_through_the_acl_kernel_api() {
    let ctx = common::context_with(&[]);
    let binary = cann_sys::kernel::Binary::load(&ctx, &matmul_binary()).unwrap();
    // Decode GEMV (vector cores) and the cube path (mixed cube + vector), ragged shapes.
    run(&ctx, &binary, 1, 77, 300, true);
    run(&ctx, &binary, 1, 256, 2048, false);
    run(&ctx, &binary, 37, 130, 200, false);
    run(&ctx, &binary, 129, 70, 96, true);
}

#[test]
fn a_kernel_given_a_short_output_fails_at_synchronisation_naming_the_kernel() {
    let ctx = common::context_with(&[]);
    let binary = cann_sys::kernel::Binary::load(&ctx, &matmul_binary()).unwrap();
    let stream = Stream::new(&ctx).unwrap();
    let (t, blocks) = tiling(1, 64, 128, false);
    let a = DeviceBuffer::new(&ctx, 128 * 2).unwrap();
    let w = DeviceBuffer::new(&ctx, 64 * 128 * 2).unwrap();
    let b = DeviceBuffer::new(&ctx, 64 * 2).unwrap();
    // Room for 16 of the 64 outputs.
    let out = DeviceBuffer::new(&ctx, 16 * 4).unwrap();
    let f = binary.function("matmul_gemv").unwrap();
    let mut args = f.args().unwrap();
    for p in [&a, &w, &b, &out] {
        args.push(p.as_ptr() as u64).unwrap();
    }
    args.push(t).unwrap();
    args.finalize().unwrap();
    f.launch(blocks, &stream, &args).unwrap();
    match stream.synchronize() {
        Err(cann_sys::Error::Call {
            call,
            status,
            message,
        }) => {
            assert_eq!(call, "aclrtSynchronizeStream");
            assert_ne!(status, 0);
            assert!(message.contains("matmul_gemv"), "{message}");
        }
        other => panic!("a store past the output buffer was not caught: {other:?}"),
    }
}
