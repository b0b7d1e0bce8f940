//! The `idefics3` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use idefics3::backend::ascend::KernelChoice;
use idefics3::backend::{ActDtype, BackendKind};
use idefics3::config::ModelConfig;
use idefics3::engine::{load_model, Conversation, Engine, EngineOptions};
use idefics3::error::Error;
use idefics3::generate::greedy;
use idefics3::hub::resolve_model;
use idefics3::limits::check_conversation_bytes;
use idefics3::processor::{prompt, ImageFile, Processor};
use idefics3::tensor_io::{check_output, read_inputs, write_tensors, OutTensor};

/// Large blocks on cache lines, so that the AMX kernel reads activation rows in place.
#[global_allocator]
static ALLOC: idefics3::aligned_alloc::CacheLineAlloc = idefics3::aligned_alloc::CacheLineAlloc;

#[derive(Parser)]
#[command(
    name = "idefics3",
    version,
    about = "Idefics3 / SmolVLM inference engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answers a question about images (or a whole conversation), streaming the answer to stdout.
    Generate(GenerateArgs),
    /// Writes the model inputs (input_ids, pixel_values, pixel_attention_mask) that the processor
    /// makes of images and one user turn, as transformers' Idefics3Processor does.
    Preprocess(PreprocessArgs),
    /// Runs the model on tensors saved from the transformers processor and writes the logits of every
    /// position (and, with --greedy N, N greedy tokens) for exact comparison with a reference.
    Forward(ForwardArgs),
    /// Times the stages of one request (load, preprocessing, vision, prefill, first token, decode) over
    /// several runs; medians and peak memory.
    Bench(BenchArgs),
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct BenchArgs {
    /// Checkpoint directory (or a cached / downloadable model id).
    #[arg(long)]
    model: String,
    /// An image file; repeat for several.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// The user's text.
    #[arg(long, default_value = "Describe this image in detail.")]
    prompt: String,
    /// Exactly this many new tokens per run (end-of-sequence ignored).
    #[arg(long, default_value_t = 128, value_parser = count)]
    new_tokens: usize,
    /// Measured runs (medians are reported).
    #[arg(long, default_value_t = 3, value_parser = count)]
    runs: usize,
    /// Unmeasured runs first.
    #[arg(long, default_value_t = 1, value_parser = count)]
    warmup: usize,
    /// Activation precision: bf16, fp16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: ActDtype,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Where the model runs.
#[derive(Args)]
struct DeviceArgs {
    /// The device: cpu, or ascend (an NPU through the CANN runtime, loaded at run time).
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// Device number for --backend ascend.
    #[arg(long, default_value_t = 0)]
    device: u32,
    /// Worker threads of the CPU backend (default: one per core).
    #[arg(long, value_parser = count)]
    threads: Option<usize>,
    /// Kernels of the ascend backend's products and attention: aclnn (CANN's operators), or custom
    /// (our AscendC kernels, bf16/fp16; not yet validated on a real 910B).
    #[arg(long, default_value = "aclnn")]
    kernels: KernelChoice,
}

impl DeviceArgs {
    fn options(&self, dtype: ActDtype) -> EngineOptions {
        EngineOptions {
            dtype,
            threads: self.threads,
            backend: self.backend,
            device: self.device,
            kernels: self.kernels,
        }
    }
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct GenerateArgs {
    /// Checkpoint directory, or a Hugging Face model id (org/name) to take from the cache or download.
    #[arg(long)]
    model: String,
    /// An image file (PNG, JPEG, WebP, GIF, BMP); repeat for several, in order.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// One user turn: the images first, then this text.
    #[arg(long, conflicts_with = "chat", required_unless_present = "chat")]
    prompt: Option<String>,
    /// A JSON file of messages in transformers' format; its image items take the --image files in order.
    #[arg(long)]
    chat: Option<PathBuf>,
    /// Most tokens to generate (default: the checkpoint's generation config, else 256).
    #[arg(long, value_parser = count)]
    max_new_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: greedy unless the checkpoint asks for sampling).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample among the k most likely tokens (0: no limit; default 50 when sampling).
    #[arg(long, value_parser = count)]
    top_k: Option<usize>,
    /// Sample within the smallest set of tokens whose probability reaches p.
    #[arg(long)]
    top_p: Option<f32>,
    /// Penalise tokens already seen (transformers' repetition penalty; 1 is none).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0, value_parser = seed)]
    seed: u64,
    /// Activation precision: bf16, fp16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: ActDtype,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object (text, token ids, timings) instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct PreprocessArgs {
    /// Checkpoint directory (or a cached / downloadable model id).
    #[arg(long)]
    model: String,
    /// An image file; repeat for several, in order.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// The user's text (the images come first in the turn).
    #[arg(long)]
    prompt: String,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct ForwardArgs {
    /// Checkpoint directory (config.json and safetensors weights).
    #[arg(long)]
    model: PathBuf,
    /// safetensors file with input_ids [1, L] and optionally pixel_values [1, T, 3, S, S] and
    /// pixel_attention_mask [1, T, S, S].
    #[arg(long)]
    inputs: PathBuf,
    /// Output safetensors file: logits [L, V] f32, image_features [T*q, H] when pixels were
    /// given, and generated_ids [N] i64 with --greedy.
    #[arg(long)]
    out: PathBuf,
    /// Activation precision: f32 (exact reference), bf16 or fp16 (rounded as transformers in
    /// bfloat16 / float16).
    #[arg(long, default_value = "f32")]
    dtype: ActDtype,
    /// Also generate N greedy tokens (end-of-sequence does not stop it).
    #[arg(long, value_parser = count)]
    greedy: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// A count flag: a whole number ≥ 0, with a message that says so (clap's own reads "-1" as a flag).
fn count(s: &str) -> Result<usize, String> {
    s.trim().parse::<usize>().map_err(|_| {
        if s.trim().starts_with('-') {
            "must be ≥ 0 (a whole number)".to_string()
        } else {
            format!("{s:?} is not a whole number ≥ 0 (at most {})", usize::MAX)
        }
    })
}

/// The sampler's seed: a whole number in 0..2⁶⁴.
fn seed(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        format!(
            "{s:?} is not a seed: expected a whole number from 0 to {}",
            u64::MAX
        )
    })
}

/// stdout was closed by its reader (`| head`): the run ends quietly.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
struct StdoutClosed;

/// Writes to stdout: a closed pipe becomes [`StdoutClosed`], any other failure (a full disk) an
/// error naming stdout.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(stdout_error)
}

fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        Error::io("stdout", e).into()
    }
}

/// `println!` that returns stdout's errors instead of panicking.
macro_rules! outln {
    () => { write_stdout("\n")? };
    ($($t:tt)*) => { write_stdout(&(format!($($t)*) + "\n"))? };
}

/// A line on stderr; a failing stderr is ignored (there is nowhere left to report it).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The error and its causes, each printed once: a cause already included in the text before it
/// (as an I/O error's message is in ours) is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &c;
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Preprocess(a) => run_preprocess(a),
        Command::Forward(a) => run_forward(a),
        Command::Bench(a) => run_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("error: {}", describe(&e)));
            ExitCode::FAILURE
        }
    }
}

/// Reads the image files and their headers; the pixels are decoded only once the prompt is known
/// to fit in the context.
fn load_images(paths: &[PathBuf]) -> Result<Vec<ImageFile>, Error> {
    paths.iter().map(|p| ImageFile::open(p)).collect()
}

fn run_generate(a: GenerateArgs) -> anyhow::Result<()> {
    // Cheap checks first: bad input fails before the weights are read.
    let conversation = match (&a.prompt, &a.chat) {
        (Some(p), _) => {
            check_conversation_bytes(p.len() as u64, "--prompt")?;
            Conversation::Prompt(p.clone())
        }
        (None, Some(path)) => {
            let size = std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
            check_conversation_bytes(size, &path.display().to_string())?;
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
                path: path.clone(),
                message: e.to_string(),
            })?;
            prompt::count_image_items(&v).map_err(|e| e.within(&path.display().to_string()))?;
            Conversation::Chat(v)
        }
        (None, None) => unreachable!("clap requires --prompt or --chat"),
    };
    let images = load_images(&a.images)?;
    let dir = resolve_model(&a.model)?;
    let engine = Engine::load(&dir, a.device.options(a.dtype))?;
    let mut params = engine.default_params();
    if let Some(n) = a.max_new_tokens {
        params.max_new_tokens = n;
    }
    if let Some(t) = a.temperature {
        params.temperature = t;
        if t > 0.0 && a.top_k.is_none() && params.top_k == 0 {
            params.top_k = 50;
        }
    }
    if let Some(k) = a.top_k {
        params.top_k = k;
    }
    if let Some(p) = a.top_p {
        params.top_p = p;
    }
    if let Some(r) = a.repetition_penalty {
        params.repetition_penalty = r;
    }
    params.seed = a.seed;
    params.validate()?;
    let encoded = engine.encode(&conversation, &images)?;
    let stdout = std::io::stdout();
    let mut write_err = None;
    let answer = engine.generate(&encoded, &params, |piece| {
        if !a.json {
            let mut out = stdout.lock();
            // A failed write ends generation: a closed pipe (`| head`) quietly, anything else as an
            // error once generation has stopped.
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_err = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = write_err {
        return Err(stdout_error(e));
    }
    let t = answer.timings;
    let n = answer.ids.len();
    let decode_tok_s = if n > 1 && t.decode_s > 0.0 {
        (n - 1) as f64 / t.decode_s
    } else {
        0.0
    };
    if a.json {
        let v = serde_json::json!({
            "text": answer.text,
            "token_ids": answer.ids,
            "prompt_tokens": answer.prompt_tokens,
            "new_tokens": n,
            "stop_reason": answer.stop.as_str(),
            "timings": {
                "vision_s": t.vision_s,
                "prefill_s": t.prefill_s,
                "ttft_s": t.ttft_s,
                "decode_s": t.decode_s,
                "decode_tok_s": decode_tok_s,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!();
        note(&format!(
            "[{} prompt tokens, {n} new ({}), time to first token {:.2} s, decode {:.1} tok/s]",
            answer.prompt_tokens,
            answer.stop.as_str(),
            t.ttft_s,
            decode_tok_s
        ));
    }
    Ok(())
}

fn run_preprocess(a: PreprocessArgs) -> anyhow::Result<()> {
    check_output(&a.out)?;
    check_conversation_bytes(a.prompt.len() as u64, "--prompt")?;
    let images = load_images(&a.images)?;
    let dir = resolve_model(&a.model)?;
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let processor = Processor::load(&dir, &config)?;
    let text = processor.apply_chat_template(&prompt::user_turn(&a.prompt, images.len()), true)?;
    let enc = processor.encode(&text, &images)?;
    let ids: Vec<i64> = enc.input_ids.iter().map(|&i| i as i64).collect();
    let len = ids.len();
    let mut tensors = vec![("input_ids".to_string(), OutTensor::I64(ids, vec![1, len]))];
    if let Some(px) = enc.pixels {
        let (t, s) = (px.tiles, px.size);
        let mask: Vec<i64> = px
            .mask
            .unwrap_or_else(|| vec![true; t * s * s])
            .iter()
            .map(|&m| m as i64)
            .collect();
        tensors.push((
            "pixel_values".into(),
            OutTensor::F32(px.values, vec![1, t, px.channels, s, s]),
        ));
        tensors.push((
            "pixel_attention_mask".into(),
            OutTensor::I64(mask, vec![1, t, s, s]),
        ));
    }
    write_tensors(&a.out, tensors)?;
    outln!(
        "wrote {}: {len} tokens, {} image(s)",
        a.out.display(),
        images.len()
    );
    Ok(())
}

fn run_forward(a: ForwardArgs) -> anyhow::Result<()> {
    check_output(&a.out)?;
    let inputs = read_inputs(&a.inputs)?;
    let model = load_model(&a.model, &a.device.options(a.dtype))?;
    let n_new = a.greedy.unwrap_or(0);
    let res = idefics3::with_model!(&model, m => greedy(
        m,
        &inputs.input_ids,
        inputs.pixels.as_ref(),
        n_new,
        true,
    ))?;
    let vocab = model.config().text.vocab_size;
    let hidden = model.config().text.hidden_size;
    let len = inputs.input_ids.len();
    let mut summary = format!("wrote {}: logits [{len}, {vocab}]", a.out.display());
    let mut tensors = vec![(
        "logits".to_string(),
        OutTensor::F32(res.prompt_logits, vec![len, vocab]),
    )];
    if let Some(f) = res.image_features {
        let rows = f.len() / hidden;
        summary += &format!(", image_features [{rows}, {hidden}]");
        tensors.push((
            "image_features".into(),
            OutTensor::F32(f, vec![rows, hidden]),
        ));
    }
    if a.greedy.is_some() {
        let listed: Vec<String> = res.ids.iter().map(u32::to_string).collect();
        summary += &format!(", generated_ids [{}]", listed.join(", "));
        let ids: Vec<i64> = res.ids.iter().map(|&i| i as i64).collect();
        let n = ids.len();
        tensors.push(("generated_ids".into(), OutTensor::I64(ids, vec![n])));
    }
    write_tensors(&a.out, tensors)?;
    outln!("{summary}");
    Ok(())
}

fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    if a.runs == 0 {
        return Err(Error::input("--runs must be at least 1").into());
    }
    let dir = resolve_model(&a.model)?;
    let t = std::time::Instant::now();
    let engine = Engine::load(&dir, a.device.options(a.dtype))?;
    let load_s = t.elapsed().as_secs_f64();
    let spec = idefics3::bench::BenchSpec {
        images: a.images.clone(),
        prompt: a.prompt.clone(),
        new_tokens: a.new_tokens,
        runs: a.runs,
        warmup: a.warmup,
    };
    let r = idefics3::bench::run(&engine, load_s, &spec)?;
    let counters = idefics3::bench::decode_counters(&engine, &spec)?;
    let dtype = a.dtype.as_str();
    let model = engine.model();
    let kind = model.backend_kind();
    let (threads, isa) = match model {
        idefics3::engine::Model::Cpu(m) => (
            m.backend().threads(),
            format!("{:?}", idefics3::backend::cpu::matmul::best_isa()),
        ),
        idefics3::engine::Model::Ascend(_) => (0, String::new()),
    };
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = dir.display().to_string().into();
        v["dtype"] = dtype.into();
        v["backend"] = kind.as_str().into();
        v["placement"] = model.placement().into();
        if kind == BackendKind::Cpu {
            v["isa"] = isa.into();
            v["threads"] = threads.into();
        }
        if let Some(c) = &counters {
            v["counters"] = serde_json::to_value(c)?;
            v["estimate_910b"] = serde_json::to_value(c.estimate_910b())?;
        }
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if kind == BackendKind::Cpu {
            outln!("| model | precision | backend | threads | tok/s |");
            outln!("|---|---|---|---|---|");
            outln!(
                "| {name} | {dtype} | cpu ({isa}) | {threads} | {:.2} |",
                r.decode_tok_s
            );
        } else {
            // The original implementation's table, plus where it ran.
            outln!("| model | precision | cards | fa | tokens/s |");
            outln!("|---|---|---|---|---|");
            let fa = match model {
                idefics3::engine::Model::Ascend(m)
                    if m.backend().kernels() == KernelChoice::Custom =>
                {
                    "yes (kernels/flash_attention.cpp)"
                }
                _ => "yes (aclnnFlashAttentionScore)",
            };
            outln!(
                "| {name} | {dtype} | 1 ({}) | {fa} | {:.2} |",
                model.placement(),
                r.decode_tok_s
            );
        }
        outln!();
        outln!("| stage | median of {} runs |", r.runs);
        outln!("|---|---|");
        outln!("| load | {:.3} s |", r.load_s);
        outln!("| preprocessing | {:.3} s |", r.preprocess_s);
        outln!(
            "| vision | {:.3} s ({} tiles, {:.3} s per tile) |",
            r.vision_s,
            r.tiles,
            r.vision_s_per_tile
        );
        outln!(
            "| prefill | {:.1} tok/s ({} prompt tokens) |",
            r.prefill_tok_s,
            r.prompt_tokens
        );
        outln!("| time to first token | {:.3} s |", r.ttft_s);
        outln!(
            "| decode | {:.2} tok/s ({} new tokens) |",
            r.decode_tok_s,
            r.new_tokens
        );
        outln!("| peak RSS | {:.0} MB |", r.peak_rss_mb);
        if kind == BackendKind::Ascend {
            outln!();
            outln!("Stage times above are the device's clock (events) for vision, the host's otherwise.");
        }
        if let Some(c) = &counters {
            let e = c.estimate_910b();
            outln!();
            outln!(
                "| per decoded token (simulator, {} tokens counted) | |",
                c.tokens_counted
            );
            outln!("|---|---|");
            outln!("| launches | {:.1} |", c.decode_launches_per_token);
            outln!("| synchronisations | {:.1} |", c.decode_syncs_per_token);
            outln!("| device to host | {:.0} B |", c.decode_d2h_bytes_per_token);
            outln!("| host to device | {:.0} B |", c.decode_h2d_bytes_per_token);
            outln!(
                "| device memory traffic | {:.1} MB |",
                c.decode_device_bytes_per_token / 1e6
            );
            outln!();
            outln!(
                "ESTIMATE for one 910B (not a measurement): {:.1} tokens/s, from {:.0} GB/s, {:.0} µs \
                 per launch, {:.0} µs per synchronisation; compute time and overlap are left out.",
                e.tokens_per_s,
                e.bandwidth_bytes_per_s / 1e9,
                e.launch_s * 1e6,
                e.sync_s * 1e6
            );
        }
    }
    Ok(())
}
