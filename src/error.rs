//! The library's error type: every variant names the file, tensor, field or value at fault.

use std::path::PathBuf;

/// Errors raised while loading a checkpoint or running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON or does not have the expected structure.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A configuration field is missing, has a wrong type, or holds an unsupported value.
    #[error("{file}: field `{field}`: {message}")]
    Config {
        /// The configuration file (or a description of where the settings came from).
        file: String,
        /// The dotted path of the field, e.g. `text_config.rope_scaling.rope_type`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor is missing, unexpected, or has the wrong dtype or shape.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// The tensor's name in the checkpoint or input file.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The inputs handed to the model are inconsistent.
    #[error("invalid input: {0}")]
    Input(String),
    /// The Ascend runtime is missing or one of its calls failed; `cause` names the library and the
    /// places looked, or the call, its status and the runtime's message.
    #[error("Ascend device {device}: {cause}")]
    Device {
        /// The device number asked for.
        device: u32,
        /// cann-sys's error.
        cause: cann_sys::Error,
    },
    /// The chosen backend cannot run this yet.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A backend op was handed operands it cannot combine (mismatched shapes, an index out of
    /// range): a bug in the code calling it, reported instead of a panic.
    #[error("{backend} backend, op `{op}`: {message}")]
    Op {
        /// The backend's name.
        backend: &'static str,
        /// The op of [`crate::backend::Backend`].
        op: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Tensor`].
    pub fn tensor(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Input`].
    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(message.into())
    }

    /// Says where an input error arose (`what: message`, the "invalid input" heading once); other
    /// kinds already name their file and are returned unchanged.
    pub fn within(self, what: &str) -> Self {
        match self {
            Error::Input(m) => Error::Input(format!("{what}: {m}")),
            other => other,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
