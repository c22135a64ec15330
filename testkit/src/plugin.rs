//! Helpers for the tests of the GStreamer plugin (`gst-plugin/tests/`): the plugin
//! registered in the test process or built for `gst-launch-1.0`, frames, buses and their
//! messages, classifications as the elements carry them.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::SystemTime;

use effistream::model::ClassScore;
use effistream::mqtt::Classification;
use effistream::preprocess::RgbImage;
use gst::prelude::*;
use gst_video::prelude::*;

static INIT: Once = Once::new();

/// GStreamer with the plugin registered statically by `register` (the plugin crate's
/// `gsteffistream::plugin_register_static`), once per test process.
pub fn init(register: fn() -> Result<(), gst::glib::BoolError>) {
    INIT.call_once(|| {
        gst::init().unwrap();
        register().unwrap();
    });
}

/// `target/<profile>`, where the build puts libgsteffistream.so (for `gst-launch-1.0` and
/// `gst-inspect-1.0` through `GST_PLUGIN_PATH`).
pub fn plugin_dir() -> PathBuf {
    let dir = crate::target_dir();
    assert!(
        dir.join("libgsteffistream.so").is_file(),
        "no plugin in {}: run cargo build --release --workspace first",
        dir.display()
    );
    dir
}

/// The real EfficientNet-Lite0 weights (`tf_efficientnet_lite0`), as a property value.
pub fn lite0() -> String {
    crate::lite0_weights().display().to_string()
}

/// `effnetclassify` properties for Lite0, as a launch-line fragment.
pub fn lite0_props() -> String {
    format!("model=tf_efficientnet_lite0 weights=\"{}\"", lite0())
}

/// A photo as one RGB video frame (rows padded as GStreamer pads them) and its caps.
pub fn rgb_frame(name: &str) -> (gst::Caps, gst::Buffer) {
    rgb_buffer(&RgbImage::open(&crate::photo(name)).unwrap())
}

/// The cat's part of [`cat_and_cup`], as fractions of the picture: its left third, top
/// 250 of 400 rows.
pub const CAT_BOX: [f64; 4] = [0.0, 0.0, 0.3333333, 0.625];
/// The espresso's part of [`cat_and_cup`]: its right two thirds.
pub const CUP_BOX: [f64; 4] = [0.3333333, 0.0, 1.0, 1.0];

/// A 900×400 picture of two photos side by side, each of which Lite0 names on its own
/// with some confidence: at [`CAT_BOX`] (pixels 0..300 × 0..250) the left of
/// `chelsea.png` (its rows 50..300: an Egyptian cat, p ≈ 0.7), black below it, and at
/// [`CUP_BOX`] (pixels 300..900 × 0..400) all of `coffee.png` (an espresso, p ≈ 0.95).
pub fn cat_and_cup() -> RgbImage {
    let (width, height) = (900, 400);
    let cat = RgbImage::open(&crate::photo("chelsea.png")).unwrap();
    let cup = RgbImage::open(&crate::photo("coffee.png")).unwrap();
    assert_eq!((cup.width, cup.height), (600, 400), "coffee.png");
    assert!(cat.width >= 300 && cat.height >= 300, "chelsea.png");
    let mut data = vec![0u8; width * height * 3];
    for (y, row) in data.chunks_exact_mut(width * 3).enumerate() {
        if y < 250 {
            let src = ((y + 50) * cat.width) * 3;
            row[..300 * 3].copy_from_slice(&cat.data[src..src + 300 * 3]);
        }
        let src = y * cup.width * 3;
        row[300 * 3..].copy_from_slice(&cup.data[src..src + 600 * 3]);
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// `regions` property text for `regions`: `id:x1,y1,x2,y2;...`.
pub fn regions_property(regions: &[(&str, [f64; 4])]) -> String {
    regions
        .iter()
        .map(|(id, b)| format!("{id}:{},{},{},{}", b[0], b[1], b[2], b[3]))
        .collect::<Vec<_>>()
        .join(";")
}

/// `image` as one RGB video frame (rows padded as GStreamer pads them) and its caps.
pub fn rgb_buffer(image: &RgbImage) -> (gst::Caps, gst::Buffer) {
    let info = gst_video::VideoInfo::builder(
        gst_video::VideoFormat::Rgb,
        image.width as u32,
        image.height as u32,
    )
    .fps(gst::Fraction::new(10, 1))
    .build()
    .unwrap();
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    {
        let buffer = buffer.get_mut().unwrap();
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let row = image.width * 3;
        let data = frame.plane_data_mut(0).unwrap();
        for (y, src) in image.data.chunks_exact(row).enumerate() {
            data[y * stride..y * stride + row].copy_from_slice(src);
        }
    }
    (info.to_caps().unwrap(), buffer)
}

/// A fresh bus on a bare element (one outside a pipeline), to read what it posts.
pub fn watch(element: &gst::Element) -> gst::Bus {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    bus
}

/// The element messages named `name` waiting on `bus`.
pub fn element_messages(bus: &gst::Bus, name: &str) -> Vec<gst::Structure> {
    std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Element]))
        .filter_map(|m| m.structure().map(|s| s.to_owned()))
        .filter(|s| s.name() == name)
        .collect()
}

/// The warning messages waiting on `bus`, as text.
pub fn warnings(bus: &gst::Bus) -> Vec<String> {
    std::iter::from_fn(|| bus.pop_filtered(&[gst::MessageType::Warning]))
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect()
}

/// Sets `launch` to PAUSED, which must fail; returns the error message it posted. The
/// plugin must be registered first ([`init`]).
pub fn start_error(launch: &str) -> String {
    assert!(INIT.is_completed(), "plugin::init first");
    let pipeline = gst::parse::launch(launch).unwrap();
    let bus = pipeline.bus().unwrap();
    let result = pipeline.set_state(gst::State::Paused);
    let error = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => e.error().to_string(),
            _ => unreachable!(),
        });
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(result.is_err(), "{launch}: started");
    error.unwrap_or_else(|| panic!("{launch}: no error message"))
}

/// A classification as `effnetclassify` would attach it.
pub fn classification(camera: &str, seq: u64, label: &str, score: f32) -> Classification {
    Classification {
        camera: Arc::from(camera),
        seq,
        pts_ns: Some(seq * 100_000_000),
        captured_at: SystemTime::now(),
        model: "tf_efficientnet_lite0",
        model_id: None,
        batch_size: 1,
        inference_ms: 20.5,
        top: vec![ClassScore {
            class_id: 967,
            label: label.to_owned(),
            score,
        }],
    }
}
