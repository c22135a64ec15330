//! Several models at once, as a process through a real mosquitto: `[model]` (id
//! `imagenet`, the real EfficientNet-Lite0 weights) runs the `kitchen` camera's whole
//! frame, and `[[models]]` `gate-state` (the checkpoint timm fine-tuned to 3 classes,
//! `tests/fixtures/finetuned/`) runs the kitchen's `cup` region and the whole `sofa`
//! camera. Each stream's payloads name its model and carry that model's classes; each
//! model batches only its own frames (its batch-size histogram counts exactly its
//! streams' frames); stats, metrics and Home Assistant name the models; a reload that
//! names a model for the first time starts it.

use std::time::Duration;

use effistream_testkit::daemon::{
    Daemon, http_get, last_valid_stats, metric, reload_cli, serial, wait_online,
};
use effistream_testkit::finetuned::{LABELS, cat_checkpoint};
use effistream_testkit::mosquitto::{
    Message, Mosquitto, Subscriber, assert_valid, publish, schema_validator,
};
use effistream_testkit::{lite0_weights, photo};

fn on<'a>(messages: &'a [Message], topic: &str) -> Vec<&'a Message> {
    messages.iter().filter(|m| m.topic == topic).collect()
}

/// The configuration; `more` is appended (cameras and models added by the reload).
fn config(broker: u16, coffee: &str, cat: &str, folder: &str, more: &str) -> String {
    format!(
        "stats_interval_s = 1\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
         [homeassistant]\nenabled = true\n\n[state]\nmin_consecutive = 2\n\n\
         [[camera]]\nid = \"kitchen\"\npipeline = \"filesrc location={coffee} ! pngdec ! imagefreeze\"\n\
         fps = 4.0\nmodel = \"imagenet\"\n\
         [[camera.region]]\nid = \"cup\"\nbox = [0.2, 0.2, 0.8, 0.8]\nmodel = \"gate-state\"\n\n\
         [[camera]]\nid = \"sofa\"\npipeline = \"filesrc location={cat} ! pngdec ! imagefreeze\"\n\
         fps = 4.0\nmodel = \"gate-state\"\n\n\
         [model]\nid = \"imagenet\"\nname = \"tf_efficientnet_lite0\"\nweights = \"{lite0}\"\ntop_k = 5\n\n\
         [[models]]\nid = \"gate-state\"\nweights = \"{folder}\"\ntop_k = 5\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nclient_id = \"effistream-models-{pid}\"\nqos = 1\n\n\
         {more}",
        lite0 = lite0_weights().display(),
        pid = std::process::id(),
    )
}

/// The labels of a payload's `top`, checking each class id against `labels` when given.
fn labels(payload: &serde_json::Value, names: Option<&[&str]>) -> Vec<String> {
    payload["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|class| {
            let label = class["label"].as_str().unwrap().to_owned();
            if let Some(names) = names {
                let id = class["class_id"].as_u64().unwrap() as usize;
                assert_eq!(names.get(id), Some(&label.as_str()), "{payload}");
            }
            label
        })
        .collect()
}

#[test]
fn two_models_run_their_own_streams_and_batches_and_are_named_everywhere() {
    let _serial = serial();
    let checkpoint = cat_checkpoint();
    let (folder, cat) = (&checkpoint.folder, &checkpoint.cat);
    let coffee = photo("coffee.png");
    let broker = Mosquitto::new();
    let subscriber = Subscriber::connect(broker.port(), &["effistream/#"]);
    let toml = |more: &str| {
        config(
            broker.port(),
            &coffee.display().to_string(),
            &cat.display().to_string(),
            &folder.display().to_string(),
            more,
        )
    };
    let mut daemon = Daemon::start(&toml(""));
    wait_online(&subscriber, &daemon);
    let messages = subscriber.collect(Duration::from_secs(6));
    let log = daemon.log();

    // Each stream is classified by its own model: ImageNet's 1000 classes for the
    // kitchen (an espresso), timm's 3 fine-tuned classes for the cup and the sofa.
    let schema = schema_validator(effistream::mqtt::CLASSIFICATION_SCHEMA);
    for (topic, id, name, names) in [
        (
            "effistream/kitchen/classification",
            "imagenet",
            "tf_efficientnet_lite0",
            None,
        ),
        (
            "effistream/kitchen/cup/classification",
            "gate-state",
            "efficientnet_b1_pruned",
            Some(&LABELS[..]),
        ),
        (
            "effistream/sofa/classification",
            "gate-state",
            "efficientnet_b1_pruned",
            Some(&LABELS[..]),
        ),
    ] {
        let list = on(&messages, topic);
        assert!(
            list.len() >= 3,
            "{topic}: {} messages; log:\n{log}",
            list.len()
        );
        for m in list {
            assert_valid(&schema, m);
            let v = m.json();
            assert_eq!(v["model_id"], id, "{topic}: {v}");
            assert_eq!(v["model"], name, "{topic}: {v}");
            let top = labels(&v, names);
            match names {
                None => {
                    assert_eq!(top.len(), 5, "{topic}: {v}");
                    assert_eq!(top[0], "espresso", "{topic}: {v}");
                }
                Some(_) => assert_eq!(top.len(), 3, "{topic}: {v}"),
            }
            if topic.starts_with("effistream/sofa/") {
                assert_eq!(top[0], "cat", "{topic}: {v}");
            }
        }
    }

    // Stats: one entry per model, valid against the schema.
    let last = last_valid_stats(&messages);
    let models = last["models"].as_object().expect("models in stats");
    let ids: Vec<&str> = models.keys().map(String::as_str).collect();
    assert_eq!(ids, ["gate-state", "imagenet"], "{last}");

    // Home Assistant (the retained discovery): each camera's device shows the network
    // of its whole frame.
    let discovery =
        Subscriber::connect(broker.port(), &["homeassistant/#"]).collect(Duration::from_secs(2));
    for (camera, name) in [
        ("kitchen", "tf_efficientnet_lite0"),
        ("sofa", "efficientnet_b1_pruned"),
    ] {
        let topic = format!("homeassistant/sensor/effistream/{camera}/config");
        let m = on(&discovery, &topic)
            .pop()
            .unwrap_or_else(|| panic!("no {topic}"));
        assert_eq!(m.json()["device"]["model"], name, "{}", m.text());
    }

    // Both cameras off: every frame is accounted for, then each model's batch-size
    // histogram holds exactly the frames of its own streams.
    for camera in ["kitchen", "sofa"] {
        publish(
            broker.port(),
            &format!("effistream/{camera}/enabled/set"),
            "OFF",
        );
    }
    for camera in ["kitchen", "sofa"] {
        let topic = format!("effistream/{camera}/enabled");
        subscriber.wait_for(Duration::from_secs(15), |m| {
            m.topic == topic && m.text() == "OFF"
        });
    }
    let url = daemon.http_url();
    let (status, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(status, 200);
    let processed = |labels: &str| {
        metric(
            &metrics,
            &format!("effistream_camera_processed_total{{{labels}}}"),
        )
    };
    let frames = |model: &str| {
        metric(
            &metrics,
            &format!("effistream_batch_size_sum{{model=\"{model}\"}}"),
        )
    };
    let kitchen = processed("camera=\"kitchen\"");
    let cup = processed("camera=\"kitchen\",region=\"cup\"");
    let sofa = processed("camera=\"sofa\"");
    assert!(kitchen > 0.0 && cup > 0.0 && sofa > 0.0, "{metrics}");
    assert_eq!(frames("imagenet"), kitchen, "{metrics}");
    assert_eq!(frames("gate-state"), cup + sofa, "{metrics}");
    for (id, name) in [
        ("imagenet", "tf_efficientnet_lite0"),
        ("gate-state", "efficientnet_b1_pruned"),
    ] {
        let series = format!("effistream_model_info{{model=\"{id}\",architecture=\"{name}\"}}");
        assert_eq!(metric(&metrics, &series), 1.0, "{metrics}");
        let series = format!("effistream_queue_depth{{model=\"{id}\"}}");
        metric(&metrics, &series);
    }

    // A reload that names a model for the first time loads it and starts its engine; the
    // models that run are kept (nothing to restart).
    let more = format!(
        "[[models]]\nid = \"second\"\nweights = \"{}\"\ntop_k = 2\n\n\
         [[camera]]\nid = \"porch\"\npipeline = \"filesrc location={} ! pngdec ! imagefreeze\"\n\
         fps = 4.0\nmodel = \"second\"\n",
        folder.display(),
        cat.display()
    );
    std::fs::write(daemon.dir().join("effistream.toml"), toml(&more)).unwrap();
    let (ok, stdout, stderr) = reload_cli(&url);
    assert!(ok, "{stdout} {stderr}\n{}", daemon.log());
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["added"], serde_json::json!(["porch"]), "{summary}");
    assert_eq!(
        summary["restart_required"],
        serde_json::json!([]),
        "{summary}"
    );
    let porch = subscriber
        .wait_for(Duration::from_secs(30), |m| {
            m.topic == "effistream/porch/classification"
        })
        .json();
    assert_eq!(porch["model_id"], "second", "{porch}");
    let top = labels(&porch, Some(&LABELS[..]));
    assert_eq!((top.len(), top[0].as_str()), (2, "cat"), "{porch}");
    let (_, _, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(
        metric(
            &metrics,
            "effistream_model_info{model=\"second\",architecture=\"efficientnet_b1_pruned\"}"
        ),
        1.0
    );
    // A running model changed in the file: reported, not applied (porch keeps top 2).
    let changed = toml(&more).replacen("top_k = 2", "top_k = 3", 1);
    std::fs::write(daemon.dir().join("effistream.toml"), changed).unwrap();
    let (ok, stdout, stderr) = reload_cli(&url);
    assert!(ok, "{stdout} {stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        summary["restart_required"],
        serde_json::json!(["batch, workers, model.top_k/threshold"]),
        "{summary}"
    );
    let porch = subscriber
        .wait_for(Duration::from_secs(10), |m| {
            m.topic == "effistream/porch/classification"
        })
        .json();
    assert_eq!(porch["top"].as_array().unwrap().len(), 2, "{porch}");
    daemon.terminate();
    daemon.assert_no_glib_warnings();
}
