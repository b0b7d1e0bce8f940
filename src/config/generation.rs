//! `generation_config.json`: stop ids and default sampling settings.

use std::path::Path;

use super::Fields;
use crate::error::{Error, Result};

/// The settings of `generation_config.json` the engine uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Whether the checkpoint asks for sampling by default.
    pub do_sample: bool,
    /// Default temperature.
    pub temperature: Option<f64>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default top-p.
    pub top_p: Option<f64>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f64>,
    /// Default number of new tokens.
    pub max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    /// Reads `generation_config.json` of a directory; an absent file gives the defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let name = path.display().to_string();
        let f = Fields::root(&value, &name)?;
        Ok(GenerationConfig {
            eos_token_ids: f.id_list("eos_token_id")?,
            do_sample: f.opt_bool("do_sample")?.unwrap_or(false),
            temperature: f.opt_f64("temperature")?,
            top_k: f.opt_usize("top_k")?,
            top_p: f.opt_f64("top_p")?,
            repetition_penalty: f.opt_f64("repetition_penalty")?,
            max_new_tokens: f.opt_usize("max_new_tokens")?,
        })
    }
}
