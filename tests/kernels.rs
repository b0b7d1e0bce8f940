//! Every compiled matmul path equals a plain f64 reference (within f32 rounding) on random shapes,
//! ragged ones included, for each weight dtype; and the multi-threaded backend ops agree with
//! single-threaded runs.

use idefics3::backend::cpu::matmul::{available_isas, matmul_isa};
use idefics3::backend::cpu::{CpuBackend, CpuWeight};
use idefics3::backend::{ActDtype, Backend};
use idefics3::weights::Checkpoint;
use safetensors::Dtype;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// A weight matrix stored in `dtype` in a temporary safetensors file; returns it with its exact
/// widened values.
fn weight(
    dir: &tempfile::TempDir,
    rows: usize,
    cols: usize,
    dtype: Dtype,
    rng: &mut Rng,
) -> (CpuWeight, Vec<f32>, Checkpoint) {
    let vals = rng.vec(rows * cols);
    let (bytes, exact): (Vec<u8>, Vec<f32>) = match dtype {
        Dtype::BF16 => {
            let h: Vec<half::bf16> = vals.iter().map(|&v| half::bf16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        Dtype::F16 => {
            let h: Vec<half::f16> = vals.iter().map(|&v| half::f16::from_f32(v)).collect();
            (
                h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        _ => (
            vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            vals.clone(),
        ),
    };
    let path = dir
        .path()
        .join(format!("w{rows}x{cols}{dtype:?}.safetensors"));
    let view = safetensors::tensor::TensorView::new(dtype, vec![rows, cols], &bytes).unwrap();
    std::fs::write(
        &path,
        safetensors::serialize(vec![("w", view)], None).unwrap(),
    )
    .unwrap();
    let ck = Checkpoint::open_files(&[path]).unwrap();
    let b = CpuBackend::new(ActDtype::F32, Some(1)).unwrap();
    let w = b.load_weight(ck.get("w").unwrap(), rows).unwrap();
    (w, exact, ck)
}

#[test]
fn every_matmul_path_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let isas = available_isas();
    assert!(!isas.is_empty());
    let shapes = [
        (1, 1, 1),
        (1, 7, 5),
        (3, 33, 17),
        (4, 64, 64),
        (5, 100, 37),
        (67, 129, 45),
        (130, 16, 70),
        (2, 300, 3),
    ];
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        for &(m, k, n) in &shapes {
            let (w, exact, _ck) = weight(&dir, n, k, dtype, &mut rng);
            let x = rng.vec(m * k);
            let bias = rng.vec(n);
            let mut reference = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut s = bias[j] as f64;
                    for p in 0..k {
                        s += x[i * k + p] as f64 * exact[j * k + p] as f64;
                    }
                    reference[i * n + j] = s;
                }
            }
            for &isa in &isas {
                let got = matmul_isa(isa, &x, m, &w, Some(&bias), false);
                for (idx, (&g, &r)) in got.iter().zip(&reference).enumerate() {
                    // f32 accumulation of k products of magnitude ≤ 1: error ≤ k·2^-24 of the sum of |terms|.
                    let tol = 1e-6 * (k as f64 + 1.0) + 1e-6;
                    assert!(
                        (g as f64 - r).abs() <= tol,
                        "{isa:?} {dtype:?} m={m} k={k} n={n} at {idx}: {g} vs {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn bf16_rounding_in_matmul_and_thread_counts_agree() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    let (w, _, _ck) = weight(&dir, 70, 96, Dtype::F32, &mut rng);
    let x = rng.vec(9 * 96);
    let plain = matmul_isa(available_isas()[0], &x, 9, &w, None, false);
    let rounded = matmul_isa(available_isas()[0], &x, 9, &w, None, true);
    for (p, r) in plain.iter().zip(&rounded) {
        assert_eq!(*r, half::bf16::from_f32(*p).to_f32());
    }
    // The same op on 1 and 2 threads gives identical bits (tiles never split a dot product).
    let one = CpuBackend::new(ActDtype::F32, Some(1)).unwrap();
    let two = CpuBackend::new(ActDtype::F32, Some(2)).unwrap();
    let t1 = one.upload(&x, 9, 96);
    let t2 = two.upload(&x, 9, 96);
    assert_eq!(
        one.matmul(&t1, &w, None).data,
        two.matmul(&t2, &w, None).data
    );
}
