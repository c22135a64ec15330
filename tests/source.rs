//! Camera sources feeding the engine: test patterns and a real RTSP server that goes away
//! and comes back.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use effistream::config::{CameraConfig, ReconnectConfig};
use effistream::engine::{Classified, Engine};
use effistream::source::{CameraStatus, Source};
use effistream_testkit::wait_until;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("effistream=debug")
            .with_test_writer()
            .try_init();
        gst::init().unwrap();
        effistream_testkit::lite0_engine(Duration::from_secs(2), 3)
    })
}

/// Results and state changes of one camera, collected by callbacks.
#[derive(Default)]
struct Collected {
    results: Mutex<Vec<Classified>>,
    states: Mutex<Vec<(Instant, CameraStatus)>>,
}

impl Collected {
    fn results(&self) -> usize {
        self.results.lock().unwrap().len()
    }
    fn last_state(&self) -> Option<CameraStatus> {
        self.states.lock().unwrap().last().map(|(_, s)| *s)
    }
}

fn spawn(camera: &CameraConfig, reconnect: &ReconnectConfig) -> (Source, Arc<Collected>) {
    let collected = Arc::new(Collected::default());
    let c = collected.clone();
    let stream = engine()
        .stream(
            &camera.id,
            Arc::new(move |r| c.results.lock().unwrap().push(r)),
        )
        .unwrap();
    let c = collected.clone();
    let settings = camera.resolve("test", reconnect).expect("a valid camera");
    let source = Source::spawn(
        &settings,
        stream,
        Arc::new(move |_, state| c.states.lock().unwrap().push((Instant::now(), state))),
    )
    .unwrap();
    (source, collected)
}

#[test]
fn test_pattern_frames_are_classified_in_order_at_the_camera_rate() {
    let _glib = effistream_testkit::glib_log::check();
    let mut camera = CameraConfig::new("pattern", "test://smpte?width=320&height=240");
    camera.fps = 10.0;
    let (mut source, collected) = spawn(&camera, &ReconnectConfig::default());
    assert!(wait_until(Duration::from_secs(10), || collected.results() >= 20));
    let started = Instant::now();
    let before = source
        .counters()
        .frames
        .load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let after = source
        .counters()
        .frames
        .load(std::sync::atomic::Ordering::Relaxed);
    let fps = (after - before) as f64 / started.elapsed().as_secs_f64();
    assert!(
        (7.0..=13.0).contains(&fps),
        "camera at 10 fps delivered {fps:.1} fps"
    );
    assert!(source.join(Duration::from_secs(3)));
    assert_eq!(collected.last_state(), Some(CameraStatus::Offline));
    let results = collected.results.lock().unwrap();
    assert!(
        results.windows(2).all(|w| w[0].seq < w[1].seq),
        "sequence numbers increase"
    );
    assert!(
        results
            .iter()
            .all(|r| &*r.stream == "pattern" && r.top.len() == 3)
    );
}

#[test]
fn rtsp_camera_reconnects_after_the_server_comes_back() {
    let _glib = effistream_testkit::glib_log::check();
    let mut server = effistream_testkit::rtsp::RtspServer::start();
    let mut camera = CameraConfig::new("rtsp", server.url());
    camera.fps = 5.0;
    camera.stall_timeout_s = 2;
    let reconnect = ReconnectConfig {
        initial_ms: 200,
        max_ms: 1000,
    };
    let (mut source, collected) = spawn(&camera, &reconnect);
    assert!(
        wait_until(Duration::from_secs(15), || collected.results() >= 5),
        "no frames from the RTSP camera"
    );
    assert_eq!(collected.last_state(), Some(CameraStatus::Online));

    server.stop();
    let stopped = Instant::now();
    assert!(
        wait_until(
            Duration::from_secs(camera.stall_timeout_s + 1),
            || collected.last_state() == Some(CameraStatus::Reconnecting)
        ),
        "not reconnecting within stall_timeout + 1 s"
    );
    let noticed = stopped.elapsed();

    std::thread::sleep(Duration::from_secs(2));
    server.resume();
    let resumed = Instant::now();
    let before = collected.results();
    // Frames again within the largest backoff + 2 s.
    let bound = Duration::from_millis(reconnect.max_ms) + Duration::from_secs(2);
    assert!(
        wait_until(bound, || collected.results() > before),
        "no frame within {bound:?} after the server came back"
    );
    let first = resumed.elapsed();
    assert!(
        wait_until(Duration::from_secs(10), || collected.results() > before + 3),
        "frames stopped again after the server came back"
    );
    eprintln!(
        "reconnecting {:.1} s after the stop; first frame {:.1} s after the restart",
        noticed.as_secs_f64(),
        first.as_secs_f64()
    );
    assert_eq!(collected.last_state(), Some(CameraStatus::Online));
    assert!(
        source
            .counters()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(source.join(Duration::from_secs(3)));
}
