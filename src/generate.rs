//! Token generation over a loaded model: prefill once, then one token per step with the KV cache.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::{Idefics3, PixelInput};

/// Index of the largest logit; the first one on ties (as `torch.argmax`), NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// What a greedy run produced.
pub struct GreedyOutput {
    /// Prefill logits: `[L, V]` with `all_logits`, else `[1, V]`.
    pub prompt_logits: Vec<f32>,
    /// Image features merged into the prompt, if any.
    pub image_features: Option<Vec<f32>>,
    /// The generated tokens.
    pub ids: Vec<u32>,
    /// For each generated token, the logits it was chosen from.
    pub step_logits: Vec<Vec<f32>>,
}

/// Greedy decoding of exactly `n` tokens (end-of-sequence does not stop it).
pub fn greedy<B: Backend>(
    model: &Idefics3<B>,
    ids: &[u32],
    pixels: Option<&PixelInput>,
    n: usize,
    all_logits: bool,
) -> Result<GreedyOutput> {
    let mut cache = model.new_cache(ids.len() + n);
    let pre = model.prefill(ids, pixels, &mut cache, all_logits)?;
    let vocab = model.config().text.vocab_size;
    let last = pre.logits[pre.logits.len() - vocab..].to_vec();
    let mut out = GreedyOutput {
        prompt_logits: pre.logits,
        image_features: pre.image_features,
        ids: Vec::with_capacity(n),
        step_logits: Vec::with_capacity(n),
    };
    let mut logits = last;
    for step in 0..n {
        let next = argmax(&logits);
        out.ids.push(next);
        out.step_logits.push(std::mem::take(&mut logits));
        if step + 1 < n {
            logits = model.decode_step(next, &mut cache)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), 1);
    }
}
