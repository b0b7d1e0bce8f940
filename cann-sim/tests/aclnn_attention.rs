//! RotaryPositionEmbedding, FlashAttentionScore and FusedInferAttentionScoreV2 against plain f64 references
//! written here: layouts, head dim 72, GQA, masks, causal modes, KV caches with actual lengths, and the errors.

mod aclnn_util;
use aclnn_util::*;
use cann_sim::aclnn::attention::*;
use cann_sim::aclnn::fia::*;
use cann_sim::aclnn::rope::*;
use cann_sim::aclnn::tensor::{aclCreateTensorList, aclDestroyTensorList, AclTensor};
use std::ffi::CString;
use std::ptr::{null, null_mut};

#[test]
fn rope_half_and_interleave_with_broadcast_cos() {
    let dev = setup();
    let mut rng = Rng::new(30);
    for dt in FLOATS {
        let (b, s, n, d) = (2i64, 3i64, 2i64, 8i64);
        let x = rng.vec_in((b * s * n * d) as usize, dt);
        let cs = rng.vec_in((s * d) as usize, dt);
        let sn = rng.vec_in((s * d) as usize, dt);
        let xt = tensor(&x, &[b, s, n, d], dt);
        let (ct, st) = (
            tensor(&cs, &[1, s, 1, d], dt),
            tensor(&sn, &[1, s, 1, d], dt),
        );
        for mode in [0i64, 1] {
            let out = zeros(&[b, s, n, d], dt);
            let (rc, ws, ex) = p1(|a, e| unsafe {
                aclnnRotaryPositionEmbeddingGetWorkspaceSize(xt.h, ct.h, st.h, mode, out.h, a, e)
            });
            ok(&dev, rc, ws, ex, aclnnRotaryPositionEmbedding);
            let mut want = Vec::new();
            for row in 0..(b * s * n) as usize {
                let si = (row / n as usize) % s as usize;
                let xr = &x[row * d as usize..][..d as usize];
                for i in 0..d as usize {
                    let h = d as usize / 2;
                    let rot = if mode == 0 {
                        if i < h {
                            -xr[i + h]
                        } else {
                            xr[i - h]
                        }
                    } else if i % 2 == 0 {
                        -xr[i + 1]
                    } else {
                        xr[i - 1]
                    };
                    want.push(xr[i] * cs[si * d as usize + i] + rot * sn[si * d as usize + i]);
                }
            }
            let (atol, rtol) = tol(dt);
            close(
                &out.storage(),
                &want,
                atol * 2.0,
                rtol,
                &format!("RoPE mode {mode} {dt}"),
            );
        }
    }
    let x = zeros(&[1, 2, 2, 4], F32);
    let c = zeros(&[1, 2, 1, 4], F32);
    let out = zeros(&[1, 2, 2, 4], F32);
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x.h, c.h, c.h, 2, out.h, a, e)
    });
    fails(rc, TILING, "mode = 2");
    let c3 = zeros(&[1, 3, 1, 4], F32);
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x.h, c3.h, c3.h, 0, out.h, a, e)
    });
    fails(rc, TILING, "broadcast patterns");
    let x2 = zeros(&[2, 2, 2, 4], F32);
    let c12 = zeros(&[1, 2, 2, 4], F32);
    let o2 = zeros(&[2, 2, 2, 4], F32);
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x2.h, c12.h, c12.h, 0, o2.h, a, e)
    });
    fails(rc, TILING, "broadcast patterns");
    let c16 = zeros(&[1, 2, 1, 4], F16);
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x.h, c16.h, c16.h, 0, out.h, a, e)
    });
    fails(rc, INVALID, "must match");
    let x3 = zeros(&[2, 2, 3], F32);
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x3.h, c.h, c.h, 0, x3.h, a, e)
    });
    fails(rc, TILING, "4-D");
    let (rc, _, _) = p1(|a, e| unsafe {
        aclnnRotaryPositionEmbeddingGetWorkspaceSize(x.h, null(), c.h, 0, out.h, a, e)
    });
    fails(rc, NULLPTR, "cos is null");
}

/// q [B,Nq,Sq,D], k/v [B,Nkv,Skv,D] (BNSD order, f64); returns out [B,Nq,Sq,D], row max and row sum.
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    g: [usize; 6],
    scale: f64,
    allowed: &dyn Fn(usize, usize, usize, usize) -> bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [b, nq, nkv, sq, skv, d] = g;
    let mut out = vec![0.0; b * nq * sq * d];
    let (mut mx, mut sm) = (vec![f64::NEG_INFINITY; b * nq * sq], vec![0.0; b * nq * sq]);
    for bi in 0..b {
        for n in 0..nq {
            let h = n / (nq / nkv);
            for i in 0..sq {
                let qr = &q[((bi * nq + n) * sq + i) * d..][..d];
                let sc: Vec<Option<f64>> = (0..skv)
                    .map(|j| {
                        allowed(bi, n, i, j).then(|| {
                            scale
                                * (0..d)
                                    .map(|t| qr[t] * k[((bi * nkv + h) * skv + j) * d + t])
                                    .sum::<f64>()
                        })
                    })
                    .collect();
                let m = sc
                    .iter()
                    .flatten()
                    .fold(f64::NEG_INFINITY, |a, b| a.max(*b));
                if m == f64::NEG_INFINITY {
                    continue;
                }
                let p: Vec<f64> = sc
                    .iter()
                    .map(|s| s.map_or(0.0, |s| (s - m).exp()))
                    .collect();
                let z: f64 = p.iter().sum();
                let row = (bi * nq + n) * sq + i;
                mx[row] = m;
                sm[row] = z;
                for t in 0..d {
                    out[row * d + t] = (0..skv)
                        .map(|j| p[j] * v[((bi * nkv + h) * skv + j) * d + t])
                        .sum::<f64>()
                        / z;
                }
            }
        }
    }
    (out, mx, sm)
}

/// BNSD-ordered values → BSND-ordered.
fn bnsd_to_bsnd(x: &[f64], b: usize, n: usize, s: usize, d: usize) -> Vec<f64> {
    let mut o = vec![0.0; x.len()];
    for bi in 0..b {
        for ni in 0..n {
            for si in 0..s {
                for t in 0..d {
                    o[((bi * s + si) * n + ni) * d + t] = x[((bi * n + ni) * s + si) * d + t];
                }
            }
        }
    }
    o
}

#[test]
fn flash_attention_bidirectional_head_dim_72_bsnd_and_bnsd_with_gqa_and_mask() {
    let dev = setup();
    let mut rng = Rng::new(31);
    let (b, nq, nkv, s, d) = (2usize, 4usize, 2usize, 5usize, 72usize);
    for dt in [F16, BF16, F32] {
        let q = rng.vec_in(b * nq * s * d, dt);
        let k = rng.vec_in(b * nkv * s * d, dt);
        let v = rng.vec_in(b * nkv * s * d, dt);
        // Padding mask [B,1,S,S]: batch 1 cannot see its last two keys (1 = masked).
        let mut mask = vec![0.0; b * s * s];
        for i in 0..s {
            for j in s - 2..s {
                mask[(s + i) * s + j] = 1.0;
            }
        }
        let scale = 1.0 / (d as f64).sqrt();
        let allowed = |bi: usize, _n: usize, i: usize, j: usize| mask[(bi * s + i) * s + j] == 0.0;
        let (want, wmax, wsum) = attention_ref(&q, &k, &v, [b, nq, nkv, s, s, d], scale, &allowed);
        for layout in ["BNSD", "BSND"] {
            let (qd, kd, tr) = if layout == "BNSD" {
                ([b, nq, s, d], [b, nkv, s, d], false)
            } else {
                ([b, s, nq, d], [b, s, nkv, d], true)
            };
            let dims = |x: [usize; 4]| x.map(|v| v as i64);
            let conv = |x: &[f64], n: usize| {
                if tr {
                    bnsd_to_bsnd(x, b, n, s, d)
                } else {
                    x.to_vec()
                }
            };
            let (qt, kt, vt) = (
                tensor(&conv(&q, nq), &dims(qd), dt),
                tensor(&conv(&k, nkv), &dims(kd), dt),
                tensor(&conv(&v, nkv), &dims(kd), dt),
            );
            let mt = tensor(&mask, &[b as i64, 1, s as i64, s as i64], BOOL);
            let out = zeros(&dims(qd), dt);
            let smax = zeros(&[b as i64, nq as i64, s as i64, 8], F32);
            let ssum = zeros(&[b as i64, nq as i64, s as i64, 8], F32);
            let lay = CString::new(layout).unwrap();
            let (rc, ws, ex) = p1(|a, e| unsafe {
                aclnnFlashAttentionScoreGetWorkspaceSize(
                    qt.h,
                    kt.h,
                    vt.h,
                    null(),
                    null(),
                    null(),
                    mt.h,
                    null(),
                    scale,
                    1.0,
                    2147483647,
                    2147483647,
                    nq as i64,
                    lay.as_ptr() as *mut _,
                    0,
                    0,
                    smax.h,
                    ssum.h,
                    null(),
                    out.h,
                    a,
                    e,
                )
            });
            assert!(ws > 0);
            ok(&dev, rc, ws, ex, aclnnFlashAttentionScore);
            let (atol, rtol) = tol(dt);
            close(
                &out.storage(),
                &conv(&want, nq),
                atol * 2.0,
                rtol * 2.0,
                &format!("FA out {layout} {dt}"),
            );
            let rep = |x: &[f64]| x.iter().flat_map(|v| [*v; 8]).collect::<Vec<f64>>();
            close(&smax.storage(), &rep(&wmax), 1e-4, 1e-4, "FA softmaxMax");
            close(&ssum.storage(), &rep(&wsum), 1e-4, 1e-4, "FA softmaxSum");
        }
    }
}

#[test]
fn flash_attention_errors() {
    let _dev = setup();
    let q = zeros(&[1, 2, 4, 8], F16);
    let k = zeros(&[1, 2, 4, 8], F16);
    let out = zeros(&[1, 2, 4, 8], F16);
    let sm = zeros(&[1, 2, 4, 8], F32);
    let lay = CString::new("BNSD").unwrap();
    let call = |q: *mut AclTensor,
                k: *mut AclTensor,
                mask: *const AclTensor,
                keep: f64,
                heads: i64,
                layout: &CString,
                sparse: i64,
                smax: *mut AclTensor,
                o: *mut AclTensor| {
        p1(|a, e| unsafe {
            aclnnFlashAttentionScoreGetWorkspaceSize(
                q,
                k,
                k,
                null(),
                null(),
                null(),
                mask,
                null(),
                0.3,
                keep,
                65536,
                65536,
                heads,
                layout.as_ptr() as *mut _,
                0,
                sparse,
                smax,
                sm.h,
                null(),
                o,
                a,
                e,
            )
        })
        .0
    };
    fails(call(q.h, k.h, null(), 1.0, 2, &lay, 0, sm.h, out.h), 0, "");
    fails(
        call(q.h, null_mut(), null(), 1.0, 2, &lay, 0, sm.h, out.h),
        NULLPTR,
        "key is null",
    );
    fails(
        call(q.h, k.h, null(), 0.5, 2, &lay, 0, sm.h, out.h),
        INVALID,
        "dropout",
    );
    fails(
        call(q.h, k.h, null(), 1.0, 3, &lay, 0, sm.h, out.h),
        INVALID,
        "headNum 3",
    );
    fails(
        call(
            q.h,
            k.h,
            null(),
            1.0,
            2,
            &CString::new("TND").unwrap(),
            0,
            sm.h,
            out.h,
        ),
        INVALID,
        "not simulated",
    );
    fails(
        call(q.h, k.h, null(), 1.0, 2, &lay, 5, sm.h, out.h),
        INVALID,
        "sparseMode 5",
    );
    fails(
        call(q.h, k.h, null(), 1.0, 2, &lay, 2, sm.h, out.h),
        INVALID,
        "2048x2048",
    );
    fails(
        call(q.h, k.h, null(), 1.0, 2, &lay, 1, sm.h, out.h),
        INVALID,
        "allMask",
    );
    let bad_mask = zeros(&[3, 3], BOOL);
    fails(
        call(q.h, k.h, bad_mask.h, 1.0, 2, &lay, 0, sm.h, out.h),
        INVALID,
        "attenMask has shape",
    );
    let sm_bad = zeros(&[1, 2, 4, 1], F32);
    fails(
        call(q.h, k.h, null(), 1.0, 2, &lay, 0, sm_bad.h, out.h),
        INVALID,
        "[B, N, Sq, 8]",
    );
    let out32 = zeros(&[1, 2, 4, 8], F32);
    fails(
        call(q.h, k.h, null(), 1.0, 2, &lay, 0, sm.h, out32.h),
        INVALID,
        "must match",
    );
    let k3 = zeros(&[1, 3, 4, 8], F16);
    fails(
        call(q.h, k3.h, null(), 1.0, 2, &lay, 0, sm.h, out.h),
        INVALID,
        "not a multiple",
    );
    let big = zeros(&[1, 1, 1, 800], F16);
    let smb = zeros(&[1, 1, 1, 8], F32);
    fails(
        call(big.h, big.h, null(), 1.0, 1, &lay, 0, smb.h, big.h),
        INVALID,
        "1..=768",
    );
}

/// A tensor list over `ts` (the list takes the descriptors).
fn list(ts: &mut [&mut T]) -> *mut cann_sim::aclnn::tensor::AclTensorList {
    let hs: Vec<*const AclTensor> = ts
        .iter_mut()
        .map(|t| t.release() as *const AclTensor)
        .collect();
    let l = unsafe { aclCreateTensorList(hs.as_ptr(), hs.len() as u64) };
    assert!(!l.is_null(), "{}", recent());
    l
}

#[allow(clippy::too_many_arguments)]
fn fia(
    q: &T,
    k: *mut cann_sim::aclnn::tensor::AclTensorList,
    v: *mut cann_sim::aclnn::tensor::AclTensorList,
    mask: *const AclTensor,
    act_q: *const cann_sim::aclnn::tensor::AclIntArray,
    act_kv: *const cann_sim::aclnn::tensor::AclIntArray,
    heads: i64,
    kv_heads: i64,
    scale: f64,
    layout: &str,
    sparse: i64,
    lse_flag: bool,
    out: *const AclTensor,
    lse: *const AclTensor,
) -> (i32, u64, *mut cann_sim::aclnn::executor::AclOpExecutor) {
    let lay = CString::new(layout).unwrap();
    let n = null::<AclTensor>();
    p1(|a, e| unsafe {
        aclnnFusedInferAttentionScoreV2GetWorkspaceSize(
            q.h,
            k,
            v,
            n,
            mask,
            act_q,
            act_kv,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            n,
            null(),
            heads,
            scale,
            2147483647,
            0,
            lay.as_ptr() as *mut _,
            kv_heads,
            sparse,
            0,
            0,
            0,
            lse_flag,
            0,
            0,
            out,
            lse,
            a,
            e,
        )
    })
}

#[test]
fn fia_prompt_with_causal_mask_over_a_longer_cache_and_gqa_in_bsh() {
    let dev = setup();
    let mut rng = Rng::new(32);
    // Prefill of 3 new tokens after 2 cached ones: cache length 8, actualSeqLengthsKv 5, right-down causal.
    let (b, nq, nkv, sq, smax, d) = (1usize, 4usize, 2usize, 3usize, 8usize, 16usize);
    let kv_len = 5usize;
    for dt in [F16, BF16] {
        let q = rng.vec_in(b * nq * sq * d, dt);
        let k = rng.vec_in(b * nkv * smax * d, dt);
        let v = rng.vec_in(b * nkv * smax * d, dt);
        let scale = 0.25;
        let allowed = |_b: usize, _n: usize, i: usize, j: usize| j < kv_len && j <= i + kv_len - sq;
        let (want, wmax, wsum) =
            attention_ref(&q, &k, &v, [b, nq, nkv, sq, smax, d], scale, &allowed);
        // BSH tensors: [B, S, N·D].
        let qt = tensor(
            &bnsd_to_bsnd(&q, b, nq, sq, d),
            &[b as i64, sq as i64, (nq * d) as i64],
            dt,
        );
        let mut kt = tensor(
            &bnsd_to_bsnd(&k, b, nkv, smax, d),
            &[b as i64, smax as i64, (nkv * d) as i64],
            dt,
        );
        let mut vt = tensor(
            &bnsd_to_bsnd(&v, b, nkv, smax, d),
            &[b as i64, smax as i64, (nkv * d) as i64],
            dt,
        );
        let (kl, vl) = (list(&mut [&mut kt]), list(&mut [&mut vt]));
        let mask = zeros(&[2048, 2048], BOOL);
        let out = zeros(&[b as i64, sq as i64, (nq * d) as i64], dt);
        let lse = zeros(&[b as i64, nq as i64, sq as i64, 1], F32);
        let akv = ints(&[kv_len as i64]);
        let (rc, ws, ex) = fia(
            &qt,
            kl,
            vl,
            mask.h,
            null(),
            akv,
            nq as i64,
            nkv as i64,
            scale,
            "BSH",
            3,
            true,
            out.h,
            lse.h,
        );
        ok(&dev, rc, ws, ex, aclnnFusedInferAttentionScoreV2);
        let (atol, rtol) = tol(dt);
        close(
            &out.storage(),
            &bnsd_to_bsnd(&want, b, nq, sq, d),
            atol * 2.0,
            rtol * 2.0,
            &format!("FIA prompt {dt}"),
        );
        let wl: Vec<f64> = wmax.iter().zip(&wsum).map(|(m, s)| m + s.ln()).collect();
        close(&lse.storage(), &wl, 1e-4, 1e-4, "FIA softmaxLse");
        unsafe {
            aclDestroyTensorList(kl);
            aclDestroyTensorList(vl);
        }
    }
}

#[test]
fn fia_decode_per_batch_tensor_list_with_different_lengths_in_bnsd() {
    let dev = setup();
    let mut rng = Rng::new(33);
    let (b, nq, nkv, smax, d) = (2usize, 4usize, 1usize, 6usize, 8usize);
    let lens = [6usize, 3];
    let dt = BF16;
    let q = rng.vec_in(b * nq * d, dt);
    let k = rng.vec_in(b * nkv * smax * d, dt);
    let v = rng.vec_in(b * nkv * smax * d, dt);
    let allowed = |bi: usize, _n: usize, _i: usize, j: usize| j < lens[bi];
    let (want, _, _) = attention_ref(&q, &k, &v, [b, nq, nkv, 1, smax, d], 0.5, &allowed);
    let qt = tensor(&q, &[b as i64, nq as i64, 1, d as i64], dt);
    // One cache tensor per batch, each [1, Nkv, Smax, D].
    let per = nkv * smax * d;
    let mut ks: Vec<T> = (0..b)
        .map(|i| {
            tensor(
                &k[i * per..(i + 1) * per],
                &[1, nkv as i64, smax as i64, d as i64],
                dt,
            )
        })
        .collect();
    let mut vs: Vec<T> = (0..b)
        .map(|i| {
            tensor(
                &v[i * per..(i + 1) * per],
                &[1, nkv as i64, smax as i64, d as i64],
                dt,
            )
        })
        .collect();
    let kl = list(&mut ks.iter_mut().collect::<Vec<_>>());
    let vl = list(&mut vs.iter_mut().collect::<Vec<_>>());
    let out = zeros(&[b as i64, nq as i64, 1, d as i64], dt);
    let akv = ints(&[lens[0] as i64, lens[1] as i64]);
    let (rc, ws, ex) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    ok(&dev, rc, ws, ex, aclnnFusedInferAttentionScoreV2);
    let (atol, rtol) = tol(dt);
    close(&out.storage(), &want, atol * 2.0, rtol * 2.0, "FIA decode");
    // Errors on the same tensors.
    let out16 = zeros(&[b as i64, nq as i64, 1, d as i64], F16);
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        false,
        out16.h,
        null(),
    );
    fails(rc, INVALID, "must match");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        3,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "multiple of numKeyValueHeads 3");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        2,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "differs from the N axis");
    let long = ints(&[7]);
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        long,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "entry 7 is outside");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        true,
        out.h,
        null(),
    );
    fails(rc, INVALID, "softmaxLse is null");
    let (rc, _, _) = fia(
        &qt,
        null_mut(),
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, NULLPTR, "key is null");
    let q32 = zeros(&[b as i64, nq as i64, 1, d as i64], F32);
    let (rc, _, _) = fia(
        &q32,
        kl,
        vl,
        null(),
        null(),
        akv,
        nq as i64,
        nkv as i64,
        0.5,
        "BNSD",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "query has data type FLOAT");
    // Prompt with D = 72 (not 16-aligned) is refused on Atlas A2.
    let mut kp = zeros(&[1, 1, 2, 72], F16);
    let mut vp = zeros(&[1, 1, 2, 72], F16);
    let q2 = zeros(&[1, 2, 2, 72], F16);
    let (kpl, vpl) = (list(&mut [&mut kp]), list(&mut [&mut vp]));
    let (rc, _, _) = fia(
        &q2,
        kpl,
        vpl,
        null(),
        null(),
        null(),
        2,
        0,
        0.5,
        "BSND",
        0,
        false,
        q2.h,
        null(),
    );
    fails(rc, INVALID, "aligned to 16");
    unsafe {
        aclDestroyTensorList(kl);
        aclDestroyTensorList(vl);
        aclDestroyTensorList(kpl);
        aclDestroyTensorList(vpl);
    }
}

#[test]
fn fia_prompt_with_an_explicit_mask_in_bsnd_and_mode_errors() {
    let dev = setup();
    let mut rng = Rng::new(34);
    let (b, nq, nkv, s, d) = (2usize, 4usize, 2usize, 4usize, 16usize);
    let dt = F16;
    let q = rng.vec_in(b * nq * s * d, dt);
    let k = rng.vec_in(b * nkv * s * d, dt);
    let v = rng.vec_in(b * nkv * s * d, dt);
    // Causal mask given explicitly as [Sq, Skv] (1 = masked), sparseMode 0.
    let mask: Vec<f64> = (0..s * s)
        .map(|x| ((x % s) > (x / s)) as u8 as f64)
        .collect();
    let allowed = |_b: usize, _n: usize, i: usize, j: usize| j <= i;
    let (want, _, _) = attention_ref(&q, &k, &v, [b, nq, nkv, s, s, d], 0.3, &allowed);
    let qt = tensor(
        &bnsd_to_bsnd(&q, b, nq, s, d),
        &[b as i64, s as i64, nq as i64, d as i64],
        dt,
    );
    let mut kt = tensor(
        &bnsd_to_bsnd(&k, b, nkv, s, d),
        &[b as i64, s as i64, nkv as i64, d as i64],
        dt,
    );
    let mut vt = tensor(
        &bnsd_to_bsnd(&v, b, nkv, s, d),
        &[b as i64, s as i64, nkv as i64, d as i64],
        dt,
    );
    let (kl, vl) = (list(&mut [&mut kt]), list(&mut [&mut vt]));
    let mt = tensor(&mask, &[s as i64, s as i64], BOOL);
    let out = zeros(&[b as i64, s as i64, nq as i64, d as i64], dt);
    let (rc, ws, ex) = fia(
        &qt,
        kl,
        vl,
        mt.h,
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "BSND",
        0,
        false,
        out.h,
        null(),
    );
    ok(&dev, rc, ws, ex, aclnnFusedInferAttentionScoreV2);
    let (atol, rtol) = tol(dt);
    close(
        &out.storage(),
        &bnsd_to_bsnd(&want, b, nq, s, d),
        atol * 2.0,
        rtol * 2.0,
        "FIA masked prompt",
    );
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "BSND",
        2,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "2048x2048");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        mt.h,
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "BSND",
        5,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "accepts 0 to 4");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "BSND",
        1,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "allMask");
    let bad = zeros(&[3, 3], BOOL);
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        bad.h,
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "BSND",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "attenMask has shape");
    let (rc, _, _) = fia(
        &qt,
        kl,
        vl,
        null(),
        null(),
        null(),
        nq as i64,
        nkv as i64,
        0.3,
        "SBH",
        0,
        false,
        out.h,
        null(),
    );
    fails(rc, INVALID, "not accepted here");
    unsafe {
        aclDestroyTensorList(kl);
        aclDestroyTensorList(vl);
    }
}
