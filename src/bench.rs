//! `idefics3 bench`: the stages of one request (preprocessing, vision, prefill, first token, decode)
//! timed over several runs on a loaded engine, with medians and the process's peak memory.

use std::path::PathBuf;
use std::time::Instant;

use crate::engine::{Conversation, Engine};
use crate::error::{Error, Result};
use crate::generate::SamplingParams;
use crate::processor::ImageFile;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Image files of the request.
    pub images: Vec<PathBuf>,
    /// The user's text.
    pub prompt: String,
    /// Exactly this many tokens are generated (end-of-sequence ignored).
    pub new_tokens: usize,
    /// Measured runs.
    pub runs: usize,
    /// Unmeasured runs first.
    pub warmup: usize,
}

/// Medians over the measured runs (seconds unless named otherwise).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Engine load (config, weights mapping, tokenizer), once.
    pub load_s: f64,
    /// Image decoding, image processing, chat template and tokenization.
    pub preprocess_s: f64,
    /// Vision tower and connector, per tile.
    pub vision_s_per_tile: f64,
    /// Vision tower and connector, all tiles.
    pub vision_s: f64,
    /// Prompt tokens per second of prefill (vision included).
    pub prefill_tok_s: f64,
    /// From the start of generation to the first new token (prefill included, preprocessing not).
    pub ttft_s: f64,
    /// New tokens per second after the first.
    pub decode_tok_s: f64,
    /// Peak resident memory of the process (VmHWM), MB.
    pub peak_rss_mb: f64,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated per run.
    pub new_tokens: usize,
    /// Tiles of the images.
    pub tiles: usize,
    /// Measured runs.
    pub runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process in MB, from /proc (0 where unavailable).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the request `warmup + runs` times and reports medians of the measured runs.
pub fn run(engine: &Engine, load_s: f64, spec: &BenchSpec) -> Result<BenchReport> {
    let mut pre = Vec::new();
    let mut vision = Vec::new();
    let mut prefill_rate = Vec::new();
    let mut ttft = Vec::new();
    let mut decode = Vec::new();
    let (mut prompt_tokens, mut tiles) = (0, 0);
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(spec.new_tokens)
    };
    for run in 0..spec.warmup + spec.runs {
        let t = Instant::now();
        let images = spec
            .images
            .iter()
            .map(|p| ImageFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let enc = engine.encode(&Conversation::Prompt(spec.prompt.clone()), &images)?;
        let context = engine.model().config().text.max_position_embeddings;
        let room = context.saturating_sub(enc.input_ids.len());
        if spec.new_tokens > room {
            return Err(Error::input(format!(
                "--new-tokens {}: the prompt has {} tokens and the model's context holds {context} \
                 (max_position_embeddings): at most {room} new tokens fit",
                spec.new_tokens,
                enc.input_ids.len()
            )));
        }
        let pre_s = t.elapsed().as_secs_f64();
        let answer = engine.generate(&enc, &params, |_| true)?;
        if run < spec.warmup {
            continue;
        }
        let tm = answer.timings;
        prompt_tokens = answer.prompt_tokens;
        tiles = enc.pixels.as_ref().map_or(0, |p| p.tiles);
        pre.push(pre_s);
        vision.push(tm.vision_s);
        prefill_rate.push(prompt_tokens as f64 / tm.prefill_s);
        ttft.push(tm.ttft_s);
        let n = answer.ids.len();
        decode.push(if n > 1 {
            (n - 1) as f64 / tm.decode_s
        } else {
            0.0
        });
    }
    let vision_s = median(vision);
    Ok(BenchReport {
        load_s,
        preprocess_s: median(pre),
        vision_s_per_tile: if tiles > 0 {
            vision_s / tiles as f64
        } else {
            0.0
        },
        vision_s,
        prefill_tok_s: median(prefill_rate),
        ttft_s: median(ttft),
        decode_tok_s: median(decode),
        peak_rss_mb: peak_rss_mb(),
        prompt_tokens,
        new_tokens: spec.new_tokens,
        tiles,
        runs: spec.runs,
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
