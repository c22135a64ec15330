//! CPU kernels that candle lacks or runs slowly, as candle custom ops.
//!
//! candle's `conv2d` with `groups > 1` runs one convolution per group, which makes the
//! depthwise convolutions of EfficientNet about a hundred times slower than a direct
//! kernel. [`depthwise::DepthwiseConv`] computes them directly, with the folded
//! BatchNorm bias, the activation and the 'same' padding handled inside; [`bias_act::BiasAct`]
//! adds the folded bias and applies the activation after a pointwise convolution, in place.

pub mod bias_act;
pub mod depthwise;

pub use bias_act::BiasAct;
pub use depthwise::DepthwiseConv;
