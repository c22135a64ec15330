//! Hysteresis of the retained `{prefix}/{camera}/state` topic: a label takes over only
//! after it has held for a few frames, so one odd frame does not flip a dashboard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::ClassScore;
use crate::mqtt::payload::{StatePayload, format_time};

/// Hysteresis of the retained `{prefix}/{camera}/state` topic (`[state]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Consecutive inferred frames with the same top-1 label before the state changes.
    pub min_consecutive: u32,
    /// Smallest top-1 score that counts towards a state change.
    pub min_score: f32,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            min_consecutive: 3,
            min_score: 0.5,
        }
    }
}

/// Per camera: the state changes to label `L` once `L` was top-1 with a score of at least
/// `min_score` in `min_consecutive` consecutive inferred frames. A frame whose top-1 is
/// below `min_score` (or that has no class at all) breaks the run. The first state is
/// reported as soon as the condition first holds.
///
/// ```
/// use std::time::SystemTime;
/// use effistream::config::StateConfig;
/// use effistream::model::ClassScore;
/// use effistream::mqtt::StateTracker;
///
/// let mut tracker = StateTracker::new(&StateConfig { min_consecutive: 2, min_score: 0.5 });
/// let cat = ClassScore { class_id: 281, label: "tabby".into(), score: 0.9 };
/// let camera = "door".into();
/// assert!(tracker.observe(&camera, Some(&cat), SystemTime::now()).is_none());
/// let state = tracker.observe(&camera, Some(&cat), SystemTime::now()).unwrap();
/// assert_eq!(state.label, "tabby");
/// // Holding on: nothing new to publish.
/// assert!(tracker.observe(&camera, Some(&cat), SystemTime::now()).is_none());
/// ```
#[derive(Debug, Clone)]
pub struct StateTracker {
    min_consecutive: u32,
    min_score: f32,
    cameras: HashMap<Arc<str>, Camera>,
}

#[derive(Debug, Clone, Default)]
struct Camera {
    /// Class of the current run, its length, and the capture time of its first frame.
    run: Option<(usize, u32, SystemTime)>,
    /// Class of the published state.
    current: Option<usize>,
}

impl StateTracker {
    /// A tracker with `min_consecutive` (0 counts as 1) and `min_score`.
    pub fn new(config: &StateConfig) -> Self {
        Self {
            min_consecutive: config.min_consecutive.max(1),
            min_score: config.min_score,
            cameras: HashMap::new(),
        }
    }

    /// Feeds one inferred frame of `camera` whose most probable class is `top1`, captured at
    /// `captured_at`. Returns the new state when the frame makes a label take over.
    pub fn observe(
        &mut self,
        camera: &Arc<str>,
        top1: Option<&ClassScore>,
        captured_at: SystemTime,
    ) -> Option<StatePayload> {
        let state = match self.cameras.get_mut(camera) {
            Some(state) => state,
            None => self.cameras.entry(camera.clone()).or_default(),
        };
        // `score >= min_score` is false for NaN: a NaN score breaks the run too.
        let Some(top1) = top1.filter(|c| c.score >= self.min_score) else {
            state.run = None;
            return None;
        };
        let (class, length, since) = match state.run {
            Some((class, length, since)) if class == top1.class_id => {
                (class, length.saturating_add(1), since)
            }
            _ => (top1.class_id, 1, captured_at),
        };
        state.run = Some((class, length, since));
        if length < self.min_consecutive || state.current == Some(class) {
            return None;
        }
        state.current = Some(class);
        let (camera_id, region) = crate::mqtt::payload::split_stream(camera);
        Some(StatePayload {
            camera: camera_id.to_owned(),
            region: region.map(str::to_owned),
            label: top1.label.clone(),
            class_id: class,
            score: top1.score,
            since: format_time(since),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn class(class_id: usize, score: f32) -> ClassScore {
        ClassScore {
            class_id,
            label: format!("class {class_id}"),
            score,
        }
    }

    /// Feeds `frames` (class, score), one per 100 ms, and returns the frames at which a
    /// state was published, with its class and `since` frame index.
    fn run(config: StateConfig, frames: &[(usize, f32)]) -> Vec<(usize, usize, String)> {
        let mut tracker = StateTracker::new(&config);
        let camera: Arc<str> = Arc::from("cam");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        frames
            .iter()
            .enumerate()
            .filter_map(|(i, &(id, score))| {
                let at = t0 + Duration::from_millis(100 * i as u64);
                let c = class(id, score);
                tracker
                    .observe(&camera, Some(&c), at)
                    .map(|s| (i, s.class_id, s.since))
            })
            .collect()
    }

    fn config(min_consecutive: u32, min_score: f32) -> StateConfig {
        StateConfig {
            min_consecutive,
            min_score,
        }
    }

    #[test]
    fn first_state_is_published_when_the_run_first_holds() {
        let got = run(config(3, 0.5), &[(1, 0.9), (1, 0.9), (1, 0.9), (1, 0.9)]);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1), (2, 1));
        assert_eq!(
            got[0].2, "1970-01-12T13:46:40.000Z",
            "since = first frame of the run"
        );
    }

    #[test]
    fn a_new_label_takes_over_only_after_holding() {
        let frames = [(1, 0.9), (1, 0.9), (2, 0.9), (1, 0.9), (2, 0.8), (2, 0.7)];
        let got = run(config(2, 0.5), &frames);
        let at: Vec<(usize, usize)> = got.iter().map(|g| (g.0, g.1)).collect();
        assert_eq!(at, vec![(1, 1), (5, 2)]);
    }

    #[test]
    fn low_scores_break_the_run() {
        let frames = [
            (1, 0.9),
            (1, 0.2),
            (1, 0.9),
            (1, f32::NAN),
            (1, 0.9),
            (1, 0.6),
        ];
        let got = run(config(2, 0.5), &frames);
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![5]);
    }

    #[test]
    fn min_consecutive_one_follows_every_confident_change() {
        let frames = [(1, 0.9), (2, 0.9), (2, 0.9), (3, 0.1), (1, 0.6)];
        let got = run(config(1, 0.5), &frames);
        let at: Vec<(usize, usize)> = got.iter().map(|g| (g.0, g.1)).collect();
        assert_eq!(at, vec![(0, 1), (1, 2), (4, 1)]);
        assert_eq!(run(config(0, 0.5), &frames).len(), 3, "0 counts as 1");
    }

    #[test]
    fn the_same_label_returning_after_a_break_is_not_republished() {
        let frames = [(1, 0.9), (1, 0.9), (1, 0.1), (1, 0.9), (1, 0.9)];
        assert_eq!(run(config(2, 0.5), &frames).len(), 1);
    }

    #[test]
    fn cameras_are_independent_and_frames_without_classes_break_runs() {
        let mut tracker = StateTracker::new(&config(2, 0.5));
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let now = SystemTime::now();
        let c = class(7, 0.9);
        assert!(tracker.observe(&a, Some(&c), now).is_none());
        assert!(tracker.observe(&b, Some(&c), now).is_none());
        assert!(tracker.observe(&b, None, now).is_none());
        assert_eq!(tracker.observe(&a, Some(&c), now).unwrap().camera, "a");
        assert!(tracker.observe(&b, Some(&c), now).is_none());
        assert_eq!(tracker.observe(&b, Some(&c), now).unwrap().camera, "b");
    }
}
