//! The legacy format (torch < 1.6): five pickles back to back, then each storage's bytes.

use std::collections::HashMap;
use std::rc::Rc;

use super::pickle::{Machine, Value};
use super::select::{Budget, materialize, select_state_dict};
use super::{PthError, PthTensor, Result};

/// `0x1950a86a20f9469cfc6c` as the little-endian two's complement bytes of a `LONG1`.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

pub(super) fn read_legacy(bytes: &[u8]) -> Result<Vec<PthTensor>> {
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
