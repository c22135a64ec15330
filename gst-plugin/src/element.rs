//! Small pieces both elements are made of: settings access, property values, pad
//! templates, metadata and debug categories.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;

/// The author of both elements, as `gst-inspect-1.0` shows it.
const AUTHOR: &str = "effistream developers";

/// Locks `mutex`, also after a panic elsewhere (the data stays consistent: every
/// critical section is a plain assignment or a take).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A property's new value: GObject checked its type against the `ParamSpec` already.
pub(crate) fn get<T>(value: &glib::Value) -> T
where
    T: for<'a> glib::value::FromValue<'a>,
{
    value.get().expect("type checked upstream")
}

/// A string property's new value; `None` when unset or empty.
pub(crate) fn text(value: &glib::Value) -> Option<String> {
    get::<Option<String>>(value).filter(|v| !v.is_empty())
}

/// The value of a path property: its text, or NULL when unset.
pub(crate) fn path_value(path: Option<&Path>) -> glib::Value {
    path.map(|p| p.display().to_string()).to_value()
}

/// The element's debug category, for its `LazyLock`.
pub(crate) fn debug_category(name: &str, description: &str) -> gst::DebugCategory {
    gst::DebugCategory::new(name, gst::DebugColorFlags::empty(), Some(description))
}

/// The element's metadata, for its `LazyLock`.
pub(crate) fn metadata(
    long_name: &str,
    classification: &str,
    description: &str,
) -> gst::subclass::ElementMetadata {
    gst::subclass::ElementMetadata::new(long_name, classification, description, AUTHOR)
}

/// An "always" sink pad and src pad template with the same `caps`.
pub(crate) fn pad_templates(caps: &gst::Caps) -> Vec<gst::PadTemplate> {
    [
        ("sink", gst::PadDirection::Sink),
        ("src", gst::PadDirection::Src),
    ]
    .into_iter()
    .map(|(name, direction)| {
        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, caps)
            .expect("valid pad template")
    })
    .collect()
}
