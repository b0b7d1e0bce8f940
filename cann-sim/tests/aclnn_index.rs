//! Embedding, IndexSelect, IndexCopy / InplaceIndexCopy, Permute and ArgMax against plain references, with
//! non-contiguous views and the documented errors (and the run-time index checks).

mod aclnn_util;
use aclnn_util::*;
use cann_sim::aclnn::index::*;
use cann_sim::aclnn::layout::*;
use std::ptr::null;

#[test]
fn embedding_gathers_rows_for_any_index_shape() {
    let dev = setup();
    let mut rng = Rng::new(20);
    for dt in FLOATS {
        let (v, d) = (5i64, 3i64);
        let w = rng.vec_in((v * d) as usize, dt);
        let wt = tensor(&w, &[v, d], dt);
        let idx = [4.0, 0.0, 2.0, 2.0, 1.0, 3.0];
        for it in [I64, I32] {
            let ix = tensor(&idx, &[2, 3], it);
            let out = zeros(&[2, 3, d], dt);
            let (rc, ws, ex) =
                p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(wt.h, ix.h, out.h, a, e) });
            ok(&dev, rc, ws, ex, aclnnEmbedding);
            let want: Vec<f64> = idx
                .iter()
                .flat_map(|i| w[(*i as usize) * d as usize..][..d as usize].to_vec())
                .collect();
            assert_eq!(out.storage(), want);
        }
    }
    let wt = zeros(&[4, 2], F32);
    let ix = tensor(&[1.0], &[1], F32);
    let out = zeros(&[1, 2], F32);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(wt.h, ix.h, out.h, a, e) });
    fails(rc, INVALID, "indices has data type FLOAT");
    let ix = tensor(&[1.0], &[1], I64);
    let bad = zeros(&[1, 3], F32);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(wt.h, ix.h, bad.h, a, e) });
    fails(rc, INVALID, "out has shape");
    let b16 = zeros(&[1, 2], F16);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(wt.h, ix.h, b16.h, a, e) });
    fails(rc, INVALID, "must match");
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(null(), ix.h, out.h, a, e) });
    fails(rc, NULLPTR, "weight is null");
    // A negative index fails the task.
    let neg = tensor(&[-1.0], &[1], I64);
    let (rc, ws, ex) =
        p1(|a, e| unsafe { aclnnEmbeddingGetWorkspaceSize(wt.h, neg.h, out.h, a, e) });
    assert_eq!(rc, 0);
    let (r2, sync) = run(&dev, ws, ex, aclnnEmbedding);
    assert_eq!(r2, 0);
    assert_ne!(sync, 0, "a negative index must fail the stream");
    assert!(recent().contains("index -1"), "{}", recent());
}

#[test]
fn index_select_along_each_dim_of_a_transposed_view() {
    let dev = setup();
    let mut rng = Rng::new(21);
    let (r, c) = (4i64, 3i64);
    let s = rng.vec_in((r * c) as usize, BF16);
    // self = the [c, r] transpose of a row-major [r, c] storage.
    let st = transposed(&s, r, c, BF16);
    let at = |i: i64, j: i64| s[(j * c + i) as usize]; // self[i][j]
    let idx = [2.0, 0.0, 2.0];
    let ix = tensor(&idx, &[3], I64);
    // dim 0: rows of self.
    let out = zeros(&[3, r], BF16);
    let (rc, ws, ex) =
        p1(|a, e| unsafe { aclnnIndexSelectGetWorkspaceSize(st.h, 0, ix.h, out.h, a, e) });
    ok(&dev, rc, ws, ex, aclnnIndexSelect);
    let want: Vec<f64> = idx
        .iter()
        .flat_map(|i| (0..r).map(move |j| at(*i as i64, j)))
        .collect();
    assert_eq!(out.storage(), want);
    // dim -1: columns.
    let out = zeros(&[c, 3], BF16);
    let (rc, ws, ex) =
        p1(|a, e| unsafe { aclnnIndexSelectGetWorkspaceSize(st.h, -1, ix.h, out.h, a, e) });
    ok(&dev, rc, ws, ex, aclnnIndexSelect);
    let want: Vec<f64> = (0..c)
        .flat_map(|i| idx.iter().map(move |j| at(i, *j as i64)))
        .collect();
    assert_eq!(out.storage(), want);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnIndexSelectGetWorkspaceSize(st.h, 2, ix.h, out.h, a, e) });
    fails(rc, INVALID, "dim = 2");
    let ix2 = zeros(&[1, 1], I64);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnIndexSelectGetWorkspaceSize(st.h, 0, ix2.h, out.h, a, e) });
    fails(rc, INVALID, "0-D or 1-D");
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnIndexSelectGetWorkspaceSize(st.h, 0, ix.h, out.h, a, e) });
    fails(rc, INVALID, "out has shape");
}

#[test]
fn index_copy_scatters_rows_in_place_and_out_of_place() {
    let dev = setup();
    let mut rng = Rng::new(22);
    for dt in [F32, F16, BF16, I64] {
        let (r, c) = (6i64, 4i64);
        let base = if dt == I64 {
            (0..24).map(|v| v as f64).collect()
        } else {
            rng.vec_in((r * c) as usize, dt)
        };
        let src = if dt == I64 {
            (100..108).map(|v| v as f64).collect()
        } else {
            rng.vec_in(2 * c as usize, dt)
        };
        let idx = [4.0, 1.0];
        let mut want = base.clone();
        for (k, i) in idx.iter().enumerate() {
            for j in 0..c as usize {
                want[*i as usize * c as usize + j] = src[k * c as usize + j];
            }
        }
        let st = tensor(&base, &[r, c], dt);
        let (ix, so) = (tensor(&idx, &[2], I32), tensor(&src, &[2, c], dt));
        let out = zeros(&[r, c], dt);
        let (rc, ws, ex) =
            p1(|a, e| unsafe { aclnnIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so.h, out.h, a, e) });
        ok(&dev, rc, ws, ex, aclnnIndexCopy);
        assert_eq!(out.storage(), want, "IndexCopy {dt}");
        assert_eq!(st.storage(), base, "IndexCopy leaves selfRef");
        let (rc, ws, ex) =
            p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so.h, a, e) });
        ok(&dev, rc, ws, ex, aclnnInplaceIndexCopy);
        assert_eq!(st.storage(), want, "InplaceIndexCopy {dt}");
    }
    // Columns of a KV-cache-like [S, H] through dim 1 is also allowed; the errors:
    let st = zeros(&[4, 3], F32);
    let ix = tensor(&[0.0, 1.0], &[2], I64);
    let so = zeros(&[3, 3], F32);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so.h, a, e) });
    fails(rc, INVALID, "index has 2");
    let so16 = zeros(&[2, 3], F16);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so16.h, a, e) });
    fails(rc, INVALID, "must match");
    let so4 = zeros(&[2, 4], F32);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so4.h, a, e) });
    fails(rc, INVALID, "differ outside dim");
    let so2 = zeros(&[2, 3], F32);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 5, ix.h, so2.h, a, e) });
    fails(rc, INVALID, "dim = 5");
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, null(), so2.h, a, e) });
    fails(rc, NULLPTR, "index is null");
    let out_bad = zeros(&[4, 2], F32);
    let (rc, _, _) =
        p1(|a, e| unsafe { aclnnIndexCopyGetWorkspaceSize(st.h, 0, ix.h, so2.h, out_bad.h, a, e) });
    fails(rc, INVALID, "outRef");
    // Out-of-range index: the task fails.
    let far = tensor(&[0.0, 4.0], &[2], I64);
    let (rc, ws, ex) =
        p1(|a, e| unsafe { aclnnInplaceIndexCopyGetWorkspaceSize(st.h, 0, far.h, so2.h, a, e) });
    assert_eq!(rc, 0);
    let (_, sync) = run(&dev, ws, ex, aclnnInplaceIndexCopy);
    assert_ne!(sync, 0);
    assert!(
        recent().contains("index 4 is outside [0, 4)"),
        "{}",
        recent()
    );
}

#[test]
fn permute_reorders_axes_exactly() {
    let dev = setup();
    let mut rng = Rng::new(23);
    let dims = [2i64, 3, 4];
    for dt in [F32, F16, BF16, I32] {
        let x: Vec<f64> = if dt == I32 {
            (0..24).map(|v| v as f64).collect()
        } else {
            rng.vec_in(24, dt)
        };
        let xt = tensor(&x, &dims, dt);
        let perm = [2i64, 0, -2];
        let p = ints(&perm);
        let out = zeros(&[4, 2, 3], dt);
        let (rc, ws, ex) = p1(|a, e| unsafe { aclnnPermuteGetWorkspaceSize(xt.h, p, out.h, a, e) });
        ok(&dev, rc, ws, ex, aclnnPermute);
        let mut want = Vec::new();
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    want.push(x[(i * 12 + j * 4 + k) as usize]);
                }
            }
        }
        assert_eq!(out.storage(), want);
        unsafe { cann_sim::aclnn::tensor::aclDestroyIntArray(p) };
    }
    let xt = zeros(&dims, F32);
    let out = zeros(&[4, 2, 3], F32);
    for (perm, msg) in [
        (vec![0i64, 0, 1], "twice"),
        (vec![0, 1], "entries"),
        (vec![0, 1, 3], "outside"),
    ] {
        let p = ints(&perm);
        let (rc, _, _) = p1(|a, e| unsafe { aclnnPermuteGetWorkspaceSize(xt.h, p, out.h, a, e) });
        fails(rc, INVALID, msg);
    }
    let p = ints(&[0, 1, 2]);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnPermuteGetWorkspaceSize(xt.h, p, out.h, a, e) });
    fails(rc, INVALID, "out has shape");
    let o16 = zeros(&[2, 3, 4], F16);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnPermuteGetWorkspaceSize(xt.h, p, o16.h, a, e) });
    fails(rc, INVALID, "must match");
    let (rc, _, _) = p1(|a, e| unsafe { aclnnPermuteGetWorkspaceSize(xt.h, null(), o16.h, a, e) });
    fails(rc, NULLPTR, "dims is null");
}

#[test]
fn argmax_first_maximum_over_any_dim() {
    let dev = setup();
    let mut rng = Rng::new(24);
    for dt in [F32, F16, BF16, I32] {
        let (r, c) = (3i64, 5i64);
        let mut x: Vec<f64> = if dt == I32 {
            (0..15).map(|_| rng.below(4) as f64).collect()
        } else {
            rng.vec_in(15, dt)
        };
        x[1] = x[3].max(x[1]);
        x[3] = x[1]; // a tie in row 0: the first wins
        let xt = tensor(&x, &[r, c], dt);
        for (dim, keep) in [(1i64, false), (0, true), (-1, true)] {
            let od: Vec<i64> = match (dim, keep) {
                (1, false) => vec![r],
                (0, true) => vec![1, c],
                _ => vec![r, 1],
            };
            let out = zeros(&od, I64);
            let (rc, ws, ex) =
                p1(|a, e| unsafe { aclnnArgMaxGetWorkspaceSize(xt.h, dim, keep, out.h, a, e) });
            ok(&dev, rc, ws, ex, aclnnArgMax);
            let want: Vec<f64> = if dim == 0 {
                (0..c)
                    .map(|j| {
                        (0..r).fold(0, |b, i| {
                            if x[(i * c + j) as usize] > x[(b * c + j) as usize] {
                                i
                            } else {
                                b
                            }
                        }) as f64
                    })
                    .collect()
            } else {
                (0..r)
                    .map(|i| {
                        (0..c).fold(0, |b, j| {
                            if x[(i * c + j) as usize] > x[(i * c + b) as usize] {
                                j
                            } else {
                                b
                            }
                        }) as f64
                    })
                    .collect()
            };
            assert_eq!(out.storage(), want, "ArgMax {dt} dim {dim}");
        }
    }
    let xt = zeros(&[2, 3], F32);
    let o = zeros(&[2], F32);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnArgMaxGetWorkspaceSize(xt.h, 1, false, o.h, a, e) });
    fails(rc, INVALID, "out has data type FLOAT");
    let o = zeros(&[3], I32);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnArgMaxGetWorkspaceSize(xt.h, 1, false, o.h, a, e) });
    fails(rc, INVALID, "out has shape");
    let (rc, _, _) = p1(|a, e| unsafe { aclnnArgMaxGetWorkspaceSize(xt.h, 2, false, o.h, a, e) });
    fails(rc, INVALID, "dim = 2");
    let xb = zeros(&[2, 3], BOOL);
    let o2 = zeros(&[2], I32);
    let (rc, _, _) = p1(|a, e| unsafe { aclnnArgMaxGetWorkspaceSize(xb.h, 1, false, o2.h, a, e) });
    fails(rc, INVALID, "BOOL");
}
