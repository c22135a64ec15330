//! `effnetclassify weights=FOLDER` with a checkpoint that timm fine-tuned and saved
//! (`tests/fixtures/finetuned/`, see `tests/golden/make_finetuned.py`): timm's label
//! names in the element's messages, in the buffer meta and in what `effnetpublish`
//! publishes through a real mosquitto.

use std::time::Duration;

use effistream_testkit::finetuned::{LABELS, cat_checkpoint};
use effistream_testkit::mosquitto::{Mosquitto, Subscriber, assert_valid, schema_validator};
use gst::prelude::*;

#[test]
fn a_timm_checkpoint_folder_names_the_classes_in_messages_meta_and_mqtt() {
    let _glib = effistream_testkit::glib_log::check();
    effistream_testkit::plugin::init(gsteffistream::plugin_register_static);
    let checkpoint = cat_checkpoint();
    let (folder, cat) = (&checkpoint.folder, &checkpoint.cat);
    let broker = Mosquitto::new();
    let sub = Subscriber::connect(broker.port(), &["effistream/#"]);
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! pngdec ! imagefreeze num-buffers=4 ! videoconvert ! \
         effnetclassify weights=\"{}\" camera=sofa ! effnetpublish server={} ! fakesink",
        cat.display(),
        folder.display(),
        broker.url()
    ))
    .unwrap();
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut posted = Vec::new();
    for message in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match message.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "effnet-classification" {
                    posted.push(s.to_string());
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(posted.len(), 4, "{posted:?}");
    for s in &posted {
        assert!(s.contains("model=(string)efficientnet_b1_pruned"), "{s}");
        assert!(s.contains("labels=(string)< cat,"), "{s}");
    }
    // effnetpublish reads the meta: timm's names on the daemon's topics.
    let got = sub.until("effistream/sofa/classification", 4, Duration::from_secs(10));
    let schema = schema_validator(effistream::mqtt::CLASSIFICATION_SCHEMA);
    for m in got
        .iter()
        .filter(|m| m.topic == "effistream/sofa/classification")
    {
        assert_valid(&schema, m);
        let payload = m.json();
        let top = payload["top"].as_array().unwrap();
        assert_eq!(top[0]["label"], "cat", "{payload}");
        for class in top {
            let id = class["class_id"].as_u64().unwrap() as usize;
            assert_eq!(class["label"], LABELS[id], "{payload}");
        }
    }
}
