//! Image processor settings: `preprocessor_config.json` (published checkpoints) or the
//! `image_processor` object inside `processor_config.json` (transformers 5), and `image_seq_len`.

use std::path::Path;

use serde_json::Value;

use super::{Fields, ModelConfig};
use crate::error::{Error, Result};
use crate::processor::resize::Filter;

/// How the target size of the first resize is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// `{"longest_edge": L}`: the longest edge becomes L, the other keeps the aspect ratio.
    LongestEdge(usize),
    /// `{"height": H, "width": W}`: exactly this size.
    Exact {
        /// Target height.
        height: usize,
        /// Target width.
        width: usize,
    },
}

/// Resolved Idefics3 image processor settings (PIL path).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Whether to resize before splitting.
    pub do_resize: bool,
    /// The first resize's target.
    pub size: ResizeTarget,
    /// The resampling filter.
    pub filter: Filter,
    /// Whether to cut the image into tiles plus a global view.
    pub do_image_splitting: bool,
    /// Tile side M (`max_image_size.longest_edge`).
    pub max_image_size: usize,
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise with mean/std.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation.
    pub image_std: [f32; 3],
}

impl Default for ImageProcessorConfig {
    /// Idefics3ImageProcessor's class defaults.
    fn default() -> Self {
        ImageProcessorConfig {
            do_resize: true,
            size: ResizeTarget::LongestEdge(4 * 364),
            filter: Filter::Lanczos,
            do_image_splitting: true,
            max_image_size: 364,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }
}

/// Everything the processor needs besides the tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// Image settings.
    pub image: ImageProcessorConfig,
    /// `<image>` tokens per tile.
    pub image_seq_len: usize,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Json {
            path: path.into(),
            message: e.to_string(),
        })
}

impl ProcessorConfig {
    /// Reads the processor settings of a checkpoint directory; `model` supplies the derived
    /// `image_seq_len` when `processor_config.json` has none, and must agree with it when it has.
    pub fn from_dir(dir: &Path, model: &ModelConfig) -> Result<Self> {
        let pre_path = dir.join("preprocessor_config.json");
        let proc_path = dir.join("processor_config.json");
        let pre = read_json(&pre_path)?;
        let proc_ = read_json(&proc_path)?;
        let proc_name = proc_path.display().to_string();
        let image = match (&pre, &proc_) {
            (Some(v), _) => {
                let name = pre_path.display().to_string();
                resolve_image(&Fields::root(v, &name)?)?
            }
            (None, Some(p)) => {
                let f = Fields::root(p, &proc_name)?;
                if f.get("image_processor").is_some() {
                    resolve_image(&f.child("image_processor")?)?
                } else {
                    return Err(Error::io(
                        &pre_path,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no image processor settings: neither preprocessor_config.json nor an \
                             `image_processor` object in processor_config.json",
                        ),
                    ));
                }
            }
            (None, None) => {
                return Err(Error::io(
                    &pre_path,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no image processor settings (preprocessor_config.json or processor_config.json)",
                    ),
                ))
            }
        };
        let derived = model.image_seq_len();
        let image_seq_len = match &proc_ {
            Some(p) => match Fields::root(p, &proc_name)?.opt_usize("image_seq_len")? {
                Some(n) if n != derived => {
                    return Err(Error::Config {
                        file: proc_name,
                        field: "image_seq_len".into(),
                        message: format!(
                            "{n} contradicts the model configuration, whose tiles give {derived} tokens \
                             ((image_size/patch_size)² / scale_factor²)"
                        ),
                    })
                }
                _ => derived,
            },
            None => derived,
        };
        if image.max_image_size != model.vision.image_size {
            let file = if pre.is_some() {
                pre_path.display().to_string()
            } else {
                proc_name
            };
            return Err(Error::Config {
                file,
                field: "max_image_size.longest_edge".into(),
                message: format!(
                    "tiles of {} pixels do not match the vision tower's image_size {}",
                    image.max_image_size, model.vision.image_size
                ),
            });
        }
        Ok(ProcessorConfig {
            image,
            image_seq_len,
        })
    }
}

fn resolve_image(f: &Fields) -> Result<ImageProcessorConfig> {
    let d = ImageProcessorConfig::default();
    let size = if f.get("size").is_some() {
        let s = f.child("size")?;
        match (
            s.opt_usize("longest_edge")?,
            s.opt_usize("height")?,
            s.opt_usize("width")?,
        ) {
            (Some(l), _, _) if l > 0 => ResizeTarget::LongestEdge(l),
            (None, Some(h), Some(w)) if h > 0 && w > 0 => ResizeTarget::Exact {
                height: h,
                width: w,
            },
            _ => {
                return Err(f.err(
                    "size",
                    "expected {\"longest_edge\": N} or {\"height\": H, \"width\": W}",
                ))
            }
        }
    } else {
        d.size
    };
    let max_image_size = if f.get("max_image_size").is_some() {
        match f.child("max_image_size")?.opt_usize("longest_edge")? {
            Some(m) if m > 0 => m,
            _ => {
                return Err(f.err(
                    "max_image_size",
                    "expected {\"longest_edge\": N} with N > 0",
                ))
            }
        }
    } else {
        d.max_image_size
    };
    let filter = match f.opt_usize("resample")? {
        Some(id) => Filter::from_pil_id(id as u64).map_err(|e| f.err("resample", e.to_string()))?,
        None => d.filter,
    };
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match f.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
            Some(Value::Array(a)) if a.len() == 3 && a.iter().all(Value::is_number) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
            }
            Some(v) => Err(f.err(key, format!("expected a number or 3 numbers, found {v}"))),
        }
    };
    let cfg = ImageProcessorConfig {
        do_resize: f.opt_bool("do_resize")?.unwrap_or(d.do_resize),
        size,
        filter,
        do_image_splitting: f
            .opt_bool("do_image_splitting")?
            .unwrap_or(d.do_image_splitting),
        max_image_size,
        do_rescale: f.opt_bool("do_rescale")?.unwrap_or(d.do_rescale),
        rescale_factor: f.opt_f64("rescale_factor")?.unwrap_or(d.rescale_factor),
        do_normalize: f.opt_bool("do_normalize")?.unwrap_or(d.do_normalize),
        image_mean: triple("image_mean", d.image_mean)?,
        image_std: triple("image_std", d.image_std)?,
    };
    if cfg.image_std.contains(&0.0) {
        return Err(f.err("image_std", "must not contain 0"));
    }
    if f.opt_bool("do_convert_rgb")? == Some(false) {
        return Err(f.err(
            "do_convert_rgb",
            "false is not supported: images are always converted to RGB",
        ));
    }
    Ok(cfg)
}
