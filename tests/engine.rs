//! The batched inference engine (used by the daemon and by the plugin's
//! `effnetclassify`): its compute threads flush subnormals, and its answers are the
//! network's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use effistream::engine::{Classified, Engine, EngineSettings, Frame};
use effistream::model::Classifier;
use effistream::preprocess::RgbImage;

fn config(workers: usize, threads: usize, max_batch: usize) -> EngineSettings {
    EngineSettings {
        max_batch,
        max_wait: Duration::from_millis(20),
        max_frame_age: Duration::from_secs(30),
        workers,
        threads,
        top_k: 5,
        threshold: 0.0,
        model_id: None,
    }
}

/// Runs `frames` golden photos through an engine of `config`; returns the results.
fn classify_through_engine(classifier: Arc<Classifier>, config: EngineSettings) -> Vec<Classified> {
    let golden = effistream_testkit::golden::golden("efficientnet_b1_pruned");
    let images = golden.photos();
    let engine = Engine::start(classifier, config).unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = results.clone();
    let stream = engine
        .stream("cam", Arc::new(move |r| sink.lock().unwrap().push(r)))
        .unwrap();
    let total = 8;
    for seq in 0..total {
        let frame = Frame {
            seq,
            pts_ns: None,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
            image: images[seq as usize % images.len()].clone(),
            cropped: false,
            original: None,
        };
        // The stream's share of waiting frames is bounded: retry until there is room.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stream.has_room() {
            assert!(
                Instant::now() < deadline,
                "the engine never took frame {seq}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(stream.try_submit(frame), "frame {seq} refused");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while results.lock().unwrap().len() < total as usize {
        assert!(Instant::now() < deadline, "results missing");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stream);
    engine.shutdown(Duration::from_secs(30));
    results.lock().unwrap().clone()
}

/// Every thread that runs the network in the engine (one worker splitting layers across
/// two threads, and two workers of one thread each) has FTZ|DAZ set from its start: the
/// network counts the calls that began on a thread without them, and that count stays 0.
/// The same network called from a plain thread does count, so the check can fail.
#[test]
fn the_engines_compute_threads_flush_subnormals() {
    let golden = effistream_testkit::golden::golden("efficientnet_b1_pruned");
    for (workers, threads, batch) in [(1, 2, 1), (1, 2, 4), (2, 1, 2)] {
        let classifier = Arc::new(Classifier::new(&golden.weights()).unwrap());
        let results = classify_through_engine(classifier.clone(), config(workers, threads, batch));
        assert_eq!(results.len(), 8);
        assert_eq!(
            classifier.unflushed_calls(),
            0,
            "{workers} worker(s) of {threads} thread(s): the network ran on threads without FTZ|DAZ"
        );
    }
    let classifier = Classifier::new(&golden.weights()).unwrap();
    let image = RgbImage::open(&golden.images[0]).unwrap();
    // On this test's own thread (no compute pool): counted, and restored afterwards.
    std::thread::spawn(move || {
        classifier.classify(&[image], 5).unwrap();
        if cfg!(target_arch = "x86_64") {
            assert!(
                classifier.unflushed_calls() > 0,
                "a stray thread went unnoticed"
            );
            assert!(!effistream::model::fast::flush::enabled());
        }
    })
    .join()
    .unwrap();
}

/// Frames through the engine (batched, on its threads) get the logits the network gives
/// the same photos directly: top-5 and scores agree.
#[test]
fn engine_results_match_the_network_on_the_same_photos() {
    let golden = effistream_testkit::golden::golden("efficientnet_b1_pruned");
    let classifier = Arc::new(Classifier::new(&golden.weights()).unwrap());
    let images = golden.photos();
    let direct = classifier.classify(&images, 5).unwrap();
    let results = classify_through_engine(classifier, config(1, 2, 4));
    for r in &results {
        let want = &direct[r.seq as usize % images.len()].top;
        let got: Vec<usize> = r.top.iter().map(|c| c.class_id).collect();
        let ids: Vec<usize> = want.iter().map(|c| c.class_id).collect();
        assert_eq!(got, ids, "frame {}", r.seq);
        for (a, b) in r.top.iter().zip(want) {
            assert!(
                (a.score - b.score).abs() < 1e-4,
                "frame {}: {a:?} vs {b:?}",
                r.seq
            );
        }
    }
}
