//! Direct depthwise convolution (one k×k filter per channel) with bias and activation.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::model::variants::{Activation, Padding};

/// A depthwise convolution with BatchNorm folded into `weight`/`bias` and an optional
/// activation, applied to a contiguous `f32` NCHW tensor.
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    /// `channels * kernel * kernel` filter taps, channel-major.
    weight: Vec<f32>,
    /// One bias per channel.
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Option<Activation>,
}

impl DepthwiseConv {
    /// Builds the op from a `[C, 1, k, k]` weight and a `[C]` bias (an error otherwise).
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: Padding,
        activation: Option<Activation>,
    ) -> candle_core::Result<Self> {
        let (channels, one, kernel, kernel_w) = weight.dims4()?;
        if one != 1 || kernel != kernel_w {
            candle_core::bail!(
                "depthwise weight must be [C, 1, k, k], got {:?}",
                weight.dims()
            );
        }
        let bias: Vec<f32> = bias.to_vec1()?;
        if bias.len() != channels {
            candle_core::bail!(
                "depthwise bias must have {channels} values, got {}",
                bias.len()
            );
        }
        Ok(Self {
            weight: weight.flatten_all()?.to_vec1()?,
            bias,
            channels,
            kernel,
            stride,
            padding,
            activation,
        })
    }

    /// Number of channels (input and output).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Runs the op.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("depthwise-conv: expected f32 input");
        };
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "depthwise-conv: input has {c} channels, weight {}",
                self.channels
            );
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise-conv: input must be contiguous");
        };
        let input = &data[start..end];
        let (k, s) = (self.kernel, self.stride);
        let (pad_top, out_h) = self.padding.resolve(h, k, s);
        let (pad_left, out_w) = self.padding.resolve(w, k, s);
        let plane = Plane {
            h,
            w,
            out_w,
            k,
            s,
            pad_top,
            pad_left,
        };
        let mut out = vec![0f32; n * c * out_h * out_w];
        out.par_chunks_mut(out_h * out_w)
            .zip(input.par_chunks(h * w))
            .enumerate()
            .for_each(|(index, (out, input))| {
                let ch = index % c;
                plane.run(
                    input,
                    out,
                    &self.weight[ch * k * k..(ch + 1) * k * k],
                    self.bias[ch],
                    self.activation,
                );
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, out_h, out_w))))
    }
}

/// Geometry of one channel plane.
#[derive(Debug, Clone, Copy)]
struct Plane {
    h: usize,
    w: usize,
    out_w: usize,
    k: usize,
    s: usize,
    pad_top: usize,
    pad_left: usize,
}

impl Plane {
    /// Outputs `[lo, hi)` whose tap `t` lands inside an input of `len` pixels, i.e.
    /// `0 <= o * stride + t - pad < len`.
    #[inline(always)]
    fn valid(t: usize, stride: usize, pad: usize, len: usize, out: usize) -> (usize, usize) {
        let lo = pad.saturating_sub(t).div_ceil(stride);
        let hi = if len + pad > t {
            out.min((len + pad - t - 1) / stride + 1)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Tap-major: each output row starts at the bias, then every kernel tap adds its
    /// weighted input row, which the compiler vectorises for stride 1.
    fn run(
        &self,
        input: &[f32],
        out: &mut [f32],
        weight: &[f32],
        bias: f32,
        act: Option<Activation>,
    ) {
        let (k, s) = (self.k, self.s);
        for (oy, row) in out.chunks_exact_mut(self.out_w).enumerate() {
            row.fill(bias);
            for ky in 0..k {
                let iy = oy * s + ky;
                if iy < self.pad_top || iy - self.pad_top >= self.h {
                    continue;
                }
                let irow = &input[(iy - self.pad_top) * self.w..][..self.w];
                for kx in 0..k {
                    let tap = weight[ky * k + kx];
                    let (lo, hi) = Self::valid(kx, s, self.pad_left, self.w, self.out_w);
                    if lo == hi {
                        continue;
                    }
                    let first = lo * s + kx - self.pad_left;
                    if s == 1 {
                        for (o, x) in row[lo..hi].iter_mut().zip(&irow[first..]) {
                            *o += tap * x;
                        }
                    } else {
                        for (o, x) in row[lo..hi].iter_mut().zip(irow[first..].iter().step_by(s)) {
                            *o += tap * x;
                        }
                    }
                }
            }
            if let Some(act) = act {
                row.iter_mut().for_each(|v| *v = act.apply(*v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Reference: pad explicitly, then candle's grouped conv2d.
    fn reference(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        stride: usize,
        padding: Padding,
    ) -> candle_core::Result<Tensor> {
        let (_, c, h, wd) = x.dims4()?;
        let k = w.dim(2)?;
        let (pt, oh) = padding.resolve(h, k, stride);
        let (pl, ow) = padding.resolve(wd, k, stride);
        let pb = ((oh - 1) * stride + k).saturating_sub(h + pt);
        let pr = ((ow - 1) * stride + k).saturating_sub(wd + pl);
        let xp = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        xp.conv2d(w, 0, stride, 1, c)?
            .broadcast_add(&b.reshape((1, c, 1, 1))?)
    }

    #[test]
    fn matches_grouped_conv2d_for_every_padding_stride_and_kernel() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for &(h, w) in &[(7usize, 9usize), (8, 8), (15, 15), (1, 1), (2, 3)] {
            for &k in &[3usize, 5] {
                for &s in &[1usize, 2] {
                    for padding in [Padding::Same, Padding::Symmetric] {
                        let c = 3;
                        let x = Tensor::randn(0f32, 1., (2, c, h, w), &dev)?;
                        let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev)?;
                        let b = Tensor::randn(0f32, 1., c, &dev)?;
                        let op = DepthwiseConv::new(&wt, &b, s, padding, None)?;
                        let got = op.forward(&x)?;
                        let want = reference(&x, &wt, &b, s, padding)?;
                        assert_eq!(got.dims(), want.dims(), "h{h} w{w} k{k} s{s} {padding:?}");
                        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                        assert!(diff < 1e-4, "h{h} w{w} k{k} s{s} {padding:?}: {diff}");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_a_bias_one_short_of_the_channels() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let wt = Tensor::zeros((4, 1, 3, 3), candle_core::DType::F32, &dev)?;
        let short = Tensor::zeros(3, candle_core::DType::F32, &dev)?;
        let err = DepthwiseConv::new(&wt, &short, 1, Padding::Same, None).unwrap_err();
        assert!(
            err.to_string().contains("must have 4 values, got 3"),
            "{err}"
        );
        Ok(())
    }
}
