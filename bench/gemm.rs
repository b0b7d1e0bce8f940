//! GEMM microbenchmark: GFLOP/s of `x·Wᵀ` for the vision tower's and the text prefill's shapes, on
//! every instruction set this CPU runs, with bf16 weights and bf16-valued activations (bf16 mode).
//! The AMX rows time what the engine runs in bf16 mode (bf16 activations in, bf16 results out);
//! the others take f32 rows holding bf16 values and give f32 results, as their kernels do.
//!
//! ```sh
//! cargo run --release --example gemm -- [--threads N] [--reps N] [--isa amx,avx512bf16,...] [--json]
//! ```
//!
//! Each shape is timed `reps` times after one warm-up call (which also packs the weight into the
//! tile layout where AMX runs); the median is reported. `AmxModel` (the software model of the tiles)
//! is a correctness model and is not timed. Where AMX runs, the tile units' peak (TDPBF16PS on
//! resident tiles, no memory traffic) is measured first and each AMX row gives its share of it.

use std::time::Instant;

use idefics3::backend::cpu::matmul::{
    amx_peak_flops, available_isas, best_isa, gemm, matmul_bf16, AMat, BMat, Isa,
};
use idefics3::backend::cpu::{pool::ThreadPool, CpuBackend};
use idefics3::backend::{ActDtype, Backend};
use idefics3::weights::Checkpoint;

/// As in the `idefics3` command: activation rows on cache lines, read in place by the tiles.
#[global_allocator]
static ALLOC: idefics3::aligned_alloc::CacheLineAlloc = idefics3::aligned_alloc::CacheLineAlloc;

/// (name, m, k, n): W1's vision tower runs four 1024-patch tiles per group (m = 4096), hidden 768,
/// MLP 3072; its text prefill has 876 tokens, hidden 576, MLP 1536.
const SHAPES: [(&str, usize, usize, usize); 7] = [
    ("vision fc1, one tile", 1024, 768, 3072),
    ("vision q/k/v/o", 4096, 768, 768),
    ("vision fc1", 4096, 768, 3072),
    ("vision fc2", 4096, 3072, 768),
    ("text q/o", 876, 576, 576),
    ("text gate/up", 876, 576, 1536),
    ("text down", 876, 1536, 576),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut reps = 5usize;
    let mut json = false;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--threads" => threads = value("--threads")?.parse()?,
            "--reps" => reps = value("--reps")?.parse()?,
            "--isa" => {
                only = Some(
                    value("--isa")?
                        .split(',')
                        .map(|s| s.to_ascii_lowercase())
                        .collect(),
                )
            }
            "--json" => json = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if threads == 0 || reps == 0 {
        return Err("--threads and --reps must be at least 1".into());
    }
    let isas: Vec<Isa> = available_isas()
        .into_iter()
        .filter(|&i| i != Isa::AmxModel)
        .filter(|i| {
            only.as_ref()
                .is_none_or(|o| o.contains(&format!("{i:?}").to_ascii_lowercase()))
        })
        .collect();
    let pool = ThreadPool::new(threads)?;
    let backend = CpuBackend::new(ActDtype::Bf16, Some(threads))?;
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    // The tile units' peak: TDPBF16PS on resident tiles, the median of `reps` runs of ~0.3 s.
    let peak = isas.contains(&Isa::Amx).then(|| {
        let mut p: Vec<f64> = (0..reps)
            .filter_map(|_| pool.install(|| amx_peak_flops(1 << 18)))
            .collect();
        p.sort_by(f64::total_cmp);
        p[p.len() / 2] / 1e9
    });
    if !json {
        println!("GEMM x·Wᵀ, bf16 weights and bf16-valued activations, {threads} threads, median of {reps}");
        if let Some(p) = peak {
            println!("AMX tile peak (TDPBF16PS on resident tiles): {p:.0} GFLOP/s");
        }
        println!();
        println!("| shape | m×k×n | ISA | ms | GFLOP/s | of tile peak |");
        println!("|---|---|---|---|---|---|");
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    for (name, m, k, n) in SHAPES {
        let bytes: Vec<u8> = (0..n * k)
            .flat_map(|_| half::bf16::from_f32(next()).to_le_bytes())
            .collect();
        let path = dir.path().join(format!("w{m}x{k}x{n}.safetensors"));
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![n, k], &bytes)?;
        std::fs::write(&path, safetensors::serialize(vec![("w", view)], None)?)?;
        let ck = Checkpoint::open_files(&[path])?;
        let w = backend.load_weight(ck.get("w").ok_or("no tensor w")?, n)?;
        let x: Vec<f32> = (0..m * k)
            .map(|_| half::bf16::from_f32(next()).to_f32())
            .collect();
        let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let mut out = vec![0f32; m * n];
        for &isa in &isas {
            let mut times = Vec::with_capacity(reps);
            pool.install(|| {
                for r in 0..=reps {
                    let t = Instant::now();
                    if isa == best_isa() && isa.is_amx() {
                        // What the engine runs in bf16 mode: bf16 rows in, bf16 rows out.
                        let y = matmul_bf16(AMat::Bf16(&xb), m, &[(&w, None)], false);
                        std::hint::black_box(y.expect("the tiles run this product"));
                    } else {
                        gemm(isa, &x, m, k, BMat::Weight(&w), None, true, true, &mut out);
                    }
                    if r > 0 {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
            });
            times.sort_by(f64::total_cmp);
            let s = times[times.len() / 2];
            let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
            let share = peak.filter(|_| isa == Isa::Amx).map(|p| gflops / p);
            if json {
                rows.push(serde_json::json!({
                    "shape": name, "m": m, "k": k, "n": n, "isa": format!("{isa:?}"),
                    "threads": threads, "median_s": s, "gflops": gflops,
                    "tile_peak_gflops": peak, "share_of_tile_peak": share,
                }));
            } else {
                let share = share.map_or(String::new(), |f| format!("{:.0}%", f * 100.0));
                println!(
                    "| {name} | {m}×{k}×{n} | {isa:?} | {:.2} | {gflops:.0} | {share} |",
                    s * 1e3
                );
            }
        }
        if !json && w.tile_bytes() > 0 {
            println!(
                "| (packed tile copy of this weight: {:.1} MB) | | | | | |",
                w.tile_bytes() as f64 / 1e6
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
