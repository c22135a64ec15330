//! Home Assistant MQTT discovery: one retained sensor configuration per camera, so that
//! every camera appears in Home Assistant as a device with a "Label" sensor.
//!
//! Topic: `{discovery_prefix}/sensor/{node_id}/{object_id}/config`, where `object_id` is
//! the camera id when it only has the characters Home Assistant allows in a topic level
//! (`[a-zA-Z0-9_-]`), and otherwise the id with each other character replaced by `_`
//! followed by `_` and the id's FNV-1a hash in 8 hex digits ([`object_id`]), so that two
//! ids never share a topic.
//!
//! The sensor:
//!
//! - state: the retained `{prefix}/{camera}/state` topic, `value_template`
//!   `{{ value_json.label }}`: the label that holds (state hysteresis), not every frame's;
//! - attributes: from `{prefix}/{camera}/classification`, the latest frame's `score` (top-1),
//!   `label`, `class_id`, `top` (the top-k list of the payload), `model` and
//!   `captured_at`. They change at the camera's `fps`: exclude the entity from Home
//!   Assistant's recorder if its database should not grow with them;
//! - availability: the daemon's `{prefix}/status` and the camera's `{prefix}/{camera}/status`
//!   must both say `online` (`availability_mode: all`); `reconnecting` counts as
//!   unavailable (an availability template maps it to `offline`);
//! - `unique_id` `{node_id}_{object_id}_label`, a device per camera (identifiers
//!   `{node_id}_{object_id}`, model = the network), and `origin` naming effistream.
//!
//! And a switch per camera ([`switch_discovery`]), "Enabled", on
//! `{discovery_prefix}/switch/{node_id}/{object_id}/config`: `command_topic`
//! `{prefix}/{camera}/enabled/set`, `state_topic` the retained `{prefix}/{camera}/enabled`,
//! `payload_on`/`payload_off` and `state_on`/`state_off` `ON`/`OFF`, not optimistic
//! (the daemon echoes the state), commands not retained; available while the daemon is
//! `online` and the camera's status is anything but `offline` (a paused camera must stay
//! switchable); `unique_id` `{node_id}_{object_id}_enabled`, the same device.
//!
//! A camera removed by a reload has its discovery messages replaced by empty retained
//! ones ([`withdraw`]): Home Assistant then deletes its entities.

use serde_json::{Value, json};

use crate::hash::fnv1a64;
use crate::mqtt::topics::Topics;

/// The discovery message of one camera.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub topic: String,
    pub payload: Value,
}

/// `[homeassistant]` of a daemon that announces its cameras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeAssistantSettings {
    /// Home Assistant's discovery prefix (a valid topic prefix).
    pub discovery_prefix: String,
    /// Node id in the discovery topics and unique ids (1 to 64 of `[a-zA-Z0-9_-]`).
    pub node_id: String,
}

impl HomeAssistantSettings {
    /// The options of the discovery messages of a daemon running `model` at `qos`.
    pub fn options<'a>(&'a self, model: &'a str, qos: crate::mqtt::Qos) -> DiscoveryOptions<'a> {
        DiscoveryOptions {
            discovery_prefix: &self.discovery_prefix,
            node_id: &self.node_id,
            model,
            qos: qos.level(),
        }
    }
}

/// What the discovery messages are built from.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryOptions<'a> {
    pub discovery_prefix: &'a str,
    pub node_id: &'a str,
    /// The model's name, shown as the device's model.
    pub model: &'a str,
    /// QoS of the state topic.
    pub qos: u8,
}

/// `text` as a part of an entity id: lower-case ASCII letters and digits, `_` for the rest.
fn entity_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The id used for `camera` in discovery topics and unique ids: `[a-zA-Z0-9_-]` only.
///
/// ```
/// use effistream::mqtt::homeassistant::object_id;
///
/// assert_eq!(object_id("front-door_2"), "front-door_2");
/// assert_eq!(object_id("front door"), "front_door_4f69b8b8");
/// assert_ne!(object_id("front door"), object_id("front.door"));
/// ```
pub fn object_id(camera: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if camera.chars().all(allowed) {
        return camera.to_owned();
    }
    let cleaned: String = camera
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    format!("{cleaned}_{:08x}", fnv1a64(camera.as_bytes()) as u32)
}

/// The retained discovery message of `camera`.
pub fn discovery(topics: &Topics, camera: &str, options: &DiscoveryOptions<'_>) -> Discovery {
    let object = object_id(camera);
    let node = options.node_id;
    let version = env!("CARGO_PKG_VERSION");
    let entity = entity_part(&format!("{node}_{object}_label"));
    let payload = json!({
        "name": "Label",
        "unique_id": format!("{node}_{object}_label"),
        "default_entity_id": format!("sensor.{entity}"),
        "icon": "mdi:cctv",
        "state_topic": topics.state(camera),
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": topics.classification(camera),
        "json_attributes_template": concat!(
            "{{ {'score': value_json.top[0].score if value_json.top else None, ",
            "'label': value_json.top[0].label if value_json.top else None, ",
            "'class_id': value_json.top[0].class_id if value_json.top else None, ",
            "'top': value_json.top, 'model': value_json.model, ",
            "'captured_at': value_json.captured_at} | tojson }}"
        ),
        "qos": options.qos,
        "availability": [
            {"topic": topics.status()},
            {
                "topic": topics.camera_status(camera),
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            },
        ],
        "availability_mode": "all",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [format!("{node}_{object}")],
            "name": camera,
            "manufacturer": "effistream",
            "model": options.model,
            "sw_version": version,
        },
        "origin": {
            "name": "effistream",
            "sw_version": version,
            "support_url": env!("CARGO_PKG_REPOSITORY"),
        },
    });
    Discovery {
        topic: format!("{}/sensor/{node}/{object}/config", options.discovery_prefix),
        payload,
    }
}

/// The retained discovery message of `camera`'s switch (see the [module docs](self)).
pub fn switch_discovery(
    topics: &Topics,
    camera: &str,
    options: &DiscoveryOptions<'_>,
) -> Discovery {
    let object = object_id(camera);
    let node = options.node_id;
    let entity = entity_part(&format!("{node}_{object}_enabled"));
    let sensor = discovery(topics, camera, options).payload;
    let mut payload = json!({
        "name": "Enabled",
        "unique_id": format!("{node}_{object}_enabled"),
        "default_entity_id": format!("switch.{entity}"),
        "icon": "mdi:cctv",
        "command_topic": topics.enabled_set(camera),
        "state_topic": topics.enabled(camera),
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "ON",
        "state_off": "OFF",
        "optimistic": false,
        "retain": false,
        "qos": options.qos,
        // A paused camera can be switched back on: only `offline` makes it unavailable.
        "availability": [
            {"topic": topics.status()},
            {
                "topic": topics.camera_status(camera),
                "value_template": "{{ 'offline' if value == 'offline' else 'online' }}",
            },
        ],
    });
    copy_fields(&mut payload, &sensor, &SHARED_FIELDS[1..]);
    Discovery {
        topic: format!("{}/switch/{node}/{object}/config", options.discovery_prefix),
        payload,
    }
}

/// The fields an entity takes from its camera's sensor: availability (the switch has its
/// own `availability` list, and skips the first), device and origin.
const SHARED_FIELDS: [&str; 6] = [
    "availability",
    "availability_mode",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
];

fn copy_fields(payload: &mut Value, from: &Value, fields: &[&str]) {
    for field in fields {
        payload[*field] = from[*field].clone();
    }
}

/// A sensor's entity id without its domain and `_label`: what its camera's or region's
/// other entities are named after.
fn sensor_entity(sensor: &Value) -> String {
    sensor["default_entity_id"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sensor.")
        .trim_end_matches("_label")
        .to_owned()
}

/// The retained discovery message of `camera`'s snapshot: an MQTT `image` entity
/// (`{discovery_prefix}/image/{node_id}/{object_id}/config`) showing the JPEG retained on
/// `{prefix}/{camera}/snapshot`, on the camera's device, available like its sensor.
pub fn snapshot_discovery(
    topics: &Topics,
    camera: &str,
    options: &DiscoveryOptions<'_>,
) -> Discovery {
    let label = discovery(topics, camera, options).payload;
    let object = object_id(camera);
    let node = options.node_id;
    let entity = sensor_entity(&label);
    let mut payload = json!({
        "name": "Snapshot",
        "unique_id": format!("{node}_{object}_snapshot"),
        "default_entity_id": format!("image.{entity}_snapshot"),
        "image_topic": topics.snapshot(camera),
        "content_type": "image/jpeg",
    });
    copy_fields(&mut payload, &label, &SHARED_FIELDS);
    Discovery {
        topic: format!("{}/image/{node}/{object}/config", options.discovery_prefix),
        payload,
    }
}

/// The snapshot (`image`) discovery message of region `region` of `camera`: on the
/// camera's device, showing `{prefix}/{camera}/{region}/snapshot`.
pub fn region_snapshot_discovery(
    topics: &Topics,
    camera: &str,
    region: &str,
    options: &DiscoveryOptions<'_>,
) -> Discovery {
    let stream = format!("{camera}/{region}");
    let object = object_id(&stream);
    let node = options.node_id;
    let sensor = region_discovery(topics, camera, region, options).payload;
    let mut d = snapshot_discovery(topics, camera, options);
    let entity = sensor_entity(&sensor);
    d.payload["name"] = json!(format!("{region} snapshot"));
    d.payload["unique_id"] = json!(format!("{node}_{object}_snapshot"));
    d.payload["default_entity_id"] = json!(format!("image.{entity}_snapshot"));
    d.payload["image_topic"] = json!(topics.snapshot(&stream));
    d.topic = format!("{}/image/{node}/{object}/config", options.discovery_prefix);
    d
}

/// Every discovery message of `camera`: its switch; its sensor unless `whole = false`; a
/// sensor per region; with `snapshots`, an image for the whole frame (unless `whole =
/// false`) and one per region.
pub fn camera_discoveries(
    topics: &Topics,
    options: &DiscoveryOptions<'_>,
    camera: &crate::source::SourceSettings,
    snapshots: bool,
) -> Vec<Discovery> {
    let id = camera.id.as_str();
    // The device shows the network of the camera's whole frame (else its first region's).
    let model = match (camera.whole, camera.regions.first()) {
        (false, Some(region)) => region.model.name,
        _ => camera.model.name,
    };
    let options = &DiscoveryOptions { model, ..*options };
    let mut all = vec![switch_discovery(topics, id, options)];
    if camera.whole {
        all.push(discovery(topics, id, options));
        if snapshots {
            all.push(snapshot_discovery(topics, id, options));
        }
    }
    for region in &camera.regions {
        all.push(region_discovery(topics, id, &region.id, options));
        if snapshots {
            all.push(region_snapshot_discovery(topics, id, &region.id, options));
        }
    }
    all
}

/// Hands [`camera_discoveries`] of each camera to `publisher` (retained, re-published
/// after every reconnect). `topics` are the publisher's (a shard's status topic included).
pub fn announce<'a>(
    publisher: &crate::mqtt::Publisher,
    topics: &Topics,
    options: &DiscoveryOptions<'_>,
    cameras: impl IntoIterator<Item = &'a crate::source::SourceSettings>,
    snapshots: bool,
) {
    for camera in cameras {
        for d in camera_discoveries(topics, options, camera, snapshots) {
            tracing::debug!(topic = %d.topic, "Home Assistant discovery.");
            publisher.retain(d.topic, d.payload.to_string().into_bytes());
        }
    }
}

/// Replaces every discovery message `cameras` may have (snapshots included) by an empty
/// retained message, so that Home Assistant removes their entities (cameras a reload
/// removed or changed), except the topics in `kept`.
pub fn withdraw<'a>(
    publisher: &crate::mqtt::Publisher,
    topics: &Topics,
    options: &DiscoveryOptions<'_>,
    cameras: impl IntoIterator<Item = &'a crate::source::SourceSettings>,
    kept: &std::collections::BTreeSet<String>,
) {
    for camera in cameras {
        for d in camera_discoveries(topics, options, camera, true) {
            if kept.contains(&d.topic) {
                continue;
            }
            tracing::debug!(topic = %d.topic, "Home Assistant discovery withdrawn.");
            publisher.retain(d.topic, Vec::new());
        }
    }
}

/// The retained discovery message of region `region` of `camera`: a sensor of its own on
/// the camera's device, reading the region's `{prefix}/{camera}/{region}/state` (and
/// `.../classification` for its attributes), available when the camera is.
///
/// Its `object_id` is [`object_id`] of `{camera}/{region}` (always hashed, as `/` is not
/// allowed: no region can share a topic or unique id with a camera or another region);
/// its `default_entity_id` is `sensor.{node_id}_{camera}_{region}_label`, cleaned.
pub fn region_discovery(
    topics: &Topics,
    camera: &str,
    region: &str,
    options: &DiscoveryOptions<'_>,
) -> Discovery {
    let stream = format!("{camera}/{region}");
    let object = object_id(&stream);
    let node = options.node_id;
    let mut d = discovery(topics, camera, options);
    let entity = entity_part(&format!("{node}_{camera}_{region}_label"));
    let payload = &mut d.payload;
    payload["name"] = json!(format!("{region} label"));
    payload["unique_id"] = json!(format!("{node}_{object}_label"));
    payload["default_entity_id"] = json!(format!("sensor.{entity}"));
    payload["state_topic"] = json!(topics.state(&stream));
    payload["json_attributes_topic"] = json!(topics.classification(&stream));
    d.topic = format!("{}/sensor/{node}/{object}/config", options.discovery_prefix);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_keep_allowed_ids_and_hash_the_others_apart() {
        assert_eq!(object_id("Cam-1_a"), "Cam-1_a");
        let odd = ["a b", "a.b", "a:b", "ünï", "a b "];
        let ids: std::collections::BTreeSet<String> = odd.iter().map(|c| object_id(c)).collect();
        assert_eq!(ids.len(), odd.len());
        for id in ids {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn the_payload_points_at_the_contract_topics() {
        let topics = Topics::new("site/cams").unwrap();
        let d = discovery(
            &topics,
            "front door",
            &DiscoveryOptions {
                discovery_prefix: "homeassistant",
                node_id: "effistream",
                model: "efficientnet_b1_pruned",
                qos: 1,
            },
        );
        let object = object_id("front door");
        assert_eq!(
            d.topic,
            format!("homeassistant/sensor/effistream/{object}/config")
        );
        assert_eq!(d.payload["state_topic"], "site/cams/front door/state");
        assert_eq!(
            d.payload["availability"][0]["topic"], "site/cams/status",
            "{}",
            d.payload
        );
        let entity = d.payload["default_entity_id"].as_str().unwrap();
        assert!(
            entity.starts_with("sensor.effistream_front_door_"),
            "{entity}"
        );
        assert!(
            entity[7..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
