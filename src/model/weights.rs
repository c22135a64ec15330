//! Loading weights: timm safetensors, PyTorch checkpoints (zip and legacy), the Hugging
//! Face hub cache, and efficientnet_pytorch key names.
//!
//! [`WeightsFile::load`] reads any supported file into named `f32` tensors;
//! [`Weights::for_variant`] renames them to timm's state-dict names and checks every
//! tensor against the variant's shape table, so that weights of another variant are
//! refused with the first mismatching tensor named. [`locate`] finds a file when the
//! user gave none.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::variants::{ARCH, BlockKind, Variant};
use crate::pth::{self, PthDType};

/// Environment variable naming a directory of weights files called `<variant>.safetensors`,
/// `<variant>.pth` or `<variant>.bin`, consulted when no file is given explicitly.
pub const WEIGHTS_DIR_ENV: &str = "EFFISTREAM_WEIGHTS_DIR";

/// File names tried, in order, in a weights directory and in a hub repository.
const HUB_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// Named tensors read from one file, names as the file has them.
#[derive(Debug)]
pub struct WeightsFile {
    /// Where the tensors came from, for messages.
    pub source: String,
    pub tensors: Vec<(String, Tensor)>,
}

impl WeightsFile {
    /// Reads a safetensors file or a PyTorch checkpoint; the format is recognised from the
    /// file's first bytes, not its name. Float tensors become `f32`; integer tensors other
    /// than BatchNorm's `num_batches_tracked` are refused.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }

    /// [`WeightsFile::load`] on a file's contents already in memory; `path` is only named
    /// in messages.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let source = path.display().to_string();
        let tensors = if looks_like_safetensors(bytes) {
            read_safetensors(path, bytes)?
        } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(LEGACY_PTH_MAGIC) {
            read_pth(path, bytes)?
        } else {
            return Err(Error::UnknownWeightsFormat {
                path: path.to_owned(),
            });
        };
        Ok(Self { source, tensors })
    }

    /// Wraps tensors built in memory (tests, converters).
    pub fn from_tensors(source: impl Into<String>, tensors: Vec<(String, Tensor)>) -> Self {
        Self {
            source: source.into(),
            tensors,
        }
    }
}

/// Text from a weights file (a tensor name) made fit for a one-line message: control
/// characters escaped, cut after 300 characters.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 300 {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A legacy (pre-1.6) PyTorch checkpoint starts with a protocol-2 pickle of a 10-byte long.
const LEGACY_PTH_MAGIC: &[u8] = &[0x80, 0x02, 0x8a, 0x0a];

/// A safetensors file starts with the little-endian length of its JSON header, then `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    match bytes.get(..9) {
        Some(head) => {
            let len = u64::from_le_bytes([
                head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
            ]);
            head[8] == b'{' && len < (1 << 30)
        }
        None => false,
    }
}

fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let invalid = |reason: String| Error::Safetensors {
        path: path.to_owned(),
        reason: printable(&reason),
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    // Keep the file's order (the header is a JSON object; offsets give the write order).
    let mut views = st.tensors();
    views.sort_by_key(|(_, view)| view.data().as_ptr() as usize);
    let mut out = Vec::with_capacity(views.len());
    for (name, view) in views {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(Error::WrongDtype {
                    source_name: path.display().to_string(),
                    tensor: printable(&name),
                    dtype: format!("{other:?}").to_lowercase(),
                });
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| invalid(format!("tensor `{name}`: {e}")))?;
        out.push((name, tensor));
    }
    Ok(out)
}

fn read_pth(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    let tensors = pth::read_pth_bytes(bytes).map_err(|error| Error::Pth {
        path: path.to_owned(),
        error,
    })?;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.ends_with("num_batches_tracked") {
            continue;
        }
        let dtype = match t.dtype {
            PthDType::F32 => DType::F32,
            PthDType::F16 => DType::F16,
            PthDType::BF16 => DType::BF16,
            PthDType::F64 => DType::F64,
            other => {
                return Err(Error::WrongDtype {
                    source_name: path.display().to_string(),
                    tensor: printable(&t.name),
                    dtype: other.name().to_owned(),
                });
            }
        };
        let tensor = Tensor::from_raw_buffer(&t.data, dtype, &t.shape, &Device::Cpu)
            .and_then(|x| x.to_dtype(DType::F32))?;
        out.push((t.name, tensor));
    }
    Ok(out)
}

/// Weights checked against one variant, under timm's names.
#[derive(Debug)]
pub struct Weights {
    pub variant: &'static Variant,
    /// Where the tensors came from, for messages.
    pub source: String,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Renames `file`'s tensors to timm's names (stripping a `module.` prefix and mapping
    /// efficientnet_pytorch names) and checks each against `variant`'s shape table. The
    /// classifier may have any number of classes.
    pub fn for_variant(variant: &'static Variant, file: WeightsFile) -> Result<Self> {
        let WeightsFile { source, tensors } = file;
        let lukemelas = tensors.iter().any(|(n, _)| {
            let n = n.strip_prefix("module.").unwrap_or(n);
            n.starts_with("_conv_stem.") || n.starts_with("_blocks.")
        });
        let repeats = variant.stage_repeats();
        let mut map = HashMap::with_capacity(tensors.len());
        for (name, tensor) in tensors {
            let name = name.strip_prefix("module.").unwrap_or(&name).to_owned();
            let name = if lukemelas {
                efficientnet_pytorch_to_timm(&name, &repeats).unwrap_or(name)
            } else {
                name
            };
            map.insert(name, tensor);
        }

        let mut classes = None;
        let mut expected_names = std::collections::HashSet::new();
        for (name, expected) in variant.expected_tensors() {
            expected_names.insert(name);
            let Some(tensor) = map.get(name) else {
                return Err(Error::MissingTensor {
                    variant: variant.name,
                    source_name: source.clone(),
                    tensor: name.to_owned(),
                    expected,
                });
            };
            let found = tensor.dims();
            // The classifier may be fine-tuned to another number of classes.
            let fits = if name.starts_with("classifier.") {
                let classes = *classes.get_or_insert(found.first().copied().unwrap_or(0));
                found.len() == expected.len()
                    && found.first() == Some(&classes)
                    && found[1..] == expected[1..]
            } else {
                found == expected.as_slice()
            };
            if !fits {
                return Err(Error::ShapeMismatch {
                    variant: variant.name,
                    source_name: source.clone(),
                    tensor: name.to_owned(),
                    expected,
                    found: found.to_vec(),
                });
            }
        }
        let mut unexpected: Vec<&String> = map
            .keys()
            .filter(|n| !expected_names.contains(n.as_str()))
            .collect();
        unexpected.sort();
        if let Some(first) = unexpected.first() {
            return Err(Error::UnexpectedTensor {
                variant: variant.name,
                source_name: source,
                tensor: printable(first),
                count: unexpected.len(),
            });
        }
        Ok(Self {
            variant,
            source,
            tensors: map,
        })
    }

    /// Loads `path` for `variant`.
    pub fn from_file(variant: &'static Variant, path: &Path) -> Result<Self> {
        Self::for_variant(variant, WeightsFile::load(path)?)
    }

    /// Random weights of the right shapes, for benchmarks: uniform He-scaled convolution
    /// and linear weights, BatchNorm as identity (mean 0, variance 1, weight 1, bias 0),
    /// small biases. The same `seed` gives the same weights.
    pub fn random(variant: &'static Variant, seed: u64) -> Result<Self> {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut uniform = move || {
            // xorshift64*: good enough for benchmark weights.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut tensors = Vec::new();
        for (name, shape) in variant.expected_tensors() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("running_var")
                || (name.ends_with(".weight") && shape.len() == 1)
            {
                vec![1.0; n]
            } else if name.ends_with("running_mean")
                || (name.ends_with(".bias") && name.contains("bn"))
            {
                vec![0.0; n]
            } else if name.ends_with(".weight") {
                let bound = (6.0 / (n / shape[0]) as f32).sqrt();
                (0..n).map(|_| (2.0 * uniform() - 1.0) * bound).collect()
            } else {
                (0..n).map(|_| (2.0 * uniform() - 1.0) * 0.1).collect()
            };
            tensors.push((
                name.to_owned(),
                Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?,
            ));
        }
        Self::for_variant(
            variant,
            WeightsFile::from_tensors("random weights", tensors),
        )
    }

    /// A checked tensor by timm name. Every name of the variant's table is present.
    pub(crate) fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            variant: self.variant.name,
            source_name: self.source.clone(),
            tensor: name.to_owned(),
            expected: Vec::new(),
        })
    }
}

/// Maps an efficientnet_pytorch (lukemelas) name onto timm's, e.g.
/// `_blocks.3._expand_conv.weight` → `blocks.2.0.conv_pw.weight`. `None` if the name has
/// no timm counterpart.
fn efficientnet_pytorch_to_timm(name: &str, repeats: &[usize; 7]) -> Option<String> {
    let top =
        |rest: &str, from: &str, to: &str| rest.strip_prefix(from).map(|p| format!("{to}{p}"));
    if let Some(rest) = name.strip_prefix("_blocks.") {
        let (index, rest) = rest.split_once('.')?;
        let mut index: usize = index.parse().ok()?;
        let mut stage = 0;
        while index >= *repeats.get(stage)? {
            index -= repeats[stage];
            stage += 1;
        }
        let (layer, param) = rest.split_once('.')?;
        let timm_layer = match (ARCH[stage].kind, layer) {
            (BlockKind::DepthwiseSeparable, "_depthwise_conv") => "conv_dw",
            (BlockKind::DepthwiseSeparable, "_bn1") => "bn1",
            (BlockKind::DepthwiseSeparable, "_project_conv") => "conv_pw",
            (BlockKind::DepthwiseSeparable, "_bn2") => "bn2",
            (BlockKind::InvertedResidual, "_expand_conv") => "conv_pw",
            (BlockKind::InvertedResidual, "_bn0") => "bn1",
            (BlockKind::InvertedResidual, "_depthwise_conv") => "conv_dw",
            (BlockKind::InvertedResidual, "_bn1") => "bn2",
            (BlockKind::InvertedResidual, "_project_conv") => "conv_pwl",
            (BlockKind::InvertedResidual, "_bn2") => "bn3",
            (_, "_se_reduce") => "se.conv_reduce",
            (_, "_se_expand") => "se.conv_expand",
            _ => return None,
        };
        return Some(format!("blocks.{stage}.{index}.{timm_layer}.{param}"));
    }
    top(name, "_conv_stem.", "conv_stem.")
        .or_else(|| top(name, "_bn0.", "bn1."))
        .or_else(|| top(name, "_conv_head.", "conv_head."))
        .or_else(|| top(name, "_bn1.", "bn2."))
        .or_else(|| top(name, "_fc.", "classifier."))
}

/// Finds a weights file for `variant` when none was given: `$EFFISTREAM_WEIGHTS_DIR`, then
/// the Hugging Face hub cache, then a download from the hub (`HF_ENDPOINT`) into that
/// cache unless `HF_HUB_OFFLINE` is set; see [`crate::hub`] for the environment it
/// honours. A cached file is used without asking the hub. The error says what was tried.
pub fn locate(variant: &'static Variant) -> Result<PathBuf> {
    let mut tried = Vec::new();

    if let Some(dir) = std::env::var_os(WEIGHTS_DIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        for ext in ["safetensors", "pth", "bin"] {
            let candidate = dir.join(format!("{}.{ext}", variant.name));
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        tried.push(format!(
            "no {}.{{safetensors,pth,bin}} in {WEIGHTS_DIR_ENV}={}",
            variant.name,
            dir.display()
        ));
    }

    let hub = crate::hub::Hub::from_env();
    if let Some(path) = HUB_FILES.iter().find_map(|f| hub.cached(variant.hub_id, f)) {
        return Ok(path);
    }
    tried.push(format!(
        "not in the Hugging Face cache {}",
        hub.repo_dir(variant.hub_id).display()
    ));

    if hub.offline {
        tried.push("download skipped (HF_HUB_OFFLINE is set)".to_owned());
    } else {
        match hub.download_first(variant.hub_id, &HUB_FILES) {
            Ok(path) => return Ok(path),
            Err(e) => tried.push(format!("downloading from the hub failed: {e}")),
        }
    }
    Err(Error::NoWeights {
        variant: variant.name,
        tried: tried.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficientnet_pytorch_names_map_onto_timm_stages() {
        let lite0 = Variant::by_name("tf_efficientnet_lite0").unwrap();
        let r = lite0.stage_repeats();
        let map = |n: &str| efficientnet_pytorch_to_timm(n, &r);
        assert_eq!(map("_conv_stem.weight").unwrap(), "conv_stem.weight");
        assert_eq!(map("_bn0.running_var").unwrap(), "bn1.running_var");
        assert_eq!(
            map("_blocks.0._depthwise_conv.weight").unwrap(),
            "blocks.0.0.conv_dw.weight"
        );
        assert_eq!(map("_blocks.0._bn1.bias").unwrap(), "blocks.0.0.bn1.bias");
        assert_eq!(
            map("_blocks.0._project_conv.weight").unwrap(),
            "blocks.0.0.conv_pw.weight"
        );
        assert_eq!(
            map("_blocks.1._expand_conv.weight").unwrap(),
            "blocks.1.0.conv_pw.weight"
        );
        assert_eq!(
            map("_blocks.2._bn2.weight").unwrap(),
            "blocks.1.1.bn3.weight"
        );
        assert_eq!(
            map("_blocks.3._bn1.weight").unwrap(),
            "blocks.2.0.bn2.weight"
        );
        assert_eq!(
            map("_blocks.15._project_conv.weight").unwrap(),
            "blocks.6.0.conv_pwl.weight"
        );
        assert_eq!(map("_blocks.16._project_conv.weight"), None);
        assert_eq!(map("_conv_head.weight").unwrap(), "conv_head.weight");
        assert_eq!(map("_bn1.weight").unwrap(), "bn2.weight");
        assert_eq!(map("_fc.bias").unwrap(), "classifier.bias");
        let b1 = Variant::by_name("efficientnet_b1_pruned")
            .unwrap()
            .stage_repeats();
        assert_eq!(
            efficientnet_pytorch_to_timm("_blocks.1._se_reduce.bias", &b1).unwrap(),
            "blocks.0.1.se.conv_reduce.bias"
        );
    }
}
