//! Element-wise, activation and normalisation operators against plain references written here: random
//! shapes, broadcasting, non-contiguous views, every accepted float dtype, and the documented errors.

mod aclnn_util;
use aclnn_util::*;
use cann_sim::aclnn::activation::*;
use cann_sim::aclnn::elementwise::*;
use cann_sim::aclnn::norm::*;
use std::ptr::{null, null_mut};

/// Row-major values of `x` (shape `xs`) broadcast to `out`.
fn bcast(x: &[f64], xs: &[i64], out: &[i64]) -> Vec<f64> {
    let n: i64 = out.iter().product();
    let lead = out.len() - xs.len();
    (0..n)
        .map(|k| {
            let (mut rem, mut off, mut mul) = (k, 0i64, 1i64);
            for a in (0..out.len()).rev() {
                let i = rem % out[a];
                rem /= out[a];
                if a >= lead {
                    let d = xs[a - lead];
                    off += if d == 1 { 0 } else { i } * mul;
                    mul *= d;
                }
            }
            x[off as usize]
        })
        .collect()
}

#[test]
fn add_broadcasts_with_alpha_for_every_float_dtype_and_a_strided_other() {
    let dev = setup();
    let mut rng = Rng::new(1);
    for dt in FLOATS {
        let (m, n) = (2 + rng.below(5) as i64, 1 + rng.below(7) as i64);
        let a = rng.vec_in((m * n) as usize, dt);
        let a_t = tensor(&a, &[m, n], dt);
        // other is [n] taken with stride 2 from a storage of 2n.
        let store = rng.vec_in((2 * n) as usize, dt);
        let b_t = view(&store, &[n], &[2], 0, dt);
        let b: Vec<f64> = (0..n as usize).map(|i| store[2 * i]).collect();
        let out = zeros(&[m, n], dt);
        let al = scalar(0.5);
        let (rc, ws, ex) =
            p1(|w, e| unsafe { aclnnAddGetWorkspaceSize(a_t.h, b_t.h, al, out.h, w, e) });
        ok(&dev, rc, ws, ex, aclnnAdd);
        let bb = bcast(&b, &[n], &[m, n]);
        let want: Vec<f64> = a
            .iter()
            .zip(&bb)
            .map(|(x, y)| round((*x as f32 + 0.5f32 * *y as f32) as f64, dt))
            .collect();
        assert_eq!(out.storage(), want, "Add {dt}");
        // In place into a (broadcast other must give selfRef's shape).
        let (rc, ws, ex) =
            p1(|w, e| unsafe { aclnnInplaceAddGetWorkspaceSize(a_t.h, b_t.h, al, w, e) });
        ok(&dev, rc, ws, ex, aclnnInplaceAdd);
        assert_eq!(a_t.storage(), want, "InplaceAdd {dt}");
        unsafe { cann_sim::aclnn::tensor::aclDestroyScalar(al) };
    }
}

#[test]
fn add_and_mul_integers_and_promotion() {
    let dev = setup();
    let a = tensor(&[1.0, -2.0, 3.0], &[3], I32);
    let b = tensor(&[10.0, 20.0, 30.0], &[3], I64);
    let out = zeros(&[3], I64);
    let mut two = 2i64;
    let al =
        unsafe { cann_sim::aclnn::tensor::aclCreateScalar(&mut two as *mut i64 as *mut _, I64) };
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnAddGetWorkspaceSize(a.h, b.h, al, out.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnAdd);
    assert_eq!(out.storage(), vec![21.0, 38.0, 63.0]);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnMulGetWorkspaceSize(a.h, b.h, out.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnMul);
    assert_eq!(out.storage(), vec![10.0, -40.0, 90.0]);
    // A float alpha cannot be converted to the integer common type.
    let fa = scalar(1.5);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnAddGetWorkspaceSize(a.h, b.h, fa, out.h, w, e) });
    fails(rc, INVALID, "alpha");
    // A float result cannot go to an integer out.
    let f = tensor(&[1.0; 3], &[3], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMulGetWorkspaceSize(a.h, f.h, out.h, w, e) });
    fails(rc, INVALID, "cannot be written");
    unsafe {
        cann_sim::aclnn::tensor::aclDestroyScalar(al);
        cann_sim::aclnn::tensor::aclDestroyScalar(fa);
    }
}

#[test]
fn mul_and_inplace_mul_on_random_shapes() {
    let dev = setup();
    let mut rng = Rng::new(2);
    for dt in FLOATS {
        let shape = [
            1 + rng.below(3) as i64,
            1 + rng.below(4) as i64,
            1 + rng.below(5) as i64,
        ];
        let ob = [shape[0], 1, shape[2]];
        let n: i64 = shape.iter().product();
        let a = rng.vec_in(n as usize, dt);
        let b = rng.vec_in((ob[0] * ob[2]) as usize, dt);
        let (at, bt, out) = (
            tensor(&a, &shape, dt),
            tensor(&b, &ob, dt),
            zeros(&shape, dt),
        );
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnMulGetWorkspaceSize(at.h, bt.h, out.h, w, e) });
        ok(&dev, rc, ws, ex, aclnnMul);
        let bb = bcast(&b, &ob, &shape);
        let want: Vec<f64> = a
            .iter()
            .zip(&bb)
            .map(|(x, y)| round((*x as f32 * *y as f32) as f64, dt))
            .collect();
        assert_eq!(out.storage(), want);
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceMulGetWorkspaceSize(at.h, bt.h, w, e) });
        ok(&dev, rc, ws, ex, aclnnInplaceMul);
        assert_eq!(at.storage(), want);
    }
}

#[test]
fn elementwise_errors() {
    let _dev = setup();
    let a = tensor(&[1.0; 6], &[2, 3], F32);
    let b = tensor(&[1.0; 4], &[4], F32);
    let out = zeros(&[2, 3], F32);
    let al = scalar(1.0);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnAddGetWorkspaceSize(a.h, b.h, al, out.h, w, e) });
    fails(rc, INVALID, "cannot be broadcast");
    let c = tensor(&[1.0; 3], &[3], F32);
    let small = zeros(&[3], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnAddGetWorkspaceSize(a.h, c.h, al, small.h, w, e) });
    fails(rc, INVALID, "must be the shape of out");
    // In place: broadcast result larger than selfRef.
    let (rc, _, _) = p1(|w, e| unsafe { aclnnInplaceAddGetWorkspaceSize(c.h, a.h, al, w, e) });
    fails(rc, INVALID, "must equal the shape of selfRef");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMulGetWorkspaceSize(a.h, null(), out.h, w, e) });
    fails(rc, NULLPTR, "other is null");
    // 9 dims.
    let d9 = [1i64; 9];
    let t9 = tensor(&[1.0], &d9, F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnMulGetWorkspaceSize(t9.h, t9.h, t9.h, w, e) });
    fails(rc, INVALID, "9 dims");
    unsafe { cann_sim::aclnn::tensor::aclDestroyScalar(al) };
}

#[test]
fn cast_rounds_to_nearest_even_and_truncates_to_integers() {
    let dev = setup();
    // 1 + 2^-11 lies halfway between two fp16 values: ties to even gives 1.0; 1 + 3·2^-11 rounds up to 1 + 2^-9.
    let vals = [
        1.0 + 2f64.powi(-11),
        1.0 + 3.0 * 2f64.powi(-11),
        -2.75,
        1e6,
        f64::NAN,
    ];
    let src = tensor(&vals, &[5], F32);
    let out = zeros(&[5], F16);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(src.h, F16, out.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnCast);
    let got = out.storage();
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 1.0 + 2f64.powi(-9));
    assert_eq!(got[2], -2.75);
    assert_eq!(got[3], f64::INFINITY, "1e6 overflows fp16");
    assert!(got[4].is_nan());
    // bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 → 1.
    let b = tensor(&[1.0 + 2f64.powi(-8), 1.0 + 3.0 * 2f64.powi(-8)], &[2], F32);
    let bo = zeros(&[2], BF16);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(b.h, BF16, bo.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnCast);
    assert_eq!(bo.storage(), vec![1.0, 1.0 + 2f64.powi(-6)]);
    // To int32: toward zero, NaN → 0.
    let io = zeros(&[5], I32);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(src.h, I32, io.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnCast);
    assert_eq!(io.storage(), vec![1.0, 1.0, -2.0, 1e6, 0.0]);
    // Errors: dtype disagrees with out; shapes differ.
    let (rc, _, _) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(src.h, F32, io.h, w, e) });
    fails(rc, INVALID, "dtype asks for");
    let short = zeros(&[4], I32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(src.h, I32, short.h, w, e) });
    fails(rc, INVALID, "must match");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnCastGetWorkspaceSize(null(), I32, short.h, w, e) });
    fails(rc, NULLPTR, "self is null");
}

#[test]
fn inplace_copy_broadcasts_converts_and_writes_through_strides() {
    let dev = setup();
    // selfRef: a [2,3] view with row stride 4 inside a storage of 8 (f16); src: [3] f32.
    let dst = view(&[0.0; 8], &[2, 3], &[4, 1], 0, F16);
    let src = tensor(&[1.5, -2.0, 1.0 + 2f64.powi(-11)], &[3], F32);
    let (rc, ws, ex) = p1(|w, e| unsafe { aclnnInplaceCopyGetWorkspaceSize(dst.h, src.h, w, e) });
    ok(&dev, rc, ws, ex, aclnnInplaceCopy);
    assert_eq!(
        dst.storage(),
        vec![1.5, -2.0, 1.0, 0.0, 1.5, -2.0, 1.0, 0.0]
    );
    let bad = tensor(&[1.0; 2], &[2], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnInplaceCopyGetWorkspaceSize(dst.h, bad.h, w, e) });
    fails(rc, INVALID, "cannot be broadcast");
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnInplaceCopyGetWorkspaceSize(null_mut(), bad.h, w, e) });
    fails(rc, NULLPTR, "selfRef is null");
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// erf by numerical integration (Simpson, 2000 intervals): independent of the simulator's series.
fn erf_ref(x: f64) -> f64 {
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let mut s = f(0.0) + f(x);
    for i in 1..n {
        s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn activations_match_their_formulas() {
    let dev = setup();
    let mut rng = Rng::new(3);
    for dt in FLOATS {
        let n = 5 + rng.below(40) as usize;
        let x: Vec<f64> = rng
            .vec_in(n, dt)
            .iter()
            .map(|v| v * 4.0)
            .map(|v| round(v, dt))
            .collect();
        let xt = tensor(&x, &[n as i64], dt);
        let (atol, rtol) = tol(dt);
        for approx in [0i64, 1] {
            let y = zeros(&[n as i64], dt);
            let (rc, ws, ex) =
                p1(|w, e| unsafe { aclnnGeluV2GetWorkspaceSize(xt.h, approx, y.h, w, e) });
            ok(&dev, rc, ws, ex, aclnnGeluV2);
            let want: Vec<f64> = x
                .iter()
                .map(|v| {
                    if approx == 1 {
                        gelu_tanh(*v)
                    } else {
                        0.5 * v * (1.0 + erf_ref(v / 2f64.sqrt()))
                    }
                })
                .collect();
            close(
                &y.storage(),
                &want,
                atol,
                rtol,
                &format!("GeluV2 approximate={approx} dtype {dt}"),
            );
        }
        let y = zeros(&[n as i64], dt);
        let (rc, ws, ex) = p1(|w, e| unsafe { aclnnSiluGetWorkspaceSize(xt.h, y.h, w, e) });
        ok(&dev, rc, ws, ex, aclnnSilu);
        let want: Vec<f64> = x.iter().map(|v| v / (1.0 + (-v).exp())).collect();
        close(&y.storage(), &want, atol, rtol, "Silu");
    }
    // Errors.
    let x = tensor(&[1.0; 4], &[4], F32);
    let y16 = zeros(&[4], F16);
    let y3 = zeros(&[3], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnGeluV2GetWorkspaceSize(x.h, 2, y3.h, w, e) });
    fails(rc, INVALID, "approximate = 2");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnGeluV2GetWorkspaceSize(x.h, 1, y16.h, w, e) });
    fails(rc, INVALID, "must match");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSiluGetWorkspaceSize(x.h, y3.h, w, e) });
    fails(rc, INVALID, "shape");
    let xi = tensor(&[1.0; 4], &[4], I32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSiluGetWorkspaceSize(xi.h, xi.h, w, e) });
    fails(rc, INVALID, "INT32");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSiluGetWorkspaceSize(x.h, null_mut(), w, e) });
    fails(rc, NULLPTR, "out is null");
}

#[test]
fn swiglu_splits_the_chosen_dim_in_halves() {
    let dev = setup();
    let mut rng = Rng::new(4);
    for dt in FLOATS {
        let (r, h) = (1 + rng.below(4) as i64, 1 + rng.below(6) as i64);
        for dim in [-1i64, 0] {
            let shape = if dim == -1 { [r, 2 * h] } else { [2 * r, h] };
            let x = rng.vec_in((2 * r * h) as usize, dt);
            let xt = tensor(&x, &shape, dt);
            let out = zeros(&[r, h], dt);
            let (rc, ws, ex) =
                p1(|w, e| unsafe { aclnnSwiGluGetWorkspaceSize(xt.h, dim, out.h, w, e) });
            ok(&dev, rc, ws, ex, aclnnSwiGlu);
            let mut want = Vec::new();
            for i in 0..r {
                for j in 0..h {
                    let (a, b) = if dim == -1 {
                        (x[(i * 2 * h + j) as usize], x[(i * 2 * h + h + j) as usize])
                    } else {
                        (x[(i * h + j) as usize], x[((i + r) * h + j) as usize])
                    };
                    want.push(a / (1.0 + (-a).exp()) * b);
                }
            }
            let (atol, rtol) = tol(dt);
            close(&out.storage(), &want, atol, rtol, "SwiGlu");
        }
    }
    let x = tensor(&[1.0; 6], &[2, 3], F32);
    let out = zeros(&[2, 1], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSwiGluGetWorkspaceSize(x.h, 1, out.h, w, e) });
    fails(rc, INVALID, "odd size");
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSwiGluGetWorkspaceSize(x.h, 2, out.h, w, e) });
    fails(rc, INVALID, "dim = 2");
    let xt = view(&[1.0; 8], &[2, 2], &[1, 2], 0, F32);
    let o = zeros(&[2, 1], F32);
    let (rc, _, _) = p1(|w, e| unsafe { aclnnSwiGluGetWorkspaceSize(xt.h, 1, o.h, w, e) });
    fails(rc, INVALID, "contiguous");
}

#[test]
fn rms_norm_with_f32_rstd_for_each_dtype_pair() {
    let dev = setup();
    let mut rng = Rng::new(5);
    for (xd, gd) in [
        (F32, F32),
        (F16, F16),
        (BF16, BF16),
        (F16, F32),
        (BF16, F32),
    ] {
        let (rows, n) = (1 + rng.below(4) as i64, 1 + rng.below(33) as i64);
        let x = rng.vec_in((rows * n) as usize, xd);
        let g = rng.vec_in(n as usize, gd);
        // x is non-contiguous: rows with a stride of n + 3.
        let mut store = vec![0.0; (rows * (n + 3)) as usize];
        for r in 0..rows {
            for i in 0..n {
                store[(r * (n + 3) + i) as usize] = x[(r * n + i) as usize];
            }
        }
        let xt = view(&store, &[rows, n], &[n + 3, 1], 0, xd);
        let gt = tensor(&g, &[n], gd);
        let y = zeros(&[rows, n], xd);
        let rstd = zeros(&[rows, 1], F32);
        let eps = 1e-6;
        let (rc, ws, ex) =
            p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(xt.h, gt.h, eps, y.h, rstd.h, w, e) });
        assert!(ws > 0, "RmsNorm reports a workspace");
        ok(&dev, rc, ws, ex, aclnnRmsNorm);
        let mut wy = Vec::new();
        let mut wr = Vec::new();
        for r in 0..rows as usize {
            let row = &x[r * n as usize..(r + 1) * n as usize];
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
            wr.push(inv);
            wy.extend(row.iter().zip(&g).map(|(v, gg)| v * inv * gg));
        }
        let (atol, rtol) = tol(xd);
        close(&y.storage(), &wy, atol, rtol, "RmsNorm y");
        close(&rstd.storage(), &wr, 1e-5, 1e-5, "RmsNorm rstd");
    }
    // Errors: rstd not FLOAT (161002), gamma not the trailing dims (561002), y shape (561002), null (161001).
    let x = tensor(&[1.0; 8], &[2, 4], F16);
    let g = tensor(&[1.0; 4], &[4], F16);
    let y = zeros(&[2, 4], F16);
    let r16 = zeros(&[2], F16);
    let r = zeros(&[2], F32);
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, g.h, 1e-6, y.h, r16.h, w, e) });
    fails(rc, INVALID, "rstdOut has data type FLOAT16");
    let g3 = tensor(&[1.0; 3], &[3], F16);
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, g3.h, 1e-6, y.h, r.h, w, e) });
    fails(rc, TILING, "trailing dims");
    let y3 = zeros(&[2, 3], F16);
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, g.h, 1e-6, y3.h, r.h, w, e) });
    fails(rc, TILING, "yOut");
    let r3 = zeros(&[3], F32);
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, g.h, 1e-6, y.h, r3.h, w, e) });
    fails(rc, TILING, "rstdOut");
    let gb = tensor(&[1.0; 4], &[4], BF16);
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, gb.h, 1e-6, y.h, r.h, w, e) });
    fails(rc, INVALID, "gamma must be x's type or FLOAT");
    let (rc, _, _) =
        p1(|w, e| unsafe { aclnnRmsNormGetWorkspaceSize(x.h, null(), 1e-6, y.h, r.h, w, e) });
    fails(rc, NULLPTR, "gamma is null");
}

#[test]
fn layer_norm_with_and_without_optionals() {
    let dev = setup();
    let mut rng = Rng::new(6);
    for dt in FLOATS {
        let (a, r1, r2) = (
            1 + rng.below(3) as i64,
            1 + rng.below(4) as i64,
            1 + rng.below(5) as i64,
        );
        let n = (r1 * r2) as usize;
        let x = rng.vec_in(a as usize * n, dt);
        let w = rng.vec_in(n, dt);
        let b = rng.vec_in(n, dt);
        let xt = tensor(&x, &[a, r1, r2], dt);
        let (wt, bt) = (tensor(&w, &[r1, r2], dt), tensor(&b, &[r1, r2], dt));
        let ns = ints(&[r1, r2]);
        for with in [true, false] {
            let out = zeros(&[a, r1, r2], dt);
            let mean = zeros(&[a, 1, 1], dt);
            let rstd = zeros(&[a, 1, 1], dt);
            let (wp, bp) = if with {
                (wt.h as *const _, bt.h as *const _)
            } else {
                (null(), null())
            };
            let (mp, rp) = if with {
                (mean.h, rstd.h)
            } else {
                (null_mut(), null_mut())
            };
            let (rc, ws, ex) = p1(|ww, e| unsafe {
                aclnnLayerNormGetWorkspaceSize(xt.h, ns, wp, bp, 1e-5, out.h, mp, rp, ww, e)
            });
            ok(&dev, rc, ws, ex, aclnnLayerNorm);
            let (mut wy, mut wm, mut wr) = (Vec::new(), Vec::new(), Vec::new());
            for r in 0..a as usize {
                let row = &x[r * n..(r + 1) * n];
                let m = row.iter().sum::<f64>() / n as f64;
                let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64;
                let inv = 1.0 / (var + 1e-5).sqrt();
                wm.push(m);
                wr.push(inv);
                for i in 0..n {
                    let (ww, bb) = if with { (w[i], b[i]) } else { (1.0, 0.0) };
                    wy.push((row[i] - m) * inv * ww + bb);
                }
            }
            let (atol, rtol) = tol(dt);
            close(&out.storage(), &wy, atol * 4.0, rtol * 2.0, "LayerNorm out");
            if with {
                close(&mean.storage(), &wm, atol, rtol, "LayerNorm mean");
                close(
                    &rstd.storage(),
                    &wr,
                    atol * 4.0,
                    rtol * 2.0,
                    "LayerNorm rstd",
                );
            }
        }
        unsafe { cann_sim::aclnn::tensor::aclDestroyIntArray(ns) };
    }
    let x = tensor(&[1.0; 6], &[2, 3], F32);
    let out = zeros(&[2, 3], F32);
    let bad = ints(&[2]);
    let (rc, _, _) = p1(|w, e| unsafe {
        aclnnLayerNormGetWorkspaceSize(
            x.h,
            bad,
            null(),
            null(),
            1e-5,
            out.h,
            null_mut(),
            null_mut(),
            w,
            e,
        )
    });
    fails(rc, INVALID, "trailing dims");
    let empty = ints(&[]);
    let (rc, _, _) = p1(|w, e| unsafe {
        aclnnLayerNormGetWorkspaceSize(
            x.h,
            empty,
            null(),
            null(),
            1e-5,
            out.h,
            null_mut(),
            null_mut(),
            w,
            e,
        )
    });
    fails(rc, INVALID, "empty");
    let ns = ints(&[3]);
    let w4 = tensor(&[1.0; 4], &[4], F32);
    let (rc, _, _) = p1(|w, e| unsafe {
        aclnnLayerNormGetWorkspaceSize(
            x.h,
            ns,
            w4.h,
            null(),
            1e-5,
            out.h,
            null_mut(),
            null_mut(),
            w,
            e,
        )
    });
    fails(rc, INVALID, "weightOptional has shape");
    let m = zeros(&[2], F32);
    let (rc, _, _) = p1(|w, e| unsafe {
        aclnnLayerNormGetWorkspaceSize(x.h, ns, null(), null(), 1e-5, out.h, m.h, null_mut(), w, e)
    });
    fails(rc, INVALID, "meanOutOptional has shape");
    let (rc, _, _) = p1(|w, e| unsafe {
        aclnnLayerNormGetWorkspaceSize(
            x.h,
            null(),
            null(),
            null(),
            1e-5,
            out.h,
            null_mut(),
            null_mut(),
            w,
            e,
        )
    });
    fails(rc, NULLPTR, "normalizedShape is null");
}
