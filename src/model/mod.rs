//! The Idefics3 architecture, written once over the [`Backend`] op set: vision tower, connector,
//! merging of image features into the `<image>` positions, Llama decoder.

pub mod connector;
pub mod positions;
pub mod rope;
pub mod text;
pub mod vision;

use std::path::Path;

use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::{Checkpoint, ExpectedTensor};

pub use text::KvCache;

/// Pixel inputs as the processor returns them for one sample: `pixel_values [T, C, S, S]` and an
/// optional `pixel_attention_mask [T, S, S]`.
#[derive(Debug, Clone)]
pub struct PixelInput {
    /// Tile slots, padding slots included.
    pub tiles: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// Tile side in pixels.
    pub size: usize,
    /// `tiles·channels·size²` values.
    pub values: Vec<f32>,
    /// `tiles·size²` flags; `None` means every pixel is real.
    pub mask: Option<Vec<bool>>,
}

/// Result of a prefill.
pub struct Prefill {
    /// Logits `[rows, V]` row-major: every prompt position, or only the last.
    pub logits: Vec<f32>,
    /// Image features `[T·q, H]` merged into the prompt, when pixels were given.
    pub image_features: Option<Vec<f32>>,
    /// Seconds spent in the vision tower and connector (host clock), or the backend's marks around
    /// them when it keeps marks (see [`Prefill::vision_seconds`]).
    pub vision_s: f64,
    /// Device marks before and after the vision tower and connector.
    pub vision_marks: Option<(u64, u64)>,
}

impl Prefill {
    /// The vision stage's seconds: on the device's clock when the backend keeps marks (read after
    /// the prefill's results reached the host, so reading them waits for nothing), else the host's.
    pub fn vision_seconds<B: Backend>(&self, b: &B) -> Result<f64> {
        match self.vision_marks {
            Some((from, to)) => Ok(b.seconds_between(from, to)?.unwrap_or(self.vision_s)),
            None => Ok(self.vision_s),
        }
    }
}

/// Tiles encoded together by the vision tower (`IDEFICS3_VISION_TILES` overrides; at least 1).
fn vision_chunk_tiles() -> usize {
    std::env::var("IDEFICS3_VISION_TILES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(VISION_CHUNK_TILES)
}

/// Default of [`vision_chunk_tiles`].
const VISION_CHUNK_TILES: usize = 4;

/// A loaded Idefics3 model on a backend.
pub struct Idefics3<B: Backend> {
    backend: B,
    config: ModelConfig,
    vision: vision::VisionTower<B>,
    connector: connector::Connector<B>,
    text: text::TextModel<B>,
    _checkpoint: Checkpoint,
}

/// Every tensor a checkpoint of this configuration must hold.
pub fn expected_tensors(c: &ModelConfig) -> Vec<ExpectedTensor> {
    let mut v = vision::expected_tensors(&c.vision);
    v.extend(connector::expected_tensors(c));
    v.extend(text::expected_tensors(&c.text, c.tie_word_embeddings));
    v
}

/// Tensors a checkpoint may carry that the model does not read.
fn ignorable(c: &ModelConfig) -> impl Fn(&str) -> bool {
    let tied = c.tie_word_embeddings;
    // transformers ties lm_head to the embedding whenever the flag is set, ignoring a stored copy.
    move |name: &str| name.ends_with(".rotary_emb.inv_freq") || (tied && name == text::LM_HEAD)
}

impl<B: Backend> Idefics3<B> {
    /// Loads `config.json` and the safetensors weights of a checkpoint directory, validates every
    /// tensor against the configuration, and binds them to the backend.
    pub fn load(dir: &Path, backend: B) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            ));
        }
        let config_path = dir.join("config.json");
        if !config_path.exists()
            && !dir.join("model.safetensors").exists()
            && !dir.join("model.safetensors.index.json").exists()
        {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not an Idefics3 checkpoint: the directory has no config.json and no \
                     model.safetensors or model.safetensors.index.json",
                ),
            ));
        }
        let config = ModelConfig::from_file(&config_path)?;
        let checkpoint = Checkpoint::open_dir(dir)?;
        Self::from_parts(config, checkpoint, backend)
    }

    /// Builds the model from a resolved configuration and opened weights.
    pub fn from_parts(config: ModelConfig, checkpoint: Checkpoint, backend: B) -> Result<Self> {
        // The expected-tensor list grows with the layer counts: check them against the weights
        // first, so that a hostile count cannot make the list itself exhaust memory.
        for (field, layers, prefix) in [
            (
                "text_config.num_hidden_layers",
                config.text.num_hidden_layers,
                text::LAYER_PREFIX,
            ),
            (
                "vision_config.num_hidden_layers",
                config.vision.num_hidden_layers,
                vision::LAYER_PREFIX,
            ),
        ] {
            let present = checkpoint.layers_present(prefix);
            if layers > present {
                return Err(Error::Config {
                    file: "config.json".into(),
                    field: field.into(),
                    message: format!(
                        "{layers} layers, but the weights hold {present} ({prefix}N.* tensors)"
                    ),
                });
            }
        }
        checkpoint.validate(&expected_tensors(&config), ignorable(&config))?;
        backend.begin_load(
            checkpoint
                .files()
                .iter()
                .map(|f| f.bytes().len() as u64)
                .sum(),
        );
        let vision = vision::VisionTower::load(&backend, &checkpoint, &config.vision)?;
        let connector = connector::Connector::load(&backend, &checkpoint, &config)?;
        let text = text::TextModel::load(
            &backend,
            &checkpoint,
            &config.text,
            config.tie_word_embeddings,
        )?;
        backend.end_load();
        Ok(Idefics3 {
            backend,
            config,
            vision,
            connector,
            text,
            _checkpoint: checkpoint,
        })
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// An empty KV cache with room for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache<B>> {
        self.text.new_cache(&self.backend, capacity)
    }

    /// Image features `[T·q, H]` of the real tiles (all-zero padding tiles dropped), in tile order.
    pub fn image_features(&self, px: &PixelInput) -> Result<Option<B::Tensor>> {
        self.image_features_grouped(px, vision_chunk_tiles())
    }

    /// [`Idefics3::image_features`] with the tiles encoded `group` at a time (the result does not
    /// depend on it; memory and speed do).
    pub fn image_features_grouped(
        &self,
        px: &PixelInput,
        group: usize,
    ) -> Result<Option<B::Tensor>> {
        let b = &self.backend;
        let vc = &self.config.vision;
        if px.channels != vc.num_channels {
            return Err(Error::input(format!(
                "pixel_values have {} channels; the vision tower expects {}",
                px.channels, vc.num_channels
            )));
        }
        let side = px.size / vc.patch_size;
        if side == 0 || !side.is_multiple_of(self.config.scale_factor) {
            return Err(Error::input(format!(
                "tiles of {0}×{0} pixels make {side} patches per side, which the scale factor {1} does not \
                 divide",
                px.size, self.config.scale_factor
            )));
        }
        if px.values.len() != px.tiles * px.channels * px.size * px.size {
            return Err(Error::input(
                "pixel_values: element count does not match its shape",
            ));
        }
        let tile_len = px.channels * px.size * px.size;
        let act = b.act_dtype();
        // A padding tile is one whose every value is zero in the model dtype.
        let real: Vec<usize> = (0..px.tiles)
            .filter(|&t| {
                px.values[t * tile_len..(t + 1) * tile_len]
                    .iter()
                    .any(|&v| act.round(v) != 0.0)
            })
            .collect();
        if real.is_empty() {
            return Ok(None);
        }
        let n = vc.patches_per_side();
        let per_tile = side * side;
        // Tiles go through the tower a few at a time: the activations of a group (hundreds of MB
        // for a dozen tiles) are the largest scratch of a request, and a group of a few tiles still
        // amortises the packing of each layer's weights.
        let chunk = group.max(1);
        let mut merged: Option<B::Tensor> = None;
        let mut done_rows = 0;
        for group in real.chunks(chunk) {
            let mut position_ids = Vec::with_capacity(group.len() * per_tile);
            let mut key_valid = Vec::with_capacity(group.len() * per_tile);
            for &t in group {
                let valid = match &px.mask {
                    Some(m) => {
                        let tm = &m[t * px.size * px.size..(t + 1) * px.size * px.size];
                        positions::patch_mask(tm, px.size, vc.patch_size)
                    }
                    None => vec![true; per_tile],
                };
                position_ids.extend(positions::position_ids(&valid, side, n, t)?);
                key_valid.extend(valid);
            }
            let all_valid = key_valid.iter().all(|&v| v);
            let mut pixels = Vec::with_capacity(group.len() * tile_len);
            for &t in group {
                pixels.extend_from_slice(&px.values[t * tile_len..(t + 1) * tile_len]);
            }
            let pixels = b.upload(&pixels, group.len(), tile_len)?;
            let encoded = self.vision.forward(
                b,
                &pixels,
                px.size,
                &position_ids,
                if all_valid { None } else { Some(&key_valid) },
            )?;
            let features = self.connector.forward(b, &encoded, side)?;
            if real.len() <= chunk {
                return Ok(Some(features));
            }
            let (rows, cols) = b.dims(&features);
            let all = match &mut merged {
                Some(all) => all,
                None => {
                    let total = rows / group.len() * real.len();
                    merged.insert(b.upload(&vec![0.0; total * cols], total, cols)?)
                }
            };
            let at: Vec<usize> = (done_rows..done_rows + rows).collect();
            b.scatter_rows(all, &at, &features)?;
            done_rows += rows;
        }
        Ok(merged)
    }

    /// Runs the prompt through the model, appending to `cache`: embeds `ids`, merges the image
    /// features into the `<image>` positions (their count must match), runs the decoder, and returns
    /// the logits of every position (`all_logits`) or of the last one.
    pub fn prefill(
        &self,
        ids: &[u32],
        pixels: Option<&PixelInput>,
        cache: &mut KvCache<B>,
        all_logits: bool,
    ) -> Result<Prefill> {
        let b = &self.backend;
        if ids.is_empty() {
            return Err(Error::input("input_ids is empty"));
        }
        self.check_ids(ids)?;
        let mut x = self.text.embed(b, ids)?;
        let mut features_out = None;
        let mut vision_s = 0.0;
        let mut vision_marks = None;
        if let Some(px) = pixels {
            let image_rows: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| id == self.config.image_token_id)
                .map(|(i, _)| i)
                .collect();
            let t = std::time::Instant::now();
            let before = b.mark()?;
            let features = self.image_features(px)?;
            vision_marks = before.zip(b.mark()?);
            vision_s = t.elapsed().as_secs_f64();
            let n_features = features.as_ref().map_or(0, |f| b.dims(f).0);
            if n_features != image_rows.len() {
                return Err(Error::input(format!(
                    "image features and image tokens do not match: the prompt has {} <image> tokens (id {}) but \
                     the pixels give {} features ({} real tiles × {} tokens per tile)",
                    image_rows.len(),
                    self.config.image_token_id,
                    n_features,
                    n_features / self.config.image_seq_len().max(1),
                    self.config.image_seq_len()
                )));
            }
            if let Some(f) = features {
                b.scatter_rows(&mut x, &image_rows, &f)?;
                // Only the inspection path (every position's logits) returns the features: on a
                // device, bringing them to the host would cost a synchronisation mid-prefill.
                if all_logits {
                    features_out = Some(b.download(&f)?);
                }
            }
        }
        let hidden = self.text.forward(b, x, cache)?;
        let hidden = if all_logits {
            hidden
        } else {
            b.gather_rows(&hidden, &[ids.len() - 1])?
        };
        let logits = b.download(&self.text.logits(b, &hidden)?)?;
        Ok(Prefill {
            logits,
            image_features: features_out,
            vision_s,
            vision_marks,
        })
    }

    /// Feeds one token after the cached positions and returns its logits `[V]`.
    pub fn decode_step(&self, id: u32, cache: &mut KvCache<B>) -> Result<Vec<f32>> {
        let b = &self.backend;
        self.check_ids(&[id])?;
        let x = self.text.embed(b, &[id])?;
        let hidden = self.text.forward(b, x, cache)?;
        b.download(&self.text.logits(b, &hidden)?)
    }

    /// [`Idefics3::decode_step`] followed by greedy choice on the backend: only the chosen id
    /// leaves the device (`None`: the logits were not finite, see [`Idefics3::nonfinite_logits`]).
    pub fn decode_step_greedy(&self, id: u32, cache: &mut KvCache<B>) -> Result<Option<u32>> {
        let b = &self.backend;
        self.check_ids(&[id])?;
        let x = self.text.embed(b, &[id])?;
        let hidden = self.text.forward(b, x, cache)?;
        b.argmax_last(&self.text.logits(b, &hidden)?)
    }

    /// Refuses logits holding a NaN or an infinity (`what` says where they came from), naming the
    /// first weight tensor that holds one when there is such a tensor (a scan made only then).
    pub fn check_logits(&self, logits: &[f32], what: &str) -> Result<()> {
        if logits.iter().all(|v| v.is_finite()) {
            return Ok(());
        }
        Err(self.nonfinite_logits(what))
    }

    /// The error for non-finite logits (`what` says where they came from), naming the first weight
    /// tensor that holds a NaN or an infinity when there is one (a scan made only then).
    pub fn nonfinite_logits(&self, what: &str) -> Error {
        let cause = match self._checkpoint.first_nonfinite() {
            Some(name) => format!("the weight tensor `{name}` holds NaN or infinite values"),
            None => "every weight is finite, so the activations overflowed".into(),
        };
        Error::input(format!(
            "the model produced non-finite logits {what}: {cause}"
        ))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.config.text.vocab_size;
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
            return Err(Error::input(format!(
                "token id {id} at position {i} is outside the vocabulary of {v} tokens"
            )));
        }
        Ok(())
    }
}
