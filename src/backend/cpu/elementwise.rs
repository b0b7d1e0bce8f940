//! Row-wise and element-wise kernels: norms, activations, rotary embedding. Each computes in f32 and
//! rounds to the activation dtype where transformers running in that dtype rounds (the GELU takes a
//! flag for bf16 rounding only, since the matmul epilogue shares it; f16 callers round after it).

use super::act::Elem;
use crate::backend::ActDtype;
use crate::numeric::round_bf16;

#[inline(always)]
fn r(v: f32, act: ActDtype) -> f32 {
    act.round(v)
}

#[inline(always)]
fn r16(v: f32, round: bool) -> f32 {
    if round {
        round_bf16(v)
    } else {
        v
    }
}

/// Rows interleaved by the norms: their f64 sums are independent chains of adds, so running
/// several rows side by side hides the add latency while each row keeps its own summation order.
const NORM_ROWS: usize = 8;

/// `f(row group)` over `x`'s rows of `n` values, `NORM_ROWS` at a time and then one at a time.
#[inline(always)]
fn norm_groups<E: Elem>(
    x: &[E],
    out: &mut [E],
    n: usize,
    mut wide: impl FnMut(&[E], &mut [E]),
    mut one: impl FnMut(&[E], &mut [E]),
) {
    debug_assert_eq!(x.len(), out.len());
    if n == 0 {
        return;
    }
    let mut xs = x.chunks_exact(NORM_ROWS * n);
    let mut os = out.chunks_exact_mut(NORM_ROWS * n);
    for (xg, og) in (&mut xs).zip(&mut os) {
        wide(xg, og);
    }
    for (xr, or) in xs
        .remainder()
        .chunks_exact(n)
        .zip(os.into_remainder().chunks_exact_mut(n))
    {
        one(xr, or);
    }
}

/// Sums over the rows of `x` (`R` rows of `n` values), each row's in order from its first value:
/// `sum(f(row, i))` per row.
#[inline(always)]
// `i` indexes every row: the rows advance together, one value each per step.
#[allow(clippy::needless_range_loop)]
fn row_sums<E: Elem, const R: usize>(x: &[E], n: usize, f: impl Fn(usize, f32) -> f64) -> [f64; R] {
    let rows: [&[E]; R] = std::array::from_fn(|r| &x[r * n..(r + 1) * n]);
    let mut s = [0f64; R];
    for i in 0..n {
        for r in 0..R {
            s[r] += f(r, rows[r][i].get());
        }
    }
    s
}

/// Where the rows are bf16 and the CPU has AVX-512, `group(x, out)` over their whole groups of
/// `simd::NORM_LANES` rows of `n` values; returns the rows left for the generic code (all of them
/// elsewhere).
#[cfg(target_arch = "x86_64")]
fn bf16_groups<'a, E: Elem>(
    x: &'a [E],
    out: &'a mut [E],
    n: usize,
    group: impl Fn(&[u16], &mut [u16]),
) -> (&'a [E], &'a mut [E]) {
    if has_avx512_vl() && n > 0 {
        if let (Some(xb), Some(ob)) = (E::as_bf16(x), E::as_bf16_mut(out)) {
            let size = simd::NORM_LANES * n;
            let wide = x.len() / size * size;
            for (xg, og) in xb[..wide].chunks_exact(size).zip(ob.chunks_exact_mut(size)) {
                group(xg, og);
            }
            return (&x[wide..], &mut out[wide..]);
        }
    }
    (x, out)
}

/// LayerNorm of whole rows of `w.len()` values: statistics in f64 for accuracy (each row summed
/// in order), affine in f32, one rounding.
pub fn layer_norm_rows<E: Elem>(
    x: &[E],
    w: &[f32],
    b: &[f32],
    eps: f32,
    round: ActDtype,
    out: &mut [E],
) {
    fn rows<E: Elem, const R: usize>(
        x: &[E],
        w: &[f32],
        b: &[f32],
        eps: f32,
        round: ActDtype,
        out: &mut [E],
    ) {
        let n = w.len();
        let mean = row_sums::<E, R>(x, n, |_, v| v as f64).map(|s| s / n as f64);
        let var = row_sums::<E, R>(x, n, |r, v| (v as f64 - mean[r]).powi(2)).map(|s| s / n as f64);
        for r in 0..R {
            let rstd = (1.0 / (var[r] + eps as f64).sqrt()) as f32;
            let mean = mean[r] as f32;
            let (x, out) = (&x[r * n..(r + 1) * n], &mut out[r * n..(r + 1) * n]);
            for (((o, &x), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
                *o = E::put((x.get() - mean) * rstd * w + b, round);
            }
        }
    }
    // SAFETY (of the call): the group has 16 whole rows; AVX-512F, BW and VL are checked.
    #[cfg(target_arch = "x86_64")]
    let (x, out) = bf16_groups(x, out, w.len(), |xg, og| unsafe {
        simd::layer_norm_bf16(xg, w, b, eps, og)
    });
    norm_groups(
        x,
        out,
        w.len(),
        |x, o| rows::<E, NORM_ROWS>(x, w, b, eps, round, o),
        |x, o| rows::<E, 1>(x, w, b, eps, round, o),
    );
}

/// RMSNorm of whole rows of `w.len()` values: normalised in f32, rounded, then multiplied by the
/// weight (and rounded).
pub fn rms_norm_rows<E: Elem>(x: &[E], w: &[f32], eps: f32, round: ActDtype, out: &mut [E]) {
    fn rows<E: Elem, const R: usize>(x: &[E], w: &[f32], eps: f32, round: ActDtype, out: &mut [E]) {
        let n = w.len();
        let ms = row_sums::<E, R>(x, n, |_, v| v as f64 * v as f64).map(|s| s / n as f64);
        for r in 0..R {
            let scale = 1.0 / (ms[r] as f32 + eps).sqrt();
            let (x, out) = (&x[r * n..(r + 1) * n], &mut out[r * n..(r + 1) * n]);
            for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
                *o = E::put(w * self::r(x.get() * scale, round), round);
            }
        }
    }
    // SAFETY (of the call): the group has 16 whole rows; AVX-512F, BW and VL are checked.
    #[cfg(target_arch = "x86_64")]
    let (x, out) = bf16_groups(x, out, w.len(), |xg, og| unsafe {
        simd::rms_norm_bf16(xg, w, eps, og)
    });
    norm_groups(
        x,
        out,
        w.len(),
        |x, o| rows::<E, NORM_ROWS>(x, w, eps, round, o),
        |x, o| rows::<E, 1>(x, w, eps, round, o),
    );
}

/// `x += y`, rounded.
pub fn add_assign<E: Elem>(x: &mut [E], y: &[E], round: ActDtype) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a = E::put(a.get() + b.get(), round);
    }
}

/// Whether the AVX-512 kernels run (see [`super::matmul::has_avx512`]) on a CPU with AVX-512BW and
/// VL, which the masked 16-bit loads and stores of the bf16 row passes need.
#[cfg(target_arch = "x86_64")]
fn has_avx512_vl() -> bool {
    super::matmul::has_avx512()
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

/// `x += y` on bf16 bit patterns, rounded to bf16: [`add_assign`] on 16 lanes at a time where the
/// CPU has AVX-512.
pub fn add_assign_bf16(x: &mut [u16], y: &[u16]) {
    assert_eq!(x.len(), y.len(), "add_assign_bf16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vl() {
        // SAFETY: the CPU has AVX-512F, BW and VL; the lengths agree.
        return unsafe { simd::add_assign_bf16(x, y) };
    }
    add_assign(x, y, ActDtype::Bf16)
}

/// sqrt(2/π).
const GELU_BETA: f32 = 0.797_884_6;
const GELU_KAPPA: f32 = 0.044715;

/// GELU with the tanh approximation (`gelu_pytorch_tanh`), in place.
pub fn gelu_tanh(x: &mut [f32], round: bool) {
    #[cfg(target_arch = "x86_64")]
    if super::matmul::has_avx512() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { simd::gelu_tanh(x, round) };
    }
    gelu_tanh_scalar(x, round)
}

/// GELU (tanh approximation) in place on bf16 bit patterns, rounded to bf16: the values of
/// [`gelu_tanh`] with rounding, stored in 16 bits.
pub fn gelu_tanh_bf16(x: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vl() {
        // SAFETY: the CPU has AVX-512F, BW, VL and FMA.
        return unsafe { simd::gelu_tanh_bf16(x) };
    }
    for v in x.iter_mut() {
        *v = super::act::bf16_bits(gelu_tanh_one(crate::numeric::bf16_to_f32(*v)));
    }
}

fn gelu_tanh_scalar(x: &mut [f32], round: bool) {
    for v in x.iter_mut() {
        *v = r16(gelu_tanh_one(*v), round);
    }
}

/// GELU (tanh approximation) of one value, unrounded: the portable definition.
pub fn gelu_tanh_one(a: f32) -> f32 {
    let inner = GELU_BETA * (a + GELU_KAPPA * a * a * a);
    0.5 * a * (1.0 + inner.tanh())
}

/// `gate ← silu(gate) ⊙ up`; in bf16/f16 the activation is rounded before the product, as in
/// `act(g) * u`.
pub fn silu_mul_inplace<E: Elem>(gate: &mut [E], up: &[E], round: ActDtype) {
    for (x, u) in gate.iter_mut().zip(up) {
        *x = E::put(silu(x.get(), round) * u.get(), round);
    }
}

/// SiLU of one value, rounded to the activation dtype: the definition every path uses.
#[inline(always)]
fn silu(g: f32, round: ActDtype) -> f32 {
    r(g / (1.0 + (-g).exp()), round)
}

/// [`silu_mul_inplace`] on bf16 bit patterns (bf16 mode), with its bits: the rounded SiLU has one
/// result per bf16 gate value, so it is looked up in [`silu_bf16_table`] (built by [`silu`])
/// instead of computed; only the product and its rounding remain.
pub fn silu_mul_bf16(gate: &mut [u16], up: &[u16]) {
    assert_eq!(gate.len(), up.len(), "silu_mul_bf16: lengths differ");
    let table = silu_bf16_table();
    #[cfg(target_arch = "x86_64")]
    if has_avx512_vl() {
        // SAFETY: the CPU has AVX-512F, BW and VL; the lengths agree; the table has the padding
        // entry the gather needs.
        return unsafe { simd::silu_mul_bf16(gate, up, table) };
    }
    for (x, &u) in gate.iter_mut().zip(up) {
        let s = crate::numeric::bf16_to_f32(table[*x as usize]);
        *x = super::act::bf16_bits(s * crate::numeric::bf16_to_f32(u));
    }
}

/// The bf16 bits of `silu(g)` rounded, indexed by the bits of every bf16 `g`, and one padding
/// entry so that a 32-bit gather at the last index stays inside (128 KB, built once).
pub fn silu_bf16_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<u16> = (0..=u16::MAX)
            .map(|b| {
                let g = crate::numeric::bf16_to_f32(b);
                super::act::bf16_bits(silu(g, ActDtype::Bf16))
            })
            .collect();
        t.push(0);
        t
    })
}

/// Rotary embedding of every head in one row (half-split convention) by its `cs` pairs from
/// [`crate::backend::rope_cos_sin`], each product and sum rounded as in transformers.
pub fn rope_row<E: Elem>(row: &mut [E], head_dim: usize, cs: &[(f32, f32)], round: ActDtype) {
    let half = head_dim / 2;
    debug_assert_eq!(cs.len(), half);
    for head in row.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (c, s) = cs[i];
            let (x1, x2) = (lo[i].get(), hi[i].get());
            lo[i] = E::put(r(x1 * c, round) - r(x2 * s, round), round);
            hi[i] = E::put(r(x2 * c, round) + r(x1 * s, round), round);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs_half_apart() {
        // head_dim 4: pairs (0, 2) and (1, 3). inv_freq [1, 0.5] at position 1 rotates the first pair by
        // 1 rad and the second by 0.5 rad.
        let mut row = [1.0f32, 2.0, 3.0, 4.0];
        let cs = crate::backend::rope_cos_sin(&[1], &[1.0, 0.5], ActDtype::F32);
        rope_row(&mut row, 4, &cs, ActDtype::F32);
        let (c1, s1) = (1f32.cos(), 1f32.sin());
        let (c2, s2) = (0.5f32.cos(), 0.5f32.sin());
        let want = [
            1.0 * c1 - 3.0 * s1,
            2.0 * c2 - 4.0 * s2,
            3.0 * c1 + 1.0 * s1,
            4.0 * c2 + 2.0 * s2,
        ];
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{row:?} vs {want:?}");
        }
        // Position 0 is the identity.
        let mut row0 = [1.0f32, 2.0, 3.0, 4.0];
        let cs = crate::backend::rope_cos_sin(&[0], &[1.0, 0.5], ActDtype::F32);
        rope_row(&mut row0, 4, &cs, ActDtype::F32);
        assert_eq!(row0, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn norms_match_hand_computation() {
        let mut out = [0f32; 4];
        rms_norm_rows(
            &[1.0, -1.0, 1.0, -1.0],
            &[2.0, 2.0, 2.0, 2.0],
            0.0,
            ActDtype::F32,
            &mut out,
        );
        assert_eq!(out, [2.0, -2.0, 2.0, -2.0]);
        layer_norm_rows(
            &[1.0, 3.0],
            &[1.0, 1.0],
            &[0.5, 0.0],
            0.0,
            ActDtype::F32,
            &mut out[..2],
        );
        assert_eq!(&out[..2], &[-0.5, 1.0]);
    }

    #[test]
    fn bf16_add_gives_the_bits_of_the_generic_add() {
        // Every length up to a few vectors (masked tails), bit patterns from all over the range:
        // normals, subnormals, infinities and NaNs.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..50 {
            let mut bits = || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 48) as u16
            };
            let x: Vec<u16> = (0..len).map(|_| bits()).collect();
            let y: Vec<u16> = (0..len).map(|_| bits()).collect();
            let (mut fast, mut slow) = (x.clone(), x);
            add_assign_bf16(&mut fast, &y);
            add_assign(&mut slow, &y, ActDtype::Bf16);
            assert_eq!(fast, slow, "length {len}");
        }
    }

    #[test]
    fn bf16_silu_mul_gives_the_bits_of_the_generic_op_for_every_gate() {
        // Every bf16 gate pattern (normals, subnormals, infinities, NaNs) against up values from
        // all over the range, in lengths that leave masked tails.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let gate: Vec<u16> = (0..=u16::MAX).collect();
        let up: Vec<u16> = (0..gate.len())
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 48) as u16
            })
            .collect();
        for (g, u) in gate.chunks(4093).zip(up.chunks(4093)) {
            let (mut fast, mut slow) = (g.to_vec(), g.to_vec());
            silu_mul_bf16(&mut fast, u);
            silu_mul_inplace(&mut slow, u, ActDtype::Bf16);
            for i in 0..g.len() {
                assert_eq!(fast[i], slow[i], "silu({:#06x}) · {:#06x}", g[i], u[i]);
            }
        }
        // And the table holds the SiLU (a table of the wrong function fails here), within a
        // bf16 rounding of the f64 value, away from the overflow of e^−g.
        let table = silu_bf16_table();
        for b in (0..=u16::MAX).step_by(7) {
            let g = crate::numeric::bf16_to_f32(b);
            if !g.is_finite() || g < -80.0 {
                continue;
            }
            let want = g as f64 / (1.0 + (-(g as f64)).exp());
            let got = crate::numeric::bf16_to_f32(table[b as usize]) as f64;
            assert!(
                (got - want).abs() <= want.abs() / 128.0 + 1e-38,
                "silu({g:e}) = {got:e}, want {want:e}"
            );
        }
    }

    #[test]
    fn bf16_norms_give_the_bits_of_single_f32_rows() {
        // bf16 storage (the AVX-512 path for groups of 16 rows where it runs, the generic path
        // for the rest) against rows one at a time in f32 storage rounded to bf16. Widths with
        // and without a tail beyond four-column steps and sixteen-lane chunks; values over many
        // binades so that the order of the f64 sums shows.
        for (rows, n) in [(37, 37), (16, 64), (33, 6), (20, 771)] {
            let x: Vec<u16> = (0..rows * n)
                .map(|i| {
                    let t = (i as f32 * 0.618_034).fract() - 0.5;
                    (round_bf16(t * 2f32.powi((i % 23) as i32 - 11)).to_bits() >> 16) as u16
                })
                .collect();
            let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / n as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.1).collect();
            let mut fast = vec![0u16; rows * n];
            layer_norm_rows(&x, &w, &b, 1e-6, ActDtype::Bf16, &mut fast);
            let xf: Vec<f32> = x
                .iter()
                .map(|&v| f32::from_bits((v as u32) << 16))
                .collect();
            let mut slow = vec![0f32; rows * n];
            for (xr, o) in xf.chunks(n).zip(slow.chunks_mut(n)) {
                layer_norm_rows(xr, &w, &b, 1e-6, ActDtype::Bf16, o);
            }
            let slow: Vec<u16> = slow.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            assert_eq!(fast, slow, "LayerNorm, {rows} rows of {n}");
            let mut fast = vec![0u16; rows * n];
            rms_norm_rows(&x, &w, 1e-6, ActDtype::Bf16, &mut fast);
            let mut slow = vec![0f32; rows * n];
            for (xr, o) in xf.chunks(n).zip(slow.chunks_mut(n)) {
                rms_norm_rows(xr, &w, 1e-6, ActDtype::Bf16, o);
            }
            let slow: Vec<u16> = slow.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            assert_eq!(fast, slow, "RMSNorm, {rows} rows of {n}");
        }
    }

    #[test]
    fn interleaved_norm_rows_give_the_bits_of_single_rows() {
        // 11 rows: one group of NORM_ROWS and three single rows; values spread over many binades so
        // that the f64 sums round and their order shows.
        let (rows, n) = (11, 37);
        let x: Vec<f32> = (0..rows * n)
            .map(|i| {
                let t = (i as f32 * 0.618_034).fract() - 0.5;
                round_bf16(t * 2f32.powi((i % 23) as i32 - 11))
            })
            .collect();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 / n as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.1).collect();
        for act in [ActDtype::F32, ActDtype::Bf16] {
            let (mut all, mut one) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            layer_norm_rows(&x, &w, &b, 1e-6, act, &mut all);
            for (xr, o) in x.chunks(n).zip(one.chunks_mut(n)) {
                layer_norm_rows(xr, &w, &b, 1e-6, act, o);
            }
            assert_eq!(
                all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            rms_norm_rows(&x, &w, 1e-6, act, &mut all);
            for (xr, o) in x.chunks(n).zip(one.chunks_mut(n)) {
                rms_norm_rows(xr, &w, 1e-6, act, o);
            }
            assert_eq!(
                all.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_and_gelu_match_the_scalar_functions() {
        if !crate::backend::cpu::matmul::has_avx512() {
            return;
        }
        let xs: Vec<f32> = (-2000..1760)
            .map(|i| i as f32 * 0.05)
            .chain([f32::NEG_INFINITY, -200.0, 0.0])
            .collect();
        for chunk in xs.chunks(16) {
            let mut v = [0f32; 16];
            v[..chunk.len()].copy_from_slice(chunk);
            let mut out = [0f32; 16];
            // SAFETY: AVX-512 checked above.
            unsafe {
                use std::arch::x86_64::*;
                _mm512_storeu_ps(out.as_mut_ptr(), simd::exp_ps(_mm512_loadu_ps(v.as_ptr())));
            }
            for (x, e) in v.iter().zip(out) {
                if *x < -87.5 {
                    // Below the normal range the vector exp flushes to zero.
                    assert_eq!(e, 0.0);
                    continue;
                }
                let want = x.exp();
                assert!(
                    (e - want).abs() <= 4.0 * f32::EPSILON * want.max(f32::MIN_POSITIVE),
                    "exp({x}) = {e}, want {want}"
                );
            }
        }
        let mut a: Vec<f32> = (-500..500).map(|i| i as f32 * 0.02).collect();
        let mut b = a.clone();
        gelu_tanh(&mut a, false);
        gelu_tanh_scalar(&mut b, false);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gelu_lookup_gives_the_bits_of_the_computation_for_every_bf16() {
        if !crate::backend::cpu::matmul::has_avx512() {
            return;
        }
        use std::arch::x86_64::*;
        let table = simd::gelu_bf16_table();
        for c in (0..1u32 << 16).step_by(16) {
            let bits: Vec<u32> = (c..c + 16).map(|b| b << 16).collect();
            let (mut direct, mut lookup) = ([0f32; 16], [0f32; 16]);
            // SAFETY: AVX-512F and FMA checked above; 16 lanes in and out.
            unsafe {
                let x = _mm512_loadu_ps(bits.as_ptr() as *const f32);
                let d = simd::round_bf16_ps(simd::gelu_ps(x));
                _mm512_storeu_ps(direct.as_mut_ptr(), d);
                _mm512_storeu_ps(lookup.as_mut_ptr(), simd::bf16_lookup(x, table));
            }
            for (i, (d, l)) in direct.iter().zip(lookup).enumerate() {
                let x = f32::from_bits(bits[i]);
                assert_eq!(
                    d.to_bits(),
                    l.to_bits(),
                    "gelu({x:e}) bits {:#06x}",
                    c + i as u32
                );
                // And near the definition in f64 (a table of the wrong function fails here): within
                // a bf16 rounding plus the f32 cancellation of 1 + tanh in the negative tail.
                let xd = x as f64;
                let want = 0.5
                    * xd
                    * (1.0 + (0.797_884_560_802_865_4 * (xd + 0.044715 * xd.powi(3))).tanh());
                if want.is_finite() && x.abs() < 1e4 {
                    let err = (l as f64 - want).abs();
                    assert!(
                        err <= want.abs() / 128.0 + 1e-6 * xd.abs() + 1e-37,
                        "gelu({x:e}) = {l:e}, want {want:e}"
                    );
                }
            }
        }
    }

    #[test]
    fn gelu_tanh_known_values() {
        let mut x = [0.0f32, 1.0, -1.0, 3.0];
        gelu_tanh(&mut x, false);
        // torch.nn.functional.gelu(torch.tensor([0., 1., -1., 3.]), approximate="tanh")
        let want = [0.0f32, 0.841_192, -0.158_808, 2.996_363_8];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{x:?}");
        }
    }
}

/// Vectorised exponentials for the hot element-wise loops (softmax numerators, GELU), accurate to a
/// few ulp like the vectorised math torch uses; elsewhere the scalar library functions serve.
#[cfg(target_arch = "x86_64")]
pub mod simd {
    use std::arch::x86_64::*;

    /// e^x on 16 lanes: x = n·ln2 + r, a degree-7 polynomial for e^r (|r| ≤ ln2/2), scaled by 2^n;
    /// 0 below the f32 range (−∞ included), +∞ above it.
    #[inline(always)]
    pub unsafe fn exp_ps(x: __m512) -> __m512 {
        let lo = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LOW), _CMP_LT_OQ);
        let xc = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(EXP_LOW)),
            _mm512_set1_ps(88.722_83),
        );
        _mm512_mask_blend_ps(lo, exp_in_range_ps(xc), _mm512_setzero_ps())
    }

    /// The smallest argument [`exp_ps`] computes; below it the result is 0.
    const EXP_LOW: f32 = -87.5;

    /// [`exp_ps`] of arguments in its range `[−87.5, 88.72]`, without the clamps and the mask
    /// that handle the others (the same bits there).
    #[inline(always)]
    unsafe fn exp_in_range_ps(xc: __m512) -> __m512 {
        let n = _mm512_roundscale_ps(
            _mm512_mul_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E)),
            0,
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// Softmax numerators `e^(s·scale − max)` (rounded to bf16 with `round`), in place, or as bf16
    /// bit patterns into `bits` (then `round` must hold and `s` is left as it was); returns the max
    /// of the scaled row and the f32 sum of the numerators. A row of −∞ only becomes zeros, with max
    /// −∞ and sum 0.
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn softmax_numerators(
        s: &mut [f32],
        scale: f32,
        round: bool,
        mut bits: Option<&mut [u16]>,
    ) -> (f32, f32) {
        let n = s.len();
        debug_assert!(bits.as_ref().is_none_or(|b| b.len() == n && round));
        let full = n / 16 * 16;
        let sv = _mm512_set1_ps(scale);
        // The max of the scaled row is the scaled max of the row: rounding x·scale (scale > 0) is
        // monotone, so the largest product is the largest score's, to the bit. Four running maxima
        // (max is exact in any order) keep the pass from waiting on one chain. The minima, by the
        // same monotony, give the smallest exponent argument (below).
        let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
        let mut lo = [_mm512_set1_ps(f32::INFINITY); 4];
        let quads = n / 64 * 64;
        for c in (0..quads).step_by(64) {
            for (j, (mj, lj)) in m.iter_mut().zip(&mut lo).enumerate() {
                let v = _mm512_loadu_ps(s.as_ptr().add(c + 16 * j));
                *mj = _mm512_max_ps(*mj, v);
                *lj = _mm512_min_ps(*lj, v);
            }
        }
        for c in (quads..full).step_by(16) {
            let v = _mm512_loadu_ps(s.as_ptr().add(c));
            m[0] = _mm512_max_ps(m[0], v);
            lo[0] = _mm512_min_ps(lo[0], v);
        }
        let m = _mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3]));
        let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let mut raw = _mm512_reduce_max_ps(m);
        let raw_min = _mm512_reduce_min_ps(lo);
        for &v in &s[full..] {
            raw = raw.max(v);
        }
        let max = raw * scale;
        if max == f32::NEG_INFINITY {
            match bits {
                Some(b) => b.fill(0),
                None => s.fill(0.0),
            }
            return (max, 0.0);
        }
        let mv = _mm512_set1_ps(max);
        if let Some(b) = bits.as_deref_mut() {
            if std::arch::is_x86_feature_detected!("avx512bf16") {
                // Every argument s·scale − max of the vector part lies in [raw_min·scale − max, 0]
                // (scale > 0: rounding is monotone); where that is inside the exponential's range
                // (no masked key, scores less than 87.5 apart: every vision row), the clamps and
                // the mask are no-ops and are left out. A NaN score, which the bounds do not
                // catch, makes the sum NaN; the row then goes through the full exponential.
                let in_range = scale > 0.0 && raw_min * scale - max >= EXP_LOW && max.is_finite();
                if in_range {
                    let total = numerator_bits::<true>(&s[..full], sv, mv, &mut b[..full]);
                    if !total.is_nan() {
                        return (max, tail_numerators(s, b, full, scale, max, total));
                    }
                }
                let total = numerator_bits::<false>(&s[..full], sv, mv, &mut b[..full]);
                return (max, tail_numerators(s, b, full, scale, max, total));
            }
        }
        let mut sum = _mm512_setzero_ps();
        let rnd = _mm512_set1_epi32(0x7fff);
        let keep = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for c in (0..full).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(s.as_ptr().add(c)), sv);
            let e = exp_ps(_mm512_sub_ps(v, mv));
            sum = _mm512_add_ps(sum, e);
            let out = if round {
                let u = _mm512_castps_si512(e);
                let lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
                _mm512_castsi512_ps(_mm512_and_si512(
                    _mm512_add_epi32(_mm512_add_epi32(u, rnd), lsb),
                    keep,
                ))
            } else {
                e
            };
            match bits.as_deref_mut() {
                Some(b) => {
                    let h =
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(_mm512_castps_si512(out)));
                    _mm256_storeu_si256(b.as_mut_ptr().add(c) as *mut __m256i, h);
                }
                None => _mm512_storeu_ps(s.as_mut_ptr().add(c), out),
            }
        }
        let mut total = _mm512_reduce_add_ps(sum);
        match bits {
            Some(b) => total = tail_numerators(s, b, full, scale, max, total),
            None => {
                for v in &mut s[full..] {
                    let e = (*v * scale - max).exp();
                    total += e;
                    *v = if round {
                        crate::numeric::round_bf16(e)
                    } else {
                        e
                    };
                }
            }
        }
        (max, total)
    }

    /// The bf16 numerators of `s[full..]` into `b[full..]`, their sum added to `total` in order.
    fn tail_numerators(
        s: &[f32],
        b: &mut [u16],
        full: usize,
        scale: f32,
        max: f32,
        total: f32,
    ) -> f32 {
        let mut total = total;
        for (d, &v) in b[full..].iter_mut().zip(&s[full..]) {
            let e = (v * scale - max).exp();
            total += e;
            *d = (crate::numeric::round_bf16(e).to_bits() >> 16) as u16;
        }
        total
    }

    /// The numerators of `s` (a multiple of 16 long) as bf16 bits, rounded by VCVTNEPS2BF16 (to
    /// nearest even, like the rounding above, except that it reads f32 denormals as zero: the
    /// numerators below 2⁻¹²⁶ become 0 instead of a bf16 denormal, which the bf16 products that
    /// read these rows, tiles and VDPBF16PS alike, treat as zero anyway); returns the sum of the
    /// unrounded numerators, in the same order as the generic loop. `IN_RANGE`: the caller has
    /// checked that every argument lies in [`exp_in_range_ps`]'s range.
    #[target_feature(enable = "avx512f,avx512bf16,fma")]
    unsafe fn numerator_bits<const IN_RANGE: bool>(
        s: &[f32],
        sv: __m512,
        mv: __m512,
        b: &mut [u16],
    ) -> f32 {
        let mut sum = _mm512_setzero_ps();
        for c in (0..s.len()).step_by(16) {
            let v = _mm512_mul_ps(_mm512_loadu_ps(s.as_ptr().add(c)), sv);
            let x = _mm512_sub_ps(v, mv);
            let e = if IN_RANGE {
                exp_in_range_ps(x)
            } else {
                exp_ps(x)
            };
            sum = _mm512_add_ps(sum, e);
            _mm256_storeu_si256(
                b.as_mut_ptr().add(c) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(e)),
            );
        }
        _mm512_reduce_add_ps(sum)
    }

    /// GELU (tanh approximation) in place; tanh(u) = sign(u)·(1 − e)/(1 + e) with e = e^(−2|u|).
    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn gelu_tanh(x: &mut [f32], round: bool) {
        // Every element goes through the vector code (the tail under a mask), so a value's result
        // does not depend on where it sits; the matmul epilogue that fuses GELU relies on that.
        for c in (0..x.len()).step_by(16) {
            let m = live_lanes(x.len() - c);
            let p = x.as_mut_ptr().add(c);
            let mut g = gelu_ps(_mm512_maskz_loadu_ps(m, p));
            if round {
                g = round_bf16_ps(g);
            }
            _mm512_mask_storeu_ps(p, m, g);
        }
    }

    /// [`gelu_tanh`] with rounding over bf16 bit patterns: each vector widened, passed through the
    /// same lanes, rounded and narrowed.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub unsafe fn gelu_tanh_bf16(x: &mut [u16]) {
        let table = gelu_bf16_table();
        for c in (0..x.len()).step_by(16) {
            let m = live_lanes(x.len() - c);
            let p = x.as_mut_ptr().add(c);
            // The GELU rounded once, as the f32 path with `round`.
            store_bf16(m, p, bf16_lookup(load_bf16(m, p), table));
        }
    }

    /// `round_bf16(gelu_ps(x))` for every bf16 `x`, as bf16 bits indexed by `x`'s bits: the
    /// rounded GELU has one result per bf16 input, so a lookup gives the bits of the computation
    /// (built by it) at the cost of a gather instead of an exponential and a division. One padding
    /// entry lets a 32-bit gather at the last index stay inside.
    pub fn gelu_bf16_table() -> &'static [u16] {
        static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            assert!(
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma"),
                "the GELU table is built by AVX-512 code"
            );
            let mut t = vec![0u16; (1 << 16) + 1];
            // SAFETY: AVX-512F and FMA checked just now.
            unsafe { fill_gelu_bf16_table(&mut t[..1 << 16]) };
            t
        })
    }

    #[target_feature(enable = "avx512f,fma")]
    unsafe fn fill_gelu_bf16_table(t: &mut [u16]) {
        for (c, out) in t.chunks_exact_mut(16).enumerate() {
            let lanes = _mm512_add_epi32(
                _mm512_set1_epi32((c * 16) as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            let x = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes));
            let g = _mm512_castps_si512(round_bf16_ps(gelu_ps(x)));
            _mm256_storeu_si256(
                out.as_mut_ptr() as *mut __m256i,
                _mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(g)),
            );
        }
    }

    /// The entries of a bf16 table ([`gelu_bf16_table`], [`super::silu_bf16_table`]) at 16 bf16
    /// values (`v` holds bf16 numbers), as f32.
    #[inline(always)]
    pub unsafe fn bf16_lookup(v: __m512, table: &[u16]) -> __m512 {
        debug_assert_eq!(table.len(), (1 << 16) + 1);
        let idx = _mm512_srli_epi32::<16>(_mm512_castps_si512(v));
        // Little-endian: the entry is the low half of the 32 bits read at its address.
        let g = _mm512_i32gather_epi32::<2>(idx, table.as_ptr() as *const _);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(g))
    }

    /// [`super::silu_mul_bf16`]: sixteen gate values looked up in `table` at a time, multiplied
    /// by the up values, rounded and narrowed. `x` and `y` have the same length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn silu_mul_bf16(x: &mut [u16], y: &[u16], table: &[u16]) {
        for c in (0..x.len()).step_by(16) {
            let m = live_lanes(x.len() - c);
            let (p, q) = (x.as_mut_ptr().add(c), y.as_ptr().add(c));
            let s = bf16_lookup(load_bf16(m, p), table);
            store_bf16(m, p, _mm512_mul_ps(s, load_bf16(m, q)));
        }
    }

    /// [`super::add_assign`] on bf16 bit patterns: each pair of vectors widened, added, rounded and
    /// narrowed. `x` and `y` have the same length.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn add_assign_bf16(x: &mut [u16], y: &[u16]) {
        for c in (0..x.len()).step_by(16) {
            let m = live_lanes(x.len() - c);
            let (p, q) = (x.as_mut_ptr().add(c), y.as_ptr().add(c));
            store_bf16(m, p, _mm512_add_ps(load_bf16(m, p), load_bf16(m, q)));
        }
    }

    /// GELU (tanh approximation) on 16 lanes, unrounded.
    #[inline(always)]
    pub unsafe fn gelu_ps(v: __m512) -> __m512 {
        let beta = _mm512_set1_ps(super::GELU_BETA);
        let kappa = _mm512_set1_ps(super::GELU_KAPPA);
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_ps(-0.0);
        let u = _mm512_mul_ps(
            beta,
            _mm512_fmadd_ps(_mm512_mul_ps(kappa, v), _mm512_mul_ps(v, v), v),
        );
        // Bit operations on the integer view: the `_ps` forms need AVX-512DQ, which the callers'
        // feature sets do not name (they would not inline).
        let (si, ui) = (_mm512_castps_si512(sign), _mm512_castps_si512(u));
        let au = _mm512_castsi512_ps(_mm512_andnot_si512(si, ui));
        let e = exp_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0), au));
        let t = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
        let t = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(t),
            _mm512_and_si512(si, ui),
        ));
        _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), v), _mm512_add_ps(one, t))
    }

    /// Rows [`layer_norm_bf16`] normalises side by side: two vectors of eight f64 sums.
    pub const NORM_LANES: usize = 16;

    /// Per row of `x` (16 bf16 rows of `n` values), the f64 sum over its values `v` in order of
    /// `v` (`MODE` 0), of `(v − center[r])²` (`MODE` 1) or of `v²` (`MODE` 2; squares then
    /// adds, never fused), as
    /// [`super::row_sums`] computes it: lane `r` of a vector of eight sums is row `r`'s chain,
    /// fed four columns at a time by one 64-bit gather per eight rows.
    #[inline(always)]
    unsafe fn bf16_row_sums<const MODE: u8>(x: &[u16], n: usize, center: &[f64; 16]) -> [f64; 16] {
        let base = x.as_ptr() as *const u8;
        // Byte offsets of rows 0..8 and 8..16.
        let off: [i64; 16] = std::array::from_fn(|r| (2 * n * r) as i64);
        let rows = _mm512_loadu_si512(off.as_ptr() as *const _);
        let rows_hi = _mm512_loadu_si512(off.as_ptr().add(8) as *const _);
        let (c0, c1) = (
            _mm512_loadu_pd(center.as_ptr()),
            _mm512_loadu_pd(center.as_ptr().add(8)),
        );
        let (mut s0, mut s1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        // Column `J` of the four 16-bit values in each lane, as f64.
        macro_rules! column {
            ($g:expr, $j:literal) => {
                _mm512_cvtps_pd(_mm256_castsi256_ps(_mm512_cvtepi64_epi32(
                    _mm512_slli_epi64::<16>(_mm512_srli_epi64::<{ 16 * $j }>($g)),
                )))
            };
        }
        macro_rules! add {
            ($s:ident, $v:expr, $c:expr) => {
                $s = _mm512_add_pd(
                    $s,
                    match MODE {
                        0 => $v,
                        1 => {
                            let d = _mm512_sub_pd($v, $c);
                            _mm512_mul_pd(d, d)
                        }
                        _ => _mm512_mul_pd($v, $v),
                    },
                )
            };
        }
        let quads = n / 4 * 4;
        for i in (0..quads).step_by(4) {
            let p = base.add(2 * i) as *const _;
            let g0 = _mm512_i64gather_epi64::<1>(rows, p);
            let g1 = _mm512_i64gather_epi64::<1>(rows_hi, p);
            add!(s0, column!(g0, 0), c0);
            add!(s1, column!(g1, 0), c1);
            add!(s0, column!(g0, 1), c0);
            add!(s1, column!(g1, 1), c1);
            add!(s0, column!(g0, 2), c0);
            add!(s1, column!(g1, 2), c1);
            add!(s0, column!(g0, 3), c0);
            add!(s1, column!(g1, 3), c1);
        }
        let mut sums = [0f64; 16];
        _mm512_storeu_pd(sums.as_mut_ptr(), s0);
        _mm512_storeu_pd(sums.as_mut_ptr().add(8), s1);
        for (r, s) in sums.iter_mut().enumerate() {
            for &v in &x[r * n + quads..(r + 1) * n] {
                let v = crate::numeric::bf16_to_f32(v) as f64;
                *s += match MODE {
                    0 => v,
                    1 => (v - center[r]) * (v - center[r]),
                    _ => v * v,
                };
            }
        }
        sums
    }

    /// [`super::layer_norm_rows`] of 16 bf16 rows (`x.len()` = 16·`w.len()`), to the bit: the
    /// same f64 sums in the same order per row, the same f32 affine pass.
    // VL: the masked 16-bit stores of `store_bf16` are 256-bit forms; without it they compiled
    // to a call (and a VZEROUPPER) per sixteen values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn layer_norm_bf16(x: &[u16], w: &[f32], b: &[f32], eps: f32, out: &mut [u16]) {
        let n = w.len();
        assert!(x.len() == NORM_LANES * n && out.len() == x.len() && b.len() == n);
        let zero = [0f64; 16];
        let mean = bf16_row_sums::<0>(x, n, &zero).map(|s| s / n as f64);
        let var = bf16_row_sums::<1>(x, n, &mean).map(|s| s / n as f64);
        for r in 0..NORM_LANES {
            let rstd = _mm512_set1_ps((1.0 / (var[r] + eps as f64).sqrt()) as f32);
            let m = _mm512_set1_ps(mean[r] as f32);
            let (xr, or) = (x.as_ptr().add(r * n), out.as_mut_ptr().add(r * n));
            for c in (0..n).step_by(16) {
                let k = live_lanes(n - c);
                let v = load_bf16(k, xr.add(c));
                let wv = _mm512_maskz_loadu_ps(k, w.as_ptr().add(c));
                let bv = _mm512_maskz_loadu_ps(k, b.as_ptr().add(c));
                let y = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(v, m), rstd), wv),
                    bv,
                );
                store_bf16(k, or.add(c), y);
            }
        }
    }

    /// [`super::rms_norm_rows`] of 16 bf16 rows (`x.len()` = 16·`w.len()`), to the bit.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn rms_norm_bf16(x: &[u16], w: &[f32], eps: f32, out: &mut [u16]) {
        let n = w.len();
        assert!(x.len() == NORM_LANES * n && out.len() == x.len());
        let ms = bf16_row_sums::<2>(x, n, &[0f64; 16]).map(|s| s / n as f64);
        for (r, ms) in ms.iter().enumerate() {
            let scale = _mm512_set1_ps(1.0 / (*ms as f32 + eps).sqrt());
            let (xr, or) = (x.as_ptr().add(r * n), out.as_mut_ptr().add(r * n));
            for c in (0..n).step_by(16) {
                let k = live_lanes(n - c);
                let v = load_bf16(k, xr.add(c));
                let wv = _mm512_maskz_loadu_ps(k, w.as_ptr().add(c));
                store_bf16(
                    k,
                    or.add(c),
                    _mm512_mul_ps(wv, round_bf16_ps(_mm512_mul_ps(v, scale))),
                );
            }
        }
    }

    /// The first `min(live, 16)` of 16 lanes.
    #[inline(always)]
    pub fn live_lanes(live: usize) -> __mmask16 {
        if live >= 16 {
            0xffff
        } else {
            (1u16 << live) - 1
        }
    }

    /// The bf16 values at `p` in the lanes of `k`, widened (exact; the others zero).
    #[inline(always)]
    unsafe fn load_bf16(k: __mmask16, p: *const u16) -> __m512 {
        let h = _mm256_maskz_loadu_epi16(k, p as *const i16);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }

    /// `v` rounded to bf16 ([`round_bf16_ps`]) into the lanes of `k` at `p`.
    #[inline(always)]
    unsafe fn store_bf16(k: __mmask16, p: *mut u16, v: __m512) {
        let bits = _mm512_srli_epi32::<16>(_mm512_castps_si512(round_bf16_ps(v)));
        _mm256_mask_storeu_epi16(p as *mut i16, k, _mm512_cvtepi32_epi16(bits));
    }

    /// Round-to-nearest-even to bf16 on 16 lanes, as [`crate::numeric::round_bf16`] (NaN stays NaN).
    #[inline(always)]
    pub unsafe fn round_bf16_ps(v: __m512) -> __m512 {
        let u = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        let r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
        let rounded = _mm512_and_si512(r, _mm512_set1_epi32(0xffff_0000u32 as i32));
        let quiet = _mm512_and_si512(
            _mm512_or_si512(u, _mm512_set1_epi32(0x0040_0000)),
            _mm512_set1_epi32(0xffff_0000u32 as i32),
        );
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, rounded, quiet))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The bf16 numerators and the sum through the full exponential (clamps and mask on every
        /// element), as `softmax_numerators` computed them before it had the in-range pass.
        fn full_exponential(s: &[f32], scale: f32) -> (Vec<u16>, f32) {
            let full = s.len() / 16 * 16;
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
            let mut b = vec![0u16; s.len()];
            // SAFETY: the caller checked AVX-512F/BF16 and FMA.
            let total = unsafe {
                let (sv, mv) = (_mm512_set1_ps(scale), _mm512_set1_ps(max));
                numerator_bits::<false>(&s[..full], sv, mv, &mut b[..full])
            };
            let total = tail_numerators(s, &mut b, full, scale, max, total);
            (b, total)
        }

        #[test]
        fn in_range_numerators_give_the_bits_of_the_full_exponential() {
            if !(is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bf16")
                && is_x86_feature_detected!("fma"))
            {
                return;
            }
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            };
            let scale = 0.125;
            let mut rows: Vec<Vec<f32>> = Vec::new();
            // Score spreads from a few units to just inside and just outside the exponential's
            // range (700 = 87.5 / 0.125), lengths with and without a scalar tail.
            for (spread, len) in [(8.0, 1024), (80.0, 1040), (690.0, 1000), (710.0, 1024)] {
                rows.push((0..len).map(|_| next() * spread / 2.0).collect());
            }
            // The smallest argument exactly at the bound, then one step below it.
            let mut edge: Vec<f32> = (0..64).map(|_| next()).collect();
            edge[0] = 700.0;
            edge[17] = 0.0;
            rows.push(edge.clone());
            edge[17] = -1e-4;
            rows.push(edge);
            // Masked keys, a NaN score, a row of one value.
            let mut masked: Vec<f32> = (0..256).map(|_| next()).collect();
            masked[100..].fill(f32::NEG_INFINITY);
            rows.push(masked);
            let mut nan: Vec<f32> = (0..256).map(|_| next()).collect();
            nan[37] = f32::NAN;
            rows.push(nan);
            rows.push(vec![3.0; 48]);
            for (i, row) in rows.iter().enumerate() {
                let (want, want_sum) = full_exponential(row, scale);
                let mut got = vec![0u16; row.len()];
                let mut s = row.clone();
                // SAFETY: AVX-512F/BF16 and FMA checked above.
                let (_, sum) = unsafe { softmax_numerators(&mut s, scale, true, Some(&mut got)) };
                assert_eq!(got, want, "row {i}: numerators");
                assert_eq!(sum.to_bits(), want_sum.to_bits(), "row {i}: sum");
            }
        }
    }
}
