//! `effnetpublish`: publishes the classifications of `effnetclassify` to MQTT.
//!
//! A pass-through element: for each buffer with an `EffnetClassificationMeta` it hands
//! the classification to effistream's MQTT publisher, which publishes exactly what the
//! daemon publishes: `{prefix}/{camera}/classification` (JSON), the retained
//! `{prefix}/{camera}/state` once the top label holds, the retained
//! `{prefix}/{camera}/status` (`online` at the camera's first classification, `offline`
//! at EOS and stop) and the retained `{prefix}/status` (`online`, with `offline` as Last
//! Will and at shutdown).
//!
//! The streaming thread never waits for the network: messages go to a bounded queue
//! (`max-queued`), and what does not fit is dropped, counted and reported in a warning
//! message (at most one every 10 s). The connection is made in the background and
//! re-made with exponential backoff: a broker that is down at start or goes away is not
//! an error (a warning says when it stays away for 5 s). Elements of one process with the
//! same settings share one connection; when the last of them stops, what is queued is
//! sent and `offline` published, within 2 s.
//!
//! ```sh
//! gst-launch-1.0 videotestsrc num-buffers=30 ! videoconvert ! \
//!     effnetclassify model=tf_efficientnet_lite0 weights=target/test-assets/lite0.pth camera=demo ! \
//!     effnetpublish server=mqtt://127.0.0.1:1883 ! fakesink
//! ```

mod imp;

use gst::glib;
use gst::prelude::*;

glib::wrapper! {
    /// The `effnetpublish` element.
    pub struct EffnetPublish(ObjectSubclass<imp::EffnetPublish>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "effnetpublish",
        gst::Rank::NONE,
        EffnetPublish::static_type(),
    )
}
