//! Token generation over a loaded model: prefill once, then one token per step with the KV cache;
//! transformers' logits processors in its order (repetition penalty, temperature, top-k, top-p),
//! seeded sampling, stop conditions.

use std::time::Instant;

use crate::backend::Backend;
use crate::error::{Error, Result};
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

/// Decoding settings. Temperature 0 means greedy.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 selects greedy decoding.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: no limit).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: no limit).
    pub top_p: f32,
    /// transformers' repetition penalty over every token seen so far (1: none).
    pub repetition_penalty: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// Keep generating through end-of-sequence tokens (benchmarks need exactly `max_new_tokens`).
    pub ignore_eos: bool,
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        SamplingParams {
            max_new_tokens,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            ignore_eos: false,
        }
    }

    /// Checks the values, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::input(format!(
                "temperature {} must be ≥ 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::input(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::input(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// splitmix64: a small, well-mixed generator; reproducible for a given seed (not torch's stream).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Chooses tokens from logits with transformers' processors applied in its order.
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    seen: Vec<bool>,
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` tokens that has already seen `prompt`.
    pub fn new(params: SamplingParams, vocab: usize, prompt: &[u32]) -> Self {
        let mut seen = vec![false; vocab];
        for &t in prompt {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        let seed = params.seed;
        Sampler {
            params,
            rng: Rng(seed),
            seen,
        }
    }

    /// Picks the next token and records it as seen.
    pub fn next(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for (l, &s) in logits.iter_mut().zip(&self.seen) {
                if s {
                    *l = if *l < 0.0 {
                        *l * p.repetition_penalty
                    } else {
                        *l / p.repetition_penalty
                    };
                }
            }
        }
        let token = if p.temperature == 0.0 {
            argmax(logits)
        } else {
            self.sample(logits)
        };
        if let Some(s) = self.seen.get_mut(token as usize) {
            *s = true;
        }
        token
    }

    fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        for l in logits.iter_mut() {
            *l /= p.temperature;
        }
        // Candidates sorted by logit, best first (stable: lower ids win ties).
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let mut keep = order.len();
        if p.top_k > 0 {
            keep = keep.min(p.top_k);
        }
        let max = logits[order[0] as usize];
        let probs: Vec<f64> = order[..keep]
            .iter()
            .map(|&t| ((logits[t as usize] - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        if p.top_p < 1.0 {
            // transformers removes a token when the ascending cumulative probability up to it is
            // ≤ 1 − top_p: in descending order, a token stays while the mass before it is < top_p.
            let mut before = 0.0;
            let mut n = 0;
            for &pr in &probs {
                if before >= p.top_p as f64 {
                    break;
                }
                n += 1;
                before += pr / total;
            }
            keep = n.max(1);
        }
        let mass: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * mass;
        for (i, &pr) in probs[..keep].iter().enumerate() {
            if r < pr {
                return order[i];
            }
            r -= pr;
        }
        order[keep - 1]
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-sequence token was generated (it is included in the ids).
    EndOfSequence,
    /// The requested number of tokens was reached.
    MaxTokens,
    /// The model's context length was reached.
    ContextFull,
    /// The token callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfSequence => "eos",
            StopReason::MaxTokens => "max_new_tokens",
            StopReason::ContextFull => "context_length",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// Wall-clock times of one generation, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Vision tower and connector (inside prefill).
    pub vision_s: f64,
    /// The whole prefill (vision included).
    pub prefill_s: f64,
    /// From the start to the first generated token.
    pub ttft_s: f64,
    /// All decode steps after the first token.
    pub decode_s: f64,
}

/// What a generation produced.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated token ids (an end-of-sequence token included).
    pub ids: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Stage times.
    pub timings: Timings,
}

/// Generates after a prompt: prefill, then one token per step, until an id of `stop_ids`, the token
/// budget, the context length, or `on_token` returning false.
pub fn generate<B: Backend>(
    model: &Idefics3<B>,
    ids: &[u32],
    pixels: Option<&PixelInput>,
    params: &SamplingParams,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    params.validate()?;
    let context = model.config().text.max_position_embeddings;
    if ids.len() >= context {
        return Err(Error::input(format!(
            "the prompt has {} tokens but the model's context holds {context} (max_position_embeddings): \
             no room to generate",
            ids.len()
        )));
    }
    let start = Instant::now();
    let budget = params.max_new_tokens.min(context - ids.len());
    check_cache_memory(model, ids.len() + budget)?;
    let mut cache = model.new_cache(ids.len() + budget)?;
    let pre = model.prefill(ids, pixels, &mut cache, false)?;
    model.check_logits(&pre.logits, "after the prompt")?;
    let mut timings = Timings {
        vision_s: pre.vision_seconds(model.backend())?,
        prefill_s: start.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut sampler = Sampler::new(params.clone(), model.config().text.vocab_size, ids);
    // Plain greedy decoding needs no logits on the host: the backend picks the token.
    let on_device = params.temperature == 0.0 && params.repetition_penalty == 1.0;
    let mut logits = pre.logits;
    let mut chosen: Option<u32> = None;
    let mut out = Vec::with_capacity(budget);
    let mut decode_start = None;
    let stop = loop {
        if out.len() == params.max_new_tokens {
            break StopReason::MaxTokens;
        }
        if out.len() == budget {
            break StopReason::ContextFull;
        }
        let next = match chosen.take() {
            Some(id) => id,
            None => sampler.next(&mut logits),
        };
        out.push(next);
        if out.len() == 1 {
            timings.ttft_s = start.elapsed().as_secs_f64();
            decode_start = Some(Instant::now());
        }
        if !on_token(next) {
            break StopReason::Cancelled;
        }
        if !params.ignore_eos && stop_ids.contains(&next) {
            break StopReason::EndOfSequence;
        }
        if out.len() < budget && out.len() < params.max_new_tokens {
            if on_device {
                match model.decode_step_greedy(next, &mut cache)? {
                    Some(id) => chosen = Some(id),
                    None => {
                        return Err(
                            model.nonfinite_logits(&format!("at new token {}", out.len() + 1))
                        )
                    }
                }
            } else {
                logits = model.decode_step(next, &mut cache)?;
                model.check_logits(&logits, &format!("at new token {}", out.len() + 1))?;
            }
        }
    };
    timings.decode_s = decode_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(Generation {
        ids: out,
        stop,
        timings,
    })
}

/// Refuses a KV cache for `positions` positions that could not fit in this machine's memory, before
/// it is allocated (an allocation that fails aborts the process).
fn check_cache_memory<B: Backend>(model: &Idefics3<B>, positions: usize) -> Result<()> {
    let t = &model.config().text;
    let bytes = (t.num_key_value_heads as u128)
        * t.head_dim as u128
        * t.num_hidden_layers as u128
        * 2 // keys and values
        * 4 // at most f32 per element
        * positions as u128;
    let physical = physical_memory_bytes();
    if bytes > physical as u128 {
        return Err(Error::input(format!(
            "the KV cache for {positions} positions needs {:.1} GB but this machine has {:.1} GB of memory",
            bytes as f64 / 1e9,
            physical as f64 / 1e9
        )));
    }
    Ok(())
}

/// Physical memory of the machine (u64::MAX when it cannot be found).
fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf reads system constants and has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || size <= 0 {
        return u64::MAX;
    }
    (pages as u64).saturating_mul(size as u64)
}

/// What a greedy run for parity checks produced.
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

/// Greedy decoding of exactly `n` tokens (end-of-sequence does not stop it), keeping every logit.
pub fn greedy<B: Backend>(
    model: &Idefics3<B>,
    ids: &[u32],
    pixels: Option<&PixelInput>,
    n: usize,
    all_logits: bool,
) -> Result<GreedyOutput> {
    let context = model.config().text.max_position_embeddings;
    if ids.len() > context {
        return Err(Error::input(format!(
            "the inputs hold {} tokens but the model's context holds {context} (max_position_embeddings)",
            ids.len()
        )));
    }
    if n > context - ids.len() {
        return Err(Error::input(format!(
            "{n} greedy tokens after {} input tokens exceed the model's context of {context} \
             (max_position_embeddings): at most {} fit",
            ids.len(),
            context - ids.len()
        )));
    }
    check_cache_memory(model, ids.len() + n)?;
    let mut cache = model.new_cache(ids.len() + n)?;
    let pre = model.prefill(ids, pixels, &mut cache, all_logits)?;
    model.check_logits(&pre.logits, "after the prompt")?;
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
            model.check_logits(&logits, &format!("at new token {}", step + 2))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0, -2.0]), 1);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        // Seen tokens: positive logits divided, negative multiplied.
        let mut s = Sampler::new(
            SamplingParams {
                repetition_penalty: 2.0,
                ..SamplingParams::greedy(1)
            },
            4,
            &[0, 1],
        );
        let mut logits = [3.0, -1.0, 2.0, -5.0];
        assert_eq!(s.next(&mut logits), 2);
        assert_eq!(logits, [1.5, -2.0, 2.0, -5.0]);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_candidates() {
        let logits = [0.0f32, 5.0, 4.9, -3.0, 4.8];
        for seed in 0..200 {
            let mut s = Sampler::new(
                SamplingParams {
                    temperature: 1.0,
                    top_k: 2,
                    seed,
                    ..SamplingParams::greedy(1)
                },
                5,
                &[],
            );
            let t = s.next(&mut logits.clone());
            assert!(t == 1 || t == 2, "top-k 2 drew {t}");
            let mut s = Sampler::new(
                SamplingParams {
                    temperature: 1.0,
                    top_p: 0.3,
                    seed,
                    ..SamplingParams::greedy(1)
                },
                5,
                &[],
            );
            // p(1) ≈ 0.35 ≥ 0.3 on its own: only token 1 survives.
            assert_eq!(s.next(&mut logits.clone()), 1);
        }
    }

    #[test]
    fn sampling_is_reproducible_per_seed_and_varies_across_seeds() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(
                SamplingParams {
                    temperature: 1.0,
                    seed,
                    ..SamplingParams::greedy(1)
                },
                50,
                &[],
            );
            (0..20)
                .map(|_| s.next(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn bad_params_are_named() {
        let e = SamplingParams {
            top_p: 0.0,
            ..SamplingParams::greedy(1)
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("top_p"), "{e}");
        assert!(SamplingParams {
            temperature: -1.0,
            ..SamplingParams::greedy(1)
        }
        .validate()
        .is_err());
    }
}
