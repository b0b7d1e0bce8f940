//! Images and conversations to model inputs, exactly as transformers' `Idefics3Processor` (PIL path)
//! builds them: pixel values and masks from the image processor, the chat template, `<image>`
//! expansion, and tokenization with the checkpoint's `tokenizer.json`.

pub mod image;
pub mod prompt;
pub mod resize;
pub mod source;
pub mod stream;
mod template_guard;
pub mod tiling;

use std::path::Path;

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::config::{ModelConfig, ProcessorConfig};
use crate::error::{Error, Result};
use crate::model::PixelInput;
pub use image::RgbImage;
pub use source::{AnyImage, ImageFile, ImageSource};

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
    /// The model's context length (`max_position_embeddings`): longer prompts are refused.
    context: usize,
    /// Bytes of the longest vocabulary entry: a text of `n` bytes has at least
    /// `n / longest_token` tokens, which bounds a prompt's length before it is tokenized.
    longest_token: usize,
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
        let bytes = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
        let mut tokenizer = parse_tokenizer(&bytes, &tok_path)?;
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
        let longest_token = tokenizer
            .get_vocab(true)
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(Processor {
            config,
            tokenizer,
            chat_template: prompt::find_chat_template(dir)?,
            template_vars,
            context: model.text.max_position_embeddings,
            longest_token,
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
    pub fn process_images<I: std::borrow::Borrow<RgbImage>>(
        &self,
        images: &[I],
    ) -> (PixelInput, Vec<(usize, usize)>) {
        let m = self.config.image.max_image_size;
        let mut values = Vec::new();
        let mut grids = Vec::with_capacity(images.len());
        let mut tiles = 0;
        for img in images {
            let t = tiling::process_image(img.borrow(), &self.config.image);
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

    /// The crop grid (rows, columns) of each image of the given upright sizes, after checking that
    /// their image tokens (`(rows·cols + 1)·image_seq_len` each) fit in the context.
    pub fn image_grids(
        &self,
        sizes: impl ExactSizeIterator<Item = (usize, usize)>,
    ) -> Result<Vec<(usize, usize)>> {
        let ctx = self.context;
        let n_images = sizes.len();
        let grids: Vec<(usize, usize)> = sizes
            .map(|(w, h)| tiling::grid(w, h, &self.config.image))
            .collect();
        let image_tokens = grids.iter().try_fold(0usize, |sum, &(r, c)| {
            let tiles = r.checked_mul(c)?.checked_add(1)?;
            sum.checked_add(tiles.checked_mul(self.config.image_seq_len)?)
        });
        match image_tokens {
            Some(n) if n < ctx => Ok(grids),
            n => {
                let n = n.map_or_else(|| "more than 2⁶⁴".into(), |n| n.to_string());
                Err(Error::input(format!(
                    "the {n_images} image(s) need {n} image tokens but the model's context holds \
                     {ctx} (max_position_embeddings)"
                )))
            }
        }
    }

    /// The most images a prompt can hold: each needs at least its global view's tokens.
    pub fn max_images(&self) -> usize {
        self.context / (self.config.image_seq_len + 3).max(1)
    }

    /// Expands `<image>` markers of an already rendered prompt for `images`, tokenizes it (special
    /// tokens added as the processor does) and processes the images. The prompt's length is checked
    /// against the context before tokenizing (from the image sizes, which encoded images give from
    /// their headers, and the text's length) and after, so that no pixel is decoded or resized for a
    /// prompt the model cannot take.
    pub fn encode<I: ImageSource>(&self, text: &str, images: &[I]) -> Result<Encoded> {
        let ctx = self.context;
        let grids = self.image_grids(images.iter().map(ImageSource::size))?;
        let expanded = prompt::expand_images(text, &grids, self.config.image_seq_len)?;
        let at_least = expanded.len() / self.longest_token;
        if at_least >= ctx {
            return Err(Error::input(format!(
                "the prompt is {} bytes long: at least {at_least} tokens, but the model's context \
                 holds {ctx} (max_position_embeddings)",
                expanded.len()
            )));
        }
        let enc = self
            .tokenizer
            .encode(expanded.as_str(), true)
            .map_err(|e| Error::input(format!("tokenization failed: {e}")))?;
        let input_ids = enc.get_ids().to_vec();
        if input_ids.len() >= ctx {
            return Err(Error::input(format!(
                "the prompt has {} tokens but the model's context holds {ctx} \
                 (max_position_embeddings): no room to generate",
                input_ids.len()
            )));
        }
        let pixels = if images.is_empty() {
            None
        } else {
            let decoded = images
                .iter()
                .map(ImageSource::pixels)
                .collect::<Result<Vec<_>>>()?;
            Some(self.process_images(&decoded).0)
        };
        Ok(Encoded { input_ids, pixels })
    }

    /// Decodes token ids to text.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::input(format!("detokenization failed: {e}")))
    }
}

/// Parses a `tokenizer.json` (`path` names it in errors). The tokenizers crate panics on some
/// malformed files (found by fuzzing: a bad `decoder` value); that is an error here too.
pub fn parse_tokenizer(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
    let not_a_tokenizer = |message: String| Error::Json {
        path: path.to_path_buf(),
        message: format!("not a tokenizer: {message}"),
    };
    match std::panic::catch_unwind(|| Tokenizer::from_bytes(bytes)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(not_a_tokenizer(e.to_string())),
        Err(_) => Err(not_a_tokenizer(
            "the tokenizers library failed on this file (malformed contents)".into(),
        )),
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
