//! The copy of a frame the engine gets: the network's input crop, scaled straight from
//! the frame's own format (I420, NV12, packed RGB, …: the pad templates list exactly
//! [`effistream::video::FORMATS`]) by [`FrameScaler`], so that a 1080p frame costs about
//! 1 ms of CPU instead of a conversion to RGB at full size. A region is cut from the frame
//! at its full resolution first ([`FrameScaler::scale_region`], as the daemon does).

use effistream::preprocess::{Preprocess, RgbImage};
use effistream::video::{FrameScaler, RegionBox};

/// Scales frames of one format and size to the network input.
pub(super) struct ToInput {
    info: gst_video::VideoInfo,
    scaler: FrameScaler,
}

impl ToInput {
    pub fn new(info: gst_video::VideoInfo, pre: &Preprocess) -> Result<Self, String> {
        if !FrameScaler::supports(info.format()) {
            return Err(format!("{} frames are not supported", info.format()));
        }
        Ok(Self {
            info,
            scaler: FrameScaler::new(pre),
        })
    }

    pub fn info(&self) -> &gst_video::VideoInfo {
        &self.info
    }

    /// `buffer`'s picture as the network's `input_size²` RGB crop of each of `regions`
    /// (`None`: the whole frame), each written into its recycled buffer.
    pub fn images<'a>(
        &mut self,
        buffer: &gst::BufferRef,
        regions: impl IntoIterator<Item = (Option<&'a RegionBox>, Vec<u8>)>,
    ) -> Result<Vec<RgbImage>, String> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &self.info)
            .map_err(|e| format!("cannot map a {} frame: {e}", self.info.format()))?;
        regions
            .into_iter()
            .map(|(region, recycled)| {
                self.scaler
                    .scale_region(&frame, region, recycled)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}
