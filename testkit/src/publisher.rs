//! The MQTT publisher (`effistream::mqtt::Publisher`) set up for tests: `[mqtt]` sections,
//! state hysteresis, classifications as the engine makes them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use effistream::config::{MqttConfig, StateConfig};
use effistream::model::ClassScore;
use effistream::mqtt::{Classification, Publisher, PublisherSettings};

use crate::wait_until;

/// One second, the unit of the publisher tests' timeouts.
pub const SECOND: Duration = Duration::from_secs(1);

/// `[mqtt]` for `url`, topics under `prefix`: QoS 1, keep-alive 5 s, a client id unique to
/// this process and prefix.
pub fn mqtt(url: &str, prefix: &str) -> MqttConfig {
    MqttConfig {
        url: url.to_owned(),
        client_id: format!("effistream-test-{prefix}-{}", std::process::id()),
        topic_prefix: prefix.to_owned(),
        qos: 1,
        keep_alive_s: 5,
        ..MqttConfig::default()
    }
}

/// `cfg` resolved as the daemon resolves `[mqtt]`.
pub fn settings(cfg: &MqttConfig) -> PublisherSettings {
    cfg.resolve("test").expect("valid [mqtt]")
}

/// State hysteresis: `min_consecutive` frames, score at least 0.5.
pub fn state(min_consecutive: u32) -> StateConfig {
    StateConfig {
        min_consecutive,
        min_score: 0.5,
    }
}

/// A classification of `camera`'s frame `seq` as the engine makes it: `class_id` with
/// `score` first, then class 999.
pub fn classification(camera: &str, seq: u64, class_id: usize, score: f32) -> Classification {
    Classification {
        camera: Arc::from(camera),
        seq,
        pts_ns: Some(seq * 33_333_333),
        captured_at: SystemTime::now(),
        model: "efficientnet_b1_pruned",
        model_id: None,
        batch_size: 2,
        inference_ms: 31.5,
        top: vec![
            ClassScore {
                class_id,
                label: format!("label {class_id}"),
                score,
            },
            ClassScore {
                class_id: 999,
                label: "toilet tissue".into(),
                score: (1.0 - score) / 2.0,
            },
        ],
    }
}

/// Waits until `publisher` is connected; panics after 5 s.
pub fn connected(publisher: &Publisher) {
    assert!(
        wait_until(5 * SECOND, || publisher.counters().connected),
        "publisher not connected within 5 s"
    );
}
