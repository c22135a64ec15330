//! The library's error type.
//!
//! Every message is one line and names what was being done, with which input, and why
//! it failed, so that the CLI can print it as is.

use std::path::PathBuf;

use crate::pth::PthError;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model name that is not one of [`crate::model::Variant::all`].
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },

    /// A file that could not be opened or read.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A safetensors file that does not parse (truncated, corrupt header, ...).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors { path: PathBuf, reason: String },

    /// A PyTorch checkpoint that does not parse.
    #[error("{}: not a readable PyTorch checkpoint: {error}", path.display())]
    Pth { path: PathBuf, error: PthError },

    /// A weights file whose extension and contents match no supported format.
    #[error(
        "{}: unknown weights format (expected timm safetensors or a PyTorch .pth/.bin checkpoint)",
        path.display()
    )]
    UnknownWeightsFormat { path: PathBuf },

    /// A tensor the variant needs is absent from the weights.
    #[error(
        "weights {source_name} do not fit {variant}: tensor `{tensor}` (expected shape {expected:?}) is missing"
    )]
    MissingTensor {
        variant: &'static str,
        source_name: String,
        tensor: String,
        expected: Vec<usize>,
    },

    /// A tensor has the wrong shape for the variant.
    #[error(
        "weights {source_name} do not fit {variant}: tensor `{tensor}` has shape {found:?}, expected {expected:?}"
    )]
    ShapeMismatch {
        variant: &'static str,
        source_name: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// Tensors that the variant does not have.
    #[error(
        "weights {source_name} do not fit {variant}: unexpected tensor `{tensor}` ({count} unexpected in all)"
    )]
    UnexpectedTensor {
        variant: &'static str,
        source_name: String,
        tensor: String,
        count: usize,
    },

    /// A tensor whose element type cannot be used as a float weight.
    #[error("weights {source_name}: tensor `{tensor}` has dtype {dtype}, expected a float type")]
    WrongDtype {
        source_name: String,
        tensor: String,
        dtype: String,
    },

    /// No weights could be found for a variant without an explicit file.
    #[error(
        "no weights for {variant}: {tried}. Pass a weights file with --weights FILE (timm model.safetensors or a PyTorch .pth)"
    )]
    NoWeights {
        variant: &'static str,
        tried: String,
    },

    /// An image that cannot be decoded.
    #[error("{}: cannot decode image: {reason}", path.display())]
    Image { path: PathBuf, reason: String },

    /// A raw frame whose buffer does not match its declared geometry.
    #[error("invalid frame: {0}")]
    Frame(String),

    /// A thread could not be started or died.
    #[error("thread: {0}")]
    Thread(String),

    /// A GStreamer pipeline could not be built or run.
    #[error("{0}")]
    Source(String),

    /// A kernel set that is unknown or that this CPU cannot run (`EFFISTREAM_KERNELS`),
    /// or a precision it lacks the instructions for.
    #[error("{0}")]
    Kernels(String),

    /// A model's `config.json` (or a checkpoint folder) that effistream cannot use.
    #[error("{}: {reason}", path.display())]
    ModelConfig { path: PathBuf, reason: String },

    /// A labels file that cannot be used with its model.
    #[error("labels {}: {reason}", path.display())]
    Labels { path: PathBuf, reason: String },

    /// A user's Hugging Face repository (`[model] hub_id`) that could not be had.
    #[error("hub_id {repo}: {reason}")]
    Hub { repo: String, reason: String },

    /// An error inside candle while running the network.
    #[error("inference failed: {0}")]
    Candle(candle_core::Error),
}

// Messages embed their cause, so no error has a `source()`: printing the chain would
// repeat it.
impl From<candle_core::Error> for Error {
    fn from(error: candle_core::Error) -> Self {
        Self::Candle(error)
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}
