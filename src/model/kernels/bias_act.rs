//! Per-channel bias plus activation, in place: the epilogue of a convolution whose
//! BatchNorm was folded, in one pass over memory instead of candle's broadcast add and
//! separate activation.

use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use crate::model::variants::Activation;

/// Adds `bias[c]` to every element of channel `c` of a contiguous `f32` `[N, C, ...]`
/// tensor, then applies the activation, in place.
#[derive(Debug, Clone)]
pub struct BiasAct {
    bias: Vec<f32>,
    activation: Option<Activation>,
}

impl BiasAct {
    pub fn new(bias: &Tensor, activation: Option<Activation>) -> candle_core::Result<Self> {
        Ok(Self {
            bias: bias.flatten_all()?.to_vec1()?,
            activation,
        })
    }

    /// Applies the op to `x`, which must not share its storage with another tensor.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<()> {
        x.inplace_op1(self)
    }
}

impl InplaceOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("bias-act: expected f32");
        };
        let dims = layout.dims();
        if dims.len() < 2 || dims[1] != self.bias.len() {
            candle_core::bail!("bias-act: shape {dims:?} for {} channels", self.bias.len());
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("bias-act: input must be contiguous");
        };
        let plane: usize = dims[2..].iter().product();
        let channels = self.bias.len();
        data[start..end]
            .par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(i, chunk)| {
                let b = self.bias[i % channels];
                match self.activation {
                    None => chunk.iter_mut().for_each(|v| *v += b),
                    Some(act) => chunk.iter_mut().for_each(|v| *v = act.apply(*v + b)),
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    #[test]
    fn refuses_a_bias_one_short_of_the_channels() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let op = BiasAct::new(&Tensor::zeros(3, DType::F32, &dev)?, None)?;
        let x = Tensor::zeros((1, 4, 2, 2), DType::F32, &dev)?;
        let err = op.apply(&x).unwrap_err();
        assert!(err.to_string().contains("for 3 channels"), "{err}");
        Ok(())
    }
}
