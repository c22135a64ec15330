//! The zip format (the default since torch 1.6): finding `<prefix>/data.pkl`, checking the
//! byte order, and reading each storage's `<prefix>/data/<key>` entry once, however many
//! tensors share it.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::rc::Rc;

use super::pickle::Machine;
use super::select::{Budget, materialize, select_state_dict};
use super::{PthError, PthTensor, Result};

/// Largest `data.pkl` accepted (real ones are kilobytes to a few megabytes).
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Deflate cannot expand data by more than about 1032:1.
const MAX_DEFLATE_RATIO: u64 = 1100;

fn zip_err(e: zip::result::ZipError) -> PthError {
    PthError::Zip(e.to_string())
}

pub(super) fn read_zip<R: Read + Seek>(reader: R, file_len: u64) -> Result<Vec<PthTensor>> {
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

    // `data.pkl` is unpacked within the same budget as the tensors: a small deflated entry
    // must not unpack to a gigabyte before the pickle is even looked at.
    let mut budget = Budget::new(file_len);
    let pkl_limit = MAX_PICKLE_BYTES.min(budget.remaining());
    let pkl = read_entry(
        &mut archive,
        &pkl_name,
        EntrySize::AtMost(pkl_limit),
        file_len,
    )?;
    budget.charge(pkl.len() as u64, &pkl_name)?;
    let mut machine = Machine::new();
    let (top, _) = machine.load(&pkl, 0, "data.pkl")?;
    let entries = select_state_dict(&machine, &top)?;

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
                    "`{name}` declares {size} bytes, more than the {limit}-byte limit for a {file_len}-byte file"
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
