//! Images and conversations to model inputs, exactly as transformers' `Idefics3Processor` (PIL path)
//! builds them: pixel values and masks from the image processor, the chat template, `<image>`
//! expansion, and tokenization with the checkpoint's `tokenizer.json`.

pub mod image;
pub mod prompt;
pub mod resize;
pub mod stream;
pub mod tiling;

use std::path::Path;

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::config::{ModelConfig, ProcessorConfig};
use crate::error::{Error, Result};
use crate::model::PixelInput;
pub use image::RgbImage;

/// Model inputs for one sample.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// Pixel values and mask, when images were given.
    pub pixels: Option<PixelInput>,
}

/// The processor of one checkpoint.
pub struct Processor {
    config: ProcessorConfig,
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    /// Special-token strings passed to the chat template (`bos_token`, `eos_token`, ...).
    template_vars: Value,
}

impl Processor {
    /// Loads the processor settings, tokenizer and chat template of a checkpoint directory.
    pub fn load(dir: &Path, model: &ModelConfig) -> Result<Self> {
        let config = ProcessorConfig::from_dir(dir, model)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::io(
                &tok_path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the checkpoint has no tokenizer.json",
                ),
            ));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| Error::Json {
            path: tok_path.clone(),
            message: format!("not a tokenizer: {e}"),
        })?;
        // The processor registers these as special tokens; checkpoints already have them.
        let specials: Vec<AddedToken> = [
            prompt::FAKE_IMAGE_TOKEN,
            prompt::IMAGE_TOKEN,
            prompt::END_OF_UTTERANCE,
        ]
        .iter()
        .filter(|t| tokenizer.token_to_id(t).is_none())
        .map(|t| AddedToken::from(*t, true))
        .collect();
        if !specials.is_empty() {
            tokenizer
                .add_special_tokens(specials)
                .map_err(|e| Error::Json {
                    path: tok_path.clone(),
                    message: format!("cannot add the image tokens: {e}"),
                })?;
        }
        let image_id = tokenizer
            .token_to_id(prompt::IMAGE_TOKEN)
            .expect("added above");
        if image_id != model.image_token_id {
            return Err(Error::Config {
                file: tok_path.display().to_string(),
                field: "added_tokens".into(),
                message: format!(
                    "<image> is token {image_id} in the tokenizer but image_token_id is {} in config.json",
                    model.image_token_id
                ),
            });
        }
        let template_vars = special_token_strings(dir)?;
        Ok(Processor {
            config,
            tokenizer,
            chat_template: prompt::find_chat_template(dir)?,
            template_vars,
        })
    }

    /// The resolved settings.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The id of a token string, if the vocabulary has it as one token.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Renders a conversation with the checkpoint's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        prompt::count_image_items(messages)?;
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::input(
                "the checkpoint has no chat template (chat_template.jinja, chat_template.json, or \
                 chat_template in processor_config.json / tokenizer_config.json)",
            )
        })?;
        prompt::render_chat(
            template,
            messages,
            add_generation_prompt,
            &self.template_vars,
        )
    }

    /// Runs the image processor over the images of one sample.
    pub fn process_images(&self, images: &[RgbImage]) -> (PixelInput, Vec<(usize, usize)>) {
        let m = self.config.image.max_image_size;
        let mut values = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        let mut tiles = 0;
        for img in images {
            let t = tiling::process_image(img, &self.config.image);
            grids.push((t.rows, t.cols));
            tiles += t.tiles.len();
            for tile in t.tiles {
                values.extend(tile);
            }
        }
        let pixels = PixelInput {
            tiles,
            channels: 3,
            size: m,
            values,
            mask: Some(vec![true; tiles * m * m]),
        };
        (pixels, grids)
    }

    /// Expands `<image>` markers of an already rendered prompt for `images`, tokenizes it (special
    /// tokens added as the processor does) and processes the images.
    pub fn encode(&self, text: &str, images: &[RgbImage]) -> Result<Encoded> {
        let (pixels, grids) = if images.is_empty() {
            (None, Vec::new())
        } else {
            let (p, g) = self.process_images(images);
            (Some(p), g)
        };
        let expanded = prompt::expand_images(text, &grids, self.config.image_seq_len)?;
        let enc = self
            .tokenizer
            .encode(expanded.as_str(), true)
            .map_err(|e| Error::input(format!("tokenization failed: {e}")))?;
        Ok(Encoded {
            input_ids: enc.get_ids().to_vec(),
            pixels,
        })
    }

    /// Decodes token ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::input(format!("detokenization failed: {e}")))
    }
}

/// `bos_token`, `eos_token`, `pad_token`, `unk_token` of `tokenizer_config.json`, for the template.
fn special_token_strings(dir: &Path) -> Result<Value> {
    let path = dir.join("tokenizer_config.json");
    let mut vars = serde_json::Map::new();
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            let s = match v.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => {
                    o.get("content").and_then(Value::as_str).map(str::to_string)
                }
                _ => None,
            };
            if let Some(s) = s {
                vars.insert(key.into(), Value::String(s));
            }
        }
    }
    Ok(Value::Object(vars))
}
