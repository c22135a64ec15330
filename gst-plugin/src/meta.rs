//! The classification a buffer carries: a custom meta (`EffnetClassificationMeta`) that
//! `effnetclassify` attaches to every inferred buffer and `effnetpublish` reads, and the
//! `effnet-classification` element message with the same fields.
//!
//! A buffer carries one meta per entry: the whole frame's (without `region`) and one per
//! region of the `regions` property (with `region`), as the element posts one message per
//! entry. `gst_buffer_get_custom_meta` gives one of them; to read them all, iterate the
//! buffer's metas (`gst_buffer_iterate_meta`) and keep those for which
//! `gst_custom_meta_has_name (meta, "EffnetClassificationMeta")` holds.
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `camera` | string | stream id used in the MQTT topics and payloads |
//! | `region` | string | region id (topics `{prefix}/{camera}/{region}/…`); absent for the whole frame |
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
//! From Rust, [`read`] gives the whole frame's meta of a buffer and [`read_all`] every
//! entry, as the [`effistream::mqtt::Classification`] the MQTT publisher takes (whose
//! `camera` is the stream: `{camera}` or `{camera}/{region}`).

use std::sync::{Arc, Once};

use effistream::model::{ClassScore, Variant};
use effistream::mqtt::{Classification, format_time, split_stream};
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

/// Writes `c` into `s` as the fields of the table above (its stream `{camera}/{region}`
/// as `camera` and `region`).
fn fill(s: &mut gst::StructureRef, c: &Classification) {
    let (camera, region) = split_stream(&c.camera);
    s.set("camera", camera);
    s.set_if_some("region", region);
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

/// Attaches `c` to `buffer` as an `EffnetClassificationMeta`: one more entry, besides
/// those it may already carry (one per stream: the whole frame, each region).
pub fn attach(buffer: &mut gst::BufferRef, c: &Classification) -> Result<(), glib::BoolError> {
    register();
    let mut meta = gst::meta::CustomMeta::add(buffer, META_NAME)?;
    fill(meta.mut_structure(), c);
    Ok(())
}

/// The whole frame's classification `buffer` carries (the entry without `region`):
/// `None` without it (a frame that was not inferred, or an element with `whole=false`),
/// an error when the meta does not hold the fields above. [`read_all`] gives the regions'.
pub fn read(buffer: &gst::BufferRef) -> Option<Result<Classification, String>> {
    metas(buffer)
        .iter()
        .find(|s| !s.has_field("region"))
        .map(|s| from_structure(s))
}

/// Every classification `buffer` carries: the whole frame's first, then the regions' in
/// the order of the buffer's metas (`effnetclassify` attaches them in the order of its
/// `regions` property, and copies keep it); each an error when its meta does not hold the
/// fields above. Empty for a frame that was not inferred.
pub fn read_all(buffer: &gst::BufferRef) -> Vec<Result<Classification, String>> {
    let mut entries = metas(buffer);
    // Stable: the regions keep their order.
    entries.sort_by_key(|s| s.has_field("region"));
    entries.iter().map(|s| from_structure(s)).collect()
}

/// Copies of the structures of `buffer`'s `EffnetClassificationMeta`s.
fn metas(buffer: &gst::BufferRef) -> Vec<gst::Structure> {
    buffer
        .iter_meta::<gst::Meta>()
        .filter_map(|meta| {
            meta.try_as_custom_meta()
                .filter(|m| m.has_name(META_NAME))
                .map(|m| m.structure().to_owned())
        })
        .collect()
}

/// Parses the fields of the table above (from the meta or the message); a region's
/// classification has the stream `{camera}/{region}` as its `camera`.
pub fn from_structure(s: &gst::StructureRef) -> Result<Classification, String> {
    let camera = s.get::<&str>("camera").map_err(invalid(s))?;
    let camera: Arc<str> = match s.get_optional::<&str>("region").map_err(invalid(s))? {
        Some(region) => Arc::from(format!("{camera}/{region}")),
        None => Arc::from(camera),
    };
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
        camera,
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
