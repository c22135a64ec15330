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
    let entity: String = format!("{node}_{object}_label")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
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
    let entity: String = format!("{node}_{camera}_{region}_label")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let payload = &mut d.payload;
    payload["name"] = json!(format!("{region} label"));
    payload["unique_id"] = json!(format!("{node}_{object}_label"));
    payload["default_entity_id"] = json!(format!("sensor.{entity}"));
    payload["state_topic"] = json!(topics.state(&stream));
    payload["json_attributes_topic"] = json!(topics.classification(&stream));
    d.topic = format!("{}/sensor/{node}/{object}/config", options.discovery_prefix);
    d
}

/// Hands the discovery message of each region, `(camera, region)`, to `publisher`
/// (retained, re-published after every reconnect), as [`announce`] does for cameras.
pub fn announce_regions<'a>(
    publisher: &crate::mqtt::Publisher,
    topics: &Topics,
    settings: &HomeAssistantSettings,
    model: &str,
    qos: crate::mqtt::Qos,
    regions: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    let options = DiscoveryOptions {
        discovery_prefix: &settings.discovery_prefix,
        node_id: &settings.node_id,
        model,
        qos: qos.level(),
    };
    for (camera, region) in regions {
        let d = region_discovery(topics, camera, region, &options);
        tracing::debug!(topic = %d.topic, "Home Assistant discovery.");
        publisher.retain(d.topic, d.payload.to_string().into_bytes());
    }
}

/// Hands the discovery message of every camera to `publisher` (retained, re-published
/// after every reconnect). `topics` are the publisher's (a shard's status topic included).
pub fn announce<'a>(
    publisher: &crate::mqtt::Publisher,
    topics: &Topics,
    settings: &HomeAssistantSettings,
    model: &str,
    qos: crate::mqtt::Qos,
    cameras: impl IntoIterator<Item = &'a str>,
) {
    let options = DiscoveryOptions {
        discovery_prefix: &settings.discovery_prefix,
        node_id: &settings.node_id,
        model,
        qos: qos.level(),
    };
    for camera in cameras {
        let d = discovery(topics, camera, &options);
        tracing::debug!(topic = %d.topic, "Home Assistant discovery.");
        publisher.retain(d.topic, d.payload.to_string().into_bytes());
    }
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
