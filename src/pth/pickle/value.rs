//! What the pickle machine builds: values, heap objects, and the torch globals, storages
//! and tensors it recognises.

use std::collections::HashMap;
use std::rc::Rc;

use crate::pth::{PthDType, PthError, Result};

/// A pickled value. Containers and objects live in
/// [`Machine::heap`](super::Machine::heap) and are referred to by index, so the memo shares
/// them by reference and no value owns another (dropping is never recursive, and cycles are
/// harmless).
#[derive(Debug, Clone)]
pub(in crate::pth) enum Value {
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
pub(super) enum Obj {
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
pub(in crate::pth) struct Dict {
    pub(super) ordered: bool,
    pub(in crate::pth) entries: Vec<(Value, Value)>,
    /// Positions of string and integer keys, built once the dict is big enough for a
    /// linear scan to be slow (most pickled dicts are tiny).
    pub(super) index: Option<HashMap<DictKey, usize>>,
}

/// Entries from which a [`Dict`] keeps a hash index.
const DICT_INDEX_MIN: usize = 16;

#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) enum DictKey {
    Str(Rc<str>),
    Int(i64),
}

/// Longest string key a [`Dict`] finds again: a repeated longer key is kept as another
/// entry instead of replacing the first. Every insert of a string key hashes or compares
/// it, and a pickle can insert one memoized key of megabytes for 3 bytes each time.
const MAX_DICT_KEY_BYTES: usize = 1024;

impl DictKey {
    fn of(v: &Value) -> Option<DictKey> {
        match v {
            Value::Str(s) if s.len() <= MAX_DICT_KEY_BYTES => Some(DictKey::Str(s.clone())),
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
    pub(super) fn insert(&mut self, key: Value, value: Value) {
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

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        let i = self.position(&DictKey::Str(Rc::from(key)))?;
        self.entries.get(i).map(|(_, v)| v)
    }
}

#[derive(Debug)]
pub(super) struct Global {
    pub(super) module: Rc<str>,
    pub(super) name: Rc<str>,
    pub(super) kind: GlobalKind,
}

#[derive(Debug, Clone)]
pub(super) enum GlobalKind {
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
    pub(super) fn classify(module: &str, name: &str) -> GlobalKind {
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
pub(super) enum StorageKind {
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

    pub(super) fn elem_size(&self) -> Option<u64> {
        match self {
            StorageKind::Typed(d) => Some(d.size_in_bytes() as u64),
            StorageKind::Untyped => Some(1),
            StorageKind::Unsupported { elem_size, .. } => *elem_size,
        }
    }
}

/// A storage as declared by persistent ids: its kind and element count.
#[derive(Debug)]
pub(in crate::pth) struct RootStorage {
    pub(super) kind: StorageKind,
    pub(in crate::pth) numel: u64,
}

impl RootStorage {
    pub(in crate::pth) fn nbytes(&self, key: &str) -> Result<u64> {
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
pub(in crate::pth) struct StorageRef {
    pub(in crate::pth) key: Rc<str>,
    pub(super) kind: StorageKind,
    pub(in crate::pth) byte_offset: u64,
    pub(in crate::pth) byte_len: u64,
}

#[derive(Debug, Clone)]
pub(in crate::pth) struct TensorSpec {
    /// Index into [`Machine::storages`](super::Machine::storages).
    pub(in crate::pth) storage: usize,
    pub(in crate::pth) dtype: PthDType,
    pub(in crate::pth) offset: u64,
    pub(in crate::pth) shape: Vec<u64>,
    pub(in crate::pth) stride: Vec<u64>,
}

/// Why a pickled tensor cannot be read.
#[derive(Debug, Clone)]
pub(in crate::pth) enum TensorProblem {
    Dtype(String),
    Other(String),
}

impl TensorProblem {
    pub(in crate::pth) fn into_error(self, name: &str) -> PthError {
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
