//! Inspection helpers used after loading: dict lookups, tensors, storages, and short
//! descriptions of values for error messages.

use super::value::{Dict, Obj, StorageRef, TensorProblem, TensorSpec, Value};
use super::{MAX_DEPTH, Machine};
use crate::pth::{PthError, Result};

impl Machine {
    pub(in crate::pth) fn storage_of(&self, spec: &TensorSpec, name: &str) -> Result<&StorageRef> {
        self.storages
            .get(spec.storage)
            .ok_or_else(|| PthError::Tensor {
                name: name.to_owned(),
                msg: "internal error: unknown storage".to_owned(),
            })
    }

    pub(in crate::pth) fn dict(&self, v: &Value) -> Option<&Dict> {
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

    pub(in crate::pth) fn dict_get_ref<'s>(&'s self, v: &Value, key: &str) -> Option<&'s Value> {
        self.dict(v)?.get(key)
    }

    pub(in crate::pth) fn dict_get(&self, v: &Value, key: &str) -> Option<Value> {
        self.dict_get_ref(v, key).cloned()
    }

    pub(in crate::pth) fn tensor(&self, v: &Value) -> Option<&Result<TensorSpec, TensorProblem>> {
        match v {
            Value::Heap(i) => match self.heap.get(*i) {
                Some(Obj::Tensor(t)) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    pub(in crate::pth) fn dict_has_tensor(&self, v: &Value) -> bool {
        self.dict(v)
            .is_some_and(|d| d.entries.iter().any(|(_, v)| self.tensor(v).is_some()))
    }

    /// A short human description of a value, for error messages.
    pub(in crate::pth) fn describe(&self, v: &Value, depth: usize) -> String {
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
