//! `effnetclassify` with the real EfficientNet-Lite0 weights on a real photo, through
//! `gst_check::Harness`: the meta, the message, `inference-interval`, every accepted
//! format, shared engines, errors at start, out-of-range properties (refused at start, and
//! not applied while playing), and waits released by flushes and stops.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_check::Harness;
use gsteffistream::meta;

use effistream_testkit::plugin::{
    element_messages, lite0, lite0_props, rgb_frame, start_error, warnings, watch,
};

/// GStreamer with the plugin registered, once per process.
fn init() {
    effistream_testkit::plugin::init(gsteffistream::plugin_register_static);
}

fn classifier(props: &[(&str, &str)]) -> gst::Element {
    init();
    let mut builder = gst::ElementFactory::make("effnetclassify")
        .property("model", "tf_efficientnet_lite0")
        .property("weights", lite0());
    for (name, value) in props {
        builder = builder.property_from_str(name, value);
    }
    builder.build().unwrap()
}

fn harness(element: &gst::Element) -> Harness {
    Harness::with_element(element, Some("sink"), Some("src"))
}

#[test]
fn classified_buffers_carry_the_meta_and_the_element_posts_a_message() {
    let _glib = effistream_testkit::glib_log::check();
    let element = classifier(&[("camera", "cup-cam"), ("top-k", "3")]);
    let bus = watch(&element);
    let mut h = harness(&element);
    let (caps, mut buffer) = rgb_frame("coffee.png");
    buffer
        .get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(40));
    let pixels = buffer.map_readable().unwrap().to_vec();
    h.set_src_caps(caps);

    let out = h.push_and_pull(buffer).unwrap();
    assert_eq!(
        out.map_readable().unwrap().as_slice(),
        &pixels[..],
        "pixels untouched"
    );
    let c = meta::read(&out).expect("meta attached").unwrap();
    assert_eq!(&*c.camera, "cup-cam");
    assert_eq!(c.seq, 0);
    assert_eq!(c.pts_ns, Some(40_000_000));
    assert_eq!(c.model, "tf_efficientnet_lite0");
    assert_eq!(c.batch_size, 1);
    assert!(c.inference_ms > 0.0);
    assert_eq!(c.top.len(), 3);
    assert_eq!((c.top[0].class_id, &*c.top[0].label), (967, "espresso"));
    assert!(c.top[0].score > 0.9, "{:?}", c.top);
    assert!(c.top.windows(2).all(|w| w[0].score >= w[1].score));

    let messages = element_messages(&bus, meta::MESSAGE_NAME);
    assert_eq!(messages.len(), 1);
    assert_eq!(meta::from_structure(&messages[0]).unwrap(), c);
    assert_eq!(
        messages[0].get::<gst::Array>("labels").unwrap().as_slice()[0]
            .get::<&str>()
            .unwrap(),
        "espresso"
    );
}

#[test]
fn threshold_leaves_out_the_improbable_classes() {
    let _glib = effistream_testkit::glib_log::check();
    let element = classifier(&[("top-k", "5"), ("threshold", "0.5")]);
    let mut h = harness(&element);
    let (caps, buffer) = rgb_frame("coffee.png");
    h.set_src_caps(caps);
    let c = meta::read(&h.push_and_pull(buffer).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(c.top.len(), 1, "{:?}", c.top);
    assert_eq!(&*c.camera, &*element.name(), "camera defaults to the name");
}

#[test]
fn inference_interval_classifies_every_nth_frame_only() {
    let _glib = effistream_testkit::glib_log::check();
    let element = classifier(&[("inference-interval", "3")]);
    let bus = watch(&element);
    let mut h = harness(&element);
    let (caps, buffer) = rgb_frame("coffee.png");
    h.set_src_caps(caps);
    let mut inferred = Vec::new();
    for i in 0..7u64 {
        let mut b = buffer.copy();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(100 * i));
        let out = h.push_and_pull(b).unwrap();
        if let Some(c) = meta::read(&out) {
            let c = c.unwrap();
            assert_eq!(c.pts_ns, Some(100_000_000 * i));
            inferred.push(c.seq);
        }
    }
    assert_eq!(inferred, [0, 3, 6]);
    assert_eq!(element_messages(&bus, meta::MESSAGE_NAME).len(), 3);
}

#[test]
fn out_of_range_changes_while_playing_are_refused_with_a_warning() {
    let _glib = effistream_testkit::glib_log::check();
    let element = classifier(&[("top-k", "3")]);
    let bus = watch(&element);
    let mut h = harness(&element);
    let (caps, buffer) = rgb_frame("coffee.png");
    h.set_src_caps(caps);
    assert_eq!(element.current_state(), gst::State::Playing);

    element.set_property("top-k", 0u32);
    element.set_property("threshold", -0.25f32);
    element.set_property("inference-interval", 0u32);
    assert_eq!(element.property::<u32>("top-k"), 3);
    assert_eq!(element.property::<f32>("threshold"), 0.0);
    assert_eq!(element.property::<u32>("inference-interval"), 1);
    assert_eq!(
        warnings(&bus),
        [
            "top-k 0: must be between 1 and 100; top-k stays 3",
            "threshold -0.25: must be between 0 and 1; threshold stays 0",
            "inference-interval 0: must be 1 or more; inference-interval stays 1",
        ]
    );
    let c = meta::read(&h.push_and_pull(buffer.copy()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(c.top.len(), 3, "{:?}", c.top);

    // A change in range applies at once, without a warning.
    element.set_property("top-k", 2u32);
    let c = meta::read(&h.push_and_pull(buffer).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(c.top.len(), 2, "{:?}", c.top);
    assert!(warnings(&bus).is_empty());
}

#[test]
fn an_out_of_range_value_set_before_start_fails_the_state_change() {
    let _glib = effistream_testkit::glib_log::check();
    // Set through the Rust API, which used to panic on a value outside the ParamSpec.
    let element = classifier(&[]);
    element.set_property("batch-size", 0u32);
    assert_eq!(element.property::<u32>("batch-size"), 0);
    let bus = watch(&element);
    assert!(element.set_state(gst::State::Paused).is_err());
    let error = bus
        .pop_filtered(&[gst::MessageType::Error])
        .map(|m| match m.view() {
            gst::MessageView::Error(e) => e.error().to_string(),
            _ => unreachable!(),
        });
    element.set_state(gst::State::Null).unwrap();
    assert_eq!(
        error.as_deref(),
        Some("batch-size 0: must be between 1 and 64")
    );

    // Checked at start for the properties that may change while playing, too.
    let error = start_error(&format!(
        "videotestsrc num-buffers=1 ! effnetclassify threshold=1.5 {} ! fakesink",
        lite0_props()
    ));
    assert_eq!(error, "threshold 1.5: must be between 0 and 1");
}

#[test]
fn every_accepted_format_gives_the_same_top_class() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    // One engine for all the harnesses (loaded once), each converting the photo first.
    let cases = [
        ("RGB", ""),
        ("RGBx", ""),
        ("BGRx", ""),
        ("RGBA", ""),
        ("BGRA", ""),
        ("I420", ""),
        ("NV12", ""),
        ("YV12", ""),
        ("NV21", ""),
        ("BGR", ""),
        ("xRGB", ""),
        ("ABGR", ""),
        // Odd sizes: chroma planes of I420 and NV12 round up.
        ("I420", "videoscale ! video/x-raw,width=301,height=203 ! "),
        ("NV12", "videoscale ! video/x-raw,width=301,height=203 ! "),
    ];
    let (caps, buffer) = rgb_frame("coffee.png");
    let mut harnesses = Vec::new();
    for (format, scale) in cases {
        let mut h = Harness::new_parse(&format!(
            "{scale}videoconvert ! video/x-raw,format={format} ! \
             effnetclassify engine=formats {}",
            lite0_props()
        ));
        h.set_src_caps(caps.clone());
        let out = h.push_and_pull(buffer.copy()).unwrap();
        let c = meta::read(&out)
            .unwrap_or_else(|| panic!("{format}: no meta"))
            .unwrap();
        let top = &c.top[0];
        eprintln!("{format} {scale}: {} {:.4}", top.label, top.score);
        assert_eq!(
            (top.class_id, &*top.label),
            (967, "espresso"),
            "{format} {scale}"
        );
        assert!(top.score > 0.85, "{format} {scale}: {}", top.score);
        harnesses.push(h);
    }
}

#[test]
fn frames_of_elements_sharing_an_engine_are_inferred_in_one_batch() {
    let _glib = effistream_testkit::glib_log::check();
    // A long timeout: the batch starts when both frames are in, not on the timeout.
    let props = [
        ("engine", "pair"),
        ("batch-size", "2"),
        ("batch-timeout-ms", "5000"),
    ];
    let (a, b) = (classifier(&props), classifier(&props));
    let (caps, buffer) = rgb_frame("coffee.png");
    let started = Instant::now();
    let threads: Vec<_> = [a, b]
        .into_iter()
        .map(|element| {
            let (caps, buffer) = (caps.clone(), buffer.copy());
            std::thread::spawn(move || {
                let mut h = harness(&element);
                h.set_src_caps(caps);
                meta::read(&h.push_and_pull(buffer).unwrap())
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    for thread in threads {
        let c = thread.join().unwrap();
        assert_eq!(c.batch_size, 2);
        assert_eq!(&*c.top[0].label, "espresso");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn an_engine_running_with_other_settings_is_refused() {
    let _glib = effistream_testkit::glib_log::check();
    let running = classifier(&[("engine", "strict"), ("batch-size", "2")]);
    let _h = harness(&running);
    let error = start_error(&format!(
        "videotestsrc num-buffers=1 ! effnetclassify engine=strict batch-size=4 {} ! fakesink",
        lite0_props()
    ));
    assert!(
        error.contains("engine \"strict\" already runs with")
            && error.contains("batch-size=2")
            && error.contains("batch-size=4"),
        "{error}"
    );
}

#[test]
fn bad_model_weights_or_camera_fail_the_state_change_with_the_reason() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let error = start_error("videotestsrc num-buffers=1 ! effnetclassify model=nope ! fakesink");
    assert!(
        error.starts_with("unknown model `nope`; known models: efficientnet_b1_pruned"),
        "{error}"
    );

    let missing = std::env::temp_dir().join("effistream-no-such-weights.pth");
    let error = start_error(&format!(
        "videotestsrc num-buffers=1 ! effnetclassify model=tf_efficientnet_lite0 weights={} ! fakesink",
        missing.display()
    ));
    assert!(
        error.contains("effistream-no-such-weights.pth") && error.contains("No such file"),
        "{error}"
    );

    let other = effistream_testkit::assets().join("photos/coffee.png");
    let error = start_error(&format!(
        "videotestsrc num-buffers=1 ! effnetclassify model=tf_efficientnet_lite0 weights={} ! fakesink",
        other.display()
    ));
    assert!(error.contains("coffee.png"), "{error}");

    let error = start_error(&format!(
        "videotestsrc num-buffers=1 ! effnetclassify camera=a/b {} ! fakesink",
        lite0_props()
    ));
    assert!(
        error.starts_with("camera \"a/b\": must not contain `/`"),
        "{error}"
    );
}

type Pushed = (Duration, Result<gst::FlowSuccess, gst::FlowError>);

/// An element whose single frame waits for a batch of 2 that would start in 10 s, pushed
/// by a thread that keeps its harness, and so the element's links, until [`Stuck::finish`]:
/// a flush-start must still find the element linked downstream once it has released the
/// frame.
struct Stuck {
    element: gst::Element,
    pusher: std::thread::JoinHandle<Pushed>,
    release: std::sync::mpsc::Sender<()>,
}

impl Stuck {
    fn new() -> Self {
        let element = classifier(&[("batch-size", "2"), ("batch-timeout-ms", "10000")]);
        let e = element.clone();
        let (pushing_tx, pushing) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let pusher = std::thread::spawn(move || {
            let mut h = harness(&e);
            let (caps, buffer) = rgb_frame("coffee.png");
            h.set_src_caps(caps);
            pushing_tx.send(()).unwrap();
            let started = Instant::now();
            let result = h.push(buffer);
            let pushed = (started.elapsed(), result);
            let _ = released.recv();
            pushed
        });
        pushing.recv().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(!pusher.is_finished(), "the frame waits for its batch");
        Self {
            element,
            pusher,
            release,
        }
    }

    /// How long the push took and what it returned.
    fn finish(self) -> Pushed {
        let _ = self.release.send(());
        self.pusher.join().unwrap()
    }
}

#[test]
fn a_flush_releases_a_waiting_frame_at_once() {
    let _glib = effistream_testkit::glib_log::check();
    let stuck = Stuck::new();
    let pad = stuck.element.static_pad("sink").unwrap();
    assert!(pad.send_event(gst::event::FlushStart::new()));
    let (waited, result) = stuck.finish();
    assert_eq!(result, Err(gst::FlowError::Flushing));
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn stopping_releases_a_waiting_frame_at_once() {
    let _glib = effistream_testkit::glib_log::check();
    let stuck = Stuck::new();
    let started = Instant::now();
    stuck.element.set_state(gst::State::Null).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let (waited, result) = stuck.finish();
    assert_eq!(result, Err(gst::FlowError::Flushing));
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}

#[test]
fn the_meta_survives_conversions_downstream() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let mut h = Harness::new_parse(&format!(
        "effnetclassify camera=kept {} ! videoconvert ! videoscale ! \
         capsfilter caps=video/x-raw,format=I420,width=320,height=240",
        lite0_props()
    ));
    let (caps, buffer) = rgb_frame("coffee.png");
    h.set_src_caps(caps);
    let out = h.push_and_pull(buffer).unwrap();
    assert_eq!(out.size(), 320 * 240 * 3 / 2, "converted");
    let c = meta::read(&out).expect("meta kept").unwrap();
    assert_eq!((&*c.camera, &*c.top[0].label), ("kept", "espresso"));
}
