//! Model configuration: `config.json` of Idefics3 checkpoints, as published (transformers 4.x keys:
//! `rope_theta`, `rope_scaling`, `torch_dtype`) and as transformers 5 writes it (`rope_parameters`,
//! `dtype`). Everything is resolved into plain structs with the derived quantities filled in, and
//! every unsupported or contradictory setting is reported with the name of the field at fault.

pub mod generation;
pub mod processor;

use std::path::Path;

use serde_json::{Map, Value};

pub use generation::GenerationConfig;
pub use processor::{ImageProcessorConfig, ProcessorConfig, ResizeTarget};

use crate::error::{Error, Result};

/// The largest integer a configuration field may hold (2²⁴): above every real width, vocabulary,
/// layer count or context length, small enough that sizes built from them cannot overflow.
pub const MAX_CONFIG_INTEGER: u64 = 1 << 24;

/// The largest `image_size` and `patch_size` of the vision encoder (2¹⁶ pixels).
pub const MAX_IMAGE_SIDE: usize = 1 << 16;

/// The SigLIP-style vision encoder's settings (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width of the encoder (Dv).
    pub hidden_size: usize,
    /// Width of the MLP (Iv).
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads; `head_dim = hidden_size / num_attention_heads`.
    pub num_attention_heads: usize,
    /// Input channels of the patch embedding (3).
    pub num_channels: usize,
    /// Tile side in pixels (S).
    pub image_size: usize,
    /// Patch side in pixels (p).
    pub patch_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    /// Patches per tile side, the side of the position-embedding grid (N).
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Number of position embeddings (N²).
    pub fn num_positions(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How rotary frequencies are scaled (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelength threshold (in units of the original context) above which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength threshold below which frequencies are kept.
        high_freq_factor: f64,
        /// The context length the base model was trained on.
        original_max_position_embeddings: f64,
    },
}

/// Rotary position embedding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    /// The base θ.
    pub theta: f64,
    /// Frequency scaling.
    pub scaling: RopeScaling,
}

/// The Llama decoder's settings (`text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Model width (H).
    pub hidden_size: usize,
    /// MLP width (I).
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and of lm_head).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary embedding settings.
    pub rope: RopeConfig,
    /// Longest context the model supports.
    pub max_position_embeddings: usize,
    /// Whether q/k/v/o projections carry biases.
    pub attention_bias: bool,
    /// Whether the MLP projections carry biases.
    pub mlp_bias: bool,
}

/// A resolved Idefics3 configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Vision encoder settings.
    pub vision: VisionConfig,
    /// Text decoder settings.
    pub text: TextConfig,
    /// Pixel-shuffle factor of the connector (s).
    pub scale_factor: usize,
    /// Token id of `<image>`.
    pub image_token_id: u32,
    /// Whether lm_head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// The checkpoint's declared storage dtype (`torch_dtype` / `dtype`), if any.
    pub dtype: Option<String>,
    /// Beginning-of-sequence id, if declared.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids, if declared.
    pub eos_token_ids: Vec<u32>,
    /// Padding id, if declared.
    pub pad_token_id: Option<u32>,
}

impl ModelConfig {
    /// Image tokens produced per tile: `N² / s²`.
    pub fn image_seq_len(&self) -> usize {
        self.vision.num_positions() / (self.scale_factor * self.scale_factor)
    }

    /// Reads and resolves `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Resolves a configuration from JSON text; `file` names the source in error messages.
    pub fn from_json_str(text: &str, file: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: file.into(),
            message: e.to_string(),
        })?;
        let root = Fields::root(&value, file)?;
        Self::resolve(&root)
    }

    fn resolve(root: &Fields) -> Result<Self> {
        let model_type = root.opt_str("model_type")?;
        match model_type {
            Some("idefics3") => {}
            Some(other) => {
                return Err(root.err(
                    "model_type",
                    format!(
                    "unsupported model type {other:?}; this engine runs \"idefics3\" checkpoints"
                ),
                ))
            }
            None => return Err(root.err("model_type", "missing; expected \"idefics3\"")),
        }
        if let Some(archs) = root.get("architectures") {
            let list = archs
                .as_array()
                .ok_or_else(|| root.err("architectures", "expected a list of strings"))?;
            for a in list {
                let name = a.as_str().unwrap_or("");
                if name != "Idefics3ForConditionalGeneration" && name != "Idefics3Model" {
                    return Err(root.err(
                        "architectures",
                        format!("unsupported architecture {a}; expected Idefics3ForConditionalGeneration"),
                    ));
                }
            }
        }

        let vision_fields = root.child("vision_config")?;
        let vision = resolve_vision(&vision_fields)?;
        let text_fields = root.child("text_config")?;
        let text = resolve_text(&text_fields)?;

        let scale_factor = root.usize_or("scale_factor", 2)?;
        if scale_factor == 0 {
            return Err(root.err("scale_factor", "must be at least 1"));
        }
        let n = vision.patches_per_side();
        if n % scale_factor != 0 {
            return Err(root.err(
                "scale_factor",
                format!("{scale_factor} does not divide the {n} patches per tile side (vision_config.image_size / patch_size)"),
            ));
        }
        let image_token_id = root.usize_or("image_token_id", 128257)?;
        if image_token_id >= text.vocab_size {
            return Err(root.err(
                "image_token_id",
                format!(
                    "{image_token_id} is outside the vocabulary of {} tokens",
                    text.vocab_size
                ),
            ));
        }
        // transformers keeps the flag on the top-level config (default False); files written by other
        // tools sometimes carry it only inside text_config.
        let tie_word_embeddings = match root.opt_bool("tie_word_embeddings")? {
            Some(b) => b,
            None => text_fields
                .opt_bool("tie_word_embeddings")?
                .unwrap_or(false),
        };
        let dtype = match root.opt_str("dtype")? {
            Some(d) => Some(d.to_string()),
            None => root.opt_str("torch_dtype")?.map(str::to_string),
        };
        if let Some(d) = &dtype {
            if !matches!(d.as_str(), "bfloat16" | "float16" | "float32") {
                let field = if root.get("dtype").is_some() {
                    "dtype"
                } else {
                    "torch_dtype"
                };
                return Err(root.err(
                    field,
                    format!("unsupported dtype {d:?}; expected bfloat16, float16 or float32"),
                ));
            }
        }
        let bos_token_id = first_id(root, &text_fields, "bos_token_id")?;
        let pad_token_id = first_id(root, &text_fields, "pad_token_id")?;
        let eos_token_ids = match root.get("eos_token_id").filter(|v| !v.is_null()) {
            Some(_) => root.id_list("eos_token_id")?,
            None => text_fields.id_list("eos_token_id")?,
        };

        Ok(ModelConfig {
            vision,
            text,
            scale_factor,
            image_token_id: image_token_id as u32,
            tie_word_embeddings,
            dtype,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
        })
    }
}

fn first_id(root: &Fields, text: &Fields, key: &str) -> Result<Option<u32>> {
    let ids = match root.get(key).filter(|v| !v.is_null()) {
        Some(_) => root.id_list(key)?,
        None => text.id_list(key)?,
    };
    Ok(ids.first().copied())
}

fn resolve_vision(f: &Fields) -> Result<VisionConfig> {
    // Defaults are Idefics3VisionConfig's class defaults; published checkpoints set every field.
    let v = VisionConfig {
        hidden_size: f.usize_or("hidden_size", 1152)?,
        intermediate_size: f.usize_or("intermediate_size", 3072)?,
        num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
        num_attention_heads: f.usize_or("num_attention_heads", 16)?,
        num_channels: f.usize_or("num_channels", 3)?,
        image_size: f.usize_or("image_size", 224)?,
        patch_size: f.usize_or("patch_size", 32)?,
        layer_norm_eps: f.f64_or("layer_norm_eps", 1e-6)?,
    };
    let act = f.opt_str("hidden_act")?.unwrap_or("gelu_pytorch_tanh");
    if act != "gelu_pytorch_tanh" && act != "gelu_new" {
        return Err(f.err(
            "hidden_act",
            format!("unsupported activation {act:?}; expected gelu_pytorch_tanh"),
        ));
    }
    for (name, value) in [
        ("hidden_size", v.hidden_size),
        ("intermediate_size", v.intermediate_size),
        ("num_attention_heads", v.num_attention_heads),
        ("num_channels", v.num_channels),
        ("patch_size", v.patch_size),
    ] {
        if value == 0 {
            return Err(f.err(name, "must be at least 1"));
        }
    }
    if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
        return Err(f.err(
            "num_attention_heads",
            format!(
                "{} heads do not divide hidden_size {}",
                v.num_attention_heads, v.hidden_size
            ),
        ));
    }
    for (name, value) in [("image_size", v.image_size), ("patch_size", v.patch_size)] {
        if value > MAX_IMAGE_SIDE {
            return Err(f.err(
                name,
                format!("{value} exceeds the largest supported value, {MAX_IMAGE_SIDE}"),
            ));
        }
    }
    if v.image_size < v.patch_size {
        return Err(f.err(
            "image_size",
            format!(
                "{} is smaller than patch_size {}",
                v.image_size, v.patch_size
            ),
        ));
    }
    Ok(v)
}

fn resolve_text(f: &Fields) -> Result<TextConfig> {
    if let Some(mt) = f.opt_str("model_type")? {
        if mt != "llama" {
            return Err(f.err(
                "model_type",
                format!("unsupported text model {mt:?}; expected \"llama\""),
            ));
        }
    }
    let act = f.opt_str("hidden_act")?.unwrap_or("silu");
    if act != "silu" {
        return Err(f.err(
            "hidden_act",
            format!("unsupported activation {act:?}; expected silu"),
        ));
    }
    // Defaults are LlamaConfig's class defaults.
    let hidden_size = f.usize_or("hidden_size", 4096)?;
    let num_attention_heads = f.usize_or("num_attention_heads", 32)?;
    if hidden_size == 0 || num_attention_heads == 0 {
        let field = if hidden_size == 0 {
            "hidden_size"
        } else {
            "num_attention_heads"
        };
        return Err(f.err(field, "must be at least 1"));
    }
    let num_key_value_heads = f.usize_or("num_key_value_heads", num_attention_heads)?;
    if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
        return Err(f.err(
            "num_key_value_heads",
            format!("{num_key_value_heads} must divide num_attention_heads {num_attention_heads}"),
        ));
    }
    let head_dim = match f.opt_usize("head_dim")? {
        Some(h) => h,
        None => {
            if hidden_size % num_attention_heads != 0 {
                return Err(f.err(
                    "head_dim",
                    format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                ));
            }
            hidden_size / num_attention_heads
        }
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return Err(f.err(
            "head_dim",
            format!("{head_dim} must be even and positive for rotary embeddings"),
        ));
    }
    let pretraining_tp = f.usize_or("pretraining_tp", 1)?;
    if pretraining_tp == 0 {
        return Err(f.err("pretraining_tp", "must be at least 1"));
    }
    let t = TextConfig {
        hidden_size,
        intermediate_size: f.usize_or("intermediate_size", 11008)?,
        num_hidden_layers: f.usize_or("num_hidden_layers", 32)?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size: f.usize_or("vocab_size", 32000)?,
        rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
        rope: resolve_rope(f)?,
        max_position_embeddings: f.usize_or("max_position_embeddings", 2048)?,
        attention_bias: f.opt_bool("attention_bias")?.unwrap_or(false),
        mlp_bias: f.opt_bool("mlp_bias")?.unwrap_or(false),
    };
    if t.intermediate_size == 0 || t.vocab_size == 0 {
        let field = if t.vocab_size == 0 {
            "vocab_size"
        } else {
            "intermediate_size"
        };
        return Err(f.err(field, "must be at least 1"));
    }
    Ok(t)
}

/// Reads rotary settings from either era: transformers 5 keeps θ and the scaling inside
/// `rope_parameters`; 4.x has `rope_theta` beside `rope_scaling`.
fn resolve_rope(f: &Fields) -> Result<RopeConfig> {
    let (params, params_name) = if f.get("rope_parameters").is_some_and(|v| !v.is_null()) {
        (Some(f.child("rope_parameters")?), "rope_parameters")
    } else if f.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        (Some(f.child("rope_scaling")?), "rope_scaling")
    } else {
        (None, "")
    };
    let theta = match params
        .as_ref()
        .map(|p| p.opt_f64("rope_theta"))
        .transpose()?
        .flatten()
    {
        Some(t) => t,
        None => f.f64_or("rope_theta", 10000.0)?,
    };
    if theta.is_nan() || theta <= 1.0 {
        return Err(f.err("rope_theta", format!("{theta} must be greater than 1")));
    }
    let Some(p) = params else {
        return Ok(RopeConfig {
            theta,
            scaling: RopeScaling::Default,
        });
    };
    let kind_field = if p.get("rope_type").is_some() {
        "rope_type"
    } else {
        "type"
    };
    let kind = p.opt_str(kind_field)?.unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: p.positive_f64("factor")?,
        },
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: p.positive_f64("factor")?,
                low_freq_factor: p.positive_f64("low_freq_factor")?,
                high_freq_factor: p.positive_f64("high_freq_factor")?,
                original_max_position_embeddings: p.positive_f64("original_max_position_embeddings")?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = s
            {
                if high_freq_factor <= low_freq_factor {
                    return Err(p.err("high_freq_factor", "must be greater than low_freq_factor"));
                }
            }
            s
        }
        other => {
            return Err(p.err(
                kind_field,
                format!("unsupported rope type {other:?} in {params_name}; supported: default, linear, llama3"),
            ))
        }
    };
    if let Some(a) = p.opt_f64("attention_factor")? {
        if a != 1.0 {
            return Err(p.err(
                "attention_factor",
                format!("{a} is not supported (only 1.0)"),
            ));
        }
    }
    Ok(RopeConfig { theta, scaling })
}

/// A JSON object with its dotted path, for lookups whose errors name the field.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    file: &'a str,
    prefix: String,
    /// An absent sub-object reads as empty, so that every field takes its default.
    empty: bool,
}

static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

impl<'a> Fields<'a> {
    pub(crate) fn root(value: &'a Value, file: &'a str) -> Result<Self> {
        let map = value.as_object().ok_or_else(|| Error::Config {
            file: file.to_string(),
            field: "(top level)".into(),
            message: "expected a JSON object".into(),
        })?;
        Ok(Fields {
            map,
            file,
            prefix: String::new(),
            empty: false,
        })
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.to_string(),
            field: self.path(key),
            message: message.into(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        if self.empty {
            return None;
        }
        self.map.get(key)
    }

    /// A nested object; absent or null reads as an empty object.
    pub(crate) fn child(&self, key: &str) -> Result<Fields<'a>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(Fields {
                map: EMPTY.get_or_init(Map::new),
                file: self.file,
                prefix: self.path(key),
                empty: true,
            }),
            Some(Value::Object(map)) => Ok(Fields {
                map,
                file: self.file,
                prefix: self.path(key),
                empty: false,
            }),
            Some(_) => Err(self.err(key, "expected an object")),
        }
    }

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                None => Err(self.err(key, format!("expected a non-negative integer, found {v}"))),
                // Sizes multiply into tensor shapes and buffer lengths: bounding each keeps every
                // product of two or three of them far from overflow.
                Some(n) if n > MAX_CONFIG_INTEGER => Err(self.err(
                    key,
                    format!("{n} exceeds the largest supported value, {MAX_CONFIG_INTEGER}"),
                )),
                Some(n) => Ok(Some(n as usize)),
            },
        }
    }

    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        let v = self.opt_f64(key)?.unwrap_or(default);
        if !v.is_finite() || v < 0.0 {
            return Err(self.err(key, format!("{v} must be a finite non-negative number")));
        }
        Ok(v)
    }

    fn positive_f64(&self, key: &str) -> Result<f64> {
        match self.opt_f64(key)? {
            Some(v) if v.is_finite() && v > 0.0 => Ok(v),
            Some(v) => Err(self.err(key, format!("{v} must be a positive number"))),
            None => Err(self.err(key, "missing")),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.err(key, format!("expected a string, found {v}"))),
        }
    }

    /// An id or a list of ids (as `eos_token_id` may be either).
    pub(crate) fn id_list(&self, key: &str) -> Result<Vec<u32>> {
        let bad = |v: &Value| {
            self.err(
                key,
                format!("expected a token id or a list of ids, found {v}"),
            )
        };
        let one = |v: &Value| -> Result<u32> {
            v.as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| n as u32)
                .ok_or_else(|| bad(v))
        };
        match self.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "idefics3",
            "architectures": ["Idefics3ForConditionalGeneration"],
            "scale_factor": 2,
            "image_token_id": 10,
            "vision_config": {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "image_size": 16, "patch_size": 4},
            "text_config": {"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
                             "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                             "vocab_size": 12, "rope_theta": 500000.0,
                             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}
        })
    }

    fn parse(v: &Value) -> Result<ModelConfig> {
        ModelConfig::from_json_str(&v.to_string(), "config.json")
    }

    #[test]
    fn reads_transformers4_keys() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.text.head_dim, 4);
        assert_eq!(c.text.rope.theta, 500000.0);
        assert!(matches!(c.text.rope.scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(c.image_seq_len(), 4);
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn reads_transformers5_keys() {
        let mut v = base();
        let t = v["text_config"].as_object_mut().unwrap();
        t.remove("rope_theta");
        t.remove("rope_scaling");
        t.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "default", "rope_theta": 100000.0}),
        );
        v["dtype"] = "bfloat16".into();
        let c = parse(&v).unwrap();
        assert_eq!(c.text.rope.theta, 100000.0);
        assert_eq!(c.text.rope.scaling, RopeScaling::Default);
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["text_config"]["rope_scaling"]["rope_type"] = "yarn".into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains("text_config.rope_scaling.rope_type") && e.contains("yarn"),
            "{e}"
        );

        let mut v = base();
        v["model_type"] = "llava".into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("model_type") && e.contains("llava"), "{e}");

        let mut v = base();
        v["text_config"]["num_key_value_heads"] = 3.into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("text_config.num_key_value_heads"), "{e}");

        let mut v = base();
        v["scale_factor"] = 3.into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("scale_factor"), "{e}");

        let mut v = base();
        v["vision_config"]["hidden_size"] = "wide".into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("vision_config.hidden_size"), "{e}");
    }
}
