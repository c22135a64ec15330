//! A bounded, panic-free reader for PyTorch checkpoint files (`.pth`, `.pt`, `.bin`).
//!
//! [`read_pth`] and [`read_pth_bytes`] return every tensor of a checkpoint's state dict,
//! materialised as contiguous row-major little-endian bytes, in state-dict order.
//!
//! # The two on-disk formats
//!
//! **Zip format** (the default since torch 1.6). The file is a zip archive (entries are
//! normally *stored*, i.e. uncompressed, and 64-byte aligned) whose entries share one
//! arbitrary top-level folder `<prefix>/` (torch uses the file stem; `archive` is common):
//!
//! * `<prefix>/data.pkl`: the pickled object (usually an `OrderedDict` state dict);
//! * `<prefix>/data/<key>`: the raw little-endian bytes of storage `<key>`;
//! * `<prefix>/byteorder` (`little` or `big`; absent in old files, meaning little),
//!   `<prefix>/version`, `<prefix>/.format_version`, `<prefix>/.storage_alignment`,
//!   `<prefix>/.data/serialization_id`: bookkeeping that this reader ignores except the
//!   byte order.
//!
//! Storages appear in `data.pkl` as persistent ids (`BINPERSID`) of the form
//! `('storage', <storage class>, key, location, numel)`. torch 2.x still writes the legacy
//! *typed* storage classes (`torch.FloatStorage`, `torch.HalfStorage`,
//! `torch.BFloat16Storage`, `torch.LongStorage`, ...) with `numel` counted in elements of
//! that type, for every dtype that has such a class. Only dtypes added later (`uint16`,
//! `float8_*`, ...) are written as `torch.storage.UntypedStorage` with `numel` counted in
//! bytes, and the tensor is then rebuilt by `torch._utils._rebuild_tensor_v3`, which carries
//! the dtype as a `torch.<dtype>` global.
//!
//! **Legacy format** (torch < 1.6, or `_use_new_zipfile_serialization=False`). Not an
//! archive but a byte stream holding, back to back:
//!
//! 1. a pickle of the magic number `0x1950a86a20f9469cfc6c` (a 10-byte `LONG1`);
//! 2. a pickle of the protocol version, `1001`;
//! 3. a pickle of a sys-info dict (`little_endian`, `type_sizes`, ...);
//! 4. the pickled object, whose storage persistent ids are
//!    `('storage', <storage class>, key, location, numel, view_metadata)`;
//! 5. a pickle of the list of storage keys;
//!
//! followed, for each key in that list's order, by an 8-byte little-endian element count
//! and then `count * element_size` raw little-endian bytes.
//!
//! # Tensors and state dicts
//!
//! Tensors are `REDUCE` calls of `torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, requires_grad, backward_hooks[, metadata])` (or `_rebuild_tensor_v3`, which adds
//! a dtype), possibly wrapped in `torch._utils._rebuild_parameter[_with_state]` or
//! `torch._tensor._rebuild_from_type_v2`. Offsets and strides are in elements, so views,
//! transposes and tensors sharing one storage are all materialised correctly here.
//!
//! The state dict is the top-level dict if it holds tensors, otherwise the first of its
//! `state_dict`, `model`, `state_dict_ema` and `model_ema` entries that is a dict holding
//! tensors. Its non-tensor entries are skipped.
//!
//! # Robustness
//!
//! The input is untrusted. The pickle machine (module `pickle`) never executes anything:
//! globals it does not know become opaque objects. Every length read from the file is
//! checked against the bytes actually available before anything is allocated, all
//! arithmetic on file data is checked, the machine's stack, mark depth, memo and object
//! count are bounded, and the total bytes of tensor data produced is limited to a small
//! multiple of the input size (tensors with zero strides could otherwise expand without
//! limit).

mod legacy;
mod pickle;
mod select;
mod zip;

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use self::legacy::read_legacy;
use self::pickle::PROTO;
use self::zip::read_zip;

/// Element type of a tensor read from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl PthDType {
    /// Bytes taken by one element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            PthDType::F64 | PthDType::I64 => 8,
            PthDType::F32 | PthDType::I32 => 4,
            PthDType::F16 | PthDType::BF16 | PthDType::I16 => 2,
            PthDType::I8 | PthDType::U8 | PthDType::Bool => 1,
        }
    }

    /// The dtype's name in PyTorch (`"float32"`, `"bfloat16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PthDType::F64 => "float64",
            PthDType::F32 => "float32",
            PthDType::F16 => "float16",
            PthDType::BF16 => "bfloat16",
            PthDType::I64 => "int64",
            PthDType::I32 => "int32",
            PthDType::I16 => "int16",
            PthDType::I8 => "int8",
            PthDType::U8 => "uint8",
            PthDType::Bool => "bool",
        }
    }

    /// The dtype of a `torch.<name>` global (as pickled for `_rebuild_tensor_v3`).
    fn from_torch_name(name: &str) -> Option<Self> {
        Some(match name {
            "float64" | "double" => PthDType::F64,
            "float32" | "float" => PthDType::F32,
            "float16" | "half" => PthDType::F16,
            "bfloat16" => PthDType::BF16,
            "int64" | "long" => PthDType::I64,
            "int32" | "int" => PthDType::I32,
            "int16" | "short" => PthDType::I16,
            "int8" => PthDType::I8,
            "uint8" => PthDType::U8,
            "bool" => PthDType::Bool,
            _ => return None,
        })
    }
}

/// One tensor, materialised contiguous row-major, little-endian bytes.
#[derive(Debug, Clone)]
pub struct PthTensor {
    pub name: String,
    pub dtype: PthDType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Why a checkpoint could not be read. Every message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PthError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a PyTorch checkpoint (neither a zip archive nor a legacy pickle): {0}")]
    NotACheckpoint(String),
    #[error("corrupt or truncated zip archive: {0}")]
    Zip(String),
    #[error("zip archive has no `{0}` entry")]
    MissingEntry(String),
    #[error(
        "checkpoint was saved on a big-endian machine; only little-endian checkpoints are supported"
    )]
    BigEndian,
    #[error(
        "truncated: {what} needs {needed} bytes at offset {offset} but {container} ends at {end}"
    )]
    Truncated {
        what: String,
        needed: u64,
        offset: u64,
        container: &'static str,
        end: u64,
    },
    #[error("unsupported pickle opcode 0x{opcode:02x} at byte {pos}")]
    UnsupportedOpcode { opcode: u8, pos: u64 },
    #[error("malformed pickle at byte {pos}: {msg}")]
    Pickle { pos: u64, msg: String },
    #[error("pickle too large at byte {pos}: more than {limit} {what}")]
    PickleLimit {
        pos: u64,
        limit: usize,
        what: &'static str,
    },
    #[error("bad legacy checkpoint header: {0}")]
    LegacyHeader(String),
    #[error("storage {key}: {msg}")]
    Storage { key: String, msg: String },
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    #[error("tensor `{name}` has dtype {dtype}, which is not supported")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("no tensors found: top-level object is {0}")]
    NoTensors(String),
    #[error(
        "tensor data would exceed {limit} bytes at tensor `{name}`, too much for a {input}-byte checkpoint"
    )]
    TooLarge {
        name: String,
        limit: u64,
        input: u64,
    },
}

type Result<T, E = PthError> = std::result::Result<T, E>;

/// Longest text (in characters) of one error field; file-controlled names can be huge.
const MAX_ERROR_FIELD_CHARS: usize = 300;

/// Makes file-controlled text safe for a one-line message: escapes control characters
/// (newlines included) and cuts very long text.
fn clean(text: String) -> String {
    let unsafe_char = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if text.len() <= MAX_ERROR_FIELD_CHARS && !text.chars().any(unsafe_char) {
        return text;
    }
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_ERROR_FIELD_CHARS {
            out.push('…');
            break;
        }
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl PthError {
    /// Applies [`clean`] to every text field.
    fn cleaned(self) -> PthError {
        use PthError as E;
        match self {
            E::NotACheckpoint(s) => E::NotACheckpoint(clean(s)),
            E::Zip(s) => E::Zip(clean(s)),
            E::MissingEntry(s) => E::MissingEntry(clean(s)),
            E::Truncated {
                what,
                needed,
                offset,
                container,
                end,
            } => E::Truncated {
                what: clean(what),
                needed,
                offset,
                container,
                end,
            },
            E::Pickle { pos, msg } => E::Pickle {
                pos,
                msg: clean(msg),
            },
            E::LegacyHeader(s) => E::LegacyHeader(clean(s)),
            E::Storage { key, msg } => E::Storage {
                key: clean(key),
                msg: clean(msg),
            },
            E::Tensor { name, msg } => E::Tensor {
                name: clean(name),
                msg: clean(msg),
            },
            E::UnsupportedDtype { name, dtype } => E::UnsupportedDtype {
                name: clean(name),
                dtype: clean(dtype),
            },
            E::NoTensors(s) => E::NoTensors(clean(s)),
            E::TooLarge { name, limit, input } => E::TooLarge {
                name: clean(name),
                limit,
                input,
            },
            other @ (E::Io { .. }
            | E::BigEndian
            | E::UnsupportedOpcode { .. }
            | E::PickleLimit { .. }) => other,
        }
    }
}

/// Reads every tensor of a checkpoint's state dict, in the order the state dict lists them.
pub fn read_pth(path: &Path) -> Result<Vec<PthTensor>, PthError> {
    let io_err = |source| PthError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    match sniff(&head) {
        Kind::Zip => {
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            read_zip(BufReader::new(file), len).map_err(PthError::cleaned)
        }
        Kind::Pickle => {
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut bytes).map_err(io_err)?;
            read_legacy(&bytes).map_err(PthError::cleaned)
        }
        Kind::Other(what) => Err(PthError::NotACheckpoint(what)),
    }
}

/// Same from bytes already in memory (used by tests and for reading from other containers).
pub fn read_pth_bytes(bytes: &[u8]) -> Result<Vec<PthTensor>, PthError> {
    let result = match sniff(bytes) {
        Kind::Zip => read_zip(Cursor::new(bytes), bytes.len() as u64),
        Kind::Pickle => read_legacy(bytes),
        Kind::Other(what) => Err(PthError::NotACheckpoint(what)),
    };
    result.map_err(PthError::cleaned)
}

// ---------------------------------------------------------------------------------------
// Format detection
// ---------------------------------------------------------------------------------------

const SNIFF_LEN: usize = 512;

enum Kind {
    Zip,
    Pickle,
    Other(String),
}

fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    if head.first() == Some(&PROTO) {
        return Kind::Pickle;
    }
    let what = if head.is_empty() {
        "the input is empty".to_owned()
    } else if head.starts_with(b"\x89PNG") {
        "it looks like a PNG image".to_owned()
    } else if head.starts_with(b"\xff\xd8\xff") {
        "it looks like a JPEG image".to_owned()
    } else if head.starts_with(b"GIF8") {
        "it looks like a GIF image".to_owned()
    } else if head.starts_with(b"\x1f\x8b") {
        "it looks like a gzip file".to_owned()
    } else if head.starts_with(b"\x93NUMPY") {
        "it looks like a NumPy .npy file".to_owned()
    } else if head.get(257..262) == Some(b"ustar") {
        "it looks like a tar archive (torch < 0.4 checkpoints, which are not supported)".to_owned()
    } else if head.len() > 8 && head[8] == b'{' {
        "it looks like a safetensors file".to_owned()
    } else {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("it starts with bytes {}", shown.join(" "))
    };
    Kind::Other(what)
}
