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
//! The input is untrusted. The pickle machine below never executes anything: globals it
//! does not know become opaque objects. Every length read from the file is checked against
//! the bytes actually available before anything is allocated, all arithmetic on file data
//! is checked, the machine's stack, mark depth, memo and object count are bounded, and the
//! total bytes of tensor data produced is limited to a small multiple of the input size
//! (tensors with zero strides could otherwise expand without limit).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

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

// ---------------------------------------------------------------------------------------
// Zip format
// ---------------------------------------------------------------------------------------

/// Largest `data.pkl` accepted (real ones are kilobytes to a few megabytes).
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Deflate cannot expand data by more than about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1100;

fn zip_err(e: zip::result::ZipError) -> PthError {
    PthError::Zip(e.to_string())
}

fn read_zip<R: Read + Seek>(reader: R, file_len: u64) -> Result<Vec<PthTensor>> {
    let mut archive = zip::ZipArchive::new(reader).map_err(zip_err)?;
    let pkl_name = find_data_pkl(&archive)?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_owned();

    let byteorder_name = format!("{prefix}byteorder");
    if archive.index_for_name(&byteorder_name).is_some() {
        let order = read_entry(
            &mut archive,
            &byteorder_name,
            EntrySize::AtMost(64),
            file_len,
        )?;
        match order.as_slice() {
            b"little" => {}
            b"big" => return Err(PthError::BigEndian),
            other => {
                return Err(PthError::Zip(format!(
                    "`{byteorder_name}` says {:?}, expected \"little\"",
                    String::from_utf8_lossy(other)
                )));
            }
        }
    }

    let pkl = read_entry(
        &mut archive,
        &pkl_name,
        EntrySize::AtMost(MAX_PICKLE_BYTES),
        file_len,
    )?;
    let mut machine = Machine::new();
    let (top, _) = machine.load(&pkl, 0, "data.pkl")?;
    let entries = select_state_dict(&machine, &top)?;

    let mut budget = Budget::new(file_len);
    let mut cache: HashMap<Rc<str>, (Vec<u8>, usize)> = HashMap::new();
    let mut uses: HashMap<Rc<str>, usize> = HashMap::new();
    for (_, t) in &entries {
        if let Ok(spec) = t
            && let Some(storage) = machine.storages.get(spec.storage)
        {
            *uses.entry(storage.key.clone()).or_insert(0) += 1;
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let spec = t.map_err(|e| e.into_error(&name))?;
        let storage = machine.storage_of(&spec, &name)?;
        let key = storage.key.clone();
        if !cache.contains_key(&key) {
            let nbytes = match machine.roots.get(&key) {
                Some(root) => root.nbytes(&key)?,
                None => {
                    return Err(PthError::Storage {
                        key: key.to_string(),
                        msg: "is used but never declared".to_owned(),
                    });
                }
            };
            budget.charge(nbytes, &name)?;
            let entry = format!("{prefix}data/{key}");
            let bytes = read_entry(&mut archive, &entry, EntrySize::Exactly(nbytes), file_len)
                .map_err(|e| match e {
                    PthError::Truncated {
                        needed,
                        offset,
                        container,
                        end,
                        ..
                    } => PthError::Truncated {
                        what: format!("storage {key}"),
                        needed,
                        offset,
                        container,
                        end,
                    },
                    other => other,
                })?;
            let remaining = uses.get(&key).copied().unwrap_or(1);
            cache.insert(key.clone(), (bytes, remaining));
        }
        let slot = cache.get_mut(&key).ok_or_else(|| PthError::Storage {
            key: key.to_string(),
            msg: "internal error: storage not loaded".to_owned(),
        })?;
        let tensor = materialize(&name, &spec, storage, &slot.0, &mut budget)?;
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            cache.remove(&key);
        }
        out.push(tensor);
    }
    Ok(out)
}

/// Finds `<prefix>/data.pkl`: the entry named `data.pkl` inside a single top-level folder,
/// preferring the folder of the archive's first entry (which is what torch does).
fn find_data_pkl<R: Read + Seek>(archive: &zip::ZipArchive<R>) -> Result<String> {
    let first_folder: Option<Vec<u8>> = archive
        .file_names_raw()
        .next()
        .and_then(|n| n.iter().position(|&b| b == b'/').map(|i| n[..=i].to_vec()));
    let mut candidates = Vec::new();
    for name in archive.file_names_raw() {
        if let Some(folder) = name.strip_suffix(b"data.pkl")
            && (folder.is_empty()
                || (folder.ends_with(b"/") && folder.iter().filter(|&&b| b == b'/').count() == 1))
        {
            candidates.push(name.to_vec());
        }
    }
    let chosen = match candidates.len() {
        0 => return Err(PthError::MissingEntry("<prefix>/data.pkl".to_owned())),
        1 => candidates.swap_remove(0),
        _ => {
            let preferred = first_folder.and_then(|folder| {
                candidates
                    .iter()
                    .position(|c| c.strip_suffix(b"data.pkl") == Some(folder.as_slice()))
            });
            match preferred {
                Some(i) => candidates.swap_remove(i),
                None => {
                    return Err(PthError::Zip(
                        "the archive holds several `data.pkl` entries in different folders"
                            .to_owned(),
                    ));
                }
            }
        }
    };
    String::from_utf8(chosen)
        .map_err(|_| PthError::Zip("the `data.pkl` entry's folder name is not UTF-8".to_owned()))
}

/// How much of a zip entry [`read_entry`] reads.
#[derive(Clone, Copy)]
enum EntrySize {
    /// Exactly this many bytes from its start; the entry must hold at least that many.
    Exactly(u64),
    /// The whole entry, which must not declare more than this many bytes.
    AtMost(u64),
}

/// Reads one zip entry, checking its declared sizes against the file and allocating no
/// more up front than the file's size allows (a deflated entry grows as data arrives).
fn read_entry<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    size_rule: EntrySize,
    file_len: u64,
) -> Result<Vec<u8>> {
    let mut entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(PthError::MissingEntry(name.to_owned()));
        }
        Err(e) => return Err(PthError::Zip(format!("cannot open `{name}`: {e}"))),
    };
    if entry.encrypted() {
        return Err(PthError::Zip(format!("`{name}` is encrypted")));
    }
    let size = entry.size();
    let compressed = entry.compressed_size();
    if let Some(start) = entry.data_start()
        && start
            .checked_add(compressed)
            .is_none_or(|end| end > file_len)
    {
        return Err(PthError::Truncated {
            what: format!("zip entry `{name}`"),
            needed: compressed,
            offset: start,
            container: "the file",
            end: file_len,
        });
    }
    let max_expanded = compressed
        .saturating_mul(MAX_DEFLATE_RATIO)
        .saturating_add(4096);
    let target = match size_rule {
        EntrySize::Exactly(n) => {
            if size < n {
                return Err(PthError::Zip(format!(
                    "`{name}` holds {size} bytes but {n} are needed"
                )));
            }
            n
        }
        EntrySize::AtMost(limit) => {
            if size > limit {
                return Err(PthError::Zip(format!(
                    "`{name}` declares {size} bytes, more than the {limit}-byte limit"
                )));
            }
            size
        }
    };
    if target > max_expanded {
        return Err(PthError::Zip(format!(
            "`{name}` claims {target} bytes from {compressed} compressed bytes"
        )));
    }
    let capacity = usize::try_from(target.min(file_len)).unwrap_or(0);
    let mut buf = Vec::with_capacity(capacity);
    // Asking for one byte more than needed makes the zip reader hit the end of an entry
    // of exactly the expected size, which is when it verifies the CRC.
    (&mut entry)
        .take(target.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| PthError::Zip(format!("cannot read `{name}`: {e}")))?;
    let got = buf.len() as u64;
    if got < target {
        return Err(PthError::Zip(format!(
            "`{name}` ended after {got} of its {target} bytes"
        )));
    }
    buf.truncate(usize::try_from(target).unwrap_or(usize::MAX));
    Ok(buf)
}

// ---------------------------------------------------------------------------------------
// Legacy format
// ---------------------------------------------------------------------------------------

/// `0x1950a86a20f9469cfc6c` as the little-endian two's complement bytes of a `LONG1`.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

fn read_legacy(bytes: &[u8]) -> Result<Vec<PthTensor>> {
    let mut machine = Machine::new();
    let (magic, pos) = machine.load(bytes, 0, "the file")?;
    let is_magic = match &magic {
        Value::BigInt(b) => b.as_ref() == LEGACY_MAGIC,
        _ => false,
    };
    if !is_magic {
        return Err(PthError::NotACheckpoint(format!(
            "it is a pickle but not PyTorch's legacy format (it starts with {} instead of the magic number)",
            machine.describe(&magic, 0)
        )));
    }
    let (version, pos) = machine.load(bytes, pos, "the file")?;
    match version {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        other => {
            return Err(PthError::LegacyHeader(format!(
                "protocol version is {}, expected 1001",
                machine.describe(&other, 0)
            )));
        }
    }
    let (sys_info, pos) = machine.load(bytes, pos, "the file")?;
    if let Some(Value::Bool(false)) = machine.dict_get(&sys_info, "little_endian") {
        return Err(PthError::BigEndian);
    }
    let (top, pos) = machine.load(bytes, pos, "the file")?;
    let (keys, mut pos) = machine.load(bytes, pos, "the file")?;
    let keys: Vec<Value> = match machine.sequence(&keys) {
        Some(items) => items.to_vec(),
        None => {
            return Err(PthError::LegacyHeader(format!(
                "the storage key list is {}",
                machine.describe(&keys, 0)
            )));
        }
    };

    // Locate every storage's bytes in the data section that follows the pickles.
    let file_len = bytes.len() as u64;
    let mut ranges: HashMap<Rc<str>, (usize, usize)> = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return Err(PthError::LegacyHeader(format!(
                "a storage key is {}, not a string",
                machine.describe(&key, 0)
            )));
        };
        let Some(root) = machine.roots.get(&key) else {
            return Err(PthError::Storage {
                key: key.to_string(),
                msg: "is listed in the data section but the pickle never declares it".to_owned(),
            });
        };
        let count_bytes =
            bytes
                .get(pos..pos.saturating_add(8))
                .ok_or_else(|| PthError::Truncated {
                    what: format!("the element count of storage {key}"),
                    needed: 8,
                    offset: pos as u64,
                    container: "the file",
                    end: file_len,
                })?;
        let mut count = [0u8; 8];
        count.copy_from_slice(count_bytes);
        let count = u64::from_le_bytes(count);
        if count != root.numel {
            return Err(PthError::Storage {
                key: key.to_string(),
                msg: format!(
                    "the data section holds {count} elements but the pickle declares {}",
                    root.numel
                ),
            });
        }
        let nbytes = root.nbytes(&key)?;
        let start = pos + 8;
        let end = usize::try_from(nbytes)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| PthError::Truncated {
                what: format!("storage {key}"),
                needed: nbytes,
                offset: start as u64,
                container: "the file",
                end: file_len,
            })?;
        ranges.insert(key, (start, end));
        pos = end;
    }

    let entries = select_state_dict(&machine, &top)?;
    let mut budget = Budget::new(file_len);
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let spec = t.map_err(|e| e.into_error(&name))?;
        let storage = machine.storage_of(&spec, &name)?;
        let &(start, end) = ranges.get(&storage.key).ok_or_else(|| PthError::Storage {
            key: storage.key.to_string(),
            msg: format!("is used by tensor `{name}` but has no data (missing from the key list)"),
        })?;
        let data = bytes.get(start..end).unwrap_or_default();
        out.push(materialize(&name, &spec, storage, data, &mut budget)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// State dict selection and tensor materialisation
// ---------------------------------------------------------------------------------------

/// Keys of a checkpoint dict that may hold the state dict, in order of preference.
const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model", "state_dict_ema", "model_ema"];

/// The state dict's tensor entries, in order; a tensor that cannot be used carries why.
type Entries = Vec<(String, Result<TensorSpec, TensorProblem>)>;

fn select_state_dict(m: &Machine, top: &Value) -> Result<Entries> {
    let mut chosen = None;
    if m.dict_has_tensor(top) {
        chosen = Some(top);
    } else {
        for key in STATE_DICT_KEYS {
            if let Some(inner) = m.dict_get_ref(top, key)
                && m.dict_has_tensor(inner)
            {
                chosen = Some(inner);
                break;
            }
        }
    }
    let Some(dict) = chosen.and_then(|v| m.dict(v)) else {
        return Err(PthError::NoTensors(m.describe(top, 0)));
    };
    let mut entries = Vec::new();
    for (key, value) in &dict.entries {
        let Some(tensor) = m.tensor(value) else {
            continue;
        };
        let name = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => {
                return Err(PthError::Tensor {
                    name: m.describe(other, 0),
                    msg: "is not a state dict entry (its key is not a string)".to_owned(),
                });
            }
        };
        entries.push((name, tensor.clone()));
    }
    Ok(entries)
}

/// Limits the total bytes allocated for storages and tensors to a multiple of the input.
struct Budget {
    input: u64,
    limit: u64,
    used: u64,
}

impl Budget {
    fn new(input: u64) -> Self {
        Budget {
            input,
            limit: input.saturating_mul(4).saturating_add(16 << 20),
            used: 0,
        }
    }

    fn charge(&mut self, bytes: u64, name: &str) -> Result<()> {
        match self.used.checked_add(bytes) {
            Some(total) if total <= self.limit => {
                self.used = total;
                Ok(())
            }
            _ => Err(PthError::TooLarge {
                name: name.to_owned(),
                limit: self.limit,
                input: self.input,
            }),
        }
    }
}

fn materialize(
    name: &str,
    spec: &TensorSpec,
    storage: &StorageRef,
    root_bytes: &[u8],
    budget: &mut Budget,
) -> Result<PthTensor> {
    let tensor_err = |msg: String| PthError::Tensor {
        name: name.to_owned(),
        msg,
    };
    let es = spec.dtype.size_in_bytes() as u64;
    // The storage this tensor sees: the root storage, or a legacy view into it.
    let view_start = storage.byte_offset.min(root_bytes.len() as u64);
    let view_end = view_start
        .checked_add(storage.byte_len)
        .filter(|&end| end <= root_bytes.len() as u64)
        .ok_or_else(|| {
            tensor_err(format!(
                "its storage view needs {} bytes at offset {} but storage {} has {}",
                storage.byte_len,
                storage.byte_offset,
                storage.key,
                root_bytes.len()
            ))
        })?;
    let view = root_bytes
        .get(view_start as usize..view_end as usize)
        .unwrap_or_default();
    let storage_elems = view.len() as u64 / es;

    let numel = spec
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| tensor_err(format!("shape {:?} overflows", spec.shape)))?;
    let out_bytes = numel
        .checked_mul(es)
        .ok_or_else(|| tensor_err(format!("shape {:?} overflows", spec.shape)))?;
    let mut shape = Vec::with_capacity(spec.shape.len());
    for &d in &spec.shape {
        shape.push(usize::try_from(d).map_err(|_| tensor_err("shape too large".to_owned()))?);
    }
    if numel == 0 {
        return Ok(PthTensor {
            name: name.to_owned(),
            dtype: spec.dtype,
            shape,
            data: Vec::new(),
        });
    }
    // Highest element index touched; every other index is smaller.
    let mut last = spec.offset;
    for (&d, &s) in spec.shape.iter().zip(&spec.stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or_else(|| tensor_err("size and stride overflow".to_owned()))?;
    }
    if last >= storage_elems {
        return Err(tensor_err(format!(
            "reaches element {last} of its storage {} which has only {storage_elems} {} elements",
            storage.key,
            spec.dtype.name()
        )));
    }
    budget.charge(out_bytes, name)?;
    // All offsets below are at most `(last + 1) * es <= view.len()`, so fit in usize.
    let es = es as usize;
    let out_len = out_bytes as usize;
    let offset = spec.offset as usize;
    let stride: Vec<usize> = spec.stride.iter().map(|&s| s as usize).collect();

    let mut contiguous = true;
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d != 1 && s != expected {
            contiguous = false;
            break;
        }
        expected = expected.saturating_mul(d);
    }
    let data = if contiguous {
        let start = offset * es;
        view.get(start..start + out_len)
            .ok_or_else(|| tensor_err("internal bounds error".to_owned()))?
            .to_vec()
    } else {
        gather(view, es, offset, &shape, &stride, out_len)
            .ok_or_else(|| tensor_err("internal bounds error".to_owned()))?
    };
    Ok(PthTensor {
        name: name.to_owned(),
        dtype: spec.dtype,
        shape,
        data,
    })
}

/// Copies a strided tensor (`shape` non-empty, no zero sizes) into row-major order.
fn gather(
    src: &[u8],
    es: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
    out_len: usize,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let ndim = shape.len();
    // The innermost dimension is copied as one run when its elements are adjacent.
    let (outer, inner_len, inner_stride) = match (shape.last(), stride.last()) {
        (Some(&n), Some(&s)) => (ndim - 1, n, s),
        _ => return None,
    };
    let mut index = vec![0usize; outer];
    loop {
        let base = offset
            + index
                .iter()
                .zip(stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        if inner_stride == 1 {
            out.extend_from_slice(src.get(base * es..(base + inner_len) * es)?);
        } else {
            for j in 0..inner_len {
                let e = base + j * inner_stride;
                out.extend_from_slice(src.get(e * es..(e + 1) * es)?);
            }
        }
        // Odometer increment over the outer dimensions.
        let mut dim = outer;
        loop {
            if dim == 0 {
                return Some(out);
            }
            dim -= 1;
            index[dim] += 1;
            if index[dim] < shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pickle machine
// ---------------------------------------------------------------------------------------

/// A pickled value. Containers and objects live in [`Machine::heap`] and are referred to by
/// index, so the memo shares them by reference and no value owns another (dropping is never
/// recursive, and cycles are harmless).
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for `i64`: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Heap(usize),
}

#[derive(Debug)]
enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Set(Vec<Value>),
    // Large variants are boxed to keep every heap slot small.
    Dict(Box<Dict>),
    Global(Box<Global>),
    /// The opaque result of calling or instantiating something we do not model.
    Object {
        class: Value,
        /// Items set on it with `SETITEM(S)` (dict subclasses).
        items: Option<Box<Dict>>,
    },
    Storage(usize),
    /// A tensor, or why it cannot be read (reported only if the state dict uses it).
    Tensor(Box<Result<TensorSpec, TensorProblem>>),
}

#[derive(Debug, Default)]
struct Dict {
    ordered: bool,
    entries: Vec<(Value, Value)>,
    /// Positions of string and integer keys, built once the dict is big enough for a
    /// linear scan to be slow (most pickled dicts are tiny).
    index: Option<HashMap<DictKey, usize>>,
}

/// Entries from which a [`Dict`] keeps a hash index.
const DICT_INDEX_MIN: usize = 16;

#[derive(Debug, PartialEq, Eq, Hash)]
enum DictKey {
    Str(Rc<str>),
    Int(i64),
}

impl DictKey {
    fn of(v: &Value) -> Option<DictKey> {
        match v {
            Value::Str(s) => Some(DictKey::Str(s.clone())),
            Value::Int(i) => Some(DictKey::Int(*i)),
            _ => None,
        }
    }
}

impl Dict {
    fn position(&self, key: &DictKey) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self
                .entries
                .iter()
                .position(|(k, _)| DictKey::of(k).as_ref() == Some(key)),
        }
    }

    /// Python semantics: a repeated key replaces the value and keeps its place.
    fn insert(&mut self, key: Value, value: Value) {
        let Some(hashed) = DictKey::of(&key) else {
            self.entries.push((key, value));
            return;
        };
        if let Some(i) = self.position(&hashed) {
            if let Some(slot) = self.entries.get_mut(i) {
                slot.1 = value;
            }
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(hashed, self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() >= DICT_INDEX_MIN {
            let mut index = HashMap::with_capacity(self.entries.len());
            for (i, (k, _)) in self.entries.iter().enumerate() {
                if let Some(k) = DictKey::of(k) {
                    index.entry(k).or_insert(i);
                }
            }
            self.index = Some(index);
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let i = self.position(&DictKey::Str(Rc::from(key)))?;
        self.entries.get(i).map(|(_, v)| v)
    }
}

#[derive(Debug)]
struct Global {
    module: Rc<str>,
    name: Rc<str>,
    kind: GlobalKind,
}

#[derive(Debug, Clone)]
enum GlobalKind {
    /// `_rebuild_tensor_v2` / `_rebuild_tensor`: dtype from the storage class.
    RebuildTensor,
    /// `_rebuild_tensor_v3`: dtype is argument 6.
    RebuildTensorV3,
    /// `_rebuild_parameter[_with_state]`, `_rebuild_device_tensor_from_cpu_tensor`: the
    /// result is the tensor in argument 0.
    FirstArg,
    /// `_rebuild_from_type_v2(func, type, args, state)`: the result is `func(*args)`.
    FromType,
    /// A tensor kind this reader does not support, and why.
    UnsupportedTensor(&'static str),
    OrderedDict,
    Dict,
    Storage(StorageKind),
    DType(Option<PthDType>),
    Other,
}

impl GlobalKind {
    fn classify(module: &str, name: &str) -> GlobalKind {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => GlobalKind::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v3") => GlobalKind::RebuildTensorV3,
            (
                "torch._utils",
                "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
                | "_rebuild_device_tensor_from_cpu_tensor",
            ) => GlobalKind::FirstArg,
            ("torch._tensor", "_rebuild_from_type_v2" | "_rebuild_from_type") => {
                GlobalKind::FromType
            }
            ("torch._utils", "_rebuild_qtensor") => {
                GlobalKind::UnsupportedTensor("quantized tensors are not supported")
            }
            ("torch._utils", "_rebuild_sparse_tensor" | "_rebuild_sparse_csr_tensor") => {
                GlobalKind::UnsupportedTensor("sparse tensors are not supported")
            }
            ("torch._utils", "_rebuild_meta_tensor_no_storage") => {
                GlobalKind::UnsupportedTensor("it is a meta tensor and has no data")
            }
            ("torch._utils", "_rebuild_nested_tensor") => {
                GlobalKind::UnsupportedTensor("nested tensors are not supported")
            }
            ("torch._utils", "_rebuild_wrapper_subclass") => {
                GlobalKind::UnsupportedTensor("it is a tensor subclass without storage")
            }
            ("torch._utils", n) if n.starts_with("_rebuild_") => {
                GlobalKind::UnsupportedTensor("it was saved in a form this reader does not support")
            }
            ("collections", "OrderedDict") => GlobalKind::OrderedDict,
            ("builtins" | "__builtin__", "dict") => GlobalKind::Dict,
            ("torch" | "torch.storage", "UntypedStorage") => {
                GlobalKind::Storage(StorageKind::Untyped)
            }
            ("torch" | "torch.cuda", n) if n.ends_with("Storage") => {
                GlobalKind::Storage(StorageKind::from_class(n))
            }
            ("torch", n) => match PthDType::from_torch_name(n) {
                Some(d) => GlobalKind::DType(Some(d)),
                None if is_torch_dtype_name(n) => GlobalKind::DType(None),
                None => GlobalKind::Other,
            },
            _ => GlobalKind::Other,
        }
    }
}

/// Dtypes torch has that [`PthDType`] does not (so their tensors get a clear error).
fn is_torch_dtype_name(name: &str) -> bool {
    name.starts_with("uint")
        || name.starts_with("int")
        || name.starts_with("float")
        || name.starts_with("complex")
        || name.starts_with("bits")
        || name.starts_with("q")
        || name == "cfloat"
        || name == "cdouble"
        || name == "chalf"
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StorageKind {
    Typed(PthDType),
    /// Bytes; `numel` counts bytes.
    Untyped,
    /// A typed storage whose dtype [`PthDType`] lacks (element size known if listed).
    Unsupported {
        class: Rc<str>,
        elem_size: Option<u64>,
    },
}

impl StorageKind {
    fn from_class(class: &str) -> StorageKind {
        let typed = match class {
            "DoubleStorage" => Some(PthDType::F64),
            "FloatStorage" => Some(PthDType::F32),
            "HalfStorage" => Some(PthDType::F16),
            "BFloat16Storage" => Some(PthDType::BF16),
            "LongStorage" => Some(PthDType::I64),
            "IntStorage" => Some(PthDType::I32),
            "ShortStorage" => Some(PthDType::I16),
            "CharStorage" => Some(PthDType::I8),
            "ByteStorage" => Some(PthDType::U8),
            "BoolStorage" => Some(PthDType::Bool),
            _ => None,
        };
        if let Some(d) = typed {
            return StorageKind::Typed(d);
        }
        let elem_size = match class {
            "ComplexDoubleStorage" => Some(16),
            "ComplexFloatStorage" => Some(8),
            "QInt32Storage" => Some(4),
            "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Some(1),
            _ => None,
        };
        StorageKind::Unsupported {
            class: Rc::from(class),
            elem_size,
        }
    }

    fn elem_size(&self) -> Option<u64> {
        match self {
            StorageKind::Typed(d) => Some(d.size_in_bytes() as u64),
            StorageKind::Untyped => Some(1),
            StorageKind::Unsupported { elem_size, .. } => *elem_size,
        }
    }
}

/// A storage as declared by persistent ids: its kind and element count.
#[derive(Debug)]
struct RootStorage {
    kind: StorageKind,
    numel: u64,
}

impl RootStorage {
    fn nbytes(&self, key: &str) -> Result<u64> {
        let size = self.kind.elem_size().ok_or_else(|| PthError::Storage {
            key: key.to_owned(),
            msg: format!("has an unknown storage type {:?}", self.kind),
        })?;
        self.numel
            .checked_mul(size)
            .ok_or_else(|| PthError::Storage {
                key: key.to_owned(),
                msg: format!("declares {} elements, which overflows", self.numel),
            })
    }
}

/// A storage a tensor refers to: a root storage or (legacy only) a byte range of one.
#[derive(Debug)]
struct StorageRef {
    key: Rc<str>,
    kind: StorageKind,
    byte_offset: u64,
    byte_len: u64,
}

#[derive(Debug, Clone)]
struct TensorSpec {
    /// Index into [`Machine::storages`].
    storage: usize,
    dtype: PthDType,
    offset: u64,
    shape: Vec<u64>,
    stride: Vec<u64>,
}

/// Why a pickled tensor cannot be read.
#[derive(Debug, Clone)]
enum TensorProblem {
    Dtype(String),
    Other(String),
}

impl TensorProblem {
    fn into_error(self, name: &str) -> PthError {
        match self {
            TensorProblem::Dtype(dtype) => PthError::UnsupportedDtype {
                name: name.to_owned(),
                dtype,
            },
            TensorProblem::Other(msg) => PthError::Tensor {
                name: name.to_owned(),
                msg,
            },
        }
    }
}

// Opcodes (see CPython's Lib/pickletools.py).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const NEWOBJ_EX: u8 = 0x92;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;
const BYTEARRAY8: u8 = 0x96;

// Bounds on the machine (real checkpoints stay far below all of them).
const MAX_STACK: usize = 1 << 20;
const MAX_MARKS: usize = 4096;
const MAX_MEMO: usize = 1 << 22;
const MAX_HEAP: usize = 1 << 21;
/// Approximate bytes the machine's objects may take (see [`Machine::charge`]).
const MAX_PICKLE_MEMORY: usize = 128 << 20;
/// Bookkeeping bytes charged per heap allocation.
const ALLOCATION: usize = 16;
const MAX_OPS: u64 = 1 << 28;
const MAX_GLOBAL_LINE: usize = 1024;
/// How deep `describe` and `_rebuild_from_type_v2` nesting go.
const MAX_DEPTH: usize = 8;

struct Machine {
    heap: Vec<Obj>,
    storages: Vec<StorageRef>,
    roots: HashMap<Rc<str>, RootStorage>,
    /// Globals by `module\nname`: one object per class or function, as in Python.
    globals: HashMap<String, Value>,
    /// Approximate bytes held by the heap, strings, containers and memo.
    memory: usize,
    // Per-load state.
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    ops: u64,
}

/// The cursor of one `load`: input bytes and where errors should say they are.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    /// Position of the opcode being executed.
    op_pos: usize,
    container: &'static str,
}

impl<'a> Input<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = self.data.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n <= remaining => {
                let out = &self.data[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(PthError::Truncated {
                what: format!("pickle opcode {what} at byte {}", self.op_pos),
                needed: n,
                offset: self.pos as u64,
                container: self.container,
                end: self.data.len() as u64,
            }),
        }
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn line(&mut self, what: &str) -> Result<&'a str> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let window = &rest[..rest.len().min(MAX_GLOBAL_LINE)];
        let Some(n) = window.iter().position(|&b| b == b'\n') else {
            return Err(self.error(format!("{what} name is not newline-terminated")));
        };
        let line = &rest[..n];
        self.pos += n + 1;
        std::str::from_utf8(line).map_err(|_| self.error(format!("{what} name is not UTF-8")))
    }

    fn error(&self, msg: String) -> PthError {
        PthError::Pickle {
            pos: self.op_pos as u64,
            msg,
        }
    }
}

fn le_int(bytes: &[u8]) -> Value {
    if bytes.len() <= 8 {
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        let mut v = i64::from_le_bytes(buf);
        if !bytes.is_empty() && bytes.len() < 8 {
            // Sign-extend.
            let shift = 64 - 8 * bytes.len() as u32;
            v = (v << shift) >> shift;
        }
        Value::Int(v)
    } else {
        Value::BigInt(Rc::from(bytes))
    }
}

impl Machine {
    fn new() -> Self {
        Machine {
            heap: Vec::new(),
            storages: Vec::new(),
            roots: HashMap::new(),
            globals: HashMap::new(),
            memory: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            ops: 0,
        }
    }

    /// Runs one pickle starting at `data[start]`; returns its value and the position after
    /// its `STOP`. Objects stay in the heap across loads; stack and memo do not.
    fn load(
        &mut self,
        data: &[u8],
        start: usize,
        container: &'static str,
    ) -> Result<(Value, usize)> {
        self.stack.clear();
        self.marks.clear();
        self.memo.clear();
        let mut input = Input {
            data,
            pos: start,
            op_pos: start,
            container,
        };
        loop {
            input.op_pos = input.pos;
            self.ops += 1;
            if self.ops > MAX_OPS {
                return Err(PthError::PickleLimit {
                    pos: input.op_pos as u64,
                    limit: MAX_OPS as usize,
                    what: "opcodes",
                });
            }
            let op = input.u8("")?;
            if op == STOP {
                let value = self.pop(&input)?;
                return Ok((value, input.pos));
            }
            self.step(op, &mut input)?;
            if self.stack.len() > MAX_STACK {
                return Err(PthError::PickleLimit {
                    pos: input.op_pos as u64,
                    limit: MAX_STACK,
                    what: "stack items",
                });
            }
        }
    }

    fn step(&mut self, op: u8, input: &mut Input<'_>) -> Result<()> {
        match op {
            PROTO => {
                let version = input.u8("PROTO")?;
                if !(2..=5).contains(&version) {
                    return Err(input.error(format!("unsupported pickle protocol {version}")));
                }
            }
            FRAME => {
                let len = u64::from_le_bytes(input.array("FRAME")?);
                let remaining = input.data.len().saturating_sub(input.pos) as u64;
                if len > remaining {
                    return Err(PthError::Truncated {
                        what: format!("pickle frame at byte {}", input.op_pos),
                        needed: len,
                        offset: input.pos as u64,
                        container: input.container,
                        end: input.data.len() as u64,
                    });
                }
            }
            MARK => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(PthError::PickleLimit {
                        pos: input.op_pos as u64,
                        limit: MAX_MARKS,
                        what: "nested marks",
                    });
                }
                self.marks.push(self.stack.len());
            }
            POP => {
                self.pop(input)?;
            }
            POP_MARK => {
                self.pop_mark(input)?;
            }
            DUP => {
                let top = self.top(input)?.clone();
                self.stack.push(top);
            }
            NONE => self.stack.push(Value::None),
            NEWTRUE => self.stack.push(Value::Bool(true)),
            NEWFALSE => self.stack.push(Value::Bool(false)),
            BININT => {
                let v = i32::from_le_bytes(input.array("BININT")?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            BININT1 => {
                let v = input.u8("BININT1")?;
                self.stack.push(Value::Int(i64::from(v)));
            }
            BININT2 => {
                let v = u16::from_le_bytes(input.array("BININT2")?);
                self.stack.push(Value::Int(i64::from(v)));
            }
            LONG1 => {
                let n = input.u8("LONG1")?;
                let bytes = input.take(u64::from(n), "LONG1")?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(le_int(bytes));
            }
            LONG4 => {
                let n = i32::from_le_bytes(input.array("LONG4")?);
                let n = u64::try_from(n)
                    .map_err(|_| input.error("LONG4 has a negative length".to_owned()))?;
                let bytes = input.take(n, "LONG4")?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(le_int(bytes));
            }
            BINFLOAT => {
                let v = f64::from_be_bytes(input.array("BINFLOAT")?);
                self.stack.push(Value::Float(v));
            }
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 | SHORT_BINSTRING | BINSTRING => {
                let (len, what) = match op {
                    SHORT_BINUNICODE => {
                        (u64::from(input.u8("SHORT_BINUNICODE")?), "SHORT_BINUNICODE")
                    }
                    BINUNICODE => (
                        u64::from(u32::from_le_bytes(input.array("BINUNICODE")?)),
                        "BINUNICODE",
                    ),
                    BINUNICODE8 => (
                        u64::from_le_bytes(input.array("BINUNICODE8")?),
                        "BINUNICODE8",
                    ),
                    SHORT_BINSTRING => (u64::from(input.u8("SHORT_BINSTRING")?), "SHORT_BINSTRING"),
                    _ => {
                        let n = i32::from_le_bytes(input.array("BINSTRING")?);
                        let n = u64::try_from(n).map_err(|_| {
                            input.error("BINSTRING has a negative length".to_owned())
                        })?;
                        (n, "BINSTRING")
                    }
                };
                let bytes = input.take(len, what)?;
                self.charge(bytes.len() + 32, input)?;
                // Python 2 `str`s (BINSTRING) are decoded as UTF-8, as torch.load does.
                let s = String::from_utf8_lossy(bytes);
                self.stack.push(Value::Str(Rc::from(s.as_ref())));
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                let (len, what) = match op {
                    SHORT_BINBYTES => (u64::from(input.u8("SHORT_BINBYTES")?), "SHORT_BINBYTES"),
                    BINBYTES => (
                        u64::from(u32::from_le_bytes(input.array("BINBYTES")?)),
                        "BINBYTES",
                    ),
                    BINBYTES8 => (u64::from_le_bytes(input.array("BINBYTES8")?), "BINBYTES8"),
                    _ => (u64::from_le_bytes(input.array("BYTEARRAY8")?), "BYTEARRAY8"),
                };
                let bytes = input.take(len, what)?;
                self.charge(bytes.len() + 32, input)?;
                self.stack.push(Value::Bytes(Rc::from(bytes)));
            }
            EMPTY_TUPLE => {
                let v = self.alloc(Obj::Tuple(Vec::new()), input)?;
                self.stack.push(v);
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = usize::from(op - TUPLE1 + 1);
                let floor = self.floor();
                if self.stack.len() < floor + n {
                    return Err(input.error("stack underflow".to_owned()));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                let v = self.alloc(Obj::Tuple(items), input)?;
                self.stack.push(v);
            }
            TUPLE => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::Tuple(items), input)?;
                self.stack.push(v);
            }
            EMPTY_LIST => {
                let v = self.alloc(Obj::List(Vec::new()), input)?;
                self.stack.push(v);
            }
            LIST => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::List(items), input)?;
                self.stack.push(v);
            }
            EMPTY_DICT => {
                let v = self.alloc(Obj::Dict(Box::default()), input)?;
                self.stack.push(v);
            }
            DICT => {
                let items = self.pop_mark(input)?;
                let mut dict = Dict::default();
                self.fill_dict(&mut dict, items, input)?;
                let v = self.alloc(Obj::Dict(Box::new(dict)), input)?;
                self.stack.push(v);
            }
            EMPTY_SET => {
                let v = self.alloc(Obj::Set(Vec::new()), input)?;
                self.stack.push(v);
            }
            FROZENSET => {
                let items = self.pop_mark(input)?;
                let v = self.alloc(Obj::Set(items), input)?;
                self.stack.push(v);
            }
            APPEND => {
                let item = self.pop(input)?;
                self.extend(vec![item], input)?;
            }
            APPENDS | ADDITEMS => {
                let items = self.pop_mark(input)?;
                self.extend(items, input)?;
            }
            SETITEM => {
                let value = self.pop(input)?;
                let key = self.pop(input)?;
                self.set_items(vec![key, value], input)?;
            }
            SETITEMS => {
                let items = self.pop_mark(input)?;
                self.set_items(items, input)?;
            }
            BINPUT => {
                let i = input.u8("BINPUT")?;
                self.memo_put(u32::from(i), input)?;
            }
            LONG_BINPUT => {
                let i = u32::from_le_bytes(input.array("LONG_BINPUT")?);
                self.memo_put(i, input)?;
            }
            MEMOIZE => {
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| input.error("memo overflow".to_owned()))?;
                self.memo_put(i, input)?;
            }
            BINGET => {
                let i = input.u8("BINGET")?;
                self.memo_get(u32::from(i), input)?;
            }
            LONG_BINGET => {
                let i = u32::from_le_bytes(input.array("LONG_BINGET")?);
                self.memo_get(i, input)?;
            }
            GLOBAL => {
                let module = input.line("GLOBAL module")?;
                let name = input.line("GLOBAL")?;
                let v = self.global(Rc::from(module), Rc::from(name), input)?;
                self.stack.push(v);
            }
            STACK_GLOBAL => {
                let name = self.pop(input)?;
                let module = self.pop(input)?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(input.error("STACK_GLOBAL needs two strings".to_owned()));
                };
                let v = self.global(module, name, input)?;
                self.stack.push(v);
            }
            REDUCE => {
                let args = self.pop(input)?;
                let callable = self.pop(input)?;
                let v = self.call(callable, args, 0, input)?;
                self.stack.push(v);
            }
            NEWOBJ => {
                let _args = self.pop(input)?;
                let class = self.pop(input)?;
                let v = self.opaque(class, input)?;
                self.stack.push(v);
            }
            NEWOBJ_EX => {
                let _kwargs = self.pop(input)?;
                let _args = self.pop(input)?;
                let class = self.pop(input)?;
                let v = self.opaque(class, input)?;
                self.stack.push(v);
            }
            BUILD => {
                // Sets an object's state. Nothing we read depends on it (an OrderedDict's
                // `_metadata`, a tensor subclass's attributes), so it is checked and dropped.
                let _state = self.pop(input)?;
                self.top(input)?;
            }
            BINPERSID => {
                let pid = self.pop(input)?;
                let v = self.persistent_load(&pid, input)?;
                self.stack.push(v);
            }
            _ => {
                return Err(PthError::UnsupportedOpcode {
                    opcode: op,
                    pos: input.op_pos as u64,
                });
            }
        }
        Ok(())
    }

    /// Stack height below which the current mark protects items.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, input: &Input<'_>) -> Result<Value> {
        if self.stack.len() <= self.floor() {
            return Err(input.error("stack underflow".to_owned()));
        }
        self.stack
            .pop()
            .ok_or_else(|| input.error("stack underflow".to_owned()))
    }

    fn top(&self, input: &Input<'_>) -> Result<&Value> {
        if self.stack.len() <= self.floor() {
            return Err(input.error("stack underflow".to_owned()));
        }
        self.stack
            .last()
            .ok_or_else(|| input.error("stack underflow".to_owned()))
    }

    fn pop_mark(&mut self, input: &Input<'_>) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| input.error("no MARK to pop to".to_owned()))?;
        if mark > self.stack.len() {
            return Err(input.error("stack underflow".to_owned()));
        }
        Ok(self.stack.split_off(mark))
    }

    /// Accounts for `bytes` more memory, failing past [`MAX_PICKLE_MEMORY`]. Costs are
    /// estimates that include container slots, so a hostile pickle of tiny objects cannot
    /// make the machine use much more memory than that.
    fn charge(&mut self, bytes: usize, input: &Input<'_>) -> Result<()> {
        match self.memory.checked_add(bytes) {
            Some(total) if total <= MAX_PICKLE_MEMORY => {
                self.memory = total;
                Ok(())
            }
            _ => Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_PICKLE_MEMORY,
                what: "bytes of unpickled objects",
            }),
        }
    }

    fn alloc(&mut self, obj: Obj, input: &Input<'_>) -> Result<Value> {
        const VALUE: usize = std::mem::size_of::<Value>();
        let payload = match &obj {
            Obj::Tuple(v) | Obj::List(v) | Obj::Set(v) => v.capacity() * VALUE + ALLOCATION,
            Obj::Dict(d) => {
                std::mem::size_of::<Dict>() + d.entries.capacity() * 2 * VALUE + 2 * ALLOCATION
            }
            Obj::Global(g) => {
                std::mem::size_of::<Global>() + g.module.len() + g.name.len() + 3 * ALLOCATION
            }
            Obj::Tensor(t) => {
                let dims = t
                    .as_ref()
                    .as_ref()
                    .map_or(0, |t| t.shape.len() + t.stride.len());
                std::mem::size_of::<Result<TensorSpec, TensorProblem>>() + dims * 8 + 3 * ALLOCATION
            }
            Obj::Object { .. } | Obj::Storage(_) => 0,
        };
        self.charge(std::mem::size_of::<Obj>() + payload, input)?;
        if self.heap.len() >= MAX_HEAP {
            return Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_HEAP,
                what: "objects",
            });
        }
        self.heap.push(obj);
        Ok(Value::Heap(self.heap.len() - 1))
    }

    fn memo_put(&mut self, index: u32, input: &Input<'_>) -> Result<()> {
        let top = self.top(input)?.clone();
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(PthError::PickleLimit {
                pos: input.op_pos as u64,
                limit: MAX_MEMO,
                what: "memo entries",
            });
        }
        if !self.memo.contains_key(&index) {
            self.charge(std::mem::size_of::<(u32, Value)>() + 8, input)?;
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32, input: &Input<'_>) -> Result<()> {
        let v = self
            .memo
            .get(&index)
            .cloned()
            .ok_or_else(|| input.error(format!("memo entry {index} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn fill_dict(&mut self, dict: &mut Dict, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(input.error("odd number of items for a dict".to_owned()));
        }
        let before = dict.entries.capacity();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            dict.insert(k, v);
        }
        // Entry slots the dict grew by, plus (generously) an index slot per new entry.
        let grown = dict.entries.capacity().saturating_sub(before);
        self.charge(
            grown * (2 * std::mem::size_of::<Value>() + 32) + ALLOCATION,
            input,
        )
    }

    /// `APPEND(S)` / `ADDITEMS` onto the object on top of the stack.
    fn extend(&mut self, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        let Value::Heap(i) = *self.top(input)? else {
            return Err(input.error("APPEND onto a value that is not a list".to_owned()));
        };
        let grown = match self.heap.get_mut(i) {
            Some(Obj::List(list) | Obj::Set(list)) => {
                let before = list.capacity();
                list.extend(items);
                list.capacity().saturating_sub(before)
            }
            // `list` subclasses we do not model: accepted and ignored.
            Some(Obj::Object { .. }) => 0,
            _ => return Err(input.error("APPEND onto a value that is not a list".to_owned())),
        };
        self.charge(grown * std::mem::size_of::<Value>() + ALLOCATION, input)
    }

    /// `SETITEM(S)` onto the object on top of the stack.
    fn set_items(&mut self, items: Vec<Value>, input: &Input<'_>) -> Result<()> {
        let Value::Heap(i) = *self.top(input)? else {
            return Err(input.error("SETITEM on a value that is not a dict".to_owned()));
        };
        let mut dict = match self.heap.get_mut(i) {
            Some(Obj::Dict(d)) => std::mem::take(d),
            Some(Obj::Object { items, .. }) => items.take().unwrap_or_default(),
            _ => return Err(input.error("SETITEM on a value that is not a dict".to_owned())),
        };
        let result = self.fill_dict(&mut dict, items, input);
        match self.heap.get_mut(i) {
            Some(Obj::Dict(d)) => *d = dict,
            Some(Obj::Object { items, .. }) => *items = Some(dict),
            _ => {}
        }
        result
    }

    fn global(&mut self, module: Rc<str>, name: Rc<str>, input: &Input<'_>) -> Result<Value> {
        let id = format!("{module}\n{name}");
        if let Some(v) = self.globals.get(&id) {
            return Ok(v.clone());
        }
        self.charge(id.len() + 64, input)?;
        let kind = GlobalKind::classify(&module, &name);
        let v = self.alloc(Obj::Global(Box::new(Global { module, name, kind })), input)?;
        self.globals.insert(id, v.clone());
        Ok(v)
    }

    fn opaque(&mut self, class: Value, input: &Input<'_>) -> Result<Value> {
        self.alloc(Obj::Object { class, items: None }, input)
    }

    fn global_kind(&self, v: &Value) -> Option<&GlobalKind> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Global(g)) => Some(&g.kind),
                _ => None,
            },
            _ => None,
        }
    }

    fn sequence(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Tuple(items) | Obj::List(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    /// `REDUCE`: calls `callable(*args)` for the torch functions we model; anything else
    /// becomes an opaque object.
    fn call(
        &mut self,
        callable: Value,
        args: Value,
        depth: usize,
        input: &Input<'_>,
    ) -> Result<Value> {
        let kind = self.global_kind(&callable).cloned();
        let args_vec: Vec<Value> = self
            .sequence(&args)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        let tensor = match kind {
            Some(GlobalKind::RebuildTensor) => Some(self.rebuild_tensor(&args_vec, false)),
            Some(GlobalKind::RebuildTensorV3) => Some(self.rebuild_tensor(&args_vec, true)),
            Some(GlobalKind::UnsupportedTensor(why)) => {
                Some(Err(TensorProblem::Other(why.to_owned())))
            }
            Some(GlobalKind::FirstArg) => match args_vec.first() {
                Some(first) if self.tensor(first).is_some() => return Ok(first.clone()),
                _ => None,
            },
            Some(GlobalKind::FromType) if depth < MAX_DEPTH => match args_vec.as_slice() {
                [func, _, inner_args, ..] => {
                    return self.call(func.clone(), inner_args.clone(), depth + 1, input);
                }
                _ => None,
            },
            Some(GlobalKind::OrderedDict | GlobalKind::Dict) => {
                let ordered = matches!(kind, Some(GlobalKind::OrderedDict));
                let mut dict = Dict {
                    ordered,
                    ..Dict::default()
                };
                // `OrderedDict([(k, v), ...])`: torch passes no arguments, but be general.
                if let Some(pairs) = args_vec.first().and_then(|a| self.sequence(a)) {
                    for pair in pairs {
                        if let Some([k, v]) = self.sequence(pair) {
                            dict.insert(k.clone(), v.clone());
                        }
                    }
                }
                return self.alloc(Obj::Dict(Box::new(dict)), input);
            }
            _ => None,
        };
        match tensor {
            Some(t) => self.alloc(Obj::Tensor(Box::new(t)), input),
            None => self.opaque(callable, input),
        }
    }

    fn int_arg(&self, v: Option<&Value>, what: &str) -> Result<u64, TensorProblem> {
        match v {
            Some(Value::Int(i)) => u64::try_from(*i)
                .map_err(|_| TensorProblem::Other(format!("its {what} is negative ({i})"))),
            Some(other) => Err(TensorProblem::Other(format!(
                "its {what} is {}, not an integer",
                self.describe(other, 0)
            ))),
            None => Err(TensorProblem::Other(format!("its {what} is missing"))),
        }
    }

    fn int_tuple(&self, v: Option<&Value>, what: &str) -> Result<Vec<u64>, TensorProblem> {
        let items = v.and_then(|v| self.sequence(v)).ok_or_else(|| {
            TensorProblem::Other(format!("its {what} is not a tuple of integers"))
        })?;
        items.iter().map(|x| self.int_arg(Some(x), what)).collect()
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)` and
    /// `_rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, ...)`.
    fn rebuild_tensor(&self, args: &[Value], v3: bool) -> Result<TensorSpec, TensorProblem> {
        let storage = match args.first() {
            Some(Value::Heap(i)) => match self.heap.get(*i) {
                Some(Obj::Storage(s)) => Some(*s),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| TensorProblem::Other("its storage argument is not a storage".to_owned()))?;
        let offset = self.int_arg(args.get(1), "storage offset")?;
        let shape = self.int_tuple(args.get(2), "size")?;
        let stride = self.int_tuple(args.get(3), "stride")?;
        if shape.len() != stride.len() {
            return Err(TensorProblem::Other(format!(
                "it has {} sizes but {} strides",
                shape.len(),
                stride.len()
            )));
        }
        let kind = &self
            .storages
            .get(storage)
            .ok_or_else(|| TensorProblem::Other("unknown storage".to_owned()))?
            .kind;
        let dtype = if v3 {
            match args.get(6).and_then(|d| self.global_kind(d)) {
                Some(GlobalKind::DType(Some(d))) => *d,
                Some(GlobalKind::DType(None)) => {
                    let name = match args.get(6) {
                        Some(Value::Heap(i)) => match self.heap.get(*i) {
                            Some(Obj::Global(g)) => g.name.to_string(),
                            _ => String::new(),
                        },
                        _ => String::new(),
                    };
                    return Err(TensorProblem::Dtype(name));
                }
                _ => {
                    return Err(TensorProblem::Other(
                        "its dtype argument is not a dtype".to_owned(),
                    ));
                }
            }
        } else {
            match kind {
                StorageKind::Typed(d) => *d,
                StorageKind::Untyped => {
                    return Err(TensorProblem::Other(
                        "it has an untyped storage but no dtype".to_owned(),
                    ));
                }
                StorageKind::Unsupported { class, .. } => {
                    return Err(TensorProblem::Dtype(format!("of torch.{class}")));
                }
            }
        };
        Ok(TensorSpec {
            storage,
            dtype,
            offset,
            shape,
            stride,
        })
    }

    /// `BINPERSID` with `('storage', class, key, location, numel[, view_metadata])`.
    fn persistent_load(&mut self, pid: &Value, input: &Input<'_>) -> Result<Value> {
        let items = self
            .sequence(pid)
            .ok_or_else(|| input.error("persistent id is not a tuple".to_owned()))?;
        let bad = |msg: &str| input.error(format!("bad storage persistent id: {msg}"));
        if items.len() < 5 {
            return Err(bad("fewer than 5 fields"));
        }
        match &items[0] {
            Value::Str(s) if s.as_ref() == "storage" => {}
            _ => return Err(bad("it does not start with 'storage'")),
        }
        let kind = match self.global_kind(&items[1]) {
            Some(GlobalKind::Storage(kind)) => kind.clone(),
            _ => {
                let class = match &items[1] {
                    Value::Heap(i) => match self.heap.get(*i) {
                        Some(Obj::Global(g)) => Rc::from(format!("{}.{}", g.module, g.name)),
                        _ => Rc::from("?"),
                    },
                    _ => Rc::from("?"),
                };
                StorageKind::Unsupported {
                    class,
                    elem_size: None,
                }
            }
        };
        let key: Rc<str> = match &items[2] {
            Value::Str(s) => s.clone(),
            Value::Int(i) => Rc::from(i.to_string()),
            _ => return Err(bad("its key is not a string")),
        };
        let numel = match items[4] {
            Value::Int(n) => u64::try_from(n).map_err(|_| bad("negative element count"))?,
            _ => return Err(bad("its element count is not an integer")),
        };
        // Legacy view metadata: (view_key, offset, size) in elements of the root storage.
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(meta) => {
                let fields = self
                    .sequence(meta)
                    .ok_or_else(|| bad("its view metadata is not a tuple"))?;
                match fields {
                    [_, Value::Int(offset), Value::Int(size)] => Some((
                        u64::try_from(*offset).map_err(|_| bad("negative view offset"))?,
                        u64::try_from(*size).map_err(|_| bad("negative view size"))?,
                    )),
                    _ => return Err(bad("malformed view metadata")),
                }
            }
        };
        match self.roots.get(&key) {
            Some(root) if root.kind != kind || root.numel != numel => {
                return Err(PthError::Storage {
                    key: key.to_string(),
                    msg: "is declared twice with different types or sizes".to_owned(),
                });
            }
            Some(_) => {}
            None => {
                self.roots.insert(
                    key.clone(),
                    RootStorage {
                        kind: kind.clone(),
                        numel,
                    },
                );
            }
        }
        let elem = kind.elem_size().unwrap_or(1);
        let (elem_offset, elem_len) = view.unwrap_or((0, numel));
        let overflow = || bad("storage size overflows");
        let storage = StorageRef {
            key,
            kind,
            byte_offset: elem_offset.checked_mul(elem).ok_or_else(overflow)?,
            byte_len: elem_len.checked_mul(elem).ok_or_else(overflow)?,
        };
        self.charge(std::mem::size_of::<StorageRef>() + 64, input)?;
        self.storages.push(storage);
        let index = self.storages.len() - 1;
        self.alloc(Obj::Storage(index), input)
    }

    // -- Inspection helpers used after loading ------------------------------------------

    fn storage_of(&self, spec: &TensorSpec, name: &str) -> Result<&StorageRef> {
        self.storages
            .get(spec.storage)
            .ok_or_else(|| PthError::Tensor {
                name: name.to_owned(),
                msg: "internal error: unknown storage".to_owned(),
            })
    }

    fn dict(&self, v: &Value) -> Option<&Dict> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Dict(d)) => Some(d),
                Some(Obj::Object {
                    items: Some(items), ..
                }) if !items.entries.is_empty() => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    fn dict_get_ref<'s>(&'s self, v: &Value, key: &str) -> Option<&'s Value> {
        self.dict(v)?.get(key)
    }

    fn dict_get(&self, v: &Value, key: &str) -> Option<Value> {
        self.dict_get_ref(v, key).cloned()
    }

    fn tensor(&self, v: &Value) -> Option<&Result<TensorSpec, TensorProblem>> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Tensor(t)) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    fn dict_has_tensor(&self, v: &Value) -> bool {
        self.dict(v)
            .is_some_and(|d| d.entries.iter().any(|(_, v)| self.tensor(v).is_some()))
    }

    /// A short human description of a value, for error messages.
    fn describe(&self, v: &Value, depth: usize) -> String {
        match v {
            Value::None => "None".to_owned(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Value::Int(i) => format!("the integer {i}"),
            Value::BigInt(b) => format!("a {}-byte integer", b.len()),
            Value::Float(f) => format!("the float {f}"),
            Value::Str(s) => {
                let short: String = s.chars().take(40).collect();
                format!("the string {short:?}")
            }
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Heap(i) => match self.heap.get(*i) {
                None => "an invalid reference".to_owned(),
                Some(Obj::Tuple(items)) => format!("a tuple of {} items", items.len()),
                Some(Obj::List(items)) => format!("a list of {} items", items.len()),
                Some(Obj::Set(items)) => format!("a set of {} items", items.len()),
                Some(Obj::Dict(d)) => {
                    let kind = if d.ordered {
                        "an OrderedDict"
                    } else {
                        "a dict"
                    };
                    self.describe_dict(kind, d, depth)
                }
                Some(Obj::Global(g)) => format!("the class or function {}.{}", g.module, g.name),
                Some(Obj::Object { class, items }) => {
                    let class = match class {
                        Value::Heap(c) => match self.heap.get(*c) {
                            Some(Obj::Global(g)) => format!("{}.{}", g.module, g.name),
                            _ => "unknown".to_owned(),
                        },
                        _ => "unknown".to_owned(),
                    };
                    match items {
                        Some(items) if !items.entries.is_empty() => {
                            self.describe_dict(&format!("a {class} object"), items, depth)
                        }
                        _ => format!("a {class} object"),
                    }
                }
                Some(Obj::Storage(_)) => "a storage".to_owned(),
                Some(Obj::Tensor(_)) => "a single tensor, not a state dict".to_owned(),
            },
        }
    }

    fn describe_dict(&self, kind: &str, d: &Dict, depth: usize) -> String {
        if d.entries.is_empty() {
            return format!("{kind} with no keys");
        }
        let keys: Vec<String> = d
            .entries
            .iter()
            .take(12)
            .map(|(k, _)| match k {
                Value::Str(s) => s.chars().take(40).collect(),
                other if depth < MAX_DEPTH => self.describe(other, depth + 1),
                _ => "...".to_owned(),
            })
            .collect();
        let more = if d.entries.len() > keys.len() {
            format!(", ... ({} keys in all)", d.entries.len())
        } else {
            String::new()
        };
        format!("{kind} with keys [{}{more}]", keys.join(", "))
    }
}
