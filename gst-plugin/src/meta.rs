//! The classification a buffer carries: a custom meta (`EffnetClassificationMeta`) that
//! `effnetclassify` attaches to every inferred buffer and `effnetpublish` reads, and the
//! `effnet-classification` element message with the same fields.
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `camera` | string | stream id used in the MQTT topics and payloads |
//! | `seq` | guint64 | frame number within the element's stream, from 0 |
//! | `pts` | guint64 (ns) | the buffer's presentation timestamp; absent when it has none |
//! | `captured-at` | string | wall-clock time the frame entered `effnetclassify`, RFC 3339 UTC with milliseconds |
//! | `model` | string | the network, e.g. `efficientnet_b1_pruned` |
//! | `batch-size` | guint | frames in the batch this frame was inferred in |
//! | `inference-ms` | gdouble | time the batch took, preprocessing and network |
//! | `class-ids` | array of guint | ImageNet class indices, most probable first |
//! | `labels` | array of string | their labels |
//! | `scores` | array of gfloat | their softmax probabilities |
//!
//! From Rust, [`read`] gives the meta of a buffer as the
//! [`effistream::mqtt::Classification`] the MQTT publisher takes.

use std::sync::{Arc, Once};

use effistream::model::{ClassScore, Variant};
use effistream::mqtt::{Classification, format_time};
use gst::glib;

/// Name of the custom meta (`gst_buffer_get_custom_meta (buffer, "EffnetClassificationMeta")`).
pub const META_NAME: &str = "EffnetClassificationMeta";
/// Name of the element message `effnetclassify` posts for every inferred frame.
pub const MESSAGE_NAME: &str = "effnet-classification";

/// Registers the custom meta, once per process. It has no tags, so elements that copy
/// untagged metas (most transforms, `videoconvert` included) keep it on their output.
pub fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if !gst::meta::CustomMeta::is_registered(META_NAME) {
            gst::meta::CustomMeta::register(META_NAME, &[]);
        }
    });
}

/// Writes `c` into `s` as the fields of the table above.
fn fill(s: &mut gst::StructureRef, c: &Classification) {
    s.set("camera", &*c.camera);
    s.set("seq", c.seq);
    s.set_if_some("pts", c.pts_ns.map(gst::ClockTime::from_nseconds));
    s.set("captured-at", format_time(c.captured_at));
    s.set("model", c.model);
    s.set(
        "batch-size",
        u32::try_from(c.batch_size).unwrap_or(u32::MAX),
    );
    // Microseconds are enough: the JSON payload then reads `26.359`, not `26.358877999999997`.
    s.set("inference-ms", (c.inference_ms * 1e3).round() / 1e3);
    s.set(
        "class-ids",
        gst::Array::new(
            c.top
                .iter()
                .map(|t| u32::try_from(t.class_id).unwrap_or(u32::MAX)),
        ),
    );
    s.set(
        "labels",
        gst::Array::new(c.top.iter().map(|t| t.label.as_str())),
    );
    s.set("scores", gst::Array::new(c.top.iter().map(|t| t.score)));
}

/// The `effnet-classification` structure of `c` (the element message's contents).
pub fn to_structure(c: &Classification) -> gst::Structure {
    let mut s = gst::Structure::new_empty(MESSAGE_NAME);
    fill(&mut s, c);
    s
}

/// Attaches `c` to `buffer` as an `EffnetClassificationMeta`.
pub fn attach(buffer: &mut gst::BufferRef, c: &Classification) -> Result<(), glib::BoolError> {
    register();
    let mut meta = gst::meta::CustomMeta::add(buffer, META_NAME)?;
    fill(meta.mut_structure(), c);
    Ok(())
}

/// The classification `buffer` carries: `None` without the meta (a frame that was not
/// inferred), an error when the meta does not hold the fields above.
pub fn read(buffer: &gst::BufferRef) -> Option<Result<Classification, String>> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META_NAME).ok()?;
    Some(from_structure(meta.structure()))
}

/// Parses the fields of the table above (from the meta or the message).
pub fn from_structure(s: &gst::StructureRef) -> Result<Classification, String> {
    let camera = s.get::<&str>("camera").map_err(invalid(s))?;
    let model = s.get::<&str>("model").map_err(invalid(s))?;
    let model = Variant::by_name(model).map_err(|e| e.to_string())?.name;
    let captured_at = s.get::<&str>("captured-at").map_err(invalid(s))?;
    let captured_at = humantime::parse_rfc3339(captured_at)
        .map_err(|e| format!("{}: captured-at {captured_at:?}: {e}", s.name()))?;
    let array = |name: &str| {
        s.get::<gst::ArrayRef>(name)
            .map(|a| a.as_slice().to_vec())
            .map_err(invalid(s))
    };
    let (ids, labels, scores) = (array("class-ids")?, array("labels")?, array("scores")?);
    if ids.len() != labels.len() || ids.len() != scores.len() {
        return Err(format!(
            "{}: class-ids, labels and scores differ in length",
            s.name()
        ));
    }
    let top = ids
        .iter()
        .zip(&labels)
        .zip(&scores)
        .map(|((id, label), score)| {
            Ok(ClassScore {
                class_id: id.get::<u32>().map_err(|e| e.to_string())? as usize,
                label: label.get::<String>().map_err(|e| e.to_string())?,
                score: score.get::<f32>().map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| format!("{}: top classes: {e}", s.name()))?;
    Ok(Classification {
        camera: Arc::from(camera),
        seq: s.get("seq").map_err(invalid(s))?,
        pts_ns: s
            .get_optional::<gst::ClockTime>("pts")
            .map_err(invalid(s))?
            .map(gst::ClockTime::nseconds),
        captured_at,
        model,
        model_id: None,
        batch_size: s.get::<u32>("batch-size").map_err(invalid(s))? as usize,
        inference_ms: s.get("inference-ms").map_err(invalid(s))?,
        top,
    })
}

/// Turns a field error of `s` into a message naming the structure.
fn invalid<E: std::fmt::Display>(s: &gst::StructureRef) -> impl Fn(E) -> String + '_ {
    move |e| format!("{}: {e}", s.name())
}
