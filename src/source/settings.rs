//! What a camera's source needs, resolved from its `[[camera]]` table by
//! [`Config::resolve`](crate::config::Config::resolve).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a camera's frames come from, parsed from `uri` or `pipeline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `rtsp://` or `rtsps://` URL, credentials included.
    Rtsp(String),
    /// `http://` or `https://` URL of a stream GStreamer can decode (MJPEG, HLS, ...).
    Http(String),
    /// `file://` URL of a video file, with the absolute path it names.
    File { uri: String, path: PathBuf },
    /// `v4l2:///dev/videoN`: a local capture device.
    V4l2(PathBuf),
    /// `test://PATTERN[?width=W&height=H]`: GStreamer's videotestsrc, live.
    Test {
        pattern: String,
        width: u32,
        height: u32,
    },
    /// A `gst-launch-1.0` fragment producing raw or decodable video.
    Pipeline(String),
}

/// Which frames of a camera's compressed video are decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decode {
    /// Every frame (the camera's `fps` then picks among all of them).
    #[default]
    All,
    /// Key frames only: the frames between them never reach the decoder, so a camera
    /// classified about once a GOP costs a fraction of its decoding. The rate is then
    /// bounded by the key-frame interval as well as by `fps`. Raw and intra-only
    /// sources (test patterns, MJPEG) are not affected.
    Keyframes,
}

/// One camera, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Stream id used in topics and payloads (a valid MQTT topic level).
    pub id: String,
    pub spec: SourceSpec,
    /// Frames per second taken from the camera (more than 0, at most 240).
    pub fps: f64,
    /// `file://` sources: start again at the end instead of stopping.
    pub looping: bool,
    pub decode: Decode,
    /// Without a frame for this long, the pipeline is rebuilt (at least 1 s).
    pub stall_timeout: Duration,
    /// First delay before rebuilding a failed pipeline; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// Keep each submitted frame's decoded picture with it for a snapshot (`[snapshot]
    /// enabled`).
    pub keep_frames: bool,
    /// Classify the whole frame as the stream `{id}` (`whole = true`, the default).
    pub whole: bool,
    /// Parts of the frame classified as streams of their own, `{id}/{region}`.
    pub regions: Vec<RegionSettings>,
    /// The model the whole frame runs.
    pub model: ModelRef,
}

/// The model a stream runs: the id of a model of the plan ([`crate::plan::ModelPlan`])
/// and its architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// `[model]`'s id (`default` unless it sets one) or a `[[models]]` entry's.
    pub id: String,
    /// The architecture ([`crate::model::Variant::name`]).
    pub name: &'static str,
}

/// One region of a camera, checked: a part of the frame classified as an engine stream of
/// its own named `{camera}/{region}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSettings {
    /// A valid MQTT topic level, unique among the camera's regions.
    pub id: String,
    /// Left, top, right, bottom as fractions of the frame: 0 ≤ x1 < x2 ≤ 1, 0 ≤ y1 < y2 ≤ 1.
    pub bounds: RegionBox,
    /// The model the region runs (its camera's unless it names another).
    pub model: ModelRef,
}

pub use crate::video::RegionBox;

impl RegionSettings {
    /// The engine stream (and topic levels) of this region of `camera`: `{camera}/{region}`.
    pub fn stream_name(&self, camera: &str) -> String {
        format!("{camera}/{}", self.id)
    }
}
