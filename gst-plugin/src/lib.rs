//! GStreamer plugin `effistream`: EfficientNet classification and MQTT publishing
//! elements built on the effistream engine.
//!
//! - [`EffnetClassify`] (`effnetclassify`): classifies raw video frames, attaches the
//!   result as a custom meta and posts `effnet-classification` element messages;
//! - [`EffnetPublish`] (`effnetpublish`): publishes each buffer's classification to MQTT
//!   with the topics and JSON payloads of the effistream daemon.
//!
//! ```sh
//! cargo build --release --workspace
//! GST_PLUGIN_PATH=$PWD/target/release gst-inspect-1.0 effistream
//! ```
//!
//! [`meta`] documents the meta and message fields and reads them from Rust.

mod classify;
mod element;
pub mod meta;
mod publish;
mod registry;

use gst::glib;

pub use classify::EffnetClassify;
pub use publish::EffnetPublish;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    classify::register(plugin)?;
    publish::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    effistream,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    // GStreamer 1.22 accepts only its own list of license names; see REFERENCE.md.
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
