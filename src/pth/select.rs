//! State dict selection and tensor materialisation, shared by both formats.

use super::pickle::{Machine, StorageRef, TensorProblem, TensorSpec, Value};
use super::{PthError, PthTensor, Result};

/// Keys of a checkpoint dict that may hold the state dict, in order of preference.
const STATE_DICT_KEYS: [&str; 4] = ["state_dict", "model", "state_dict_ema", "model_ema"];

/// The state dict's tensor entries, in order; a tensor that cannot be used carries why.
type Entries = Vec<(String, Result<TensorSpec, TensorProblem>)>;

pub(super) fn select_state_dict(m: &Machine, top: &Value) -> Result<Entries> {
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
pub(super) struct Budget {
    input: u64,
    limit: u64,
    used: u64,
}

impl Budget {
    pub(super) fn new(input: u64) -> Self {
        Budget {
            input,
            limit: input.saturating_mul(4).saturating_add(16 << 20),
            used: 0,
        }
    }

    /// Bytes still allowed.
    pub(super) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    pub(super) fn charge(&mut self, bytes: u64, name: &str) -> Result<()> {
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

pub(super) fn materialize(
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
