//! Finding a checkpoint: a local directory, a model id already in the Hugging Face cache, or a model
//! id downloaded into that cache (with a progress bar).

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

use crate::error::{Error, Result};

/// Files a checkpoint may have besides its weights; all that exist are downloaded.
const FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fn cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(p) => Cache::new(PathBuf::from(p)),
        None => Cache::from_env(),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether `spec` reads as a Hub model id (`org/name`).
fn looks_like_model_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The snapshot directory of a cached model, when its config, tokenizer and every weight file are there.
fn cached_snapshot(id: &str) -> Option<PathBuf> {
    let repo = cache().repo(Repo::model(id.to_string()));
    let config = repo.get("config.json")?;
    let dir = config.parent()?.to_path_buf();
    repo.get("tokenizer.json")?;
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        for f in v.get("weight_map")?.as_object()?.values() {
            if !dir.join(f.as_str()?).is_file() {
                return None;
            }
        }
    } else if !dir.join("model.safetensors").is_file() {
        return None;
    }
    Some(dir)
}

/// Resolves `--model`: an existing directory is used as is; `org/name` is looked up in the Hugging
/// Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) and downloaded
/// there when missing, unless `HF_HUB_OFFLINE` is set.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !looks_like_model_id(spec) {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model directory (and not a Hugging Face model id of the form org/name)",
            ),
        ));
    }
    if let Some(dir) = cached_snapshot(spec) {
        return Ok(dir);
    }
    if offline() {
        return Err(Error::input(format!(
            "model {spec} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set",
            cache().path().display()
        )));
    }
    download(spec)
}

fn download(id: &str) -> Result<PathBuf> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::input(format!(
            "model {id} is not a local directory, is not in the Hugging Face cache ({}), and could not be \
             downloaded: {e}",
            cache().path().display()
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache())
        .with_progress(true)
        .build()
        .map_err(|e| fail(&e))?;
    let repo = api.model(id.to_string());
    let info = repo.info().map_err(|e| fail(&e))?;
    let present: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let mut config = None;
    for f in FILES.iter().filter(|f| present.contains(f)) {
        let p = repo.get(f).map_err(|e| fail(&e))?;
        if *f == "config.json" {
            config = Some(p);
        }
    }
    let config = config.ok_or_else(|| fail(&"the repository has no config.json"))?;
    if present.contains(&"model.safetensors.index.json") {
        let index = repo
            .get("model.safetensors.index.json")
            .map_err(|e| fail(&e))?;
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: index.clone(),
            message: e.to_string(),
        })?;
        let mut shards: Vec<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for s in shards {
            repo.get(&s).map_err(|e| fail(&e))?;
        }
    } else if present.contains(&"model.safetensors") {
        repo.get("model.safetensors").map_err(|e| fail(&e))?;
    } else {
        return Err(fail(&"the repository has no safetensors weights"));
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::looks_like_model_id;

    #[test]
    fn model_ids() {
        assert!(looks_like_model_id("HuggingFaceTB/SmolVLM-256M-Instruct"));
        assert!(!looks_like_model_id("./models/x"));
        assert!(!looks_like_model_id("/abs/path"));
        assert!(!looks_like_model_id("a/b/c"));
        assert!(!looks_like_model_id("../x"));
    }
}
