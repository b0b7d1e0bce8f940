//! Row-wise and element-wise kernels: norms, activations, rotary embedding. Each computes in f32 and,
//! with `round`, rounds where transformers in bfloat16 rounds.

use crate::numeric::round_bf16;

#[inline(always)]
fn r(v: f32, round: bool) -> f32 {
    if round {
        round_bf16(v)
    } else {
        v
    }
}

/// LayerNorm of one row: statistics in f64 for accuracy, affine in f32, one rounding.
pub fn layer_norm_row(x: &[f32], w: &[f32], b: &[f32], eps: f32, round: bool, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
    let mean = mean as f32;
    for i in 0..x.len() {
        out[i] = r((x[i] - mean) * rstd * w[i] + b[i], round);
    }
}

/// RMSNorm of one row: normalised in f32, rounded, then multiplied by the weight (and rounded).
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, round: bool, out: &mut [f32]) {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let scale = 1.0 / (ms as f32 + eps).sqrt();
    for i in 0..x.len() {
        out[i] = r(w[i] * r(x[i] * scale, round), round);
    }
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`), in place.
pub fn gelu_tanh(x: &mut [f32], round: bool) {
    const BETA: f32 = 0.797_884_6; // sqrt(2/pi)
    const KAPPA: f32 = 0.044715;
    for v in x.iter_mut() {
        let a = *v;
        let inner = BETA * (a + KAPPA * a * a * a);
        *v = r(0.5 * a * (1.0 + inner.tanh()), round);
    }
}

/// `silu(gate) ⊙ up`; in bf16 the activation is rounded before the product, as in `act(g) * u`.
pub fn silu_mul(gate: &[f32], up: &[f32], round: bool, out: &mut [f32]) {
    for i in 0..gate.len() {
        let g = gate[i];
        let s = r(g / (1.0 + (-g).exp()), round);
        out[i] = r(s * up[i], round);
    }
}

/// Rotary embedding of every head in one row (half-split convention): angles `pos·inv_freq` in f32,
/// cos/sin rounded to the activation dtype, each product and sum rounded as in transformers.
pub fn rope_row(row: &mut [f32], head_dim: usize, pos: u32, inv_freq: &[f32], round: bool) {
    let half = head_dim / 2;
    debug_assert_eq!(inv_freq.len(), half);
    let mut cs = [(0f32, 0f32); 256];
    let cs = if half <= 256 {
        &mut cs[..half]
    } else {
        // Heads wider than 512 are not in any Idefics3 checkpoint; stay correct anyway.
        return rope_row_wide(row, head_dim, pos, inv_freq, round);
    };
    for (i, c) in cs.iter_mut().enumerate() {
        let angle = pos as f32 * inv_freq[i];
        *c = (r(angle.cos(), round), r(angle.sin(), round));
    }
    for head in row.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (c, s) = cs[i];
            let (x1, x2) = (lo[i], hi[i]);
            lo[i] = r(r(x1 * c, round) - r(x2 * s, round), round);
            hi[i] = r(r(x2 * c, round) + r(x1 * s, round), round);
        }
    }
}

fn rope_row_wide(row: &mut [f32], head_dim: usize, pos: u32, inv_freq: &[f32], round: bool) {
    let half = head_dim / 2;
    for head in row.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let angle = pos as f32 * inv_freq[i];
            let (c, s) = (r(angle.cos(), round), r(angle.sin(), round));
            let (x1, x2) = (head[i], head[i + half]);
            head[i] = r(r(x1 * c, round) - r(x2 * s, round), round);
            head[i + half] = r(r(x2 * c, round) + r(x1 * s, round), round);
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
        rope_row(&mut row, 4, 1, &[1.0, 0.5], false);
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
        rope_row(&mut row0, 4, 0, &[1.0, 0.5], false);
        assert_eq!(row0, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn norms_match_hand_computation() {
        let mut out = [0f32; 4];
        rms_norm_row(
            &[1.0, -1.0, 1.0, -1.0],
            &[2.0, 2.0, 2.0, 2.0],
            0.0,
            false,
            &mut out,
        );
        assert_eq!(out, [2.0, -2.0, 2.0, -2.0]);
        layer_norm_row(
            &[1.0, 3.0],
            &[1.0, 1.0],
            &[0.5, 0.0],
            0.0,
            false,
            &mut out[..2],
        );
        assert_eq!(&out[..2], &[-0.5, 1.0]);
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
