//! The whole pipeline for one checkpoint: processor, model and generation settings, behind one
//! object that the CLI and the C library share. A loaded engine is read-only; each call to
//! [`Engine::generate`] has its own KV cache, so several threads may generate at once.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::{ascend::AscendDevice, cpu::CpuBackend, ActDtype, BackendKind};
use crate::config::GenerationConfig;
use crate::error::{Error, Result};
use crate::generate::{generate, SamplingParams, StopReason, Timings};
use crate::model::Idefics3;
use crate::processor::{prompt, stream::TextStream, Encoded, ImageSource, Processor};

/// How to load an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Activation precision.
    pub dtype: ActDtype,
    /// Worker threads of the CPU backend (`None`: one per core).
    pub threads: Option<usize>,
    /// The device the model runs on.
    pub backend: BackendKind,
    /// Device number for [`BackendKind::Ascend`] (must be 0 on the CPU).
    pub device: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            dtype: ActDtype::Bf16,
            threads: None,
            backend: BackendKind::Cpu,
            device: 0,
        }
    }
}

/// Loads a checkpoint's model on the backend `opts` chooses. The device is opened first, so that a
/// missing runtime or a bad device fails before any weight is read.
pub fn load_model(dir: &Path, opts: &EngineOptions) -> Result<Idefics3<CpuBackend>> {
    match opts.backend {
        BackendKind::Cpu => {
            if opts.device != 0 {
                return Err(Error::input(format!(
                    "device {} was asked for, but the CPU backend has no devices to choose (the device \
                     number applies to the ascend backend)",
                    opts.device
                )));
            }
            Idefics3::load(dir, CpuBackend::new(opts.dtype, opts.threads)?)
        }
        BackendKind::Ascend => {
            let dev = AscendDevice::open(opts.device)?;
            Err(Error::Unsupported(format!(
                "the Ascend runtime loaded and device {} ({}) opened, but the Ascend backend's op set \
                 is not implemented yet; use --backend cpu",
                dev.device(),
                dev.soc()
            )))
        }
    }
}

/// The conversation to answer.
#[derive(Debug, Clone)]
pub enum Conversation {
    /// One user turn: the images first, then this text.
    Prompt(String),
    /// Messages in transformers' format (`[{"role": ..., "content": [...]}, ...]`).
    Chat(Value),
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The generated text (special tokens removed).
    pub text: String,
    /// The generated token ids.
    pub ids: Vec<u32>,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Why generation ended.
    pub stop: StopReason,
    /// Stage times.
    pub timings: Timings,
}

/// A loaded checkpoint ready to answer.
pub struct Engine {
    dir: PathBuf,
    model: Idefics3<CpuBackend>,
    processor: Processor,
    generation: GenerationConfig,
    stop_ids: Vec<u32>,
}

impl Engine {
    /// Loads a checkpoint directory (config, weights, tokenizer, processor files).
    pub fn load(dir: &Path, opts: EngineOptions) -> Result<Self> {
        let model = load_model(dir, &opts)?;
        let processor = Processor::load(dir, model.config())?;
        let generation = GenerationConfig::from_dir(dir)?;
        let mut stop_ids = if generation.eos_token_ids.is_empty() {
            model.config().eos_token_ids.clone()
        } else {
            generation.eos_token_ids.clone()
        };
        if let Some(eou) = processor.token_id(prompt::END_OF_UTTERANCE) {
            if !stop_ids.contains(&eou) {
                stop_ids.push(eou);
            }
        }
        Ok(Engine {
            dir: dir.to_path_buf(),
            model,
            processor,
            generation,
            stop_ids,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model.
    pub fn model(&self) -> &Idefics3<CpuBackend> {
        &self.model
    }

    /// The processor.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Ids that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The checkpoint's default decoding settings (greedy unless its generation config samples).
    pub fn default_params(&self) -> SamplingParams {
        let g = &self.generation;
        let mut p = SamplingParams::greedy(g.max_new_tokens.unwrap_or(256));
        if g.do_sample {
            p.temperature = g.temperature.unwrap_or(1.0) as f32;
            p.top_k = g.top_k.unwrap_or(50);
            p.top_p = g.top_p.unwrap_or(1.0) as f32;
        }
        p.repetition_penalty = g.repetition_penalty.unwrap_or(1.0) as f32;
        p
    }

    /// Builds model inputs: the chat template over the conversation (with the generation prompt),
    /// `<image>` expansion, tokenization and image processing.
    pub fn encode<I: ImageSource>(
        &self,
        conversation: &Conversation,
        images: &[I],
    ) -> Result<Encoded> {
        let messages = match conversation {
            Conversation::Prompt(text) => prompt::user_turn(text, images.len()),
            Conversation::Chat(m) => m.clone(),
        };
        let n = prompt::count_image_items(&messages)?;
        if n != images.len() {
            return Err(Error::input(format!(
                "the conversation has {n} image item(s) but {} image(s) were given",
                images.len()
            )));
        }
        let text = self.processor.apply_chat_template(&messages, true)?;
        self.processor.encode(&text, images)
    }

    /// Generates an answer, calling `on_text` with each complete piece of text as it is produced;
    /// `on_text` returning false stops generation.
    pub fn generate(
        &self,
        encoded: &Encoded,
        params: &SamplingParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Answer> {
        let mut stream = TextStream::new(self.processor.tokenizer());
        let mut stream_err = None;
        let gen = generate(
            &self.model,
            &encoded.input_ids,
            encoded.pixels.as_ref(),
            params,
            &self.stop_ids,
            |id| match stream.push(id) {
                Ok(Some(piece)) => on_text(&piece),
                Ok(None) => true,
                Err(e) => {
                    stream_err = Some(e);
                    false
                }
            },
        )?;
        if let Some(e) = stream_err {
            return Err(e);
        }
        if gen.stop != StopReason::Cancelled {
            if let Some(rest) = stream.finish()? {
                on_text(&rest);
            }
        }
        Ok(Answer {
            text: self.processor.decode(&gen.ids, true)?,
            ids: gen.ids,
            prompt_tokens: encoded.input_ids.len(),
            stop: gen.stop,
            timings: gen.timings,
        })
    }
}
