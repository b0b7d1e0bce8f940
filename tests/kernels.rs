//! Every compiled matmul path equals a plain f64 reference (within f32 rounding) on random shapes,
//! ragged ones included, for each weight dtype; and the multi-threaded backend ops agree with
//! single-threaded runs. The AMX tile kernel runs here over its software model on every machine
//! (`Isa::AmxModel`), and on an AMX machine its instructions are compared with the model bit for bit.

use idefics3::backend::cpu::matmul::{
    amx_status, available_isas, best_isa, choose_isa, gemm, matmul_add_bf16, matmul_bf16,
    matmul_gelu, matmul_isa, matmul_multi, AMat, Aligned, BMat, Isa, Packed,
};
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
        one.matmul(&t1, &w, None).unwrap().to_f32(),
        two.matmul(&t2, &w, None).unwrap().to_f32()
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
                assert_eq!(
                    fused.to_f32(),
                    separate.to_f32(),
                    "({m},{k},{n}) {dtype:?} {act:?}"
                );
                // And a GELU ran: its minimum is about −0.17, while the plain products reach −5.
                assert!(fused.to_f32().iter().all(|&f| f > -0.2));
            }
        }
    }
}

/// Products the bf16-out tests run: rows read in place (K a multiple of 32) and packed, ragged M
/// (the last rows copied) and N (partial panels), and a few rows (the matrix-vector path).
const BF16_OUT_SHAPES: &[(usize, usize, usize)] = &[
    (37, 64, 70),
    (48, 96, 33),
    (130, 48, 40),
    (5, 32, 16),
    (3, 64, 8),
];

/// A random bf16 weight of `n × k` loaded by a bf16-mode backend, with its checkpoint.
fn bf16_mode_weight(
    dir: &tempfile::TempDir,
    n: usize,
    k: usize,
    rng: &mut Rng,
) -> (CpuWeight, Checkpoint) {
    let (_, _, ck) = weight(dir, n, k, Dtype::BF16, rng);
    let b16 = CpuBackend::new(ActDtype::Bf16, Some(2)).unwrap();
    let w = b16.load_weight(ck.get("w").unwrap(), n).unwrap();
    (w, ck)
}

#[test]
fn bf16_rows_in_and_out_give_the_bits_of_the_f32_path() {
    // bf16 mode hands the tile kernel (or the AVX-512 panel kernels) its activations as stored and
    // takes bf16 results from its epilogue: the bits must be those of the f32-valued path (f32 rows
    // in, rounded f32 out) of the same kernel, for rows read in place (K a multiple of 32, ragged M:
    // the last rows are copied) and packed (other K), with and without bias and fused GELU, one
    // weight or two sharing the activations.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(2024);
    let tiles = best_isa().is_amx();
    let runs = tiles || matches!(best_isa(), Isa::Avx512Bf16 | Isa::Avx512);
    for &(m, k, n) in BF16_OUT_SHAPES {
        let (w, _ck) = bf16_mode_weight(&dir, n, k, &mut rng);
        let (w2, _ck2) = bf16_mode_weight(&dir, n + 13, k, &mut rng);
        let bias = rng.vec(n);
        // f32 denormals in the bias: the zero first row of A gives them as results, which the
        // epilogue's one-instruction bf16 conversion would read as zero.
        let denormal_bias: Vec<f32> = (0..n)
            .map(|j| match j % 3 {
                0 => f32::from_bits(0x0012_3456 + j as u32),
                1 => -f32::from_bits(0x0000_0fff + j as u32),
                _ => bias[j],
            })
            .collect();
        let mut x = bf16_vec(&mut rng, m * k);
        x[..k].fill(0.0);
        let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        for (bias, gelu) in [
            (None, false),
            (Some(&bias[..]), false),
            (Some(&bias[..]), true),
            (Some(&denormal_bias[..]), false),
        ] {
            let pair = [(&w, bias), (&w2, None)];
            let ws = if gelu { &pair[..1] } else { &pair[..] };
            let got = matmul_bf16(AMat::Bf16(&xb), m, ws, gelu);
            let Some(got) = got else {
                assert!(!runs || m <= 4, "the bf16 kernels must run {m}×{k}×{n}");
                continue;
            };
            assert!(runs && m > 4, "matmul_bf16 ran on {:?}", best_isa());
            let want = if gelu {
                vec![matmul_gelu(AMat::F32(&x), m, &w, bias, true)]
            } else {
                matmul_multi(AMat::F32(&x), m, ws, true)
            };
            assert_eq!(got.len(), want.len());
            for (j, (got, want)) in got.iter().zip(&want).enumerate() {
                let got: Vec<u32> = got.iter().map(|&b| (b as u32) << 16).collect();
                let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(
                    got,
                    want,
                    "({m},{k},{n}) weight {j} bias {} gelu {gelu}",
                    bias.is_some()
                );
            }
        }
    }
}

/// An f32 vector stored as the tensor `name` in a temporary safetensors file, loaded by `be`.
fn f32_vector(
    dir: &tempfile::TempDir,
    name: &str,
    vals: &[f32],
    be: &CpuBackend,
) -> (CpuWeight, Checkpoint) {
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = dir.path().join(format!("{name}.safetensors"));
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![vals.len()], &bytes).unwrap();
    std::fs::write(
        &path,
        safetensors::serialize(vec![(name, view)], None).unwrap(),
    )
    .unwrap();
    let ck = Checkpoint::open_files(&[path]).unwrap();
    let w = be.load_weight(ck.get(name).unwrap(), 1).unwrap();
    (w, ck)
}

#[test]
fn residual_epilogue_gives_the_bits_of_the_product_then_the_add() {
    // `acc += x·Wᵀ + b` in the product's epilogue (the residual connections in bf16 mode) must give
    // the bits of the rounded product followed by the rounded add, on the tiles and the AVX-512
    // panel kernels: ragged M, N not a multiple of the 32-column panels (masked residual loads), K
    // read in place and packed, with and without bias. The residuals include the negated products
    // (sums of exactly zero) and values far larger and smaller than them (the add rounds them away
    // or keeps them whole).
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(77);
    let runs = best_isa().is_amx() || matches!(best_isa(), Isa::Avx512Bf16 | Isa::Avx512);
    for &(m, k, n) in BF16_OUT_SHAPES {
        let (w, ck) = bf16_mode_weight(&dir, n, k, &mut rng);
        let bias = rng.vec(n);
        // Tiny normal biases: the zero first row of A gives them as products, and the residual
        // cancels three quarters of each, so the sums are f32 denormals (which the one-instruction
        // bf16 conversion would read as zero).
        let tiny: Vec<f32> = (0..n)
            .map(|j| f32::MIN_POSITIVE * (1.5 + j as f32 / 64.0))
            .collect();
        let mut x = bf16_vec(&mut rng, m * k);
        x[..k].fill(0.0);
        let xb: Vec<u16> = x.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        for bias in [None, Some(&bias[..]), Some(&tiny[..])] {
            let product = matmul_multi(AMat::F32(&x), m, &[(&w, bias)], true).remove(0);
            let residual: Vec<f32> = product
                .iter()
                .enumerate()
                .map(|(i, &p)| match i % 4 {
                    _ if i < n => -0.75 * p,
                    0 => -p,
                    1 => p * 1024.0 + rng.next(),
                    2 => p / 4096.0,
                    _ => rng.next() * 4.0,
                })
                .map(|v| half::bf16::from_f32(v).to_f32())
                .collect();
            let want: Vec<u16> = residual
                .iter()
                .zip(&product)
                .map(|(&r, &p)| half::bf16::from_f32(r + p).to_bits())
                .collect();
            let mut acc: Vec<u16> = residual
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect();
            let fused = matmul_add_bf16(AMat::Bf16(&xb), m, &w, bias, &mut acc);
            assert_eq!(
                fused,
                runs && m > 4,
                "fused on {:?} for {m} rows",
                best_isa()
            );
            if fused {
                assert_eq!(acc, want, "({m},{k},{n}) bias {}", bias.is_some());
            }
            // The backend op, fused or not, in every mode: the product then the add.
            for act in [ActDtype::Bf16, ActDtype::F32, ActDtype::F16] {
                let be = CpuBackend::new(act, Some(2)).unwrap();
                let w = be.load_weight(ck.get("w").unwrap(), n).unwrap();
                let bw = bias.map(|b| f32_vector(&dir, &format!("b{m}x{k}x{n}"), b, &be));
                let xt = be.upload(&x, m, k).unwrap();
                let mut fused = be.upload(&residual, m, n).unwrap();
                be.matmul_add(&mut fused, &xt, &w, bw.as_ref().map(|b| &b.0))
                    .unwrap();
                let mut apart = be.upload(&residual, m, n).unwrap();
                let y = be.matmul(&xt, &w, bw.as_ref().map(|b| &b.0)).unwrap();
                be.add_assign(&mut apart, &y).unwrap();
                let bits = |t| -> Vec<u32> {
                    be.download(t)
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                assert_eq!(
                    bits(&fused),
                    bits(&apart),
                    "{act:?} ({m},{k},{n}) bias {}",
                    bias.is_some()
                );
            }
        }
    }
    // Operands that do not fit are errors naming the op.
    let b16 = CpuBackend::new(ActDtype::Bf16, Some(1)).unwrap();
    let (_, _, ck) = weight(&dir, 8, 16, Dtype::BF16, &mut rng);
    let w = b16.load_weight(ck.get("w").unwrap(), 8).unwrap();
    let x = b16.upload(&[0.0; 6 * 16], 6, 16).unwrap();
    let mut acc = b16.upload(&[0.0; 6 * 9], 6, 9).unwrap();
    let e = b16
        .matmul_add(&mut acc, &x, &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("matmul_add"), "{e}");
}

#[test]
fn packed_products_of_strided_bf16_rows_equal_those_of_their_f32_copies() {
    // Attention reads each head's queries and probabilities as bf16 rows with a row stride; on
    // every path the result must be that of the dense f32 copy.
    let mut rng = Rng(31);
    for &(m, k, n, ld) in &[
        (40, 64, 50, 200),
        (17, 32, 33, 32),
        (9, 48, 20, 60),
        (130, 96, 64, 96),
    ] {
        let bvals = bf16_vec(&mut rng, n * k);
        let b = BMat::View {
            data: &bvals,
            rows: n,
            cols: k,
            row_stride: k,
            col_stride: 1,
        };
        let a = bf16_vec(&mut rng, m * ld);
        let ab: Vec<u16> = a.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
        let dense: Vec<f32> = (0..m)
            .flat_map(|i| a[i * ld..i * ld + k].to_vec())
            .collect();
        let packed = Packed::new(b, true);
        let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
        packed.gemm_bf16(&ab, m, ld, n, n, &mut got);
        packed.gemm(&dense, m, n, &mut want);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "({m},{k},{n}) row stride {ld}");
        // The same rows on cache-line boundaries, which the tile kernel reads in place.
        let mut aligned = Aligned::<u16>::zeroed(m * ld);
        aligned.as_mut_slice().copy_from_slice(&ab);
        assert_eq!(aligned.as_slice().as_ptr() as usize % 64, 0);
        packed.gemm_bf16(aligned.as_slice(), m, ld, n, n, &mut got);
        assert_eq!(
            bits(&got),
            bits(&want),
            "aligned ({m},{k},{n}) row stride {ld}"
        );
        // Results into rows longer than the product (attention pads its score rows): the same
        // values, and the gaps between rows untouched.
        let ldc = n + 19;
        const GAP: f32 = -7.25;
        let mut wide = vec![GAP; (m - 1) * ldc + n];
        packed.gemm_bf16(aligned.as_slice(), m, ld, n, ldc, &mut wide);
        for i in 0..m {
            assert_eq!(
                bits(&wide[i * ldc..i * ldc + n]),
                bits(&want[i * n..(i + 1) * n]),
                "({m},{k},{n}) output row stride {ldc}, row {i}"
            );
            if i + 1 < m {
                assert!(
                    wide[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == GAP),
                    "({m},{k},{n}) output row stride {ldc}: row {i}'s gap written"
                );
            }
        }
        let r = reference(&dense, m, k, &bvals, n);
        for (g, r) in got.iter().zip(&r) {
            assert!(
                (*g as f64 - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{g} vs {r}"
            );
        }
    }
}

#[test]
fn bf16_views_pack_like_their_f32_copies() {
    // Attention packs K (rows are storage rows) and Vᵀ (rows are storage columns) straight from
    // bf16 storage; each must multiply as the same view of the widened values does, odd depths and
    // partial panels included.
    let mut rng = Rng(47);
    for &(m, k, n, stride) in &[
        (20, 64, 70, 192),
        (13, 33, 45, 40),
        (5, 7, 3, 9),
        (18, 96, 32, 96),
    ] {
        let a = bf16_vec(&mut rng, m * k);
        for transposed in [false, true] {
            // Element (r, c) of B at r·row_stride + c·col_stride inside `len` stored values.
            let (row_stride, col_stride, len) = if transposed {
                (1, stride.max(n), k * stride.max(n))
            } else {
                (stride.max(k), 1, n * stride.max(k))
            };
            let vals = bf16_vec(&mut rng, len);
            let bits: Vec<u16> = vals.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            let view = BMat::View {
                data: &vals,
                rows: n,
                cols: k,
                row_stride,
                col_stride,
            };
            let bf16_view = BMat::Bf16View {
                data: &bits,
                rows: n,
                cols: k,
                row_stride,
                col_stride,
            };
            for bf16_inputs in [true, false] {
                let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
                Packed::new(bf16_view, bf16_inputs).gemm(&a, m, n, &mut got);
                Packed::new(view, bf16_inputs).gemm(&a, m, n, &mut want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "({m},{k},{n}) stride {stride} transposed {transposed} bf16 {bf16_inputs}"
                );
            }
        }
    }
}

fn bf16_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec(n)
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}

/// `a·bᵀ` in f64 with `b` given as `n` rows of `k` exact values.
fn reference(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f64> {
    let mut r = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            r[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                .sum();
        }
    }
    r
}

#[test]
fn tile_kernel_handles_ragged_shapes_and_every_weight_dtype() {
    // M around the 16-row tiles and 32-row blocks, N around the 16-column tiles and 32-column panels,
    // K around the 32-deep tile steps (odd K leaves half a pair). Weights of every dtype, in bf16
    // mode, where they are read rounded to bf16: the only mode in which the tiles run.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0xa3c5);
    let b16 = CpuBackend::new(ActDtype::Bf16, Some(2)).unwrap();
    let shapes = [
        (5, 1, 1),
        (5, 31, 15),
        (16, 32, 16),
        (17, 33, 17),
        (33, 64, 33),
        (47, 96, 70),
        (100, 577, 31),
        (300, 70, 130),
    ];
    for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
        for &(m, k, n) in &shapes {
            let (_, exact, ck) = weight(&dir, n, k, dtype, &mut rng);
            let w = b16.load_weight(ck.get("w").unwrap(), n).unwrap();
            let wb: Vec<f32> = exact
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect();
            let x = bf16_vec(&mut rng, m * k);
            let want = reference(&x, m, k, &wb, n);
            let mut got = vec![0f32; m * n];
            gemm(
                Isa::AmxModel,
                &x,
                m,
                k,
                BMat::Weight(&w),
                None,
                true,
                false,
                &mut got,
            );
            for (idx, (&g, &r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - r).abs() <= 1e-6 * (k as f64 + 1.0),
                    "{dtype:?} m={m} k={k} n={n} at {idx}: {g} vs {r}"
                );
            }
            // The packed weight is kept: a second product reuses it and gives the same bits.
            assert!(
                w.tile_bytes() >= n * k * 2,
                "{dtype:?}: no packed copy kept"
            );
            let mut again = vec![0f32; m * n];
            gemm(
                Isa::AmxModel,
                &x,
                m,
                k,
                BMat::Weight(&w),
                None,
                true,
                false,
                &mut again,
            );
            assert_eq!(got, again);
        }
    }
}

/// One row of A against B = all ones, through the tile model: `a` as given (bf16 values), k = a.len().
fn model_row_sum(a: &[f32], rows: usize) -> Vec<f32> {
    let k = a.len();
    let x: Vec<f32> = (0..rows).flat_map(|_| a.iter().copied()).collect();
    let ones = vec![1f32; 3 * k];
    let view = BMat::View {
        data: &ones,
        rows: 3,
        cols: k,
        row_stride: k,
        col_stride: 1,
    };
    let mut out = vec![0f32; rows * 3];
    gemm(
        Isa::AmxModel,
        &x,
        rows,
        k,
        view,
        None,
        true,
        false,
        &mut out,
    );
    out
}

#[test]
fn tile_model_sums_in_the_order_the_sdm_gives() {
    // TDPBF16PS keeps separate sums of the even and odd elements of the pairs within one
    // instruction (32 values of K), adds them, then adds that to the accumulator. With
    // a = [2^24, 1, -2^24, 1] the even sum is 0 and the odd sum 2: the result is 2, where one running
    // sum would lose both ones (2^24 + 1 rounds to 2^24) and give 0 or 1.
    let big = 16_777_216f32;
    for v in model_row_sum(&[big, 1.0, -big, 1.0], 5) {
        assert_eq!(v, 2.0);
    }
    // Across two instructions (K = 64): the first gives 2^24, the second 1 + 1 = 2 in its even sum,
    // so the accumulator gets 2^24 + 2 exactly (one running sum would give 2^24).
    let mut a = vec![0f32; 64];
    a[0] = big;
    a[32] = 1.0;
    a[34] = 1.0;
    for v in model_row_sum(&a, 5) {
        assert_eq!(v, big + 2.0);
    }
}

#[test]
fn tile_model_treats_denormal_inputs_and_results_as_zero() {
    // DAZ: 2^-130 is a bf16 denormal; times 2^100 it would be 2^-30, a normal f32.
    let tiny = f32::from_bits(0x0008_0000); // 2^-130 (bf16 0x0008)
    assert!(tiny.is_subnormal() && half::bf16::from_f32(tiny).to_f32() == tiny);
    let x = vec![tiny; 5 * 2];
    let big = vec![2f32.powi(100); 2 * 2];
    let view = BMat::View {
        data: &big,
        rows: 2,
        cols: 2,
        row_stride: 2,
        col_stride: 1,
    };
    let mut out = vec![1f32; 5 * 2];
    gemm(Isa::AmxModel, &x, 5, 2, view, None, true, false, &mut out);
    assert!(out.iter().all(|&v| v == 0.0), "DAZ: {out:?}");
    // A small normal value passes unchanged...
    assert!(model_row_sum(&[2f32.powi(-70)], 5)
        .iter()
        .all(|&v| v == 2f32.powi(-70)));
    // ...but FTZ: 2^-70 · 2^-70 = 2^-140 is a denormal f32 result.
    let small = vec![2f32.powi(-70); 3];
    let view = BMat::View {
        data: &small,
        rows: 3,
        cols: 1,
        row_stride: 1,
        col_stride: 1,
    };
    let mut out = vec![1f32; 5 * 3];
    let x = vec![2f32.powi(-70); 5];
    gemm(Isa::AmxModel, &x, 5, 1, view, None, true, false, &mut out);
    assert!(out.iter().all(|&v| v == 0.0), "FTZ: {out:?}");
}

#[test]
fn amx_instructions_agree_with_the_tile_model() {
    if let Err(why) = amx_status() {
        println!(
            "NOTICE: AMX not tested on this machine ({why}): the tile instructions did not run; \
             only the software model was tested"
        );
        return;
    }
    assert!(available_isas().contains(&Isa::Amx));
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x5eed);
    let b16 = CpuBackend::new(ActDtype::Bf16, Some(2)).unwrap();
    let pool = idefics3::backend::cpu::pool::ThreadPool::new(2).unwrap();
    // The hardware must agree with the exact sums within f32's summation bound for any order
    // (2·k·2^-24 of Σ|aᵢbᵢ|, plus room for flushed denormal products): a packing, blocking or
    // encoding error breaks that by far. Bit-for-bit agreement with the model holds only if the
    // model's summation order (tiles.rs, from the SDM's pseudocode) is this CPU's: not yet verified
    // on hardware, so a difference is reported rather than failed.
    let compare = |x: &[f32], m: usize, k: usize, b: BMat, what: &str| {
        let (n, bm): (usize, Vec<f32>) = match b {
            BMat::Weight(w) => (w.rows, w.to_vec()),
            BMat::View {
                data,
                rows,
                cols,
                row_stride,
                col_stride,
            } => (
                rows,
                (0..rows * cols)
                    .map(|i| data[(i / cols) * row_stride + (i % cols) * col_stride])
                    .collect(),
            ),
            BMat::Bf16View {
                data,
                rows,
                cols,
                row_stride,
                col_stride,
            } => (
                rows,
                (0..rows * cols)
                    .map(|i| {
                        let b = data[(i / cols) * row_stride + (i % cols) * col_stride];
                        f32::from_bits((b as u32) << 16)
                    })
                    .collect(),
            ),
        };
        let (mut hw, mut model) = (vec![0f32; m * n], vec![0f32; m * n]);
        pool.install(|| {
            gemm(Isa::Amx, x, m, k, b, None, true, false, &mut hw);
            gemm(Isa::AmxModel, x, m, k, b, None, true, false, &mut model);
        });
        for i in 0..m {
            for j in 0..n {
                let (mut exact, mut mag) = (0f64, 0f64);
                for t in 0..k {
                    let p = x[i * k + t] as f64 * bm[j * k + t] as f64;
                    exact += p;
                    mag += p.abs();
                }
                let bound = 2.0 * k as f64 * 2f64.powi(-24) * mag + k as f64 * 2f64.powi(-100);
                let got = hw[i * n + j] as f64;
                assert!(
                    (got - exact).abs() <= bound,
                    "{what} m={m} k={k} n={n}: output ({i}, {j}) = {got} but the exact sum is \
                     {exact} (bound {bound})"
                );
            }
        }
        let differ = hw
            .iter()
            .zip(&model)
            .filter(|(h, s)| h.to_bits() != s.to_bits())
            .count();
        if differ > 0 {
            println!(
                "NOTICE: {what} m={m} k={k} n={n}: {differ} of {} outputs differ in their bits from \
                 the tile model (within the f32 bound): the model's summation order is not this \
                 CPU's",
                hw.len()
            );
        }
    };
    for &(m, k, n) in &[
        (5, 7, 3),
        (17, 33, 17),
        (64, 96, 70),
        (300, 577, 130),
        (1024, 768, 96),
    ] {
        let (_, _, ck) = weight(&dir, n, k, Dtype::BF16, &mut rng);
        let w = b16.load_weight(ck.get("w").unwrap(), n).unwrap();
        let x = bf16_vec(&mut rng, m * k);
        compare(&x, m, k, BMat::Weight(&w), "random");
    }
    // Cancellation, large and tiny magnitudes and denormals: where the summation order, DAZ and FTZ
    // show. Values drawn from a few binades far apart, signs mixed (products stay below 2^60, so no
    // sum overflows and no NaN, whose bits would say nothing about the order, appears).
    let mut special = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = rng.next();
                let e = [-140, -120, -60, 0, 0, 12, 24, 30][(u.abs() * 8.0) as usize % 8];
                half::bf16::from_f32(u * 2f32.powi(e)).to_f32()
            })
            .collect()
    };
    for &(m, k, n) in &[(33, 64, 33), (100, 300, 50)] {
        let x = special(m * k);
        let b = special(n * k);
        let view = BMat::View {
            data: &b,
            rows: n,
            cols: k,
            row_stride: k,
            col_stride: 1,
        };
        compare(&x, m, k, view, "special");
    }
}

#[test]
fn isa_caps_allow_the_named_set_and_those_below() {
    let amx = [
        Isa::Amx,
        Isa::Avx512Bf16,
        Isa::Avx512,
        Isa::Avx2,
        Isa::Portable,
        Isa::AmxModel,
    ];
    let epyc = &amx[1..];
    assert_eq!(choose_isa(&amx, None), Isa::Amx);
    assert_eq!(choose_isa(epyc, None), Isa::Avx512Bf16);
    assert_eq!(choose_isa(epyc, Some("amx")), Isa::Avx512Bf16);
    assert_eq!(choose_isa(&amx, Some("avx512bf16")), Isa::Avx512Bf16);
    assert_eq!(choose_isa(&amx, Some("avx512")), Isa::Avx512);
    assert_eq!(choose_isa(&amx, Some("avx2")), Isa::Avx2);
    assert_eq!(choose_isa(&amx, Some("portable")), Isa::Portable);
    assert_eq!(choose_isa(epyc, Some("amx-model")), Isa::AmxModel);
    assert_eq!(
        choose_isa(&[Isa::Avx2, Isa::Portable], Some("avx512")),
        Isa::Avx2
    );
    assert_eq!(choose_isa(epyc, Some("sse9")), Isa::Avx512Bf16);
}
