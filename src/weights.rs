//! Checkpoint weights: safetensors files (single or sharded through `model.safetensors.index.json`),
//! memory-mapped and never copied; each tensor is a view into its file, read by the kernels in its own
//! dtype. [`Checkpoint::validate`] checks every tensor's name, dtype and shape against what the
//! configuration implies before anything runs.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::error::{Error, Result};

/// Element types the engine reads from checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// bfloat16.
    BF16,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::BF16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }

    fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::F32 => Some(DType::F32),
            _ => None,
        }
    }
}

/// One memory-mapped safetensors file.
#[derive(Debug)]
pub struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    /// Maps a file read-only.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every engine that maps weights, we rely on the checkpoint
        // not being rewritten while it is in use.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MappedFile {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A tensor inside a mapped file: where its bytes are, with its declared dtype and shape.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// The tensor's name.
    pub name: String,
    /// Element type as stored, or the safetensors dtype name when it is not one the engine reads.
    pub dtype: std::result::Result<DType, String>,
    /// Shape as stored.
    pub shape: Vec<usize>,
    file: Arc<MappedFile>,
    start: usize,
    end: usize,
}

impl TensorRef {
    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.start..self.end]
    }

    /// The file holding the tensor (kept alive as long as the reference).
    pub fn file(&self) -> &Arc<MappedFile> {
        &self.file
    }

    /// Byte range of the data inside the file.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    /// The element type, or an error naming the tensor when the engine cannot read it.
    pub fn dtype(&self) -> Result<DType> {
        self.dtype.clone().map_err(|d| {
            Error::tensor(
                &self.name,
                format!("unsupported dtype {d}; expected BF16, F16 or F32"),
            )
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements converted to f32.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        Ok(crate::numeric::to_f32(self.dtype()?, self.bytes()))
    }
}

/// All tensors of a checkpoint, by name.
#[derive(Debug)]
pub struct Checkpoint {
    tensors: BTreeMap<String, TensorRef>,
    files: Vec<Arc<MappedFile>>,
}

/// What a model expects of one tensor.
#[derive(Debug, Clone)]
pub struct ExpectedTensor {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl Checkpoint {
    /// Opens the weights of a checkpoint directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index.is_file() {
            Self::open_index(&index)
        } else if single.is_file() {
            Self::open_files(&[single])
        } else {
            Err(Error::io(
                dir.join("model.safetensors"),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no weights: neither model.safetensors nor model.safetensors.index.json exists",
                ),
            ))
        }
    }

    /// Opens a sharded checkpoint through its index; every tensor must sit in the shard the index names.
    pub fn open_index(index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: index_path.into(),
            message: e.to_string(),
        })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Json {
                path: index_path.into(),
                message: "missing object `weight_map`".into(),
            })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&str> = Vec::new();
        let mut placement: HashMap<&str, &str> = HashMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| Error::Json {
                path: index_path.into(),
                message: format!("weight_map[{tensor:?}] is not a file name"),
            })?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(Error::Json {
                    path: index_path.into(),
                    message: format!("weight_map[{tensor:?}] = {file:?} is not a file in the checkpoint directory"),
                });
            }
            if !shard_names.contains(&file) {
                shard_names.push(file);
            }
            placement.insert(tensor.as_str(), file);
        }
        shard_names.sort_unstable();
        let paths: Vec<PathBuf> = shard_names.iter().map(|f| dir.join(f)).collect();
        let ckpt = Self::open_files(&paths)?;
        for (tensor, file) in &placement {
            match ckpt.tensors.get(*tensor) {
                None => {
                    return Err(Error::tensor(
                        *tensor,
                        format!(
                            "listed in {} under {file} but not found in that file",
                            index_path.display()
                        ),
                    ))
                }
                Some(t) if t.file.path().file_name().and_then(|n| n.to_str()) != Some(file) => {
                    return Err(Error::tensor(
                        *tensor,
                        format!(
                            "{} places it in {file} but it is in {}",
                            index_path.display(),
                            t.file.path().display()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for name in ckpt.tensors.keys() {
            if !placement.contains_key(name.as_str()) {
                return Err(Error::tensor(
                    name,
                    format!(
                        "present in a shard but missing from {}",
                        index_path.display()
                    ),
                ));
            }
        }
        Ok(ckpt)
    }

    /// Opens one or more safetensors files as one checkpoint; a name present twice is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        let mut files = Vec::new();
        for path in paths {
            let file = Arc::new(MappedFile::open(path)?);
            let (header_len, metadata) =
                SafeTensors::read_metadata(file.bytes()).map_err(|e| Error::Safetensors {
                    path: path.clone(),
                    message: describe_safetensors_error(&e),
                })?;
            let base = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (s, e) = info.data_offsets;
                let t = TensorRef {
                    name: name.clone(),
                    dtype: DType::from_safetensors(info.dtype)
                        .ok_or_else(|| format!("{:?}", info.dtype)),
                    shape: info.shape.clone(),
                    file: file.clone(),
                    start: base + s,
                    end: base + e,
                };
                if let Some(prev) = tensors.insert(name.clone(), t) {
                    return Err(Error::tensor(
                        name,
                        format!(
                            "present in both {} and {}",
                            prev.file.path().display(),
                            path.display()
                        ),
                    ));
                }
            }
            files.push(file);
        }
        Ok(Checkpoint { tensors, files })
    }

    /// The number of layers `prefix0.`, `prefix1.`, ... present as a run from 0 (names such as
    /// `model.text_model.layers.7.mlp...`); a gap ends the run.
    pub fn layers_present(&self, prefix: &str) -> usize {
        let mut seen = std::collections::BTreeSet::new();
        for name in self.tensors.keys() {
            if let Some(rest) = name.strip_prefix(prefix) {
                if let Some(n) = rest.split('.').next().and_then(|n| n.parse::<usize>().ok()) {
                    seen.insert(n);
                }
            }
        }
        (0..).take_while(|l| seen.contains(l)).count()
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    /// Looks a tensor up, with an error naming it when it is absent.
    pub fn require(&self, name: &str) -> Result<&TensorRef> {
        self.get(name)
            .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The mapped files.
    pub fn files(&self) -> &[Arc<MappedFile>] {
        &self.files
    }

    /// Checks that every expected tensor is present with a readable dtype and the expected shape,
    /// and that nothing else is present except names matched by `ignorable`.
    pub fn validate(
        &self,
        expected: &[ExpectedTensor],
        ignorable: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut wanted: HashMap<&str, &ExpectedTensor> = HashMap::new();
        for e in expected {
            wanted.insert(e.name.as_str(), e);
        }
        for e in expected {
            let t = self.require(&e.name)?;
            t.dtype()?;
            if t.shape != e.shape {
                return Err(Error::tensor(
                    &e.name,
                    format!(
                        "shape {:?} in {} contradicts the configuration, which implies {:?}",
                        t.shape,
                        t.file.path().display(),
                        e.shape
                    ),
                ));
            }
        }
        for name in self.tensors.keys() {
            if !wanted.contains_key(name.as_str()) && !ignorable(name) {
                return Err(Error::tensor(
                    name,
                    "unexpected in an Idefics3 checkpoint of this configuration",
                ));
            }
        }
        Ok(())
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            "the data length does not match the header (truncated or damaged file)".into()
        }
        E::InvalidHeaderLength | E::HeaderTooSmall => {
            format!("{e:?}: the header is cut short (truncated or damaged file)")
        }
        other => format!("{other:?}"),
    }
}
