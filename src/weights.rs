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
                    message: describe_safetensors_error(&e, file.bytes()),
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

    /// The first tensor (by name) holding a NaN or an infinity, read from the raw bits; tensors of
    /// dtypes the engine does not read are skipped. Scans every weight: for diagnosis only.
    pub fn first_nonfinite(&self) -> Option<&str> {
        self.tensors.values().find_map(|t| {
            let b = t.bytes();
            let bad = match t.dtype.as_ref().ok()? {
                DType::BF16 => b
                    .chunks_exact(2)
                    .any(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7f80 == 0x7f80),
                DType::F16 => b
                    .chunks_exact(2)
                    .any(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7c00 == 0x7c00),
                DType::F32 => b.chunks_exact(4).any(|c| {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
                }),
            };
            bad.then_some(t.name.as_str())
        })
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

/// A safetensors error in words. The crate's variants for inconsistent offsets and shapes do not say
/// which tensor is at fault (or name its neighbour), so the header is read again to find it.
pub fn describe_safetensors_error(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            "the header is cut short or its length is wrong (truncated or damaged file)".into()
        }
        E::HeaderTooLarge => "the header is larger than 100 MB".into(),
        E::InvalidHeader(_) => "the header is not valid UTF-8".into(),
        E::InvalidHeaderDeserialization(err) | E::JsonError(err) => {
            format!("the header is not a valid tensor table: {err}")
        }
        E::TensorNotFound(name) => format!("tensor `{name}` is not in the file"),
        E::MisalignedSlice => "a tensor's data does not fall on whole bytes".into(),
        E::IoError(err) => err.to_string(),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("a {dtype:?} tensor of shape {shape:?} cannot hold {len} bytes")
        }
        E::MetadataIncompleteBuffer
        | E::TensorInvalidInfo
        | E::InvalidOffset(_)
        | E::ValidationOverflow => diagnose_header(bytes).unwrap_or_else(|| match e {
            E::MetadataIncompleteBuffer => {
                "the data length does not match the header (truncated or damaged file)".into()
            }
            E::InvalidOffset(name) => {
                format!("the data offsets of tensor `{name}` do not follow the previous tensor's")
            }
            E::ValidationOverflow => "a tensor's shape overflows its size".into(),
            _ => "a tensor's shape, dtype and data offsets disagree".into(),
        }),
    }
}

/// Names the first tensor whose shape, dtype and offsets disagree, or the data length the header
/// does not cover; `None` when the header cannot be read or shows no such fault.
fn diagnose_header(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = bytes.len() - 8 - n;
    let mut entries: Vec<(&str, usize, usize, u64)> = Vec::new();
    for (name, info) in header.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info.get("data_offsets")?.as_array()?;
        let (start, end) = (
            offsets.first()?.as_u64()? as usize,
            offsets.get(1)?.as_u64()? as usize,
        );
        let size: u64 = match info.get("dtype")?.as_str()? {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            _ => 1,
        };
        let mut numel: u64 = 1;
        for d in info.get("shape")?.as_array()? {
            match numel.checked_mul(d.as_u64()?) {
                Some(v) => numel = v,
                None => {
                    return Some(format!(
                        "tensor `{name}`: its shape {} overflows",
                        info.get("shape")?
                    ))
                }
            }
        }
        let Some(bytes_needed) = numel.checked_mul(size) else {
            return Some(format!("tensor `{name}`: its size overflows"));
        };
        entries.push((name.as_str(), start, end, bytes_needed));
    }
    entries.sort_by_key(|&(_, s, e, _)| (s, e));
    let mut prev: Option<(&str, usize)> = None;
    for &(name, start, end, needed) in &entries {
        let expected = prev.map_or(0, |(_, e)| e);
        if start != expected {
            let after = prev.map_or("the start of the data".to_string(), |(p, _)| {
                format!("`{p}`")
            });
            return Some(format!(
                "tensor `{name}`: its data starts at byte {start} but {after} ends at byte {expected} \
                 (a tensor's entry was removed from the header, or the offsets are damaged)"
            ));
        }
        if end < start || (end - start) as u64 != needed {
            return Some(format!(
                "tensor `{name}`: its shape and dtype need {needed} bytes but its data offsets \
                 [{start}, {end}] give {}",
                end.saturating_sub(start)
            ));
        }
        prev = Some((name, end));
    }
    let covered = prev.map_or(0, |(_, e)| e);
    (covered != data_len).then(|| {
        format!(
            "the tensors cover {covered} bytes of data but the file holds {data_len} \
             (truncated or damaged file)"
        )
    })
}
