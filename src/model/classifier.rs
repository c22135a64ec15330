//! Images in, ranked classes out: weights location, preprocessing, batching, softmax.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::error::Result;
use crate::model::efficientnet::EfficientNet;
use crate::model::fast::{FastNet, KernelSet};
use crate::model::labels;
use crate::model::variants::Variant;
use crate::model::weights::{self, Weights};
use crate::preprocess::{Preprocess, RgbImage};

/// One class with its softmax probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

/// The network's answer for one image.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Raw logits, one per class.
    pub logits: Vec<f32>,
    /// The `top_k` most probable classes, most probable first.
    pub top: Vec<ClassScore>,
}

/// Which implementation of the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// [`FastNet`]: fused channels-last kernels of one [`KernelSet`] (the default).
    Fast(KernelSet),
    /// [`EfficientNet`]: the plain candle implementation the fast one is checked against
    /// (`EFFISTREAM_BACKEND=reference` selects it).
    Reference,
}

impl Backend {
    /// `EFFISTREAM_BACKEND=reference` selects the reference; anything else the fast path
    /// with the kernel set [`KernelSet::from_env`] picks (the best this CPU has, unless
    /// `EFFISTREAM_KERNELS` names one; naming one the CPU lacks is an error).
    pub fn from_env() -> Result<Self> {
        match std::env::var("EFFISTREAM_BACKEND").as_deref() {
            Ok("reference") => Ok(Backend::Reference),
            _ => Ok(Backend::Fast(KernelSet::from_env()?)),
        }
    }

    /// `fast (avx512)`, `fast (portable)`, `reference`.
    pub fn describe(self) -> String {
        match self {
            Backend::Fast(k) => format!("fast ({k})"),
            Backend::Reference => "reference".into(),
        }
    }
}

#[derive(Debug)]
enum Network {
    Fast(FastNet),
    Reference(EfficientNet),
}

/// A loaded variant with its eval transform.
#[derive(Debug)]
pub struct Classifier {
    variant: &'static Variant,
    network: Network,
    num_classes: usize,
    preprocess: Preprocess,
    /// The class names of a model that brings its own (`config.json`, a labels file);
    /// `None`: ImageNet's for 1000 classes, `class N` otherwise.
    labels: Option<Arc<[String]>>,
}

impl Classifier {
    /// Loads `variant` from `weights`, or, when `None`, from the file [`weights::locate`]
    /// finds (weights directory, hub cache, hub download).
    pub fn load(variant: &'static Variant, weights: Option<&Path>) -> Result<Self> {
        let path = match weights {
            Some(path) => path.to_owned(),
            None => weights::locate(variant)?,
        };
        tracing::info!(model = variant.name, weights = %path.display(), "Loading weights.");
        Self::new(&Weights::from_file(variant, &path)?)
    }

    /// Builds the classifier from weights already checked for their variant, with the
    /// backend [`Backend::from_env`] picks.
    pub fn new(weights: &Weights) -> Result<Self> {
        let backend = Backend::from_env()?;
        tracing::info!(model = weights.variant.name, backend = %backend.describe(), "Building the network.");
        Self::with_backend(weights, backend)
    }

    pub fn with_backend(weights: &Weights, backend: Backend) -> Result<Self> {
        let (network, num_classes) = match backend {
            Backend::Fast(kernels) => {
                let net = FastNet::new(weights, kernels)?;
                let classes = net.num_classes();
                (Network::Fast(net), classes)
            }
            Backend::Reference => {
                let net = EfficientNet::new(weights)?;
                let classes = net.num_classes();
                (Network::Reference(net), classes)
            }
        };
        Ok(Self {
            variant: weights.variant,
            network,
            num_classes,
            preprocess: Preprocess::for_variant(weights.variant),
            labels: None,
        })
    }

    pub fn variant(&self) -> &'static Variant {
        self.variant
    }

    /// The implementation that runs, with its kernel set.
    pub fn backend(&self) -> Backend {
        match &self.network {
            Network::Fast(net) => Backend::Fast(net.kernels()),
            Network::Reference(_) => Backend::Reference,
        }
    }

    /// `false` leaves subnormals unflushed on threads that lack FTZ|DAZ (for
    /// `effistream bench --no-flush`, to measure what flushing saves); the default is on.
    pub fn set_flush_subnormals(&mut self, on: bool) {
        if let Network::Fast(net) = &mut self.network {
            net.set_flush_subnormals(on);
        }
    }

    /// Pieces of work the network ran on threads that had not flushed subnormals
    /// themselves (see [`crate::model::fast::flush`]): 0 when every compute thread
    /// came from [`crate::model::fast::flush::compute_pool`]. Always 0 for the reference.
    pub fn unflushed_calls(&self) -> u64 {
        match &self.network {
            Network::Fast(net) => net.unflushed_calls(),
            Network::Reference(_) => 0,
        }
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Replaces the eval transform (a fine-tuned model's `pretrained_cfg`).
    pub fn set_preprocess(&mut self, preprocess: Preprocess) {
        self.preprocess = preprocess;
    }

    /// Names the classes (one name per class, in class order; the caller checks the
    /// count, see [`crate::model::own::apply`]).
    pub fn set_labels(&mut self, labels: Arc<[String]>) {
        debug_assert_eq!(labels.len(), self.num_classes);
        self.labels = Some(labels);
    }

    /// The model's own class names, if it has them.
    pub fn labels(&self) -> Option<&Arc<[String]>> {
        self.labels.as_ref()
    }

    /// The name of class `class_id`.
    pub fn label(&self, class_id: usize) -> String {
        match self.labels.as_ref().and_then(|l| l.get(class_id)) {
            Some(name) => name.clone(),
            None => labels::label(class_id, self.num_classes).into_owned(),
        }
    }

    /// Classifies a batch of images in one forward pass.
    pub fn classify(&self, images: &[RgbImage], top_k: usize) -> Result<Vec<Prediction>> {
        let len = self.preprocess.output_len();
        let mut input = vec![0f32; images.len() * len];
        for (image, out) in images.iter().zip(input.chunks_exact_mut(len)) {
            self.preprocess.run(image, out)?;
        }
        self.classify_preprocessed(input, top_k)
    }

    /// Runs the network on `N` preprocessed CHW images laid end to end.
    pub fn classify_preprocessed(&self, input: Vec<f32>, top_k: usize) -> Result<Vec<Prediction>> {
        let logits = self.logits(input)?;
        Ok(logits
            .into_iter()
            .map(|logits| {
                let top = top_classes_named(&logits, top_k, self.labels.as_deref());
                Prediction { logits, top }
            })
            .collect())
    }

    /// Raw logits for `N` preprocessed CHW images laid end to end.
    pub fn logits(&self, input: Vec<f32>) -> Result<Vec<Vec<f32>>> {
        let size = self.preprocess.input_size;
        let n = input.len() / self.preprocess.output_len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::from_vec(input, (n, 3, size, size), &Device::Cpu)?;
        let logits = match &self.network {
            Network::Fast(net) => x.apply_op1_no_bwd(net)?,
            Network::Reference(net) => net.forward(&x)?,
        };
        Ok(logits.to_vec2()?)
    }
}

/// Softmax over `logits` (in f64), then the `k` most probable classes, ties by class id.
pub fn top_classes(logits: &[f32], k: usize) -> Vec<ClassScore> {
    top_classes_named(logits, k, None)
}

/// [`top_classes`] with the model's own class names (`None`: [`labels::label`]).
pub fn top_classes_named(logits: &[f32], k: usize, names: Option<&[String]>) -> Vec<ClassScore> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|class_id| ClassScore {
            class_id,
            label: match names.and_then(|n| n.get(class_id)) {
                Some(name) => name.clone(),
                None => labels::label(class_id, logits.len()).into_owned(),
            },
            score: (exp[class_id] / sum) as f32,
        })
        .collect()
}
