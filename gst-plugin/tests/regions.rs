//! `effnetclassify regions=...` with the real Lite0 weights on a picture of a cat beside an
//! espresso ([`cat_and_cup`]): each region is classified as the library classifies that
//! crop of the frame (and names its own object), one meta and one message per entry with
//! its `region`, all batched together; through `effnetpublish` and a real mosquitto, the
//! daemon's region topics and payloads (valid against the JSON Schemas, with `region`)
//! and retained region states; `whole=false` publishes the regions only.

use std::time::Duration;

use effistream::model::{Classifier, Prediction, Variant};
use effistream::mqtt::{CLASSIFICATION_SCHEMA, Classification, STATE_SCHEMA};
use effistream::video::{FrameScaler, RegionBox};
use effistream_testkit::mosquitto::{
    Message, Mosquitto, Subscriber, assert_valid, schema_validator,
};
use effistream_testkit::plugin::{
    CAT_BOX, CUP_BOX, cat_and_cup, element_messages, lite0, lite0_props, regions_property,
    rgb_buffer, watch,
};
use gst::prelude::*;
use gst_check::Harness;
use gsteffistream::meta;

const WAIT: Duration = Duration::from_secs(20);
/// ImageNet's cats: tabby, tiger cat, Persian, Siamese, Egyptian cat.
const CATS: std::ops::RangeInclusive<usize> = 281..=285;
const ESPRESSO: usize = 967;

/// GStreamer with the plugin registered, once per process.
fn init() {
    effistream_testkit::plugin::init(gsteffistream::plugin_register_static);
}

/// The `regions` value of the tests, with whitespace and a trailing `;` as a user may
/// write them; not in the order of the ids, which the entries keep.
fn regions() -> String {
    format!(
        " {} ; ",
        regions_property(&[("cup", CUP_BOX), ("cat", CAT_BOX)]).replace(';', " ; ")
    )
}

/// The top classes of `c` as (class id, score).
fn top(c: &Classification) -> Vec<(usize, f32)> {
    c.top.iter().map(|t| (t.class_id, t.score)).collect()
}

/// The probability of `class_id` in `p` (which ranks every class).
fn probability(p: &Prediction, class_id: usize) -> f32 {
    p.top
        .iter()
        .find(|t| t.class_id == class_id)
        .map(|t| t.score)
        .unwrap()
}

#[test]
fn each_region_is_classified_as_the_library_classifies_its_crop() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    // Batches of 3 (the whole frame and two regions) with a long timeout: the batch
    // starts when the element's three frames are in.
    let element = gst::ElementFactory::make("effnetclassify")
        .property("model", "tf_efficientnet_lite0")
        .property("weights", lite0())
        .property("camera", "shop")
        .property("regions", regions())
        .property("batch-size", 3u32)
        .property("batch-timeout-ms", 5000u32)
        .property("top-k", 5u32)
        .build()
        .unwrap();
    assert_eq!(element.property::<String>("regions"), regions());
    let bus = watch(&element);
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    let image = cat_and_cup();
    let (caps, mut buffer) = rgb_buffer(&image);
    buffer
        .get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(80));
    h.set_src_caps(caps.clone());
    let out = h.push_and_pull(buffer.clone()).unwrap();

    // One entry per stream: the whole frame first, then the regions.
    let entries: Vec<Classification> = meta::read_all(&out)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let streams: Vec<&str> = entries.iter().map(|c| &*c.camera).collect();
    assert_eq!(streams, ["shop", "shop/cup", "shop/cat"]);
    for c in &entries {
        assert_eq!((c.seq, c.pts_ns), (0, Some(80_000_000)), "{}", c.camera);
        assert_eq!(c.batch_size, 3, "{}: batched together", c.camera);
        assert_eq!(c.top.len(), 5, "{}", c.camera);
    }
    assert_eq!(meta::read(&out).unwrap().unwrap(), entries[0]);
    let (whole, cup, cat) = (&entries[0], &entries[1], &entries[2]);
    assert!(CATS.contains(&cat.top[0].class_id), "cat: {:?}", cat.top);
    assert_eq!(cup.top[0].class_id, ESPRESSO, "cup: {:?}", cup.top);

    // One message per entry, with the entry's fields; `region` for the regions only.
    let messages = element_messages(&bus, meta::MESSAGE_NAME);
    assert_eq!(messages.len(), 3);
    let parsed: Vec<Classification> = messages
        .iter()
        .map(|m| meta::from_structure(m).unwrap())
        .collect();
    assert_eq!(parsed, entries);
    let regions: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.get_optional::<&str>("region").unwrap())
        .collect();
    assert_eq!(regions, [None, Some("cup"), Some("cat")]);
    assert!(
        messages
            .iter()
            .all(|m| m.get::<&str>("camera") == Ok("shop"))
    );

    // The library on the same crops: the frame path (the region cut from the frame with
    // FrameScaler::scale_region, as the daemon does), to rounding; and the still-image
    // path on the region cropped beforehand (PIL's resize, another implementation), to
    // the same top class within 0.03.
    let variant = Variant::by_name("tf_efficientnet_lite0").unwrap();
    let classifier = Classifier::load(variant, Some(&effistream_testkit::lite0_weights())).unwrap();
    let pre = classifier.preprocess().clone();
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(&buffer, &info).unwrap();
    let all = classifier.num_classes();
    for (c, bounds) in [
        (whole, None),
        (cat, Some(RegionBox::new(&CAT_BOX).unwrap())),
        (cup, Some(RegionBox::new(&CUP_BOX).unwrap())),
    ] {
        let scaled = FrameScaler::new(&pre)
            .scale_region(&frame, bounds.as_ref(), Vec::new())
            .unwrap();
        let mut input = vec![0f32; pre.output_len()];
        pre.run_cropped(&scaled, &mut input).unwrap();
        let frame_path = classifier
            .classify_preprocessed(input, all)
            .unwrap()
            .remove(0);
        for &(class_id, score) in &top(c) {
            let expected = probability(&frame_path, class_id);
            assert!(
                (score - expected).abs() < 1e-4,
                "{}: class {class_id} {score} in the element, {expected} in the library",
                c.camera
            );
        }
        assert_eq!(
            c.top[0].class_id, frame_path.top[0].class_id,
            "{}",
            c.camera
        );

        let picture = match &bounds {
            Some(b) => effistream_testkit::crop(&image, b.pixels(image.width, image.height)),
            None => image.clone(),
        };
        let still = classifier.classify(&[picture], all).unwrap().remove(0);
        eprintln!(
            "{}: element {:?}; still image {} {:.4}",
            c.camera, c.top[0], still.top[0].label, still.top[0].score
        );
        assert_eq!(c.top[0].class_id, still.top[0].class_id, "{}", c.camera);
        assert!(
            (c.top[0].score - still.top[0].score).abs() < 0.03,
            "{}: {} in the element, {} on the still image",
            c.camera,
            c.top[0].score,
            still.top[0].score
        );
    }
}

/// The messages of `messages` on `topic`.
fn on<'a>(messages: &'a [Message], topic: &str) -> Vec<&'a Message> {
    messages.iter().filter(|m| m.topic == topic).collect()
}

/// Pushes `frames` copies of [`cat_and_cup`] through `launch` (effnetclassify ! effnetpublish
/// against `broker`), then EOS; returns every message on `effistream/#` until the
/// camera's `offline`, and the last buffer that came out.
fn run(broker: &Mosquitto, launch: &str, camera: &str, frames: u64) -> (Vec<Message>, gst::Buffer) {
    let sub = Subscriber::connect(broker.port(), &["effistream/#"]);
    let mut h = Harness::new_parse(launch);
    let (caps, buffer) = rgb_buffer(&cat_and_cup());
    h.set_src_caps(caps);
    let mut last = None;
    for i in 0..frames {
        let mut b = buffer.copy();
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(100 * i));
        last = Some(h.push_and_pull(b).unwrap());
    }
    assert!(h.push_event(gst::event::Eos::new()));
    let status = format!("effistream/{camera}/status");
    let mut got = Vec::new();
    while !got
        .last()
        .is_some_and(|m: &Message| m.topic == status && m.text() == "offline")
    {
        got.push(
            sub.recv(WAIT)
                .unwrap_or_else(|| panic!("no {status} offline; got {got:?}")),
        );
    }
    drop(h);
    (got, last.unwrap())
}

#[test]
fn regions_publish_on_their_own_topics_with_retained_states() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let broker = Mosquitto::new();
    let launch = format!(
        "effnetclassify camera=shop batch-size=3 regions=\"{}\" {} ! effnetpublish server={}",
        regions(),
        lite0_props(),
        broker.url()
    );
    let (got, out) = run(&broker, &launch, "shop", 4);
    assert_eq!(meta::read_all(&out).len(), 3, "the metas go on downstream");

    let classification = schema_validator(CLASSIFICATION_SCHEMA);
    for (topic, region, label) in [
        ("effistream/shop/classification", None, None),
        (
            "effistream/shop/cat/classification",
            Some("cat"),
            Some(CATS),
        ),
        (
            "effistream/shop/cup/classification",
            Some("cup"),
            Some(ESPRESSO..=ESPRESSO),
        ),
    ] {
        let list = on(&got, topic);
        assert_eq!(list.len(), 4, "{topic}: {got:?}");
        for (seq, m) in list.iter().enumerate() {
            assert_valid(&classification, m);
            let v = m.json();
            assert_eq!(v["camera"], "shop", "{topic}: {v}");
            assert_eq!(v["region"].as_str(), region, "{topic}: {v}");
            assert_eq!(v["seq"], seq, "{topic}: {v}");
            assert_eq!(v["batch_size"], 3, "{topic}: {v}");
            if let Some(classes) = &label {
                let id = v["top"][0]["class_id"].as_u64().unwrap() as usize;
                assert!(classes.contains(&id), "{topic}: {v}");
            }
        }
    }
    // States: one per region once its label held, right after the classification that
    // made it hold, with its region.
    let state = schema_validator(STATE_SCHEMA);
    for (region, classes) in [("cat", CATS), ("cup", ESPRESSO..=ESPRESSO)] {
        let topic = format!("effistream/shop/{region}/state");
        let states = on(&got, &topic);
        assert_eq!(states.len(), 1, "{topic}: {got:?}");
        assert_valid(&state, states[0]);
        let v = states[0].json();
        assert_eq!(v["camera"], "shop", "{v}");
        assert_eq!(v["region"], region, "{v}");
        assert!(
            classes.contains(&(v["class_id"].as_u64().unwrap() as usize)),
            "{v}"
        );
        let at = got.iter().position(|m| m == states[0]).unwrap();
        assert_eq!(
            got[at - 1].topic,
            format!("effistream/shop/{region}/classification")
        );
    }
    // The camera's status only: regions have none of their own.
    let statuses: Vec<&str> = got
        .iter()
        .filter(|m| m.topic.ends_with("/status") && m.topic != "effistream/status")
        .map(|m| m.topic.as_str())
        .collect();
    assert_eq!(statuses, ["effistream/shop/status"; 2]);

    // Retained for late subscribers, with their region.
    let late = Subscriber::connect(broker.port(), &["effistream/shop/+/state"]);
    let retained = late.collect(Duration::from_millis(800));
    for region in ["cat", "cup"] {
        let m = retained
            .iter()
            .find(|m| m.topic == format!("effistream/shop/{region}/state"))
            .unwrap_or_else(|| panic!("no retained {region} state: {retained:?}"));
        assert!(m.retained);
        assert_valid(&state, m);
        assert_eq!(m.json()["region"], region);
    }
}

#[test]
fn whole_false_publishes_the_regions_only() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let broker = Mosquitto::new();
    let launch = format!(
        "effnetclassify camera=side whole=false regions={} {} ! effnetpublish server={}",
        regions_property(&[("cup", CUP_BOX)]),
        lite0_props(),
        broker.url()
    );
    let (got, out) = run(&broker, &launch, "side", 3);
    assert!(meta::read(&out).is_none(), "no whole-frame entry");
    let entries = meta::read_all(&out);
    assert_eq!(entries.len(), 1);
    assert_eq!(&*entries[0].as_ref().unwrap().camera, "side/cup");

    let topics: std::collections::BTreeSet<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics.into_iter().collect::<Vec<_>>(),
        [
            "effistream/side/cup/classification",
            "effistream/side/cup/state",
            "effistream/side/status",
            "effistream/status",
        ],
        "{got:?}"
    );
    let classification = schema_validator(CLASSIFICATION_SCHEMA);
    for m in on(&got, "effistream/side/cup/classification") {
        assert_valid(&classification, m);
        assert_eq!(m.json()["region"], "cup");
        assert_eq!(m.json()["batch_size"], 1);
    }
}

#[test]
fn every_entry_survives_conversions_downstream() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let mut h = Harness::new_parse(&format!(
        "effnetclassify camera=kept regions=\"{}\" {} ! videoconvert ! videoscale ! \
         capsfilter caps=video/x-raw,format=I420,width=320,height=240",
        regions(),
        lite0_props()
    ));
    let (caps, buffer) = rgb_buffer(&cat_and_cup());
    h.set_src_caps(caps);
    let out = h.push_and_pull(buffer).unwrap();
    assert_eq!(out.size(), 320 * 240 * 3 / 2, "converted");
    let entries: Vec<(String, usize)> = meta::read_all(&out)
        .into_iter()
        .map(|c| {
            let c = c.unwrap();
            (c.camera.to_string(), c.top[0].class_id)
        })
        .collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(
        entries.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
        ["kept", "kept/cup", "kept/cat"]
    );
    assert!(CATS.contains(&entries[2].1), "{entries:?}");
    assert_eq!(entries[1].1, ESPRESSO, "{entries:?}");
}

#[test]
fn effnetpublish_camera_property_renames_the_camera_and_keeps_the_region() {
    let _glib = effistream_testkit::glib_log::check();
    init();
    let broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["site/#"]);
    let element = gst::ElementFactory::make("effnetpublish")
        .property("server", broker.url())
        .property("topic-prefix", "site")
        .property("camera", "porch")
        .build()
        .unwrap();
    let mut h = Harness::with_element(&element, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=RGB,width=2,height=2,framerate=10/1");
    let mut buffer = gst::Buffer::with_size(16).unwrap();
    for stream in ["door", "door/gate"] {
        let c = effistream_testkit::plugin::classification(stream, 0, "espresso", 0.9);
        meta::attach(buffer.get_mut().unwrap(), &c).unwrap();
    }
    h.push_and_pull(buffer).unwrap();
    // The whole frame's entry is published first.
    let got = sub.until("site/porch/gate/classification", 1, WAIT);
    let (whole, gate) = (
        on(&got, "site/porch/classification"),
        on(&got, "site/porch/gate/classification"),
    );
    assert_eq!((whole.len(), gate.len()), (1, 1), "{got:?}");
    let validator = schema_validator(CLASSIFICATION_SCHEMA);
    for m in [whole[0], gate[0]] {
        assert_valid(&validator, m);
        assert_eq!(m.json()["camera"], "porch");
    }
    assert_eq!(gate[0].json()["region"], "gate");
    assert!(
        whole[0].json().get("region").is_none(),
        "{}",
        whole[0].text()
    );
}
