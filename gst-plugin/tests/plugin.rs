//! The plugin loads into GStreamer, statically and as `libgsteffistream.so` through
//! `gst-inspect-1.0` (which also checks that GStreamer 1.22 accepts its license string).

use std::path::PathBuf;
use std::process::Command;

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
