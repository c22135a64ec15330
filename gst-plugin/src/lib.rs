//! GStreamer plugin `effistream`: classification and MQTT publishing elements built on the
//! effistream engine.
//!
//! This is the skeleton of the plugin: it registers with GStreamer under the name
//! `effistream` and has no elements yet (`effnetclassify` and `effnetpublish` come with
//! their own issue).

use gst::glib;

fn plugin_init(_plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
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
