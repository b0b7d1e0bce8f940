//! Rotary inverse frequencies, computed in f32 with the same operations as transformers
//! (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_llama3_parameters`), so that angles agree to the last bit where libm agrees.

use crate::config::{RopeConfig, RopeScaling};

/// `inv_freq[i]` for i in 0..head_dim/2.
pub fn inv_freq(rope: &RopeConfig, head_dim: usize) -> Vec<f32> {
    let base = rope.theta as f32;
    let dim = head_dim as f32;
    let plain: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0f32 / base.powf((2 * i) as f32 / dim))
        .collect();
    match rope.scaling {
        RopeScaling::Default => plain,
        RopeScaling::Linear { factor } => plain.iter().map(|&f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let low_wavelen = (old / low_freq_factor) as f32;
            let high_wavelen = (old / high_freq_factor) as f32;
            let factor = factor as f32;
            plain
                .iter()
                .map(|&f| {
                    let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    if wavelen < high_wavelen || wavelen > low_wavelen {
                        scaled
                    } else {
                        let smooth = (old as f32 / wavelen - low_freq_factor as f32)
                            / (high_freq_factor - low_freq_factor) as f32;
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies() {
        let f = inv_freq(
            &RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::Default,
            },
            4,
        );
        assert_eq!(f, vec![1.0, 0.01]);
    }

    #[test]
    fn llama3_scaling_has_three_bands() {
        // theta 10000, head_dim 8: frequencies 1, 0.1, 0.01, 0.001, wavelengths 6.28, 62.8, 628, 6283.
        // original context 1000 with low 1, high 4: band edges at wavelengths 250 and 1000.
        let rope = RopeConfig {
            theta: 10000.0,
            scaling: RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 1000.0,
            },
        };
        let f = inv_freq(&rope, 8);
        assert_eq!(f[0], 1.0); // short wavelength: kept
        assert!((f[1] - 0.1).abs() < 1e-7); // below 250: kept
                                            // 628 lies between 250 and 1000: smooth = (1000/628.3 - 1)/3 ≈ 0.1972, blend of f/8 and f.
        let smooth = (1000.0 / (2.0 * std::f64::consts::PI / 0.01) - 1.0) / 3.0;
        let want = (1.0 - smooth) * 0.01 / 8.0 + smooth * 0.01;
        assert!((f[2] as f64 - want).abs() < 1e-8, "{} vs {want}", f[2]);
        assert!((f[3] - 0.001 / 8.0).abs() < 1e-9); // long wavelength: divided by the factor
    }
}
