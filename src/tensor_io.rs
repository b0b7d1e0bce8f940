//! Reading the input tensors of `idefics3 forward` and writing its outputs as safetensors, atomically:
//! a failed run never leaves a partial output file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::PixelInput;
use crate::numeric;
use crate::weights::DType;

/// Inputs as the transformers processor returns them for one sample.
pub struct ForwardInputs {
    /// `input_ids[0]`.
    pub input_ids: Vec<u32>,
    /// `pixel_values[0]` with `pixel_attention_mask[0]`, if present.
    pub pixels: Option<PixelInput>,
}

/// Reads `input_ids` (i64 or i32, `[1, L]`), optional `pixel_values` (float, `[1, T, C, S, S]`) and
/// optional `pixel_attention_mask` (any integer or bool dtype, `[1, T, S, S]`).
pub fn read_inputs(path: &Path) -> Result<ForwardInputs> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.into(),
        message: crate::weights::describe_safetensors_error(&e, &bytes),
    })?;
    let where_ = |name: &str| format!("{name} (in {})", path.display());

    let ids = st
        .tensor("input_ids")
        .map_err(|_| Error::tensor(where_("input_ids"), "missing"))?;
    let shape = ids.shape();
    if shape.len() != 2 || shape[0] != 1 || shape[1] == 0 {
        return Err(Error::tensor(
            where_("input_ids"),
            format!("shape {shape:?}; expected [1, L] with L > 0 (one sample)"),
        ));
    }
    let raw = integers(ids.dtype(), ids.data()).ok_or_else(|| {
        Error::tensor(
            where_("input_ids"),
            format!("dtype {:?}; expected I64 or I32", ids.dtype()),
        )
    })?;
    let input_ids = raw
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u32::try_from(v).map_err(|_| {
                Error::tensor(
                    where_("input_ids"),
                    format!("value {v} at position {i} is not a token id"),
                )
            })
        })
        .collect::<Result<Vec<u32>>>()?;

    let pixels = match st.tensor("pixel_values") {
        Err(_) => {
            if st.tensor("pixel_attention_mask").is_ok() {
                return Err(Error::tensor(
                    where_("pixel_attention_mask"),
                    "given without pixel_values",
                ));
            }
            None
        }
        Ok(pv) => {
            let s = pv.shape();
            if s.len() != 5 || s[0] != 1 || s[3] != s[4] || s[3] == 0 {
                return Err(Error::tensor(
                    where_("pixel_values"),
                    format!("shape {s:?}; expected [1, T, C, S, S] (one sample of square tiles)"),
                ));
            }
            let dt = match pv.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::BF16 => DType::BF16,
                Dtype::F16 => DType::F16,
                other => {
                    return Err(Error::tensor(
                        where_("pixel_values"),
                        format!("dtype {other:?}; expected F32 (or BF16/F16)"),
                    ))
                }
            };
            let values = numeric::to_f32(dt, pv.data());
            let (tiles, channels, size) = (s[1], s[2], s[3]);
            let mask = match st.tensor("pixel_attention_mask") {
                Err(_) => None,
                Ok(m) => {
                    if m.shape() != [1, tiles, size, size] {
                        return Err(Error::tensor(
                            where_("pixel_attention_mask"),
                            format!("shape {:?}; expected [1, {tiles}, {size}, {size}] to match pixel_values", m.shape()),
                        ));
                    }
                    let v = integers(m.dtype(), m.data()).ok_or_else(|| {
                        Error::tensor(
                            where_("pixel_attention_mask"),
                            format!("dtype {:?}; expected an integer or bool dtype", m.dtype()),
                        )
                    })?;
                    Some(v.into_iter().map(|x| x != 0).collect())
                }
            };
            Some(PixelInput {
                tiles,
                channels,
                size,
                values,
                mask,
            })
        }
    };
    Ok(ForwardInputs { input_ids, pixels })
}

/// Integer or bool elements widened to i64; `None` for other dtypes.
fn integers(dtype: Dtype, data: &[u8]) -> Option<Vec<i64>> {
    Some(match dtype {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::I16 => data
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::I8 => data.iter().map(|&b| b as i8 as i64).collect(),
        Dtype::U8 | Dtype::BOOL => data.iter().map(|&b| b as i64).collect(),
        Dtype::U16 => data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect(),
        Dtype::U64 => data
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()).min(i64::MAX as u64) as i64)
            .collect(),
        _ => return None,
    })
}

/// A tensor to write: f32 or i64 data with its shape.
pub enum OutTensor {
    /// 32-bit floats.
    F32(Vec<f32>, Vec<usize>),
    /// 64-bit integers.
    I64(Vec<i64>, Vec<usize>),
}

/// Writes tensors to a safetensors file through a temporary file in the same directory, renamed
/// into place only when complete.
pub fn write_tensors(path: &Path, tensors: Vec<(String, OutTensor)>) -> Result<()> {
    let mut views = Vec::new();
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, t)| match t {
            OutTensor::F32(v, s) => (
                name,
                Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            OutTensor::I64(v, s) => (
                name,
                Dtype::I64,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    for (name, dt, shape, data) in &owned {
        let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
            .map_err(|e| Error::tensor(name, format!("cannot serialise: {e}")))?;
        views.push((name.clone(), view));
    }
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).map_err(|e| {
        Error::Safetensors {
            path: path.into(),
            message: format!("cannot serialise: {e}"),
        }
    })?;
    write_atomic(path, &bytes)
}

/// Checks, before any work, that `path` can receive an output: its directory exists and is
/// writable, and `path` is absent or a regular file (a directory, a device node, a FIFO or a symbolic
/// link, even one to a regular file, is refused rather than replaced or followed).
pub fn check_output(path: &Path) -> Result<()> {
    let refuse = |why: String| Error::io(path, std::io::Error::other(why));
    let name = path.file_name().filter(|n| *n != "." && *n != "..");
    if name.is_none() {
        return Err(refuse("not a file path".into()));
    }
    let dir = output_dir(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(format!("{} is not a directory", dir.display()))),
        Err(e) => {
            return Err(refuse(format!(
                "the output directory {} cannot be used: {e}",
                dir.display()
            )))
        }
    }
    if !writable_dir(dir) {
        return Err(refuse(format!(
            "the output directory {} is not writable",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(refuse(format!(
            "exists and is {}, not a regular file; refusing to replace it",
            file_kind(&m.file_type())
        ))),
    }
}

fn output_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn writable_dir(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// 64 unpredictable bits for temporary names (the kernel's generator; a keyed hash of the time if
/// that fails).
fn random_suffix() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        return u64::from_ne_bytes(buf);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The process's umask, read without changing it (`/proc/self/status`); 022 when unknown.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Writes `bytes` to `path` atomically: into a temporary file created exclusively (`O_EXCL`,
/// `O_NOFOLLOW`, an unpredictable name, mode 0600) in the target's directory, synced, given its final
/// mode (the replaced file's, else 0666 less the umask), then renamed over the target. The target
/// must pass [`check_output`]; a failure leaves no file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    check_output(path)?;
    let dir = output_dir(path);
    let name = path.file_name().expect("checked by check_output");
    let mode = match std::fs::symlink_metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => 0o666 & !umask(),
    };
    let (mut file, tmp) = loop {
        let tmp: PathBuf = dir.join(format!(
            ".{}.{:016x}.tmp",
            name.to_string_lossy(),
            random_suffix()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (f, tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    };
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
