//! The network: timm's EfficientNet family in candle, its weights and its labels.
//!
//! [`Classifier`] is the API the rest of effistream uses: it loads a variant's weights,
//! preprocesses images as timm does and returns ranked classes with probabilities.

pub mod classifier;
pub mod efficientnet;
pub mod fast;
pub(crate) mod kernels;
pub mod labels;
pub mod pth;
pub mod variants;
pub mod weights;

pub use classifier::{Backend, ClassScore, Classifier, Prediction};
pub use efficientnet::EfficientNet;
pub use variants::{Activation, Padding, Variant};
pub use weights::{Weights, WeightsFile};
