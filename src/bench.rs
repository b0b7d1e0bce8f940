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

/// What the simulated device did per decoded token, from the simulator's counters: the difference
/// between a request that decodes `1 + n` tokens and the same request that decodes one, over `n`
/// (so the vision tower, the prefill and the first token cancel out).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeCounters {
    /// Operators, kernels, copies and memsets enqueued.
    pub decode_launches_per_token: f64,
    /// Host waits (stream, device and event synchronisations).
    pub decode_syncs_per_token: f64,
    /// Bytes copied from the device to the host.
    pub decode_d2h_bytes_per_token: f64,
    /// Bytes copied from the host to the device.
    pub decode_h2d_bytes_per_token: f64,
    /// Device memory read and written by the device's work.
    pub decode_device_bytes_per_token: f64,
    /// Tokens the difference was taken over.
    pub tokens_counted: usize,
}

/// Constants of the 910B estimate.
pub const EST_BANDWIDTH_BYTES_PER_S: f64 = 1.4e12;
/// Host and device cost of one launch of a single aclnn operator (phase 1, phase 2, the launch).
pub const EST_LAUNCH_S: f64 = 10e-6;
/// Cost of one host synchronisation with the device.
pub const EST_SYNC_S: f64 = 20e-6;

/// Tokens per second an Ascend 910B would reach if decoding cost only what the counters measure:
/// the device bytes at the card's bandwidth, plus a fixed cost per launch and per synchronisation.
/// An estimate, not a measurement: it leaves out compute time and overlap.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Estimate910b {
    /// Assumed memory bandwidth (bytes per second).
    pub bandwidth_bytes_per_s: f64,
    /// Assumed cost of one launch (seconds).
    pub launch_s: f64,
    /// Assumed cost of one synchronisation (seconds).
    pub sync_s: f64,
    /// Estimated seconds per decoded token.
    pub seconds_per_token: f64,
    /// Estimated decoded tokens per second.
    pub tokens_per_s: f64,
    /// Says what this is.
    pub note: &'static str,
}

impl DecodeCounters {
    /// The 910B estimate these counters imply (constants above).
    pub fn estimate_910b(&self) -> Estimate910b {
        let s = self.decode_device_bytes_per_token / EST_BANDWIDTH_BYTES_PER_S
            + self.decode_launches_per_token * EST_LAUNCH_S
            + self.decode_syncs_per_token * EST_SYNC_S;
        Estimate910b {
            bandwidth_bytes_per_s: EST_BANDWIDTH_BYTES_PER_S,
            launch_s: EST_LAUNCH_S,
            sync_s: EST_SYNC_S,
            seconds_per_token: s,
            tokens_per_s: if s > 0.0 { 1.0 / s } else { 0.0 },
            note: "estimate from simulator counters, not a measurement",
        }
    }
}

/// Totals of one counters snapshot that [`DecodeCounters`] differences.
#[derive(Default, Clone, Copy)]
struct Totals {
    launches: f64,
    syncs: f64,
    d2h: f64,
    h2d: f64,
    device: f64,
}

fn totals(v: &serde_json::Value) -> Totals {
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let sum_map = |v: &serde_json::Value| {
        v.as_object()
            .map_or(0.0, |m| m.values().map(|x| x.as_f64().unwrap_or(0.0)).sum())
    };
    let mut t = Totals::default();
    for s in v["streams"].as_array().into_iter().flatten() {
        t.launches += sum_map(&s["ops"])
            + sum_map(&s["kernel_launches"])
            + sum_map(&s["copies"])
            + n(&s["memsets"]);
        t.syncs += n(&s["host_syncs"]);
        t.d2h += n(&s["copy_bytes"]["d2h"]);
        t.h2d += n(&s["copy_bytes"]["h2d"]);
        t.device += n(&s["bytes_read"]) + n(&s["bytes_written"]);
    }
    t.syncs += n(&v["event_syncs"]);
    t.d2h += n(&v["sync_copy_bytes"]["d2h"]);
    t.h2d += n(&v["sync_copy_bytes"]["h2d"]);
    t
}

/// Counts the device's work per decoded token on the simulator (`None` on a real runtime or on the
/// CPU backend): the request of `spec` decoding one token, then `1 + n` tokens, n = `spec.new_tokens`
/// − 1 (at least 1).
pub fn decode_counters(engine: &Engine, spec: &BenchSpec) -> Result<Option<DecodeCounters>> {
    use crate::backend::ascend::sim;
    if engine.model().backend_kind() != crate::backend::BackendKind::Ascend || !sim::is_simulator()
    {
        return Ok(None);
    }
    let images = spec
        .images
        .iter()
        .map(|p| ImageFile::open(p))
        .collect::<Result<Vec<_>>>()?;
    let enc = engine.encode(&Conversation::Prompt(spec.prompt.clone()), &images)?;
    let n = spec.new_tokens.saturating_sub(1).max(1);
    let snap = |tokens: usize| -> Result<Totals> {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(tokens)
        };
        sim::reset_counters();
        engine.generate(&enc, &params, |_| true)?;
        Ok(sim::counters().map(|v| totals(&v)).unwrap_or_default())
    };
    // A first request leaves the backend's per-step state (e.g. its cached rotary rows) as every
    // later one finds it, so the two counted requests start alike.
    snap(1)?;
    let (one, many) = (snap(1)?, snap(1 + n)?);
    let per = |a: f64, b: f64| (b - a) / n as f64;
    Ok(Some(DecodeCounters {
        decode_launches_per_token: per(one.launches, many.launches),
        decode_syncs_per_token: per(one.syncs, many.syncs),
        decode_d2h_bytes_per_token: per(one.d2h, many.d2h),
        decode_h2d_bytes_per_token: per(one.h2d, many.h2d),
        decode_device_bytes_per_token: per(one.device, many.device),
        tokens_counted: n,
    }))
}
