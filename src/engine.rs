//! The whole pipeline for one checkpoint: processor, model and generation settings, behind one
//! object that the CLI and the C library share. A loaded engine is read-only; each call to
//! [`Engine::generate`] has its own KV cache, so several threads may generate at once.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::ascend::{AscendBackend, AscendDevice, KernelChoice};
use crate::backend::{cpu::CpuBackend, ActDtype, BackendKind};
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
    /// Kernels of the Ascend backend's products and attention.
    pub kernels: KernelChoice,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            dtype: ActDtype::Bf16,
            threads: None,
            backend: BackendKind::Cpu,
            device: 0,
            kernels: KernelChoice::Aclnn,
        }
    }
}

/// A model on the backend it was loaded on. Code that runs the model is generic over
/// [`crate::backend::Backend`]; [`with_model!`](crate::with_model) picks the instance.
// One model per engine, built once and never moved in a hot path: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    /// On the CPU backend.
    Cpu(Idefics3<CpuBackend>),
    /// On an Ascend NPU.
    Ascend(Idefics3<AscendBackend>),
}

/// Runs `$body` with `$m` bound to the [`crate::model::Idefics3`] inside a [`Model`], whatever its
/// backend: `with_model!(&model, m => m.config().text.vocab_size)`.
#[macro_export]
macro_rules! with_model {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            $crate::engine::Model::Cpu($m) => $body,
            $crate::engine::Model::Ascend($m) => $body,
        }
    };
}

impl Model {
    /// The resolved configuration.
    pub fn config(&self) -> &crate::config::ModelConfig {
        with_model!(self, m => m.config())
    }

    /// Which backend runs the model.
    pub fn backend_kind(&self) -> BackendKind {
        match self {
            Model::Cpu(_) => BackendKind::Cpu,
            Model::Ascend(_) => BackendKind::Ascend,
        }
    }

    /// A line describing where the model runs (e.g. "cpu, 2 threads" or "ascend device 0
    /// (Ascend910B3)").
    pub fn placement(&self) -> String {
        match self {
            Model::Cpu(m) => format!("cpu, {} threads", m.backend().threads()),
            Model::Ascend(m) => {
                let d = m.backend().device();
                format!(
                    "ascend device {} ({}), {} kernels",
                    d.device(),
                    d.soc(),
                    m.backend().kernels().as_str()
                )
            }
        }
    }
}

/// Loads a checkpoint's model on the backend `opts` chooses. The device is opened first, so that a
/// missing runtime or a bad device fails before any weight is read.
pub fn load_model(dir: &Path, opts: &EngineOptions) -> Result<Model> {
    match opts.backend {
        BackendKind::Cpu => {
            if opts.kernels != KernelChoice::Aclnn {
                return Err(Error::input(
                    "--kernels custom applies to the ascend backend (our AscendC kernels); the CPU \
                     backend has its own",
                ));
            }
            if opts.device != 0 {
                return Err(Error::input(format!(
                    "device {} was asked for, but the CPU backend has no devices to choose (the device \
                     number applies to the ascend backend)",
                    opts.device
                )));
            }
            Ok(Model::Cpu(Idefics3::load(
                dir,
                CpuBackend::new(opts.dtype, opts.threads)?,
            )?))
        }
        BackendKind::Ascend => {
            let dev = AscendDevice::open(opts.device)?;
            Ok(Model::Ascend(Idefics3::load(
                dir,
                AscendBackend::with_kernels(dev, opts.dtype, opts.kernels)?,
            )?))
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
    model: Model,
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
    pub fn model(&self) -> &Model {
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
        let on_id = |id| match stream.push(id) {
            Ok(Some(piece)) => on_text(&piece),
            Ok(None) => true,
            Err(e) => {
                stream_err = Some(e);
                false
            }
        };
        let gen = with_model!(&self.model, m => generate(
            m,
            &encoded.input_ids,
            encoded.pixels.as_ref(),
            params,
            &self.stop_ids,
            on_id,
        ))?;
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
