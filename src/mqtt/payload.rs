//! The JSON payloads of the contract, and [`Classification`], what they are made from. Each
//! payload has a JSON Schema in `src/mqtt/schemas/`, and the tests validate real messages
//! against it.
//!
//! This module is the bottom of `mqtt`: it uses no other `mqtt` module; `state` builds on
//! it and `publisher` on both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::{Classified, DropReason};
use crate::model::ClassScore;
use crate::source::CameraStatus;

/// The drop reasons every [`CameraStats::dropped`] holds, as the stats schema requires.
const REQUIRED_DROP_REASONS: [DropReason; 2] = [DropReason::ChannelFull, DropReason::TooOld];

/// One inferred frame of a camera, as handed to
/// [`Publisher::classification`](crate::mqtt::Publisher::classification): the engine's
/// [`Classified`] result without its monotonic capture instant (buffer meta cannot carry
/// one between the plugin's elements). The publisher adds `published_at` and `latency_ms` when it publishes it
/// ([`ClassificationPayload`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The stream: the camera id for its whole frame, `{camera}/{region}` for a region
    /// (the topic levels between the prefix and `classification`; [`split_stream`]).
    pub camera: Arc<str>,
    /// Frame number within the camera's stream.
    pub seq: u64,
    /// Presentation timestamp in the stream, nanoseconds.
    pub pts_ns: Option<u64>,
    /// Wall-clock capture time.
    pub captured_at: SystemTime,
    pub model: &'static str,
    /// The id of the model in the daemon's configuration (`[model]`'s or a `[[models]]`
    /// entry's); `None` in the plugin.
    pub model_id: Option<Arc<str>>,
    /// Frames in the batch this frame was inferred in.
    pub batch_size: usize,
    /// Time the batch took in the network, milliseconds.
    pub inference_ms: f64,
    /// Most probable classes first.
    pub top: Vec<ClassScore>,
}

impl From<Classified> for Classification {
    /// The engine's result for one frame; its stream is the camera.
    fn from(r: Classified) -> Self {
        Self {
            camera: r.stream,
            seq: r.seq,
            pts_ns: r.pts_ns,
            captured_at: r.captured_at,
            model: r.model,
            model_id: r.model_id,
            batch_size: r.batch_size,
            inference_ms: r.inference_ms,
            top: r.top,
        }
    }
}

/// `{prefix}/{camera}/classification`: one inferred frame.
///
/// ```json
/// {"camera":"front-door","seq":1234,"pts_ns":41033333333,
///  "captured_at":"2026-11-27T08:00:00.123Z","published_at":"2026-11-27T08:00:00.171Z",
///  "model":"efficientnet_b1_pruned","batch_size":4,"inference_ms":31.2,"latency_ms":48.0,
///  "top":[{"class_id":281,"label":"tabby, tabby cat","score":0.83}]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationPayload<'a> {
    /// Camera id.
    pub camera: &'a str,
    /// Region id, for a region of the camera's frame; absent for the whole frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<&'a str>,
    /// Frame number within the camera's stream.
    pub seq: u64,
    /// Presentation timestamp of the frame in its stream, if it had one.
    pub pts_ns: Option<u64>,
    /// Wall-clock time the frame was captured.
    pub captured_at: String,
    /// Wall-clock time the result was handed to the MQTT client.
    pub published_at: String,
    /// Model name (the architecture).
    pub model: &'a str,
    /// The daemon's id of the model (`[model]`'s, `default` unless set, or a
    /// `[[models]]` entry's); absent from the plugin's payloads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<&'a str>,
    /// Frames in the batch this frame was inferred in.
    pub batch_size: usize,
    /// Time the batch took in the network, milliseconds.
    pub inference_ms: f64,
    /// `published_at - captured_at`, milliseconds.
    pub latency_ms: f64,
    /// Most probable classes first.
    pub top: &'a [ClassScore],
}

impl<'a> ClassificationPayload<'a> {
    /// The payload of `c` published at `published_at`. Non-finite numbers (which JSON
    /// cannot hold) become 0.
    pub fn new(c: &'a Classification, published_at: SystemTime) -> Self {
        let latency = published_at
            .duration_since(c.captured_at)
            .unwrap_or(Duration::ZERO);
        let (camera, region) = split_stream(&c.camera);
        Self {
            camera,
            region,
            seq: c.seq,
            pts_ns: c.pts_ns,
            captured_at: format_time(c.captured_at),
            published_at: format_time(published_at),
            model: c.model,
            model_id: c.model_id.as_deref(),
            batch_size: c.batch_size,
            inference_ms: round_ms(finite_or_zero(c.inference_ms)),
            latency_ms: round_ms(latency.as_secs_f64() * 1000.0),
            top: &c.top,
        }
    }
}

/// `{prefix}/{camera}/state`, retained: the label that has held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePayload {
    /// Camera id.
    pub camera: String,
    /// Region id, for a region of the camera's frame; absent for the whole frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The label that holds.
    pub label: String,
    /// Its class index.
    pub class_id: usize,
    /// Its score in the frame that completed the run.
    pub score: f32,
    /// RFC 3339 capture time of the first frame of the run that made the label hold.
    pub since: String,
}

/// `{prefix}/stats`: periodic statistics. The daemon fills every field but `mqtt` and the
/// cameras' `mqtt_dropped`, which the publisher overwrites with its own counters when it
/// publishes the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsPayload {
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Per camera id.
    pub cameras: BTreeMap<String, CameraStats>,
    /// Batch inference times since the previous stats message, milliseconds.
    pub inference_ms: InferenceStats,
    /// Mean frames per batch since the previous stats message.
    pub batch_size_mean: f64,
    /// Frames waiting in the frame channel.
    pub queue_depth: u64,
    /// The publisher's counters.
    pub mqtt: MqttCounters,
    /// Per model id (`[model]`'s and the `[[models]]` entries' that run): its engine's
    /// share of `inference_ms`, `batch_size_mean` and `queue_depth`, which are the
    /// totals over every model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelStats>,
}

/// One model's engine in [`StatsPayload`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelStats {
    /// Batch inference times since the previous stats message, milliseconds.
    pub inference_ms: InferenceStats,
    /// Mean frames per batch since the previous stats message.
    pub batch_size_mean: f64,
    /// Frames waiting in the model's frame channel.
    pub queue_depth: u64,
}

/// One camera in [`StatsPayload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraStats {
    /// The camera's current status.
    pub status: CameraStatus,
    /// Frames per second arriving from the camera (after its rate limit).
    pub fps_in: f64,
    /// Frames per second inferred and published.
    pub fps_processed: f64,
    /// Frames received since start.
    pub frames_in: u64,
    /// Frames decoded since start, before the camera's `fps` limit (all of a stream's
    /// frames with `decode = "all"`, its key frames with `"keyframes"`).
    pub frames_decoded: u64,
    /// Frames inferred since start.
    pub processed: u64,
    /// Frames dropped since start, by reason ([`DropReason::as_str`]).
    /// A new reason is a new key: consumers need no schema change.
    pub dropped: BTreeMap<String, u64>,
    /// Pipeline rebuilds since start.
    pub reconnects: u64,
    /// The camera's classification messages the MQTT publisher dropped since start (queue
    /// full, lost at shutdown, unpublishable): its part of [`MqttCounters::dropped`].
    /// Every processed frame is a classification delivered or counted here.
    #[serde(default)]
    pub mqtt_dropped: u64,
    /// The camera's regions by id, each an engine stream of its own; absent for a camera
    /// without regions. The counters above (`fps_processed`, `processed`, `dropped`,
    /// `mqtt_dropped`) are those of the whole frame (0 with `whole = false`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, RegionStats>,
}

/// One region of a camera in [`CameraStats::regions`]: its stream's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionStats {
    /// Frames per second inferred and published.
    pub fps_processed: f64,
    /// Frames inferred since start.
    pub processed: u64,
    /// Frames dropped since start, by reason ([`DropReason::as_str`]).
    pub dropped: BTreeMap<String, u64>,
    /// The region's classification messages the MQTT publisher dropped since start.
    #[serde(default)]
    pub mqtt_dropped: u64,
}

impl Default for RegionStats {
    fn default() -> Self {
        Self {
            fps_processed: 0.0,
            processed: 0,
            dropped: required_drops(),
            mqtt_dropped: 0,
        }
    }
}

/// The drop reasons the schema requires, at 0.
fn required_drops() -> BTreeMap<String, u64> {
    REQUIRED_DROP_REASONS
        .into_iter()
        .map(|reason| (reason.as_str().to_owned(), 0))
        .collect()
}

impl CameraStats {
    /// Zero counters, with the drop reasons the schema requires (`channel_full`,
    /// `too_old`) present at 0.
    pub fn new(status: CameraStatus) -> Self {
        Self {
            status,
            fps_in: 0.0,
            fps_processed: 0.0,
            frames_in: 0,
            frames_decoded: 0,
            processed: 0,
            dropped: REQUIRED_DROP_REASONS
                .into_iter()
                .map(|reason| (reason.as_str().to_owned(), 0))
                .collect(),
            reconnects: 0,
            mqtt_dropped: 0,
            regions: BTreeMap::new(),
        }
    }
}

impl Default for CameraStats {
    fn default() -> Self {
        Self::new(CameraStatus::Offline)
    }
}

/// Distribution of batch inference times, milliseconds; 0 when nothing ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceStats {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
}

/// The publisher's counters ([`crate::mqtt::Publisher::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttCounters {
    /// Connected to the broker right now.
    pub connected: bool,
    /// Publications confirmed: written to the socket at QoS 0, acknowledged by the broker
    /// (PUBACK / PUBCOMP) at QoS 1 and 2.
    pub published: u64,
    /// Messages dropped: refused by a full queue, lost at shutdown, or unpublishable.
    pub dropped: u64,
    /// Messages accepted and not yet confirmed.
    pub queued: usize,
}

impl StatsPayload {
    /// Replaces non-finite numbers (which JSON cannot hold) by 0.
    pub(crate) fn sanitize(&mut self) {
        for v in [
            &mut self.uptime_s,
            &mut self.batch_size_mean,
            &mut self.inference_ms.mean,
            &mut self.inference_ms.p50,
            &mut self.inference_ms.p99,
        ] {
            *v = finite_or_zero(*v);
        }
        for m in self.models.values_mut() {
            for v in [
                &mut m.batch_size_mean,
                &mut m.inference_ms.mean,
                &mut m.inference_ms.p50,
                &mut m.inference_ms.p99,
            ] {
                *v = finite_or_zero(*v);
            }
        }
        for camera in self.cameras.values_mut() {
            camera.fps_in = finite_or_zero(camera.fps_in);
            camera.fps_processed = finite_or_zero(camera.fps_processed);
            for region in camera.regions.values_mut() {
                region.fps_processed = finite_or_zero(region.fps_processed);
            }
        }
    }
}

/// The camera and the region of a stream name: `("front", None)` for `front` (a whole
/// frame), `("front", Some("gate"))` for `front/gate` (camera ids hold no `/`).
///
/// ```
/// use effistream::mqtt::split_stream;
///
/// assert_eq!(split_stream("front"), ("front", None));
/// assert_eq!(split_stream("front/gate"), ("front", Some("gate")));
/// ```
pub fn split_stream(stream: &str) -> (&str, Option<&str>) {
    match stream.split_once('/') {
        Some((camera, region)) => (camera, Some(region)),
        None => (stream, None),
    }
}

/// RFC 3339 UTC with milliseconds, `2026-11-27T08:00:00.123Z`. Times before 1970 or after
/// 9999 are clamped (RFC 3339 cannot hold them).
pub fn format_time(t: SystemTime) -> String {
    // 9999-12-31T23:59:59.999Z
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch.min(LAST)).to_string()
}

fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// Rounds to microseconds: enough for milliseconds, and no `48.000000001` noise.
fn round_ms(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::mqtt::{CLASSIFICATION_SCHEMA, STATE_SCHEMA, STATS_SCHEMA};

    fn validator(schema: &str) -> jsonschema::Validator {
        let schema: Value = serde_json::from_str(schema).unwrap();
        jsonschema::meta::validate(&schema).expect("schema is valid draft 2020-12");
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    }

    fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
        let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{instance}: {errors:?}");
    }

    fn classification() -> Classification {
        Classification {
            camera: Arc::from("front-door"),
            seq: 1234,
            pts_ns: Some(41_033_333_333),
            captured_at: UNIX_EPOCH + Duration::from_millis(1_795_766_400_123),
            model: "efficientnet_b1_pruned",
            model_id: None,
            batch_size: 4,
            inference_ms: 31.2,
            top: vec![
                ClassScore {
                    class_id: 281,
                    label: "tabby, tabby cat".into(),
                    score: 0.83,
                },
                ClassScore {
                    class_id: 282,
                    label: "tiger cat".into(),
                    score: 0.1,
                },
            ],
        }
    }

    #[test]
    fn classification_payload_matches_the_design_example() {
        let c = classification();
        let published = c.captured_at + Duration::from_millis(48);
        let value = serde_json::to_value(ClassificationPayload::new(&c, published)).unwrap();
        assert_eq!(value["captured_at"], "2026-11-27T08:00:00.123Z");
        assert_eq!(value["published_at"], "2026-11-27T08:00:00.171Z");
        assert_eq!(value["latency_ms"], 48.0);
        assert_eq!(value["pts_ns"], 41_033_333_333u64);
        assert_eq!(
            value["top"][0],
            json!({"class_id": 281, "label": "tabby, tabby cat", "score": 0.83f32})
        );
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 10, "{keys:?}");
        assert_valid(&validator(CLASSIFICATION_SCHEMA), &value);
    }

    #[test]
    fn the_daemons_model_id_is_in_the_payload_and_the_schema() {
        let mut c = classification();
        c.model_id = Some(Arc::from("gate-state"));
        let value = serde_json::to_value(ClassificationPayload::new(&c, c.captured_at)).unwrap();
        assert_eq!(value["model_id"], "gate-state");
        let v = validator(CLASSIFICATION_SCHEMA);
        assert_valid(&v, &value);
        let mut bad = value.clone();
        bad["model_id"] = json!("a/b");
        assert!(!v.is_valid(&bad), "{bad}");
    }

    #[test]
    fn classification_without_pts_and_with_clock_skew_is_valid() {
        let mut c = classification();
        c.pts_ns = None;
        c.inference_ms = f64::NAN;
        c.top.clear();
        // Published "before" capture (clock stepped back): latency clamps to 0.
        let value = serde_json::to_value(ClassificationPayload::new(
            &c,
            c.captured_at - Duration::from_secs(1),
        ))
        .unwrap();
        assert_eq!(value["pts_ns"], Value::Null);
        assert_eq!(value["latency_ms"], 0.0);
        assert_eq!(value["inference_ms"], 0.0);
        assert_valid(&validator(CLASSIFICATION_SCHEMA), &value);
    }

    #[test]
    fn classification_schema_rejects_what_the_contract_forbids() {
        let c = classification();
        let good = serde_json::to_value(ClassificationPayload::new(&c, c.captured_at)).unwrap();
        let v = validator(CLASSIFICATION_SCHEMA);
        let broken: [(&str, Value); 9] = [
            ("/extra", json!(1)),
            ("/seq", json!(-1)),
            ("/seq", json!("1")),
            ("/captured_at", json!("2026-11-27 08:00:00")),
            ("/top/0/score", json!(1.5)),
            ("/top/0/class_id", json!(-3)),
            ("/top/0/extra", json!(true)),
            ("/camera", json!("a/b")),
            ("/batch_size", json!(0)),
        ];
        for (pointer, value) in broken {
            let mut instance = good.clone();
            set(&mut instance, pointer, value);
            assert!(!v.is_valid(&instance), "{pointer} accepted: {instance}");
        }
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("latency_ms");
        assert!(!v.is_valid(&missing));
    }

    fn set(instance: &mut Value, pointer: &str, value: Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = instance.pointer_mut(parent).unwrap();
        parent
            .as_object_mut()
            .unwrap()
            .insert(key.to_owned(), value);
    }

    #[test]
    fn state_payload_is_valid() {
        let state = StatePayload {
            camera: "door".into(),
            region: None,
            label: "espresso".into(),
            class_id: 967,
            score: 0.95,
            since: format_time(SystemTime::now()),
        };
        let v = validator(STATE_SCHEMA);
        let value = serde_json::to_value(&state).unwrap();
        assert_valid(&v, &value);
        let mut bad = value.clone();
        bad["score"] = json!(-0.1);
        assert!(!v.is_valid(&bad));
    }

    #[test]
    fn the_schema_requires_the_drop_reasons_new_camera_stats_hold() {
        let schema: Value = serde_json::from_str(STATS_SCHEMA).unwrap();
        let camera = &schema["$defs"]["camera"];
        let required = &camera["properties"]["dropped"]["required"];
        let keys: Vec<String> = CameraStats::new(CameraStatus::Online)
            .dropped
            .into_keys()
            .collect();
        assert_eq!(required, &json!(keys), "{camera}");
        for key in keys {
            assert!(DropReason::ALL.iter().any(|r| r.as_str() == key), "{key}");
        }
    }

    #[test]
    fn stats_payload_is_valid_and_extensible_by_drop_reason() {
        let mut camera = CameraStats::new(CameraStatus::Reconnecting);
        camera.dropped.insert("decode_error".into(), 3);
        camera.fps_in = f64::INFINITY;
        let mut stats = StatsPayload {
            uptime_s: 12.5,
            cameras: [("door".to_owned(), camera)].into(),
            inference_ms: InferenceStats {
                mean: 30.0,
                p50: 29.0,
                p99: f64::NAN,
            },
            batch_size_mean: 3.5,
            queue_depth: 2,
            mqtt: MqttCounters {
                connected: true,
                published: 10,
                dropped: 1,
                queued: 0,
            },
            models: [(
                "gate-state".to_owned(),
                ModelStats {
                    inference_ms: InferenceStats {
                        mean: f64::NAN,
                        p50: 12.0,
                        p99: 14.0,
                    },
                    batch_size_mean: 2.0,
                    queue_depth: 1,
                },
            )]
            .into(),
        };
        stats.sanitize();
        let v = validator(STATS_SCHEMA);
        let value = serde_json::to_value(&stats).unwrap();
        assert_eq!(value["cameras"]["door"]["status"], "reconnecting");
        assert_eq!(value["cameras"]["door"]["dropped"]["too_old"], 0);
        assert_valid(&v, &value);
        let back: StatsPayload = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(back, stats);
        assert_valid(&v, &serde_json::to_value(StatsPayload::default()).unwrap());

        let mut bad = value.clone();
        bad["cameras"]["door"]["dropped"]["too_old"] = json!(-1);
        assert!(!v.is_valid(&bad));
        let mut bad = value.clone();
        bad["cameras"]["door"]["status"] = json!("sleeping");
        assert!(!v.is_valid(&bad));
        let mut bad = value;
        bad["models"]["gate-state"]["queue_depth"] = json!(-1);
        assert!(!v.is_valid(&bad));
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds_and_clamped() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_secs(400_000_000_000)),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
