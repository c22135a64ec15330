//! The copy of a frame the engine gets: packed RGB at the frame's size, converted by
//! gstreamer-video's `VideoConverter` (a plain copy when the frame is RGB already).

use effistream::preprocess::RgbImage;
use gst_video::prelude::*;

/// Converts frames of one format and size to [`RgbImage`].
pub(super) struct ToRgb {
    info: gst_video::VideoInfo,
    converter: Option<Converter>,
}

struct Converter {
    converter: gst_video::VideoConverter,
    out_info: gst_video::VideoInfo,
    /// Reused for every frame; only this struct holds it, so it stays writable.
    out: gst::Buffer,
}

impl ToRgb {
    pub fn new(info: gst_video::VideoInfo) -> Result<Self, String> {
        if info.format() == gst_video::VideoFormat::Rgb {
            return Ok(Self {
                info,
                converter: None,
            });
        }
        // The converter wants the same frame rate and interlacing on both sides.
        let out_info =
            gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, info.width(), info.height())
                .fps(info.fps())
                .par(info.par())
                .interlace_mode(info.interlace_mode())
                .build()
                .map_err(|e| format!("RGB video info: {e}"))?;
        let converter = gst_video::VideoConverter::new(&info, &out_info, None)
            .map_err(|e| format!("cannot convert {} to RGB: {e}", info.format()))?;
        let out = gst::Buffer::with_size(out_info.size())
            .map_err(|e| format!("RGB frame buffer: {e}"))?;
        Ok(Self {
            info,
            converter: Some(Converter {
                converter,
                out_info,
                out,
            }),
        })
    }

    pub fn info(&self) -> &gst_video::VideoInfo {
        &self.info
    }

    /// `buffer`'s picture as packed RGB.
    pub fn image(&mut self, buffer: &gst::BufferRef) -> Result<RgbImage, String> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &self.info)
            .map_err(|e| format!("cannot map a {} frame: {e}", self.info.format()))?;
        let (width, height) = (self.info.width() as usize, self.info.height() as usize);
        let Some(c) = &mut self.converter else {
            return rgb_image(&frame, width, height);
        };
        let out = c
            .out
            .get_mut()
            .ok_or("the RGB frame buffer is not writable")?;
        let mut rgb = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &c.out_info)
            .map_err(|e| format!("cannot map the RGB frame: {e}"))?;
        c.converter.frame_ref(&frame, &mut rgb);
        rgb_image(&rgb, width, height)
    }
}

/// Copies plane 0 of an RGB frame without its row padding.
fn rgb_image<T>(
    frame: &gst_video::VideoFrameRef<T>,
    width: usize,
    height: usize,
) -> Result<RgbImage, String> {
    let data = frame.plane_data(0).map_err(|e| e.to_string())?;
    let stride = usize::try_from(frame.plane_stride()[0]).map_err(|e| e.to_string())?;
    RgbImage::from_frame(data, width, height, stride).map_err(|e| e.to_string())
}
