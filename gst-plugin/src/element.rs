//! Small pieces both elements are made of: settings access, property values and their
//! valid ranges, pad templates, metadata and debug categories.

use std::fmt;
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

/// A string property's new value; `None` when unset, `Some("")` when set empty, which
/// the element's checks refuse instead of falling back to the default.
pub(crate) fn raw_text(value: &glib::Value) -> Option<String> {
    get::<Option<String>>(value)
}

/// The valid values of a numeric property, from `min` to `max` (`None`: no upper bound).
///
/// The property's `ParamSpec` accepts every value of its type: GLib would only print a
/// warning for a value outside the `ParamSpec` and keep the default, so the pipeline would
/// run with a value nobody asked for. The element checks the range itself instead:
/// `start()` fails with [`Range::check`]'s error, and a property that can change while the
/// element runs keeps its value when the new one is out of range ([`Range::set`]).
pub(crate) struct Range<T> {
    pub name: &'static str,
    pub min: T,
    pub max: Option<T>,
}

impl<T: Copy + PartialOrd + fmt::Display> Range<T> {
    /// The range as the blurb and the README say it: `1 to 64`, `1 or more`.
    fn describe(&self) -> String {
        match self.max {
            Some(max) => format!("{} to {max}", self.min),
            None => format!("{} or more", self.min),
        }
    }

    /// `text` followed by the range, for the property's blurb.
    pub fn blurb(&self, text: &str) -> String {
        format!("{text} (valid: {})", self.describe())
    }

    fn reason(&self, value: T) -> Option<String> {
        // Written so that NaN is out of range.
        let inside = value >= self.min && self.max.is_none_or(|max| value <= max);
        (!inside).then(|| match self.max {
            Some(max) => format!(
                "{} {value}: must be between {} and {max}",
                self.name, self.min
            ),
            None => format!("{} {value}: must be {} or more", self.name, self.min),
        })
    }

    /// The error that fails the state change when `value` is out of range.
    pub fn check(&self, value: T) -> Result<(), gst::ErrorMessage> {
        match self.reason(value) {
            None => Ok(()),
            Some(reason) => Err(gst::error_msg!(gst::LibraryError::Settings, ("{reason}"))),
        }
    }

    /// Stores `value` in `slot`, except while the element runs with `value` out of range:
    /// then `slot` keeps its value and the reason comes back, for a warning message.
    /// Before the element runs any value is stored, and `start()` refuses a bad one.
    pub fn set(&self, slot: &mut T, value: T, running: bool) -> Option<String> {
        match self.reason(value) {
            Some(reason) if running => Some(format!("{reason}; {} stays {slot}", self.name)),
            _ => {
                *slot = value;
                None
            }
        }
    }
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
