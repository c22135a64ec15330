//! Topic names of the contract, built from `mqtt.topic_prefix`.

use crate::mqtt::MqttError;

/// The topics of one prefix.
///
/// ```
/// use effistream::mqtt::Topics;
///
/// let topics = Topics::new("effistream")?;
/// assert_eq!(topics.status(), "effistream/status");
/// assert_eq!(topics.camera_status("door"), "effistream/door/status");
/// assert_eq!(topics.classification("door"), "effistream/door/classification");
/// assert_eq!(topics.state("door"), "effistream/door/state");
/// assert_eq!(topics.stats(), "effistream/stats");
/// # Ok::<(), effistream::mqtt::MqttError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    /// `{prefix}/status`, or `{prefix}/status/{level}` for a shard.
    status: String,
}

impl Topics {
    /// Checks `prefix` (no wildcards, no control characters, no empty level, not `$...`).
    pub fn new(prefix: &str) -> Result<Self, MqttError> {
        check_topic_prefix(prefix).map_err(|reason| MqttError::TopicPrefix {
            prefix: prefix.to_owned(),
            reason,
        })?;
        Ok(Self {
            prefix: prefix.to_owned(),
            status: format!("{prefix}/status"),
        })
    }

    /// These topics with the daemon's status one level down, `{prefix}/status/{level}`
    /// (shards: [`crate::shard`]); camera topics are unchanged. `level` must be a valid
    /// topic level (no `/`, `+`, `#`).
    pub fn with_status_level(mut self, level: &str) -> Self {
        self.status = format!("{}/status/{level}", self.prefix);
        self
    }

    /// The first level(s) of every topic.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}/status`: `online` / `offline`, retained, also the Last Will.
    pub fn status(&self) -> String {
        self.status.clone()
    }

    /// `{prefix}/stats`: periodic statistics, not retained.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }

    /// `{prefix}/{camera}/status`: `online` / `reconnecting` / `offline` / `paused`, retained.
    pub fn camera_status(&self, camera: &str) -> String {
        format!("{}/{camera}/status", self.prefix)
    }

    /// `{prefix}/{camera}/classification`: one message per inferred frame, not retained.
    pub fn classification(&self, camera: &str) -> String {
        format!("{}/{camera}/classification", self.prefix)
    }

    /// `{prefix}/{camera}/state`: the label that holds, retained.
    pub fn state(&self, camera: &str) -> String {
        format!("{}/{camera}/state", self.prefix)
    }

    /// `{prefix}/{camera}/snapshot`: a JPEG of the frame of the last state change,
    /// retained (`[snapshot]`).
    pub fn snapshot(&self, camera: &str) -> String {
        format!("{}/{camera}/snapshot", self.prefix)
    }

    /// `{prefix}/{camera}/enabled`: `ON` / `OFF`, retained: whether the camera runs or is
    /// switched off (paused).
    pub fn enabled(&self, camera: &str) -> String {
        format!("{}/{camera}/enabled", self.prefix)
    }

    /// `{prefix}/{camera}/enabled/set`: the command topic, `ON` / `OFF`.
    pub fn enabled_set(&self, camera: &str) -> String {
        format!("{}/{camera}/enabled/set", self.prefix)
    }

    /// `{prefix}/+/enabled/set`: the filter the daemon subscribes to for commands.
    pub fn enabled_set_filter(&self) -> String {
        format!("{}/+/enabled/set", self.prefix)
    }

    /// The camera of a topic matching [`Topics::enabled_set_filter`].
    pub fn enabled_set_camera<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/enabled/set")
            .filter(|camera| !camera.is_empty() && !camera.contains('/'))
    }
}

/// Whether `topic` can be published to: not empty, no wildcard, no NUL.
pub(crate) fn publishable(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Checks an MQTT topic prefix: non-empty, no `+`, `#`, no control characters, no
/// leading or trailing `/`, no empty level (`a//b`), not starting with `$` (reserved for
/// broker topics such as `$SYS`). The error is the reason.
pub fn check_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = prefix.chars().find(|c| matches!(c, '+' | '#')) {
        return Err(format!(
            "must not contain `{c}`: it is an MQTT wildcard, not allowed in published topics"
        ));
    }
    if prefix.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err("must not begin or end with `/`".to_owned());
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not contain an empty level (`//`)".to_owned());
    }
    if prefix.starts_with('$') {
        return Err("must not begin with `$`: such topics are reserved for the broker".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_level_prefix_is_kept_as_is() {
        let topics = Topics::new("site/a/effistream").unwrap();
        assert_eq!(topics.status(), "site/a/effistream/status");
        assert_eq!(topics.state("cam"), "site/a/effistream/cam/state");
    }

    #[test]
    fn bad_prefixes_are_refused_with_the_reason() {
        for prefix in ["", "a/+", "a/#", "/a", "a/", "a//b", "$SYS", "a\u{7}"] {
            let err = Topics::new(prefix).unwrap_err().to_string();
            assert!(err.starts_with("mqtt.topic_prefix"), "{prefix:?}: {err}");
        }
    }

    #[test]
    fn wildcards_are_not_publishable() {
        assert!(publishable("a/b"));
        assert!(!publishable("a/+/b"));
        assert!(!publishable("a/#"));
        assert!(!publishable(""));
    }
}
