//! `effnetclassify`: classifies raw video frames with timm's EfficientNets.
//!
//! An in-place transform: buffers pass unchanged, and every inferred one (each frame, or
//! every `inference-interval`th) gets an `EffnetClassificationMeta` with its classes
//! (see [`crate::meta`]) while the element posts an `effnet-classification` element
//! message with the same fields. It accepts RGB, RGBx, BGRx, RGBA, BGRA, I420 and NV12
//! at any size; a copy of the frame is converted to RGB by gstreamer-video for the
//! network and preprocessed as timm does (resize, center crop, normalize).
//!
//! The streaming thread waits for its frame's result, as DL Streamer's `gvaclassify`
//! does. Frames go to an inference engine: the element's own, or, with `engine=NAME`,
//! one shared by every element of the process naming it, which batches the frames of all
//! of them together (up to `batch-size` frames, or whatever arrived `batch-timeout-ms`
//! after the first). The model is loaded in the READY→PAUSED change, which fails with
//! the reason when the model or the weights cannot be used. A flush or a state change
//! releases the wait at once; a result later than `batch-timeout-ms` + 10 s lets the
//! buffer go on without meta (a warning says so).
//!
//! With `regions=id:x1,y1,x2,y2;...` each region is cut from the frame at its full
//! resolution and submitted as an engine stream of its own, `{camera}/{region}` (the
//! daemon's naming), besides the whole frame (unless `whole=false`): each inferred buffer
//! gets one meta and the element posts one message per entry, a region's with a `region`
//! field.
//!
//! ```sh
//! gst-launch-1.0 -m videotestsrc num-buffers=10 ! videoconvert ! \
//!     effnetclassify model=tf_efficientnet_lite0 weights=target/test-assets/lite0.pth camera=demo ! \
//!     fakesink
//! ```

mod convert;
mod engine;
mod imp;
mod regions;
mod waiter;

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    /// The `effnetclassify` element.
    pub struct EffnetClassify(ObjectSubclass<imp::EffnetClassify>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "effnetclassify",
        gst::Rank::NONE,
        EffnetClassify::static_type(),
    )
}
