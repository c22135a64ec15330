//! The publisher counts the classifications it drops per camera, so that every camera's
//! inferred frames add up on their own: delivered + that camera's `mqtt_dropped` (in the
//! stats message and [`Publisher::dropped_classifications`]). The soak (`tests/soak.rs`)
//! checks the same sum per camera on a running daemon; here the drops are made on purpose
//! and counted exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use effistream::mqtt::{
    CameraStats, CameraStatus, Overflow, Publisher, STATS_SCHEMA, StatsPayload,
};
use effistream_testkit::mosquitto::{Mosquitto, Subscriber, assert_valid, schema_validator};
use effistream_testkit::publisher::{SECOND, classification, connected, mqtt, settings, state};
use effistream_testkit::wait_until;

fn stats_for(cameras: &[&str]) -> StatsPayload {
    StatsPayload {
        cameras: cameras
            .iter()
            .map(|c| (c.to_string(), CameraStats::new(CameraStatus::Online)))
            .collect(),
        ..StatsPayload::default()
    }
}

#[test]
fn classifications_dropped_by_a_full_queue_or_after_shutdown_are_counted_against_their_camera() {
    let mut broker = Mosquitto::stopped();
    let cfg = settings(&mqtt(&broker.url(), "acct"));
    let settings = effistream::mqtt::PublisherSettings {
        max_queued: 10,
        overflow: Overflow::DropOldest,
        ..cfg
    };
    let publisher = Publisher::start(&settings, &state(1000)).unwrap();
    // The broker is down: nothing leaves the queue of 10, the newest 10 are kept.
    for seq in 0..10 {
        assert!(publisher.classification(classification("a", seq, 1, 0.9)));
    }
    for seq in 0..17 {
        assert!(publisher.classification(classification("b", seq, 1, 0.9)));
    }
    // The stats message pushes out one more of b's (b 0..=7 dropped, 8..=16 kept).
    publisher.stats(stats_for(&["a", "b", "c"]));
    let expected: BTreeMap<String, u64> = [("a".to_owned(), 10), ("b".to_owned(), 8)].into();
    assert_eq!(publisher.dropped_classifications(), expected);
    assert_eq!(publisher.counters().dropped, 18);

    broker.start();
    let subscriber = Subscriber::connect(broker.port(), &["acct/#"]);
    connected(&publisher);
    assert!(wait_until(5 * SECOND, || publisher.counters().queued == 0));
    let messages = subscriber.collect(Duration::from_secs(1));
    let delivered: BTreeMap<String, BTreeSet<u64>> = messages
        .iter()
        .filter(|m| m.topic.ends_with("/classification"))
        .fold(BTreeMap::new(), |mut by, m| {
            let v = m.json();
            by.entry(v["camera"].as_str().unwrap().to_owned())
                .or_default()
                .insert(v["seq"].as_u64().unwrap());
            by
        });
    assert_eq!(delivered.get("a"), None, "{delivered:?}");
    assert_eq!(delivered["b"], (8..17).collect::<BTreeSet<u64>>());
    let stats = messages
        .iter()
        .find(|m| m.topic == "acct/stats")
        .expect("the stats message");
    assert_valid(&schema_validator(STATS_SCHEMA), stats);
    let stats = stats.json();
    for (camera, sent, dropped) in [("a", 10, 10), ("b", 17, 8), ("c", 0, 0)] {
        assert_eq!(
            stats["cameras"][camera]["mqtt_dropped"], dropped,
            "{camera}: {stats}"
        );
        // Per camera: sent = delivered + counted, nothing borrowed from another camera.
        let got = delivered.get(camera).map_or(0, BTreeSet::len) as u64;
        assert_eq!(sent, got + dropped, "{camera}");
    }
    assert_eq!(stats["mqtt"]["dropped"], 18, "{stats}");

    // After shutdown: refused, and counted against the camera.
    let handle = publisher.clone();
    publisher.shutdown(Duration::from_secs(3)).unwrap();
    assert!(!handle.classification(classification("c", 0, 1, 0.9)));
    let expected: BTreeMap<String, u64> = [
        ("a".to_owned(), 10),
        ("b".to_owned(), 8),
        ("c".to_owned(), 1),
    ]
    .into();
    assert_eq!(handle.dropped_classifications(), expected);
}

#[test]
fn with_drop_newest_the_refused_classification_is_the_one_counted() {
    let broker = Mosquitto::stopped();
    let settings = effistream::mqtt::PublisherSettings {
        max_queued: 4,
        overflow: Overflow::DropNewest,
        ..settings(&mqtt(&broker.url(), "newest"))
    };
    let publisher = Publisher::start(&settings, &state(1000)).unwrap();
    for seq in 0..4 {
        assert!(publisher.classification(classification("a", seq, 1, 0.9)));
    }
    for seq in 0..3 {
        assert!(!publisher.classification(classification("b", seq, 1, 0.9)));
    }
    assert_eq!(
        publisher.dropped_classifications(),
        [("b".to_owned(), 3)].into()
    );
    assert_eq!(publisher.counters().dropped, 3);
    // The broker never comes: shutdown gives up and counts the 4 queued ones against a.
    let handle = publisher.clone();
    assert!(publisher.shutdown(Duration::from_millis(500)).is_err());
    assert_eq!(
        handle.dropped_classifications(),
        [("a".to_owned(), 4), ("b".to_owned(), 3)].into()
    );
    assert_eq!(handle.counters().dropped, 7);
}
