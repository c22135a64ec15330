//! The torch side of unpickling: `REDUCE` calls of the tensor-rebuilding functions and
//! dict constructors, and `BINPERSID` storage persistent ids.

use std::rc::Rc;

use super::value::{
    Dict, GlobalKind, Obj, RootStorage, StorageKind, StorageRef, TensorProblem, TensorSpec, Value,
};
use super::{Input, MAX_DEPTH, MAX_DIMS, MAX_KEY_BYTES, Machine};
use crate::pth::{PthError, Result};

impl Machine {
    /// `REDUCE`: calls `callable(*args)` for the torch functions we model; anything else
    /// becomes an opaque object.
    pub(super) fn call(
        &mut self,
        callable: Value,
        args: Value,
        depth: usize,
        input: &Input<'_>,
    ) -> Result<Value> {
        let kind = self.global_kind(&callable).cloned();
        // The arguments are borrowed, never copied: a pickle may call something many times
        // with one huge memoized tuple, and copying it each time would take quadratic time.
        let args_vec: &[Value] = self.sequence(&args).unwrap_or_default();
        let tensor = match kind {
            Some(GlobalKind::RebuildTensor) => Some(self.rebuild_tensor(args_vec, false)),
            Some(GlobalKind::RebuildTensorV3) => Some(self.rebuild_tensor(args_vec, true)),
            Some(GlobalKind::UnsupportedTensor(why)) => {
                Some(Err(TensorProblem::Other(why.to_owned())))
            }
            Some(GlobalKind::FirstArg) => match args_vec.first() {
                Some(first) if self.tensor(first).is_some() => return Ok(first.clone()),
                _ => None,
            },
            Some(GlobalKind::FromType) if depth < MAX_DEPTH => match args_vec {
                [func, _, inner_args, ..] => {
                    let (func, inner_args) = (func.clone(), inner_args.clone());
                    return self.call(func, inner_args, depth + 1, input);
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
        // Checked before reading them: a memoized tuple of a million items passed to many
        // calls would otherwise cost a million steps each time.
        if items.len() > MAX_DIMS {
            return Err(TensorProblem::Other(format!(
                "its {what} has {} dimensions, more than {MAX_DIMS}",
                items.len()
            )));
        }
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
    pub(super) fn persistent_load(&mut self, pid: &Value, input: &Input<'_>) -> Result<Value> {
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
        // Keys are short (torch writes a number); each use of a key hashes it.
        if key.len() > MAX_KEY_BYTES {
            return Err(bad(&format!(
                "its key is {} bytes long, more than {MAX_KEY_BYTES}",
                key.len()
            )));
        }
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
}
