//! Your own models: a timm checkpoint folder (`model.safetensors` + `config.json`, as
//! timm's `save_for_hf` and `push_to_hf_hub` write it), a weights file with a
//! `config.json` beside it, a Hugging Face repository (`hub_id`), and a labels file.
//!
//! From `config.json` effistream takes the architecture (when no model name is given),
//! the number of classes (the classifier's shape must match it), `label_names` (a list,
//! or an object of class index → name) and the eval transform of `pretrained_cfg`:
//! `input_size` `[3, H, W]` (square), `crop_pct`, `mean`, `std`, `interpolation`
//! (`bicubic`) and `crop_mode` (`center`). Anything effistream's preprocessing cannot
//! reproduce exactly is refused with the reason. `test_input_size` and `test_crop_pct`
//! are ignored, as timm's own eval transform ignores them by default. A labels file (one
//! name a line) overrides `label_names`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::classifier::Classifier;
use crate::model::variants::Variant;
use crate::model::weights::{self, Weights};
use crate::preprocess::Preprocess;

/// The file name of timm's configuration in a checkpoint folder or hub repository.
pub const CONFIG_FILE: &str = "config.json";
/// Weights file names looked for in a folder and a hub repository, in order.
pub const WEIGHTS_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// What a model is loaded from: `[model]`'s `name`, `weights`, `labels` and `hub_id`
/// (and `--weights`, and the plugin's `model` and `weights`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelSource {
    /// A variant of `effistream models`; `None`: `config.json`'s `architecture`, else
    /// `efficientnet_b1_pruned`.
    pub name: Option<String>,
    /// A weights file, or a folder holding `model.safetensors` (or `pytorch_model.bin`)
    /// and, optionally, `config.json`.
    pub weights: Option<PathBuf>,
    /// A text file with one class name a line, overriding `config.json`'s `label_names`.
    pub labels: Option<PathBuf>,
    /// A Hugging Face repository (`user/repo`) holding `model.safetensors` and
    /// `config.json`; used when `weights` is not given.
    pub hub_id: Option<String>,
}

/// The variant used when neither a name nor a `config.json` says which.
pub const DEFAULT_MODEL: &str = "efficientnet_b1_pruned";

/// What effistream uses of timm's `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmConfig {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub architecture: String,
    pub num_classes: usize,
    pub label_names: Option<Vec<String>>,
    /// The eval transform of `pretrained_cfg`, if it has one.
    pub preprocess: Option<Preprocess>,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::ModelConfig {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl TimmConfig {
    /// Reads and checks a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (named in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| bad(path, format!("not valid JSON: {e}")))?;
        let Value::Object(root) = &json else {
            return Err(bad(path, "not a JSON object (expected timm's config.json)"));
        };
        let pretrained = match root.get("pretrained_cfg") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(bad(path, "`pretrained_cfg` is not an object")),
        };
        let architecture = root
            .get("architecture")
            .or_else(|| pretrained.and_then(|p| p.get("architecture")))
            .ok_or_else(|| bad(path, "no `architecture` (timm's model name)"))?
            .as_str()
            .ok_or_else(|| bad(path, "`architecture` is not a string"))?
            .to_owned();
        let num_classes = root
            .get("num_classes")
            .or_else(|| pretrained.and_then(|p| p.get("num_classes")))
            .ok_or_else(|| bad(path, "no `num_classes`"))?;
        let num_classes = num_classes.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
            bad(
                path,
                format!("`num_classes` = {num_classes} is not a positive integer"),
            )
        })? as usize;
        let label_names = match root.get("label_names") {
            None | Some(Value::Null) => None,
            Some(names) => Some(label_names(path, names, num_classes)?),
        };
        let preprocess = pretrained.map(|p| eval_transform(path, p)).transpose()?;
        Ok(Self {
            path: path.to_owned(),
            architecture,
            num_classes,
            label_names,
            preprocess,
        })
    }
}

/// `label_names`: a list, or an object of class index → name covering every class.
fn label_names(path: &Path, names: &Value, num_classes: usize) -> Result<Vec<String>> {
    let text = |v: &Value, at: &str| -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(path, format!("`label_names` {at} is not a string: {v}")))
    };
    let names = match names {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| text(v, &format!("[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        Value::Object(map) => {
            let mut out = vec![None; map.len()];
            for (key, v) in map {
                let index = key
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < map.len())
                    .ok_or_else(|| {
                        bad(
                            path,
                            format!(
                                "`label_names` key {key:?} is not a class index from 0 to {}",
                                map.len().saturating_sub(1)
                            ),
                        )
                    })?;
                out[index] = Some(text(v, &format!("[{key:?}]"))?);
            }
            // Every index below len() appears once: len() keys, each in range, none twice
            // (JSON object keys "1" and "01" would both parse to 1 and leave a gap).
            out.into_iter()
                .enumerate()
                .map(|(i, n)| {
                    n.ok_or_else(|| bad(path, format!("`label_names` has no name for class {i}")))
                })
                .collect::<Result<Vec<_>>>()?
        }
        other => {
            return Err(bad(
                path,
                format!("`label_names` is neither a list nor an object of index → name: {other}"),
            ));
        }
    };
    if names.len() != num_classes {
        return Err(bad(
            path,
            format!(
                "`label_names` has {} names but `num_classes` is {num_classes}",
                names.len()
            ),
        ));
    }
    Ok(names)
}

/// The eval transform of `pretrained_cfg`, refused where effistream cannot do it exactly.
fn eval_transform(path: &Path, cfg: &serde_json::Map<String, Value>) -> Result<Preprocess> {
    let field = |key: &str| cfg.get(key).filter(|v| !v.is_null());
    let size =
        field("input_size").ok_or_else(|| bad(path, "`pretrained_cfg.input_size` is missing"))?;
    let dims: Option<Vec<u64>> = size
        .as_array()
        .map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        .unwrap_or(None);
    let input_size = match dims.as_deref() {
        Some([3, h, w]) if h == w && (32..=1024).contains(h) => *h as usize,
        Some([3, h, w]) if h == w => {
            return Err(bad(
                path,
                format!("`pretrained_cfg.input_size` {size}: the side must be between 32 and 1024"),
            ));
        }
        Some([3, _, _]) => {
            return Err(bad(
                path,
                format!("`pretrained_cfg.input_size` {size}: only square inputs are supported"),
            ));
        }
        _ => {
            return Err(bad(
                path,
                format!("`pretrained_cfg.input_size` {size} is not [3, H, W]"),
            ));
        }
    };
    let crop_pct = match field("crop_pct") {
        None => 0.875, // timm's DEFAULT_CROP_PCT
        Some(v) => v
            .as_f64()
            .filter(|c| *c > 0.0 && *c <= 1.0)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("`pretrained_cfg.crop_pct` {v} is not a number in (0, 1]"),
                )
            })?,
    };
    if let Some(v) = field("interpolation")
        && v.as_str() != Some("bicubic")
    {
        return Err(bad(
            path,
            format!(
                "`pretrained_cfg.interpolation` {v} is not supported; effistream resizes with bicubic (PIL's antialiased) only"
            ),
        ));
    }
    if let Some(v) = field("crop_mode")
        && v.as_str() != Some("center")
    {
        return Err(bad(
            path,
            format!(
                "`pretrained_cfg.crop_mode` {v} is not supported; effistream crops the center only"
            ),
        ));
    }
    let triple = |key: &str, default: [f32; 3], positive: bool| -> Result<[f32; 3]> {
        let Some(v) = field(key) else {
            return Ok(default);
        };
        let values: Option<Vec<f64>> = match v {
            Value::Array(a) => a.iter().map(Value::as_f64).collect(),
            // timm accepts one number for all three channels.
            Value::Number(n) => n.as_f64().map(|x| vec![x; 3]),
            _ => None,
        };
        match values.as_deref() {
            Some(&[a, b, c])
                if [a, b, c]
                    .iter()
                    .all(|x| x.is_finite() && (!positive || *x > 0.0)) =>
            {
                Ok([a as f32, b as f32, c as f32])
            }
            _ => Err(bad(
                path,
                format!(
                    "`pretrained_cfg.{key}` {v} is not three {}numbers",
                    if positive { "positive " } else { "" }
                ),
            )),
        }
    };
    // timm's IMAGENET_DEFAULT_MEAN / STD when absent.
    let mean = triple("mean", [0.485, 0.456, 0.406], false)?;
    let std = triple("std", [0.229, 0.224, 0.225], true)?;
    Ok(Preprocess {
        input_size,
        resize_size: (input_size as f64 / crop_pct).floor() as usize,
        mean,
        std,
    })
}

/// Reads a labels file: one class name a line (a trailing empty line is not a class).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect();
    if names.is_empty() {
        return Err(Error::Labels {
            path: path.to_owned(),
            reason: "the file is empty (expected one class name a line)".into(),
        });
    }
    if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
        return Err(Error::Labels {
            path: path.to_owned(),
            reason: format!("line {} is empty (expected one class name a line)", i + 1),
        });
    }
    Ok(names)
}

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub weights: PathBuf,
    pub config: Option<PathBuf>,
}

/// The weights file and `config.json` of `source`, without loading them; the built-in
/// lookup ([`weights::locate`]) when neither `weights` nor `hub_id` is given (then
/// `variant` is the model's).
pub fn locate(source: &ModelSource, variant: &'static Variant) -> Result<Located> {
    if let Some(path) = &source.weights {
        if path.is_dir() {
            let weights = WEIGHTS_FILES
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::ModelConfig {
                    path: path.clone(),
                    reason: format!(
                        "the folder has no {} (a timm checkpoint folder holds model.safetensors and config.json)",
                        WEIGHTS_FILES.join(" or ")
                    ),
                })?;
            let config = path.join(CONFIG_FILE);
            return Ok(Located {
                weights,
                config: config.is_file().then_some(config),
            });
        }
        let config = path
            .parent()
            .map(|dir| dir.join(CONFIG_FILE))
            .filter(|c| c.is_file());
        return Ok(Located {
            weights: path.clone(),
            config,
        });
    }
    if let Some(repo) = &source.hub_id {
        return locate_hub(repo);
    }
    Ok(Located {
        weights: weights::locate(variant)?,
        config: None,
    })
}

/// A user's hub repository: its weights and `config.json`, from the cache (offline) or
/// downloaded, as the built-in ids are.
fn locate_hub(repo: &str) -> Result<Located> {
    let hub = crate::hub::Hub::from_env();
    let cached_weights = WEIGHTS_FILES.iter().find_map(|f| hub.cached(repo, f));
    let cached_config = hub.cached(repo, CONFIG_FILE);
    if let (Some(weights), Some(config)) = (&cached_weights, &cached_config) {
        return Ok(Located {
            weights: weights.clone(),
            config: Some(config.clone()),
        });
    }
    let failed = |reason: String| Error::Hub {
        repo: repo.to_owned(),
        reason,
    };
    if hub.offline {
        return match cached_weights {
            Some(weights) => Ok(Located {
                weights,
                config: cached_config,
            }),
            None => Err(failed(format!(
                "not in the Hugging Face cache {} and HF_HUB_OFFLINE is set",
                hub.repo_dir(repo).display()
            ))),
        };
    }
    let weights = match cached_weights {
        Some(w) => w,
        None => hub
            .download_first(repo, &WEIGHTS_FILES)
            .map_err(|e| failed(e.to_string()))?,
    };
    let config = match cached_config {
        Some(c) => Some(c),
        None => match hub.download(repo, CONFIG_FILE) {
            Ok(c) => Some(c),
            Err(crate::hub::HubError::NotFound { ref what, .. }) if what.starts_with("no file") => {
                None
            }
            Err(e) => return Err(failed(e.to_string())),
        },
    };
    Ok(Located { weights, config })
}

/// The variant `source` names, or its `config.json`'s architecture, or the default.
pub fn variant_for(source: &ModelSource, config: Option<&TimmConfig>) -> Result<&'static Variant> {
    match (&source.name, config) {
        (Some(name), Some(config)) if *name != config.architecture => Err(bad(
            &config.path,
            format!(
                "`architecture` is {:?} but the model name given is {name:?}; leave the name out to use the file's",
                config.architecture
            ),
        )),
        (Some(name), _) => Variant::by_name(name),
        (None, Some(config)) => Variant::by_name(&config.architecture).map_err(|e| match e {
            Error::UnknownModel { known, .. } => bad(
                &config.path,
                format!(
                    "`architecture` {:?} is not a model effistream implements; supported: {known}",
                    config.architecture
                ),
            ),
            e => e,
        }),
        (None, None) => Variant::by_name(DEFAULT_MODEL),
    }
}

/// Loads the model `source` describes: its weights, its `config.json` (architecture,
/// classes, labels, eval transform) and its labels file, every count checked.
pub fn load(source: &ModelSource) -> Result<Classifier> {
    // The variant for the built-in lookup only matters without weights and hub_id.
    let fallback = variant_for(source, None)?;
    let located = locate(source, fallback)?;
    let config = located
        .config
        .as_deref()
        .map(TimmConfig::load)
        .transpose()?;
    let variant = variant_for(source, config.as_ref())?;
    tracing::info!(
        model = variant.name,
        weights = %located.weights.display(),
        config = %located.config.as_deref().map_or("none".into(), |p| p.display().to_string()),
        "Loading weights."
    );
    let weights = Weights::from_file(variant, &located.weights)?;
    let classifier = Classifier::new(&weights)?;
    apply(
        classifier,
        config.as_ref(),
        source.labels.as_deref(),
        &located.weights,
    )
}

/// Applies `config.json` and a labels file to a loaded classifier, checking that their
/// class counts match the classifier's (`weights` is named in messages).
pub fn apply(
    mut classifier: Classifier,
    config: Option<&TimmConfig>,
    labels: Option<&Path>,
    weights: &Path,
) -> Result<Classifier> {
    let classes = classifier.num_classes();
    if let Some(config) = config {
        if config.num_classes != classes {
            return Err(bad(
                &config.path,
                format!(
                    "`num_classes` is {} but the classifier of {} has {classes} classes",
                    config.num_classes,
                    weights.display()
                ),
            ));
        }
        if let Some(pre) = &config.preprocess {
            classifier.set_preprocess(pre.clone());
        }
    }
    let names = match labels {
        Some(path) => {
            let names = read_labels(path)?;
            if names.len() != classes {
                return Err(Error::Labels {
                    path: path.to_owned(),
                    reason: format!(
                        "{} labels but the classifier of {} has {classes} classes",
                        names.len(),
                        weights.display()
                    ),
                });
            }
            Some(names)
        }
        None => config.and_then(|c| c.label_names.clone()),
    };
    if let Some(names) = names {
        classifier.set_labels(Arc::from(names));
    }
    Ok(classifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TimmConfig> {
        TimmConfig::parse(Path::new("m/config.json"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const PRE: &str = r#""pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.95,
        "interpolation": "bicubic", "crop_mode": "center",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}"#;

    #[test]
    fn a_list_of_label_names_and_the_eval_transform() {
        let c = parse(&format!(
            r#"{{"architecture": "efficientnet_b1_pruned", "num_classes": 2,
                "label_names": ["closed", "open"], "num_features": 1280, "global_pool": "avg",
                "model_args": {{"num_classes": 2}}, {PRE}}}"#
        ))
        .unwrap();
        assert_eq!(c.architecture, "efficientnet_b1_pruned");
        assert_eq!(c.num_classes, 2);
        assert_eq!(c.label_names.unwrap(), ["closed", "open"]);
        let p = c.preprocess.unwrap();
        assert_eq!((p.input_size, p.resize_size), (224, 235));
        assert_eq!(p.mean, [0.485, 0.456, 0.406]);
        assert_eq!(p.std, [0.229, 0.224, 0.225]);
    }

    #[test]
    fn a_dict_of_label_names_in_any_key_order() {
        let c = parse(
            r#"{"architecture": "efficientnet_b0", "num_classes": 3,
                "label_names": {"2": "c", "0": "a", "1": "b"}}"#,
        )
        .unwrap();
        assert_eq!(c.label_names.unwrap(), ["a", "b", "c"]);
        assert_eq!(c.preprocess, None);
        // Indexes are numbers, not strings: "10" comes after "9".
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let dict: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), Value::from(n.as_str())))
            .collect();
        let text = format!(
            r#"{{"architecture": "a", "num_classes": 12, "label_names": {}}}"#,
            Value::Object(dict)
        );
        assert_eq!(parse(&text).unwrap().label_names.unwrap(), names);
    }

    #[test]
    fn missing_fields_are_named() {
        assert!(err(r#"{"num_classes": 3}"#).contains("no `architecture`"));
        assert!(err(r#"{"architecture": "efficientnet_b0"}"#).contains("no `num_classes`"));
        let e =
            err(r#"{"architecture": "efficientnet_b0", "num_classes": 3, "pretrained_cfg": {}}"#);
        assert!(e.contains("`pretrained_cfg.input_size` is missing"), "{e}");
        assert!(err("[1, 2]").contains("not a JSON object"));
        assert!(err("{").starts_with("m/config.json: not valid JSON"));
        // num_classes and architecture in pretrained_cfg only (older timm) are taken.
        let c = parse(
            r#"{"pretrained_cfg": {"architecture": "efficientnet_b0", "num_classes": 4,
                "input_size": [3, 240, 240]}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.num_classes, c.architecture.as_str()),
            (4, "efficientnet_b0")
        );
        let p = c.preprocess.unwrap();
        // timm's defaults: crop_pct 0.875, ImageNet mean/std.
        assert_eq!((p.input_size, p.resize_size), (240, 274));
        assert_eq!(p.std, [0.229, 0.224, 0.225]);
    }

    #[test]
    fn label_counts_and_keys_are_checked() {
        let e = err(r#"{"architecture": "a", "num_classes": 3, "label_names": ["x", "y"]}"#);
        assert_eq!(
            e,
            "m/config.json: `label_names` has 2 names but `num_classes` is 3"
        );
        let e =
            err(r#"{"architecture": "a", "num_classes": 2, "label_names": {"0": "x", "2": "y"}}"#);
        assert!(
            e.contains("key \"2\" is not a class index from 0 to 1"),
            "{e}"
        );
        let e =
            err(r#"{"architecture": "a", "num_classes": 2, "label_names": {"0": "x", "00": "y"}}"#);
        assert!(e.contains("no name for class 1"), "{e}");
        let e = err(r#"{"architecture": "a", "num_classes": 1, "label_names": [3]}"#);
        assert!(e.contains("`label_names` [0] is not a string: 3"), "{e}");
        let e = err(r#"{"architecture": "a", "num_classes": 1, "label_names": "x"}"#);
        assert!(e.contains("neither a list nor an object"), "{e}");
        let e = err(r#"{"architecture": "a", "num_classes": 0}"#);
        assert!(
            e.contains("`num_classes` = 0 is not a positive integer"),
            "{e}"
        );
    }

    #[test]
    fn transforms_effistream_cannot_do_exactly_are_refused() {
        let with = |cfg: &str| {
            err(&format!(
                r#"{{"architecture": "a", "num_classes": 1, "pretrained_cfg": {cfg}}}"#
            ))
        };
        let e = with(r#"{"input_size": [3, 224, 256]}"#);
        assert!(e.contains("only square inputs"), "{e}");
        let e = with(r#"{"input_size": [1, 224, 224]}"#);
        assert!(e.contains("is not [3, H, W]"), "{e}");
        let e = with(r#"{"input_size": [3, 224, 224], "interpolation": "bilinear"}"#);
        assert!(e.contains("\"bilinear\" is not supported"), "{e}");
        let e = with(r#"{"input_size": [3, 224, 224], "crop_mode": "squash"}"#);
        assert!(e.contains("\"squash\" is not supported"), "{e}");
        let e = with(r#"{"input_size": [3, 224, 224], "crop_pct": 1.5}"#);
        assert!(e.contains("crop_pct` 1.5 is not a number in (0, 1]"), "{e}");
        let e = with(r#"{"input_size": [3, 224, 224], "std": [0.5, 0, 0.5]}"#);
        assert!(
            e.contains("`pretrained_cfg.std` [0.5,0,0.5] is not three positive numbers"),
            "{e}"
        );
        // One number for all channels, as timm allows.
        let c = parse(r#"{"architecture": "a", "num_classes": 1, "pretrained_cfg": {"input_size": [3, 224, 224], "mean": 0.5, "std": 0.5}}"#).unwrap();
        assert_eq!(c.preprocess.unwrap().mean, [0.5; 3]);
    }

    #[test]
    fn the_name_and_the_architecture_must_agree() {
        let config = parse(r#"{"architecture": "efficientnet_b0", "num_classes": 2}"#).unwrap();
        let named = |name: Option<&str>| ModelSource {
            name: name.map(str::to_owned),
            ..ModelSource::default()
        };
        assert_eq!(
            variant_for(&named(None), Some(&config)).unwrap().name,
            "efficientnet_b0"
        );
        assert_eq!(variant_for(&named(None), None).unwrap().name, DEFAULT_MODEL);
        let e = variant_for(&named(Some("efficientnet_b3_pruned")), Some(&config))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`architecture` is \"efficientnet_b0\" but the model name given is \"efficientnet_b3_pruned\""), "{e}");
        let resnet = parse(r#"{"architecture": "resnet50", "num_classes": 2}"#).unwrap();
        let e = variant_for(&named(None), Some(&resnet))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m/config.json: `architecture` \"resnet50\" is not a model effistream implements; supported: efficientnet_b1_pruned, "), "{e}");
    }
}
