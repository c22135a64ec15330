//! The network: timm's EfficientNet family in candle, its weights and its labels.
//!
//! [`Classifier`] is the API the rest of effistream uses: it loads a variant's weights,
//! preprocesses images as timm does and returns ranked classes with probabilities.

pub mod classifier;
pub mod efficientnet;
pub mod fast;
pub(crate) mod kernels;
pub mod labels;
pub mod own;
pub mod variants;
pub mod weights;

/// The checkpoint reader, at its old path ([`crate::pth`] is its home: it needs nothing
/// of the model, and the library's error type wraps its error).
pub use crate::pth;
pub use classifier::{Backend, ClassScore, Classifier, Prediction};
pub use efficientnet::EfficientNet;
pub use own::{ModelSource, TimmConfig};
pub use variants::{Activation, Padding, Variant};
pub use weights::{Weights, WeightsFile};
