//! The plugin loads into GStreamer, statically and as `libgsteffistream.so` through
//! `gst-inspect-1.0` (which also checks that GStreamer 1.22 accepts its license string),
//! with both elements and every property documented.

use std::path::PathBuf;
use std::process::Command;

use gst::glib;
use gst::prelude::*;

#[test]
fn plugin_registers_statically() {
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
        .output()
        .expect("gst-inspect-1.0 (Debian: gstreamer1.0-tools)");
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
            .output()
            .unwrap();
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
        }
    }
}
