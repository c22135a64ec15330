//! The plugin loads into GStreamer, statically and as `libgsteffistream.so` through
//! `gst-inspect-1.0` (which also checks that GStreamer 1.22 accepts its license string),
//! with both elements and every property documented, numeric ones with their valid range
//! in the blurb and a `ParamSpec` that takes any value of the type (the element checks the
//! range, so that a bad value fails the state change instead of being dropped by GLib).

use std::path::PathBuf;
use std::process::Command;

use effistream_testkit::process::OutputChecked;
use gst::glib;
use gst::prelude::*;

#[test]
fn plugin_registers_statically() {
    let _glib = effistream_testkit::glib_log::check();
    gst::init().unwrap();
    gsteffistream::plugin_register_static().unwrap();
    let plugin = gst::Registry::get().find_plugin("effistream").unwrap();
    assert_eq!(plugin.license(), "MIT/X11");
}

#[test]
fn gst_inspect_loads_the_shared_library() {
    // target/<profile>/deps/plugin-<hash> -> target/<profile>/libgsteffistream.so
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().unwrap().parent().unwrap().to_owned();
    assert!(
        dir.join("libgsteffistream.so").is_file(),
        "no plugin in {}",
        dir.display()
    );
    let registry = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new("gst-inspect-1.0")
        .arg("effistream")
        .env("GST_PLUGIN_PATH", &dir)
        .env("GST_REGISTRY", registry.path())
        .output_checked();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Name                     effistream"),
        "{stdout}"
    );
    assert!(stdout.contains("libgsteffistream.so"), "{stdout}");
}

#[test]
fn gst_inspect_lists_both_elements_and_documents_every_property() {
    let _glib = effistream_testkit::glib_log::check();
    gst::init().unwrap();
    gsteffistream::plugin_register_static().unwrap();
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe.parent().unwrap().parent().unwrap().to_owned();
    let registry = tempfile::NamedTempFile::new().unwrap();
    let inspect = |what: &str| {
        let output = Command::new("gst-inspect-1.0")
            .arg(what)
            .env("GST_PLUGIN_PATH", &dir)
            .env("GST_REGISTRY", registry.path())
            .output_checked();
        assert!(output.status.success(), "gst-inspect-1.0 {what}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let plugin = inspect("effistream");
    assert!(
        plugin.contains("effnetclassify: EfficientNet classifier"),
        "{plugin}"
    );
    assert!(
        plugin.contains("effnetpublish: effistream MQTT publisher"),
        "{plugin}"
    );
    for element in ["effnetclassify", "effnetpublish"] {
        let text = inspect(element);
        let factory = gst::ElementFactory::find(element).unwrap().load().unwrap();
        let class = glib::object::ObjectClass::from_type(factory.element_type()).unwrap();
        let ours: Vec<_> = class
            .list_properties()
            .iter()
            .filter(|p| p.owner_type() == factory.element_type())
            .cloned()
            .collect();
        assert!(ours.len() >= 9, "{element}: {} properties", ours.len());
        for pspec in ours {
            let (name, blurb) = (pspec.name(), pspec.blurb().unwrap_or_default());
            assert!(
                !blurb.is_empty() && pspec.nick() != name,
                "{element} {name}: no nick or blurb"
            );
            let line = format!("{name:<20}: {blurb}");
            assert!(text.contains(&line), "{element}: no `{line}` in\n{text}");
            let numeric = if let Some(p) = pspec.downcast_ref::<glib::ParamSpecUInt>() {
                assert_eq!(
                    (p.minimum(), p.maximum()),
                    (0, u32::MAX),
                    "{element} {name}"
                );
                true
            } else if let Some(p) = pspec.downcast_ref::<glib::ParamSpecFloat>() {
                assert_eq!(
                    (p.minimum(), p.maximum()),
                    (f32::NEG_INFINITY, f32::INFINITY),
                    "{element} {name}"
                );
                true
            } else {
                false
            };
            let range = RANGES
                .iter()
                .find(|(e, n, _)| (*e, *n) == (element, name))
                .map(|(_, _, range)| range);
            assert_eq!(numeric, range.is_some(), "{element} {name}: in RANGES?");
            if let Some(range) = range {
                assert!(
                    blurb.ends_with(&format!("(valid: {range})")),
                    "{element} {name}: the blurb does not end with (valid: {range}): {blurb}"
                );
            }
        }
    }
}

/// The valid range of every numeric property, as its blurb ends.
const RANGES: [(&str, &str, &str); 8] = [
    ("effnetclassify", "top-k", "1 to 100"),
    ("effnetclassify", "threshold", "0 to 1"),
    ("effnetclassify", "inference-interval", "1 or more"),
    ("effnetclassify", "batch-size", "1 to 64"),
    ("effnetclassify", "batch-timeout-ms", "0 to 10000"),
    ("effnetclassify", "threads", "0 to 256"),
    ("effnetpublish", "qos", "0 to 2"),
    ("effnetpublish", "max-queued", "1 to 1000000"),
];
