//! The engine's custom-kernel calls (`backend::ascend::custom::CustomKernels`) on the simulator: our
//! AscendC kernels built for the CPU by `scripts/build_kernel_cpu.sh`, loaded and launched through the
//! same ACL calls as on a 910B, each result checked against a plain f64 reference computed from the
//! same bf16/fp16 inputs. Tolerances come from the dtypes: f32 accumulation in any order (within
//! 2·(k+1)·2⁻²⁴ of the sum of |terms|), one rounding to the output type (half an ulp: 2⁻⁸ relative for
//! bf16, 2⁻¹¹ for fp16), and in flash attention P rounded to the input type before P·V.

mod common;

use std::sync::{Arc, OnceLock};

use cann_sys::aclnn::Workspace;
use cann_sys::{Context, DeviceBuffer, Stream};
use half::{bf16, f16};
use idefics3::backend::ascend::custom::{CustomKernels, FlashShape, Strides};
use idefics3::backend::ActDtype;
use idefics3::error::Error;

struct Sim {
    ctx: Arc<Context>,
    kernels: CustomKernels,
}

/// The simulator's device 0 with the kernels loaded, once per test binary, bound on this thread.
fn sim() -> &'static Sim {
    static SIM: OnceLock<Sim> = OnceLock::new();
    let s = SIM.get_or_init(|| {
        let lib = common::simulator();
        let dir = common::kernel_binaries();
        // Set once, before cann-sys first reads the environment; other tests wait on the OnceLock.
        std::env::set_var("IDEFICS3_ASCEND_LIBS", lib);
        std::env::set_var("IDEFICS3_ASCEND_KERNELS", dir);
        let ctx = Context::new(0).unwrap_or_else(|e| panic!("simulator context: {e}"));
        let kernels =
            CustomKernels::load(&ctx).unwrap_or_else(|e| panic!("loading the kernels: {e}"));
        Sim { ctx, kernels }
    });
    s.ctx.bind().unwrap();
    s
}

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// 16-bit encodings (round to nearest even) of `v`.
fn encode(v: &[f32], dt: ActDtype) -> Vec<u16> {
    v.iter()
        .map(|&x| match dt {
            ActDtype::Bf16 => bf16::from_f32(x).to_bits(),
            ActDtype::F16 => f16::from_f32(x).to_bits(),
            ActDtype::F32 => unreachable!("16-bit inputs only"),
        })
        .collect()
}

fn decode(b: u16, dt: ActDtype) -> f64 {
    match dt {
        ActDtype::Bf16 => bf16::from_bits(b).to_f64(),
        ActDtype::F16 => f16::from_bits(b).to_f64(),
        ActDtype::F32 => unreachable!("16-bit values only"),
    }
}

/// Half an ulp of the output type, relative; and half the smallest subnormal step, absolute.
fn rounding(dt: ActDtype) -> (f64, f64) {
    match dt {
        ActDtype::Bf16 => (2f64.powi(-8), 0.0),
        ActDtype::F16 => (2f64.powi(-11), 2f64.powi(-25)),
        ActDtype::F32 => (2f64.powi(-24), 0.0),
    }
}

fn upload(ctx: &Arc<Context>, v: &[u16]) -> DeviceBuffer {
    let mut d = DeviceBuffer::new(ctx, v.len().max(1) * 2).unwrap();
    d.copy_from_host(0, v).unwrap();
    d
}

/// The output as f64, whatever its dtype.
fn download(buf: &DeviceBuffer, dt: ActDtype) -> Vec<f64> {
    match dt {
        ActDtype::F32 => buf
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
        _ => buf
            .to_vec::<u16>()
            .unwrap()
            .into_iter()
            .map(|b| decode(b, dt))
            .collect(),
    }
}

/// |got - want| ≤ tol, false for a NaN.
fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

#[allow(clippy::too_many_arguments)]
fn check_matmul(
    m: usize,
    n: usize,
    k: usize,
    in_dt: ActDtype,
    out_dt: ActDtype,
    bias: bool,
    gelu: bool,
    seed: u64,
) {
    let s = sim();
    let stream = Stream::new(&s.ctx).unwrap();
    let mut ws = Workspace::new(&s.ctx);
    let a = encode(&values(m * k, seed, 1.0), in_dt);
    let w = encode(&values(n * k, seed + 1, 0.5), in_dt);
    let b = encode(&values(n, seed + 2, 1.0), in_dt);
    let (da, dw, db) = (upload(&s.ctx, &a), upload(&s.ctx, &w), upload(&s.ctx, &b));
    let out_size = if out_dt == ActDtype::F32 { 4 } else { 2 };
    let dout = DeviceBuffer::new(&s.ctx, m * n * out_size).unwrap();
    s.kernels
        .matmul(
            &stream,
            da.as_ptr(),
            dw.as_ptr(),
            bias.then(|| db.as_ptr()),
            dout.as_ptr(),
            m,
            n,
            k,
            in_dt,
            out_dt,
            gelu,
            &mut ws,
        )
        .unwrap();
    stream.synchronize().unwrap();
    let got = download(&dout, out_dt);
    let (half_ulp, sub) = rounding(out_dt);
    let name = format!("matmul m={m} n={n} k={k} {in_dt:?}->{out_dt:?} bias={bias} gelu={gelu}");
    let mut bad = 0;
    for i in 0..m {
        for j in 0..n {
            let (mut y, mut mag) = (0f64, 0f64);
            for t in 0..k {
                let p = decode(a[i * k + t], in_dt) * decode(w[j * k + t], in_dt);
                y += p;
                mag += p.abs();
            }
            if bias {
                y += decode(b[j], in_dt);
                mag += decode(b[j], in_dt).abs();
            }
            // f32 accumulation in any order; GELU's slope is below 1.13 and its f32 evaluation (exp,
            // divide) adds a few f32 ulps.
            let mut err = 2.0 * (k as f64 + 1.0) * 2f64.powi(-24) * mag;
            if gelu {
                y = gelu_tanh(y);
                err = 1.13 * err + 1e-6 * y.abs() + 1e-7;
            }
            let tol = err + half_ulp * (y.abs() + err) + sub + 1e-30;
            let g = got[i * n + j];
            if !within(g, y, tol) {
                if bad == 0 {
                    eprintln!("{name}: out[{i},{j}] = {g}, reference {y} (tolerance {tol:.3e})");
                }
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 0, "{name}: {bad} outputs outside tolerance");
}

#[test]
fn matmul_matches_the_reference_over_ragged_shapes_dtypes_and_epilogues() {
    use ActDtype::{Bf16, F16, F32};
    // (m, n, k, in, out, bias, gelu): M = 1 on the GEMV kernel (ragged N over the 40 vector cores, K
    // ragged against its 1024/512-element steps), M > 1 on the cube kernel (ragged against the
    // 128×128 tiles, K against the 64 and 256 steps, 21+ tiles so blocks take several).
    let cases = [
        (1, 77, 300, Bf16, F32, true, false),
        (1, 1000, 1100, F16, F16, false, true),
        (1, 5, 16, Bf16, Bf16, true, true),
        (1, 333, 2048, F16, F32, false, false),
        (2, 3, 5, Bf16, F16, false, false),
        (37, 130, 200, Bf16, F32, false, false),
        (129, 70, 96, F16, F32, true, false),
        (200, 257, 520, Bf16, Bf16, true, true),
        (17, 300, 64, F16, F16, true, true),
        (300, 600, 40, Bf16, F32, false, true),
        (64, 48, 1000, F16, Bf16, false, false),
    ];
    for (i, &(m, n, k, idt, odt, bias, gelu)) in cases.iter().enumerate() {
        check_matmul(m, n, k, idt, odt, bias, gelu, 100 + i as u64);
    }
}

/// Flash attention: tensors as BSND, or k/v as a head-major cache with spare rows.
struct FlashCase {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    q_len: usize,
    kv_len: usize,
    dt: ActDtype,
    causal: Option<usize>,
    mask: bool,
    cache: bool,
}

fn check_flash(c: &FlashCase, seed: u64) {
    let s = sim();
    let stream = Stream::new(&s.ctx).unwrap();
    let mut ws = Workspace::new(&s.ctx);
    let (b, h, kvh, d) = (c.batch, c.heads, c.kv_heads, c.d);
    let kv = if c.cache {
        Strides::head_major(c.kv_len + 9, kvh, d)
    } else {
        Strides::bsnd(c.kv_len, kvh, d)
    };
    let shape = FlashShape {
        batch: b,
        heads: h,
        kv_heads: kvh,
        head_dim: d,
        q_len: c.q_len,
        kv_len: c.kv_len,
        q: Strides::bsnd(c.q_len, h, d),
        k: kv,
        v: kv,
        out: Strides::bsnd(c.q_len, h, d),
        causal: c.causal,
        scale: 1.0 / (d as f32).sqrt(),
        dtype: c.dt,
    };
    let q = encode(&values(b * shape.q.batch, seed, 1.0), c.dt);
    let k = encode(&values(b * kv.batch, seed + 1, 1.5), c.dt);
    let v = encode(&values(b * kv.batch, seed + 2, 1.0), c.dt);
    // batch 0: trailing padding keys; 1: scattered holes; 2: no valid key at all (zeros out).
    let valid: Vec<u8> = (0..b * c.kv_len)
        .map(|i| {
            let (bi, j) = (i / c.kv_len, i % c.kv_len);
            let ok = !c.mask || [j < c.kv_len * 2 / 3, j % 7 != 3, false][bi % 3];
            ok as u8
        })
        .collect();
    let (dq, dk, dv) = (upload(&s.ctx, &q), upload(&s.ctx, &k), upload(&s.ctx, &v));
    let mut dm = DeviceBuffer::new(&s.ctx, valid.len()).unwrap();
    dm.copy_from_host(0, &valid).unwrap();
    let dout = DeviceBuffer::new(&s.ctx, b * shape.out.batch * 2).unwrap();
    s.kernels
        .flash_attention(
            &stream,
            dq.as_ptr(),
            dk.as_ptr(),
            dv.as_ptr(),
            dout.as_ptr(),
            c.mask.then(|| dm.as_ptr()),
            &shape,
            &mut ws,
        )
        .unwrap();
    stream.synchronize().unwrap();
    let got = download(&dout, c.dt);
    let (half_ulp, sub) = rounding(c.dt);
    let name = format!(
        "flash b={b} h={h} kv={kvh} d={d} q={} k={} {:?} causal={:?} mask={} cache={}",
        c.q_len, c.kv_len, c.dt, c.causal, c.mask, c.cache
    );
    let g = h / kvh;
    let mut bad = 0;
    let mut sc = vec![0f64; c.kv_len];
    for bi in 0..b {
        for hi in 0..h {
            let kh = hi / g;
            for i in 0..c.q_len {
                let qrow = bi * shape.q.batch + i * shape.q.row + hi * shape.q.head;
                let mut mx = f64::NEG_INFINITY;
                for (j, s) in sc.iter_mut().enumerate() {
                    let visible =
                        valid[bi * c.kv_len + j] == 1 && c.causal.is_none_or(|off| j <= i + off);
                    *s = f64::NEG_INFINITY;
                    if visible {
                        let krow = bi * kv.batch + j * kv.row + kh * kv.head;
                        let dot: f64 = (0..d)
                            .map(|e| decode(q[qrow + e], c.dt) * decode(k[krow + e], c.dt))
                            .sum();
                        *s = dot * shape.scale as f64;
                        mx = mx.max(*s);
                    }
                }
                let sum: f64 = sc
                    .iter()
                    .map(|&x| if mx.is_finite() { (x - mx).exp() } else { 0.0 })
                    .sum();
                for e in 0..d {
                    let (mut o, mut oa) = (0f64, 0f64);
                    for (j, &x) in sc.iter().enumerate() {
                        if x == f64::NEG_INFINITY {
                            continue;
                        }
                        let vrow = bi * kv.batch + j * kv.row + kh * kv.head;
                        let p = (x - mx).exp() / sum * decode(v[vrow + e], c.dt);
                        o += p;
                        oa += p.abs();
                    }
                    // P rounded to the input type (relative half ulp, and the subnormal step of
                    // fp16 for each of the kv_len numerators, over a sum ≥ 1); f32 scores and exp;
                    // the output rounded once.
                    let err = (half_ulp + 2e-5) * oa + c.kv_len as f64 * sub + 1e-6;
                    let tol = err + half_ulp * (o.abs() + err) + sub;
                    let got =
                        got[bi * shape.out.batch + i * shape.out.row + hi * shape.out.head + e];
                    if !within(got, o, tol) {
                        if bad == 0 {
                            eprintln!("{name}: [b{bi} h{hi} q{i} d{e}] = {got}, reference {o} (tolerance {tol:.3e})");
                        }
                        bad += 1;
                    }
                }
            }
        }
    }
    assert_eq!(bad, 0, "{name}: {bad} outputs outside tolerance");
}

#[test]
fn flash_attention_matches_the_reference_over_head_dims_gqa_masks_and_causal_offsets() {
    use ActDtype::{Bf16, F16};
    let case = |batch, heads, kv_heads, d, q_len, kv_len, dt, causal, mask, cache| FlashCase {
        batch,
        heads,
        kv_heads,
        d,
        q_len,
        kv_len,
        dt,
        causal,
        mask,
        cache,
    };
    let cases = [
        // Vision: bidirectional over three tiles with padding patches (one tile with none valid),
        // SigLIP's head dim 72.
        case(3, 2, 2, 72, 150, 150, Bf16, None, true, false),
        // GQA 3, fp16, lengths ragged against the 128-row tiles.
        case(1, 6, 2, 80, 200, 200, F16, None, false, false),
        // Causal prefill after 50 cached keys, k/v read from a head-major cache, GQA 4.
        case(1, 8, 2, 128, 70, 120, Bf16, Some(50), false, true),
        // Causal from zero over two query tiles, GQA 8.
        case(1, 8, 1, 64, 129, 129, F16, Some(0), false, true),
        // Causal with an offset and a key mask, GQA 1, one query row.
        case(2, 2, 2, 64, 1, 200, Bf16, Some(190), true, false),
        case(2, 3, 1, 80, 40, 300, Bf16, Some(260), true, false),
        // Two SigLIP tiles of Idefics3-8B (676 patches, head dim 72, four of its 16 heads), the
        // first with trailing padding patches, the second with holes.
        case(2, 4, 4, 72, 676, 676, Bf16, None, true, false),
    ];
    for (i, c) in cases.iter().enumerate() {
        check_flash(c, 200 + i as u64);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_decode(heads: usize, kv_heads: usize, d: usize, keys: usize, dt: ActDtype, seed: u64) {
    let s = sim();
    let stream = Stream::new(&s.ctx).unwrap();
    let mut ws = Workspace::new(&s.ctx);
    // A cache with room beyond the valid keys, filled with values that would show if read.
    let stride = keys + 5;
    let q = encode(&values(heads * d, seed, 1.0), dt);
    let mut k = encode(&values(kv_heads * stride * d, seed + 1, 2.0), dt);
    let mut v = encode(&values(kv_heads * stride * d, seed + 2, 1.0), dt);
    let nan = encode(&[f32::NAN], dt)[0];
    for kh in 0..kv_heads {
        for r in keys..stride {
            let row = (kh * stride + r) * d;
            k[row..row + d].fill(nan);
            v[row..row + d].fill(nan);
        }
    }
    let (dq, dk, dv) = (upload(&s.ctx, &q), upload(&s.ctx, &k), upload(&s.ctx, &v));
    let dout = DeviceBuffer::new(&s.ctx, heads * d * 2).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    s.kernels
        .decode_attention(
            &stream,
            dq.as_ptr(),
            dk.as_ptr(),
            dv.as_ptr(),
            dout.as_ptr(),
            &mut ws,
            heads,
            kv_heads,
            d,
            keys,
            stride,
            scale,
            dt,
        )
        .unwrap();
    stream.synchronize().unwrap();
    let got = download(&dout, dt);
    let (half_ulp, sub) = rounding(dt);
    let name = format!("decode heads={heads} kv={kv_heads} d={d} keys={keys} {dt:?}");
    let g = heads / kv_heads;
    let mut bad = 0;
    for h in 0..heads {
        let kh = h / g;
        let sc: Vec<f64> = (0..keys)
            .map(|j| {
                let row = (kh * stride + j) * d;
                (0..d)
                    .map(|e| decode(q[h * d + e], dt) * decode(k[row + e], dt))
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = sc.iter().map(|x| (x - mx).exp()).sum();
        for e in 0..d {
            let (mut o, mut oa) = (0f64, 0f64);
            for (j, x) in sc.iter().enumerate() {
                let p = (x - mx).exp() / sum * decode(v[(kh * stride + j) * d + e], dt);
                o += p;
                oa += p.abs();
            }
            // P stays f32 here; scores, exp and the merge's rescaling in f32; one output rounding.
            let err = 2e-5 * oa + 1e-6;
            let tol = err + half_ulp * (o.abs() + err) + sub;
            let got = got[h * d + e];
            if !within(got, o, tol) {
                if bad == 0 {
                    eprintln!(
                        "{name}: head {h} [{e}] = {got}, reference {o} (tolerance {tol:.3e})"
                    );
                }
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 0, "{name}: {bad} outputs outside tolerance");
}

#[test]
fn decode_attention_matches_the_reference_from_one_to_8192_keys() {
    use ActDtype::{Bf16, F16};
    let cases = [
        (1, 1, 64, 1, Bf16),
        (3, 1, 72, 7, F16),
        (8, 2, 80, 100, Bf16),
        (4, 1, 128, 65, F16),
        (6, 2, 72, 333, Bf16),
        (16, 4, 256, 300, F16),
        (24, 8, 80, 2049, F16),
        // Idefics3-8B's text attention (32 heads over 8, head dim 128) at the top of the range.
        (32, 8, 128, 8192, Bf16),
    ];
    for (i, &(h, kvh, d, keys, dt)) in cases.iter().enumerate() {
        check_decode(h, kvh, d, keys, dt, 300 + i as u64);
    }
}

#[test]
fn refused_shapes_are_op_errors_before_any_launch() {
    let s = sim();
    let stream = Stream::new(&s.ctx).unwrap();
    let mut ws = Workspace::new(&s.ctx);
    let buf = DeviceBuffer::new(&s.ctx, 4096).unwrap();
    let p = buf.as_ptr();
    let err = s
        .kernels
        .matmul(
            &stream,
            p,
            p,
            None,
            p,
            2,
            2,
            2,
            ActDtype::F32,
            ActDtype::F32,
            false,
            &mut ws,
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Op { op: "matmul", message, .. } if message.contains("bf16 or fp16")),
        "{err}"
    );
    let err = s
        .kernels
        .matmul(
            &stream,
            std::ptr::null_mut(),
            p,
            None,
            p,
            2,
            2,
            2,
            ActDtype::Bf16,
            ActDtype::F32,
            false,
            &mut ws,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("a is a null device address"),
        "{err}"
    );
    let err = s
        .kernels
        .decode_attention(
            &stream,
            p,
            p,
            p,
            p,
            &mut ws,
            32,
            2,
            128,
            4,
            4,
            1.0,
            ActDtype::Bf16,
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Op { op: "decode_attention", message, .. } if message.contains("at most 8")),
        "{err}"
    );
    let shape = FlashShape {
        batch: 1,
        heads: 2,
        kv_heads: 2,
        head_dim: 160,
        q_len: 1,
        kv_len: 1,
        q: Strides::bsnd(1, 2, 160),
        k: Strides::bsnd(1, 2, 160),
        v: Strides::bsnd(1, 2, 160),
        out: Strides::bsnd(1, 2, 160),
        causal: None,
        scale: 1.0,
        dtype: ActDtype::Bf16,
    };
    let err = s
        .kernels
        .flash_attention(&stream, p, p, p, p, None, &shape, &mut ws)
        .unwrap_err();
    assert!(err.to_string().contains("head_dim=160"), "{err}");
    // Nothing was queued: the stream is clean.
    stream.synchronize().unwrap();
}

#[test]
fn a_kernel_given_a_short_output_fails_at_synchronisation_naming_the_kernel() {
    let s = sim();
    let stream = Stream::new(&s.ctx).unwrap();
    let mut ws = Workspace::new(&s.ctx);
    let a = DeviceBuffer::new(&s.ctx, 128 * 2).unwrap();
    let w = DeviceBuffer::new(&s.ctx, 64 * 128 * 2).unwrap();
    // Room for 16 of the 64 outputs.
    let out = DeviceBuffer::new(&s.ctx, 16 * 4).unwrap();
    s.kernels
        .matmul(
            &stream,
            a.as_ptr(),
            w.as_ptr(),
            None,
            out.as_ptr(),
            1,
            64,
            128,
            ActDtype::Bf16,
            ActDtype::F32,
            false,
            &mut ws,
        )
        .unwrap();
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
