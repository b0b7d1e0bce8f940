//! Every compiled matmul path equals a plain f64 reference (within f32 rounding) on random shapes,
//! ragged ones included, for each weight dtype; and the multi-threaded backend ops agree with
//! single-threaded runs.

use idefics3::backend::cpu::matmul::{available_isas, gemm, matmul_isa, BMat};
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
fn bf16_kernel_is_exact_on_bf16_values_and_rounds_like_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    for &(m, k, n) in &[
        (1, 96, 70),
        (3, 33, 9),
        (9, 96, 70),
        (40, 577, 65),
        (130, 64, 33),
    ] {
        let (w, exact, _ck) = weight(&dir, n, k, Dtype::BF16, &mut rng);
        let x: Vec<f32> = rng
            .vec(m * k)
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        for isa in available_isas() {
            let mut plain = vec![0f32; m * n];
            gemm(
                isa,
                &x,
                m,
                k,
                BMat::Weight(&w),
                None,
                true,
                false,
                &mut plain,
            );
            let mut rounded = vec![0f32; m * n];
            gemm(
                isa,
                &x,
                m,
                k,
                BMat::Weight(&w),
                None,
                true,
                true,
                &mut rounded,
            );
            for i in 0..m {
                for j in 0..n {
                    let r: f64 = (0..k)
                        .map(|p| x[i * k + p] as f64 * exact[j * k + p] as f64)
                        .sum();
                    let got = plain[i * n + j] as f64;
                    assert!(
                        (got - r).abs() <= 1e-6 * (k as f64 + 1.0),
                        "{isa:?} ({m},{k},{n}) [{i},{j}]: {got} vs {r}"
                    );
                    assert_eq!(
                        rounded[i * n + j],
                        half::bf16::from_f32(plain[i * n + j]).to_f32()
                    );
                }
            }
        }
    }
}

#[test]
fn weights_are_rounded_to_bf16_in_bf16_mode() {
    // An f32 checkpoint run in bf16 mode reads its weights rounded, as model.to(torch.bfloat16).
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let (_, exact, ck) = weight(&dir, 37, 50, Dtype::F32, &mut rng);
    let b = CpuBackend::new(ActDtype::Bf16, Some(2)).unwrap();
    let w = b.load_weight(ck.get("w").unwrap(), 37).unwrap();
    for m in [1, 2, 20] {
        let x: Vec<f32> = rng
            .vec(m * 50)
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_f32())
            .collect();
        for isa in available_isas() {
            let mut out = vec![0f32; m * 37];
            gemm(
                isa,
                &x,
                m,
                50,
                BMat::Weight(&w),
                None,
                true,
                false,
                &mut out,
            );
            for i in 0..m {
                for j in 0..37 {
                    let r: f64 = (0..50)
                        .map(|p| {
                            x[i * 50 + p] as f64
                                * half::bf16::from_f32(exact[j * 50 + p]).to_f32() as f64
                        })
                        .sum();
                    assert!((out[i * 37 + j] as f64 - r).abs() < 1e-4, "{isa:?} m={m}");
                }
            }
        }
    }
}

#[test]
fn strided_views_multiply_like_their_dense_copies() {
    // B as a strided view (as attention reads K and Vᵀ out of the KV cache).
    let mut rng = Rng(99);
    let (rows, cols, stride) = (23, 19, 41);
    let data = rng.vec(rows * stride + cols * 3);
    let dense: Vec<f32> = (0..cols)
        .flat_map(|c| (0..rows).map(move |r| (r, c)))
        .map(|(r, c)| data[c + r * stride])
        .collect();
    let m = 17;
    let a = rng.vec(m * rows);
    for isa in available_isas() {
        let view = BMat::View {
            data: &data,
            rows: cols,
            cols: rows,
            row_stride: 1,
            col_stride: stride,
        };
        let mut got = vec![0f32; m * cols];
        gemm(isa, &a, m, rows, view, None, false, false, &mut got);
        for i in 0..m {
            for j in 0..cols {
                let r: f64 = (0..rows)
                    .map(|p| a[i * rows + p] as f64 * dense[j * rows + p] as f64)
                    .sum();
                assert!((got[i * cols + j] as f64 - r).abs() < 1e-4, "{isa:?}");
            }
        }
        // bf16 operands (the bf16 kernel packs pairs of an odd depth here).
        let bf = |v: &[f32]| -> Vec<f32> {
            v.iter()
                .map(|&x| half::bf16::from_f32(x).to_f32())
                .collect()
        };
        let (ab, datab) = (bf(&a), bf(&data));
        let view = BMat::View {
            data: &datab,
            rows: cols,
            cols: rows,
            row_stride: 1,
            col_stride: stride,
        };
        gemm(isa, &ab, m, rows, view, None, true, false, &mut got);
        for i in 0..m {
            for j in 0..cols {
                let r: f64 = (0..rows)
                    .map(|p| ab[i * rows + p] as f64 * datab[p * stride + j] as f64)
                    .sum();
                assert!((got[i * cols + j] as f64 - r).abs() < 1e-4, "bf16 {isa:?}");
            }
        }
    }
}

#[test]
fn thread_counts_give_identical_bits() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let (w, _, _ck) = weight(&dir, 70, 96, Dtype::F32, &mut rng);
    let x = rng.vec(9 * 96);
    // The same op on 1 and 2 threads gives identical bits (tiles never split a dot product).
    let one = CpuBackend::new(ActDtype::F32, Some(1)).unwrap();
    let two = CpuBackend::new(ActDtype::F32, Some(2)).unwrap();
    let t1 = one.upload(&x, 9, 96).unwrap();
    let t2 = two.upload(&x, 9, 96).unwrap();
    assert_eq!(
        one.matmul(&t1, &w, None).unwrap().data,
        two.matmul(&t2, &w, None).unwrap().data
    );
}

#[test]
fn fused_gelu_matmul_equals_matmul_then_gelu() {
    // The vision MLP's fc1 runs with GELU fused into the matmul epilogue; it must give the bits of
    // the two separate ops, with a bias, on ragged panels, and in both activation modes.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(77);
    for &(m, k, n) in &[(2, 40, 50), (9, 96, 70), (40, 130, 65), (130, 64, 33)] {
        for dtype in [Dtype::BF16, Dtype::F32] {
            let (w, _, _ck) = weight(&dir, n, k, dtype, &mut rng);
            let (bias, _, _ckb) = weight(&dir, 1, n, dtype, &mut rng);
            let x = rng.vec(m * k);
            for act in [ActDtype::F32, ActDtype::Bf16] {
                let b = CpuBackend::new(act, Some(2)).unwrap();
                let xt = b.upload(&x, m, k).unwrap();
                let fused = b.matmul_gelu(&xt, &w, Some(&bias)).unwrap();
                let mut separate = b.matmul(&xt, &w, Some(&bias)).unwrap();
                b.gelu_tanh(&mut separate).unwrap();
                assert_eq!(fused.data, separate.data, "({m},{k},{n}) {dtype:?} {act:?}");
                // And a GELU ran: its minimum is about −0.17, while the plain products reach −5.
                assert!(fused.data.iter().all(|&f| f > -0.2));
            }
        }
    }
}
