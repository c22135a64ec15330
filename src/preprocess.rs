//! timm's eval transform: resize the shorter side to `floor(size / crop_pct)` with PIL's
//! antialiased bicubic, center-crop `size`, scale to [0, 1] and normalise with the variant's
//! mean and std. The output is a CHW `f32` image ready for the network.
//!
//! Images are decoded as they are stored (EXIF orientation is not applied, as PIL does not
//! apply it either) and converted to 8-bit RGB, dropping any alpha channel as PIL's
//! `convert('RGB')` does. Resizing uses `fast_image_resize` with the Catmull-Rom filter,
//! which is PIL's bicubic (a = -0.5) with the same support scaling for downsampling.

use std::path::Path;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::{Error, Result};

/// An 8-bit RGB image without row padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `width * height * 3` bytes, row-major.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Decodes a JPEG or PNG file (the format is recognised from the contents).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes).map_err(|reason| Error::Image {
            path: path.to_owned(),
            reason,
        })
    }

    /// Decodes an encoded image held in memory.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.is_empty() {
            return Err("the file is empty".to_owned());
        }
        let format = image::guess_format(bytes)
            .map_err(|_| "not a JPEG or PNG image (unrecognised contents)".to_owned())?;
        let decoded =
            image::load_from_memory_with_format(bytes, format).map_err(|e| e.to_string())?;
        let rgb = decoded.to_rgb8();
        let (width, height) = (rgb.width() as usize, rgb.height() as usize);
        if width == 0 || height == 0 {
            return Err(format!("the image is empty ({width}x{height})"));
        }
        Ok(Self {
            width,
            height,
            data: rgb.into_raw(),
        })
    }

    /// Copies a raw RGB frame whose rows are `stride` bytes apart (`stride >= width * 3`).
    pub fn from_frame(data: &[u8], width: usize, height: usize, stride: usize) -> Result<Self> {
        Self::from_frame_into(data, width, height, stride, Vec::new())
    }

    /// [`RgbImage::from_frame`] into a recycled buffer (its contents are replaced), so
    /// that a stream of frames needs no allocation.
    pub fn from_frame_into(
        data: &[u8],
        width: usize,
        height: usize,
        stride: usize,
        mut buffer: Vec<u8>,
    ) -> Result<Self> {
        let row = width
            .checked_mul(3)
            .ok_or_else(|| Error::Frame(format!("width {width} is too large")))?;
        if width == 0 || height == 0 {
            return Err(Error::Frame(format!("empty frame {width}x{height}")));
        }
        if stride < row {
            return Err(Error::Frame(format!(
                "stride {stride} is smaller than a row of {width} RGB pixels ({row} bytes)"
            )));
        }
        let needed = stride
            .checked_mul(height - 1)
            .and_then(|n| n.checked_add(row))
            .ok_or_else(|| Error::Frame(format!("frame {width}x{height} is too large")))?;
        if data.len() < needed {
            return Err(Error::Frame(format!(
                "{width}x{height} RGB frame with stride {stride} needs {needed} bytes, got {}",
                data.len()
            )));
        }
        buffer.clear();
        buffer.reserve(row * height);
        for y in 0..height {
            buffer.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(Self {
            width,
            height,
            data: buffer,
        })
    }
}

/// The eval transform of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Side of the square network input.
    pub input_size: usize,
    /// Length the shorter image side is resized to.
    pub resize_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

// `Preprocess::for_variant` (timm's eval transform of a variant) is defined beside
// `Variant` in `model::variants`, so that this module does not depend on `model`.
impl Preprocess {
    /// Number of `f32` values [`Self::run`] writes: `3 * input_size²`.
    pub fn output_len(&self) -> usize {
        3 * self.input_size * self.input_size
    }

    /// Resizes and crops `image` as timm does, returning the 8-bit crop
    /// (`input_size × input_size`).
    pub fn crop(&self, image: &RgbImage) -> Result<RgbImage> {
        let (w, h) = (image.width, image.height);
        let (new_w, new_h) = resized_size(w, h, self.resize_size);
        let resized;
        let resized_ref = if (new_w, new_h) == (w, h) {
            // PIL returns a copy for a same-size resize; so do we.
            image
        } else {
            resized = resize_bicubic(image, new_w, new_h)?;
            &resized
        };
        let size = self.input_size;
        let top = center_offset(new_h, size);
        let left = center_offset(new_w, size);
        let mut data = Vec::with_capacity(size * size * 3);
        for y in top..top + size {
            let row = (y * new_w + left) * 3;
            data.extend_from_slice(&resized_ref.data[row..row + size * 3]);
        }
        Ok(RgbImage {
            width: size,
            height: size,
            data,
        })
    }

    /// The part of a `width × height` picture that becomes the network input, in the
    /// picture's pixels: `(left, top, width, height)`. Resizing this region straight to
    /// `input_size²` gives what resizing the whole picture (shorter side to
    /// `resize_size`) and centre-cropping gives, without computing the pixels the crop
    /// throws away (the filter still reads the pixels around the region).
    pub fn source_region(&self, width: usize, height: usize) -> (f64, f64, f64, f64) {
        let (new_w, new_h) = resized_size(width, height, self.resize_size);
        let (sx, sy) = (width as f64 / new_w as f64, height as f64 / new_h as f64);
        let size = self.input_size as f64;
        (
            center_offset(new_w, self.input_size) as f64 * sx,
            center_offset(new_h, self.input_size) as f64 * sy,
            size * sx,
            size * sy,
        )
    }

    /// The transform of a frame already resized and cropped to `input_size²`
    /// ([`crate::video::FrameScaler`]): only the normalisation is left.
    pub fn run_cropped(&self, crop: &RgbImage, out: &mut [f32]) -> Result<()> {
        if (crop.width, crop.height) != (self.input_size, self.input_size) {
            return Err(Error::Frame(format!(
                "a cropped frame must be {0}x{0}, got {1}x{2}",
                self.input_size, crop.width, crop.height
            )));
        }
        self.normalize(crop, out);
        Ok(())
    }

    /// The full transform: writes the normalised CHW image into `out`
    /// (length [`Self::output_len`]).
    pub fn run(&self, image: &RgbImage, out: &mut [f32]) -> Result<()> {
        let crop = self.crop(image)?;
        self.normalize(&crop, out);
        Ok(())
    }

    /// The full transform into a new buffer.
    pub fn to_chw(&self, image: &RgbImage) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.output_len()];
        self.run(image, &mut out)?;
        Ok(out)
    }

    /// `(x / 255 - mean) / std`, HWC u8 → CHW f32, computed in f32 like torchvision's
    /// `ToTensor` + `Normalize`.
    pub fn normalize(&self, crop: &RgbImage, out: &mut [f32]) {
        let plane = crop.width * crop.height;
        assert_eq!(out.len(), 3 * plane, "output buffer size");
        for (i, px) in crop.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (px[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
    }
}

/// torchvision's `Resize(int)`: the shorter side becomes `target`, the longer one
/// `int(target * long / short)`.
fn resized_size(w: usize, h: usize, target: usize) -> (usize, usize) {
    let scale_long =
        |short: usize, long: usize| (target as f64 * long as f64 / short as f64) as usize;
    if w <= h {
        (target, scale_long(w, h))
    } else {
        (scale_long(h, w), target)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((len - size) / 2))`, Python rounding
/// (half to even).
fn center_offset(len: usize, size: usize) -> usize {
    let d = len.saturating_sub(size);
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// PIL's antialiased bicubic resize. PIL resamples horizontally first and rounds the
/// intermediate image to 8 bits; fast_image_resize does the vertical pass first for 8-bit
/// pixels, so the two passes are run as two separate resizes to keep PIL's order (this
/// matters where clipping at 0 or 255 happens, next to strong edges).
fn resize_bicubic(image: &RgbImage, width: usize, height: usize) -> Result<RgbImage> {
    let to_u32 =
        |v: usize| u32::try_from(v).map_err(|_| Error::Frame(format!("size {v} too large")));
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    let mut resizer = Resizer::new();
    let mut pass = |src: &RgbImage, w: usize, h: usize| -> Result<RgbImage> {
        if (w, h) == (src.width, src.height) {
            return Ok(src.clone());
        }
        let src_ref = ImageRef::new(
            to_u32(src.width)?,
            to_u32(src.height)?,
            &src.data,
            PixelType::U8x3,
        )
        .map_err(|e| Error::Frame(format!("resize source: {e}")))?;
        let mut dst = Image::new(to_u32(w)?, to_u32(h)?, PixelType::U8x3);
        resizer
            .resize(&src_ref, &mut dst, &options)
            .map_err(|e| Error::Frame(format!("resize failed: {e}")))?;
        Ok(RgbImage {
            width: w,
            height: h,
            data: dst.into_vec(),
        })
    };
    let horizontal = pass(image, width, image.height)?;
    pass(&horizontal, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_torchvision_shorter_side_rule() {
        assert_eq!(resized_size(451, 300, 272), (408, 272));
        assert_eq!(resized_size(300, 451, 272), (272, 408));
        assert_eq!(resized_size(640, 427, 256), (383, 256));
        assert_eq!(resized_size(500, 500, 256), (256, 256));
    }

    #[test]
    fn center_offset_rounds_half_to_even_like_python() {
        assert_eq!(center_offset(272, 240), 16);
        assert_eq!(center_offset(273, 240), 16); // round(16.5) == 16
        assert_eq!(center_offset(275, 240), 18); // round(17.5) == 18
        assert_eq!(center_offset(240, 240), 0);
    }

    #[test]
    fn frame_with_row_padding_is_packed() {
        let (w, h, stride) = (2, 2, 8);
        let data: Vec<u8> = (0..(stride * h) as u8).collect();
        let img = RgbImage::from_frame(&data, w, h, stride).unwrap();
        assert_eq!(img.data, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        assert!(RgbImage::from_frame(&data[..10], w, h, stride).is_err());
        assert!(RgbImage::from_frame(&data, w, h, 5).is_err());
    }
}
