//! aclnnMm and aclnnMatmul against a plain f64 reference: random shapes, a transposed-stride weight view, every
//! float dtype, 1-D and batched operands, cubeMathType rules and the documented errors.

mod aclnn_util;
use aclnn_util::*;
use cann_sim::aclnn::matmul::*;
use std::ptr::null;

/// `a[M,K] · b[K,N]` in f64.
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut o = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            o[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    o
}

fn bound(dt: i32, k: usize) -> (f64, f64) {
    let (a, r) = tol(dt);
    (a * (k as f64).sqrt() + 1e-6 * k as f64, r)
}

#[test]
fn mm_with_a_transposed_weight_view_for_every_dtype() {
    let dev = setup();
    let mut rng = Rng::new(10);
    for dt in FLOATS {
        for _ in 0..3 {
            let (m, k, n) = (
                1 + rng.below(9) as usize,
                1 + rng.below(40) as usize,
                1 + rng.below(9) as usize,
            );
            let a = rng.vec_in(m * k, dt);
            // Weight W[N, K] row-major, used as mat2 = Wᵀ [K, N] through strides (1, K).
            let w = rng.vec_in(n * k, dt);
            let (at, wt) = (
                tensor(&a, &[m as i64, k as i64], dt),
                transposed(&w, n as i64, k as i64, dt),
            );
            let out = zeros(&[m as i64, n as i64], dt);
            let (rc, ws, ex) =
                p1(|x, e| unsafe { aclnnMmGetWorkspaceSize(at.h, wt.h, out.h, 0, x, e) });
            ok(&dev, rc, ws, ex, aclnnMm);
            let mut b = vec![0.0; k * n];
            for p in 0..k {
                for j in 0..n {
                    b[p * n + j] = w[j * k + p];
                }
            }
            let (atol, rtol) = bound(dt, k);
            close(
                &out.storage(),
                &mm(&a, &b, m, k, n),
                atol,
                rtol,
                &format!("Mm {dt} {m}x{k}x{n}"),
            );
        }
    }
}

#[test]
fn matmul_batches_broadcasts_and_drops_padded_dims() {
    let dev = setup();
    let mut rng = Rng::new(11);
    let (bt, m, k, n) = (3usize, 4usize, 5usize, 2usize);
    let dt = BF16;
    // [B, M, K] · [K, N] (weight as a transposed view) → [B, M, N].
    let a = rng.vec_in(bt * m * k, dt);
    let w = rng.vec_in(n * k, dt);
    let at = tensor(&a, &[bt as i64, m as i64, k as i64], dt);
    let wt = transposed(&w, n as i64, k as i64, dt);
    let out = zeros(&[bt as i64, m as i64, n as i64], dt);
    let (rc, ws, ex) =
        p1(|x, e| unsafe { aclnnMatmulGetWorkspaceSize(at.h, wt.h, out.h, 1, x, e) });
    ok(&dev, rc, ws, ex, aclnnMatmul);
    let mut b = vec![0.0; k * n];
    for p in 0..k {
        for j in 0..n {
            b[p * n + j] = w[j * k + p];
        }
    }
    let want: Vec<f64> = (0..bt)
        .flat_map(|i| mm(&a[i * m * k..(i + 1) * m * k], &b, m, k, n))
        .collect();
    let (atol, rtol) = bound(dt, k);
    close(&out.storage(), &want, atol, rtol, "Matmul batched");
    // (K) · (K, N) → (N), f16 inputs into an f32 out.
    let v = rng.vec_in(k, F16);
    let bm = rng.vec_in(k * n, F16);
    let (vt, bmt, o) = (
        tensor(&v, &[k as i64], F16),
        tensor(&bm, &[k as i64, n as i64], F16),
        zeros(&[n as i64], F32),
    );
    let (rc, ws, ex) = p1(|x, e| unsafe { aclnnMatmulGetWorkspaceSize(vt.h, bmt.h, o.h, 0, x, e) });
    ok(&dev, rc, ws, ex, aclnnMatmul);
    close(
        &o.storage(),
        &mm(&v, &bm, 1, k, n),
        1e-5,
        1e-5,
        "Matmul 1-D self",
    );
    // (M, K) · (K) → (M)
    let am = rng.vec_in(m * k, F32);
    let (amt, o2) = (
        tensor(&am, &[m as i64, k as i64], F32),
        zeros(&[m as i64], F32),
    );
    let vt32 = tensor(&v, &[k as i64], F32);
    let (rc, ws, ex) =
        p1(|x, e| unsafe { aclnnMatmulGetWorkspaceSize(amt.h, vt32.h, o2.h, 0, x, e) });
    ok(&dev, rc, ws, ex, aclnnMatmul);
    close(
        &o2.storage(),
        &mm(&am, &v, m, k, 1),
        1e-5,
        1e-5,
        "Matmul 1-D mat2",
    );
}

#[test]
fn cube_math_type_use_fp16_rounds_float_inputs() {
    let dev = setup();
    // 1 + 2^-12 is not an fp16 value: under USE_FP16 it becomes 1, under KEEP_DTYPE it stays.
    let x = 1.0 + 2f64.powi(-12);
    let (a, b) = (tensor(&[x], &[1, 1], F32), tensor(&[1.0], &[1, 1], F32));
    for (cube, want) in [(0i8, x), (2, 1.0)] {
        let out = zeros(&[1, 1], F32);
        let (rc, ws, ex) =
            p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, b.h, out.h, cube, w, e) });
        ok(&dev, rc, ws, ex, aclnnMm);
        assert_eq!(out.storage(), vec![want], "cubeMathType {cube}");
    }
}

#[test]
fn matmul_errors() {
    let _dev = setup();
    let a = zeros(&[2, 3], F32);
    let b = zeros(&[4, 2], F32);
    let o = zeros(&[2, 2], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, b.h, o.h, 0, w, e) });
    fails(rc, INVALID, "reduce dims 3 and 4");
    let b3 = zeros(&[3, 2], F32);
    let o3 = zeros(&[3, 2], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, b3.h, o3.h, 0, w, e) });
    fails(rc, INVALID, "out has shape");
    let bb = zeros(&[3, 2], BF16);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, bb.h, o.h, 0, w, e) });
    fails(rc, INVALID, "not a supported type combination");
    let a16 = zeros(&[2, 3], BF16);
    let o16 = zeros(&[2, 2], BF16);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a16.h, bb.h, o16.h, 2, w, e) });
    fails(rc, INVALID, "USE_FP16");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a16.h, bb.h, o16.h, 3, w, e) });
    fails(rc, INVALID, "USE_HF32");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, b3.h, o.h, 7, w, e) });
    fails(rc, INVALID, "cubeMathType = 7");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a.h, b3.h, o16.h, 0, w, e) });
    fails(rc, INVALID, "common type");
    let a3 = zeros(&[1, 2, 3], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMmGetWorkspaceSize(a3.h, b3.h, o.h, 0, w, e) });
    fails(rc, INVALID, "2-D");
    let i = zeros(&[2, 3], I32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMatmulGetWorkspaceSize(i.h, b3.h, o.h, 0, w, e) });
    fails(rc, INVALID, "INT32");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMatmulGetWorkspaceSize(a.h, null(), o.h, 0, w, e) });
    fails(rc, NULLPTR, "mat2 is null");
    let ba = zeros(&[2, 2, 3], F32);
    let bb2 = zeros(&[3, 3, 2], F32);
    let ob = zeros(&[3, 2, 2], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMatmulGetWorkspaceSize(ba.h, bb2.h, ob.h, 0, w, e) });
    fails(rc, INVALID, "batch dims");
}
