//! GLib's CRITICAL and WARNING messages in the test process itself (GStreamer pipelines
//! run in-process, the RTSP server of [`crate::rtsp`]): a log writer records them and still
//! prints them as GLib does, and [`check`] gives a guard that fails the test at its end
//! when any was recorded.
//!
//! The writer is process-wide (GLib has one, set once) and the tests of a binary run in
//! parallel, so a message fails the first check that ends after it, which may be another
//! test's: the message quoted says where it came from.

use std::cell::Cell;
use std::sync::{Mutex, Once};

use gst::glib;

/// The messages recorded and not yet taken, as GLib prints them without the
/// `(prog:pid): ` prefix and the time.
static RECORDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// Set by [`quietly`]: this thread's messages are recorded but not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the messages this thread logs recorded but not printed: for the tests
/// that provoke them on purpose, so that a real CRITICAL is the only kind a test run
/// prints.
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    QUIET.set(true);
    let result = f();
    QUIET.set(false);
    result
}

/// Installs the recording writer, once per process; it prints every message through
/// GLib's default writer as before.
pub fn record() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        glib::log_set_writer_func(|level, fields| {
            let name = match level {
                glib::LogLevel::Critical => Some("CRITICAL"),
                glib::LogLevel::Warning => Some("WARNING"),
                _ => None,
            };
            if let Some(name) = name {
                let field = |key: &str| {
                    fields
                        .iter()
                        .find(|f| f.key() == key)
                        .and_then(|f| f.value_bytes())
                        .map(String::from_utf8_lossy)
                };
                let message = field("MESSAGE").unwrap_or_default();
                let line = match field("GLIB_DOMAIN") {
                    Some(domain) => format!("{domain}-{name} **: {message}"),
                    None => format!("{name} **: {message}"),
                };
                RECORDED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
                if QUIET.get() {
                    return glib::LogWriterOutput::Handled;
                }
            }
            glib::log_writer_default(level, fields)
        });
    });
}

/// The messages recorded since the last take.
pub fn take() -> Vec<String> {
    std::mem::take(&mut *RECORDED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Records GLib's warnings and criticals from now on, and fails the test when the guard
/// drops (at the end of the test, unless it panics already) if any was recorded.
#[must_use = "the check happens when the guard drops"]
pub fn check() -> Check {
    record();
    Check(())
}

pub struct Check(());

impl Drop for Check {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let lines = take();
        assert!(
            lines.is_empty(),
            "GLib logged warnings or criticals in the test process:\n{}",
            lines.join("\n")
        );
    }
}
