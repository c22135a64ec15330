//! Soak: the daemon with 4 cameras (2 RTSP, 2 test patterns) for a while, the RTSP server
//! and the broker restarted in turn, resident memory, threads and file descriptors
//! sampled, and every classification accounted for at the end.
//!
//! CI runs the 2-minute version (`cargo test --release --test soak`); `scripts/soak` runs
//! 30 minutes with a fault every 3 minutes and keeps the report. Settings, from the
//! environment:
//!
//! - `EFFISTREAM_SOAK_SECONDS` (default 120): how long the daemon runs;
//! - `EFFISTREAM_SOAK_FAULT_EVERY_S` (default 25): seconds between two faults, which
//!   alternate: the RTSP server stopped for 6 s, the broker stopped for 10 s;
//! - `EFFISTREAM_SOAK_REPORT`: a file to write the report (Markdown) to.
//!
//! Targets (issue 6): resident memory after warm-up grows by at most 10 %; no more threads
//! or descriptors at the end than after warm-up; every classification the daemon inferred
//! reached the persistent subscriber or was counted as dropped, camera by camera (each
//! camera's `processed` = its distinct classifications received + its `mqtt_dropped`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use effistream_testkit::daemon::{
    Daemon, by_camera, config, distinct_seqs, last_stats, serial, wait_online,
};
use effistream_testkit::mosquitto::{Mosquitto, Subscriber};
use effistream_testkit::rtsp::RtspServer;

const RTSP_OUTAGE: Duration = Duration::from_secs(6);
const BROKER_OUTAGE: Duration = Duration::from_secs(10);
/// A sample counts as steady this long after a fault ended.
const SETTLE: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const FPS: f64 = 5.0;

fn env_secs(name: &str, default: u64) -> Duration {
    let secs = std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not seconds"))
        })
        .unwrap_or(default);
    Duration::from_secs(secs)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Rtsp,
    Broker,
}

struct Sample {
    at: Duration,
    phase: &'static str,
    steady: bool,
    rss_kib: u64,
    threads: usize,
    fds: usize,
}

#[test]
fn soak_with_rtsp_and_broker_restarts_keeps_memory_threads_and_fds_flat_and_loses_nothing() {
    let _serial = serial();
    let duration = env_secs("EFFISTREAM_SOAK_SECONDS", 120);
    let fault_every = env_secs("EFFISTREAM_SOAK_FAULT_EVERY_S", 25);
    let warm_up = (duration / 4).min(Duration::from_secs(60));

    let mut broker = Mosquitto::persistent();
    let subscriber = Subscriber::persistent(broker.port(), &["effistream/#"], "soak-sub");
    let mut rtsp = RtspServer::start();
    let rtsp_url = rtsp.url();
    let cameras = [
        ("rtsp-1", rtsp_url.as_str(), FPS),
        ("rtsp-2", rtsp_url.as_str(), FPS),
        ("test-1", "test://smpte?width=640&height=360", FPS),
        ("test-2", "test://ball?width=640&height=360", FPS),
    ];
    // `config` ends inside [mqtt]: QoS 1, max_queued 10000.
    let mut daemon = Daemon::start(&config(
        &cameras,
        broker.port(),
        "persistent_session = true\n[reconnect]\ninitial_ms = 200\nmax_ms = 2000\n",
    ));
    wait_online(&subscriber, &daemon);
    let started = Instant::now();

    // The schedule: faults from warm-up + fault_every / 2 on, each ending (with its
    // settling time) before the run does.
    let mut faults = Vec::new();
    let mut at = warm_up + fault_every / 2;
    while at + BROKER_OUTAGE + SETTLE + SAMPLE_EVERY < duration {
        let fault = if faults.len() % 2 == 0 {
            Fault::Rtsp
        } else {
            Fault::Broker
        };
        faults.push((at, fault));
        at += fault_every;
    }
    assert!(
        faults.iter().any(|f| f.1 == Fault::Rtsp) && faults.iter().any(|f| f.1 == Fault::Broker),
        "{duration:?} with a fault every {fault_every:?} leaves no room for both faults"
    );

    let mut samples: Vec<Sample> = Vec::new();
    let mut fault_log = Vec::new();
    let mut next_fault = 0;
    let mut active: Option<(Fault, Duration)> = None;
    let mut last_fault_end = Duration::ZERO;
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < duration {
        let now = started.elapsed();
        if let Some((fault, ends)) = active {
            if now >= ends {
                match fault {
                    Fault::Rtsp => rtsp.resume(),
                    Fault::Broker => broker.start(),
                }
                active = None;
                last_fault_end = now;
            }
        } else if next_fault < faults.len() && now >= faults[next_fault].0 {
            let fault = faults[next_fault].1;
            let outage = match fault {
                Fault::Rtsp => {
                    rtsp.stop();
                    RTSP_OUTAGE
                }
                Fault::Broker => {
                    broker.stop();
                    BROKER_OUTAGE
                }
            };
            fault_log.push(format!(
                "{:>5.0} s: {fault:?} stopped for {} s",
                now.as_secs_f64(),
                outage.as_secs()
            ));
            active = Some((fault, now + outage));
            next_fault += 1;
        }
        if now >= next_sample {
            let phase = match active {
                Some((Fault::Rtsp, _)) => "RTSP down",
                Some((Fault::Broker, _)) => "broker down",
                None if now < warm_up => "warm-up",
                None => "running",
            };
            let steady = active.is_none()
                && now >= warm_up
                && (last_fault_end.is_zero() || now >= last_fault_end + SETTLE);
            samples.push(Sample {
                at: now,
                phase,
                steady,
                rss_kib: daemon.rss_kib(),
                threads: daemon.threads(),
                fds: daemon.fds(),
            });
            next_sample += SAMPLE_EVERY;
        }
        assert!(daemon.is_running(), "daemon exited:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The reconnects as Prometheus sees them, to compare with the final stats.
    let base = daemon.http_url();
    let (status, _, metrics) = effistream_testkit::daemon::http_get(&format!("{base}/metrics"));
    assert_eq!(status, 200, "{metrics}");
    let reconnects_metric: BTreeMap<String, u64> = cameras
        .iter()
        .map(|(id, _, _)| {
            let prefix = format!("effistream_camera_reconnects_total{{camera=\"{id}\"}} ");
            let value = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"));
            (id.to_string(), value.trim().parse().unwrap())
        })
        .collect();
    daemon.terminate();
    // Everything received during the run waited in the subscriber's channel.
    let messages = subscriber.collect(Duration::from_secs(3));

    // Metrics and stats count the same reconnects; every RTSP outage cost each RTSP camera
    // at least one, a broker outage none.
    let stats = last_stats(&messages);
    let rtsp_faults = faults.iter().filter(|f| f.1 == Fault::Rtsp).count() as u64;
    for (camera, metric) in &reconnects_metric {
        let counted = stats["cameras"][camera]["reconnects"].as_u64().unwrap();
        assert_eq!(
            *metric, counted,
            "{camera}: metrics {metric}, stats {counted}"
        );
        if camera.starts_with("rtsp") {
            assert!(counted >= rtsp_faults, "{camera}: {counted} reconnects");
        } else {
            assert_eq!(counted, 0, "{camera}");
        }
    }

    let report = Report::new(&samples, &fault_log, &messages, duration);
    eprintln!("{}", report.text);
    if let Some(path) = std::env::var_os("EFFISTREAM_SOAK_REPORT") {
        std::fs::write(&path, &report.text).unwrap();
    }
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    report.check();
}

struct Report {
    text: String,
    first: (u64, usize, usize),
    last: (u64, usize, usize),
    lost: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn new(
        samples: &[Sample],
        faults: &[String],
        messages: &[effistream_testkit::mosquitto::Message],
        duration: Duration,
    ) -> Self {
        let steady: Vec<&Sample> = samples.iter().filter(|s| s.steady).collect();
        assert!(steady.len() >= 2, "fewer than 2 steady samples");
        // Memory: the first steady sample after warm-up against the last one. Threads and
        // descriptors: the most of any sample before the first fault (the first few
        // seconds excepted, while the pipelines start) against the most of the steady
        // samples after the last fault. Idle pool threads come and go by one; a leak per
        // reconnect adds up over the faults.
        let first_fault = samples
            .iter()
            .find(|s| s.phase.ends_with("down"))
            .map_or(Duration::MAX, |s| s.at);
        let before: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= SAMPLE_EVERY && s.at < first_fault)
            .collect();
        let last_fault = samples
            .iter()
            .rev()
            .find(|s| s.phase.ends_with("down"))
            .map_or(Duration::ZERO, |s| s.at);
        let after: Vec<&Sample> = steady
            .iter()
            .copied()
            .filter(|s| s.at > last_fault)
            .collect();
        assert!(
            !before.is_empty() && !after.is_empty(),
            "no sample before the first fault or after the last"
        );
        let most = |list: &[&Sample]| {
            (
                list.iter().map(|s| s.threads).max().unwrap(),
                list.iter().map(|s| s.fds).max().unwrap(),
            )
        };
        let (threads0, fds0) = most(&before);
        let (threads1, fds1) = most(&after);
        let first = (steady[0].rss_kib, threads0, fds0);
        let last = (steady[steady.len() - 1].rss_kib, threads1, fds1);

        let stats = last_stats(messages);
        let classifications = by_camera(messages, "classification");
        let mut text = String::new();
        let mut lost = Vec::new();
        let mut problems = Vec::new();
        writeln!(
            text,
            "## Soak: {} s, 4 cameras at {FPS} fps, {} faults\n",
            duration.as_secs(),
            faults.len()
        )
        .unwrap();
        for fault in faults {
            writeln!(text, "- {fault}").unwrap();
        }
        writeln!(
            text,
            "\n| camera | processed | received | MQTT dropped | reconnects | frames dropped (reason) | status |\n| --- | --- | --- | --- | --- | --- | --- |"
        )
        .unwrap();
        let mut processed_total = 0;
        let mut received_total = 0;
        let mut mqtt_dropped_total = 0;
        for (camera, c) in stats["cameras"].as_object().unwrap() {
            let processed = c["processed"].as_u64().unwrap();
            let received = distinct_seqs(&classifications, camera).len() as u64;
            let mqtt_dropped = c["mqtt_dropped"]
                .as_u64()
                .unwrap_or_else(|| panic!("{camera}: no mqtt_dropped in {c}"));
            processed_total += processed;
            received_total += received;
            mqtt_dropped_total += mqtt_dropped;
            let dropped: BTreeMap<&String, u64> = c["dropped"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k, v.as_u64().unwrap()))
                .filter(|(_, v)| *v > 0)
                .collect();
            writeln!(
                text,
                "| {camera} | {processed} | {received} | {mqtt_dropped} | {} | {dropped:?} | {} |",
                c["reconnects"], c["status"]
            )
            .unwrap();
            // This camera's own drops, nothing forgiven across cameras.
            if received + mqtt_dropped != processed {
                lost.push(format!(
                    "{camera}: {processed} inferred, {received} received, {mqtt_dropped} counted as dropped by MQTT"
                ));
            }
            let least = FPS * duration.as_secs_f64() * 0.6;
            if (processed as f64) < least {
                problems.push(format!("{camera}: only {processed} frames inferred"));
            }
            if c["status"] != "offline" && c["status"] != "online" {
                problems.push(format!("{camera}: final status {}", c["status"]));
            }
        }
        let dropped = stats["mqtt"]["dropped"].as_u64().unwrap();
        writeln!(
            text,
            "\nClassifications: {processed_total} inferred, {received_total} received by the persistent subscriber, {mqtt_dropped_total} counted as dropped; {dropped} MQTT messages counted as dropped in all; {} MQTT messages confirmed by the broker.\n",
            stats["mqtt"]["published"]
        )
        .unwrap();
        if mqtt_dropped_total > dropped {
            problems.push(format!(
                "the cameras' mqtt_dropped add up to {mqtt_dropped_total}, more than mqtt.dropped {dropped}"
            ));
        }
        writeln!(
            text,
            "| t (s) | phase | steady | RSS (MiB) | threads | fds |\n| --- | --- | --- | --- | --- | --- |"
        )
        .unwrap();
        for s in samples {
            writeln!(
                text,
                "| {:.0} | {} | {} | {:.1} | {} | {} |",
                s.at.as_secs_f64(),
                s.phase,
                if s.steady { "yes" } else { "" },
                s.rss_kib as f64 / 1024.0,
                s.threads,
                s.fds
            )
            .unwrap();
        }
        writeln!(
            text,
            "\nRSS, first steady sample after warm-up → last: {:.1} → {:.1} MiB ({:+.1} %). Most threads before the first fault → after the last: {} → {}; descriptors {} → {}.",
            first.0 as f64 / 1024.0,
            last.0 as f64 / 1024.0,
            (last.0 as f64 / first.0 as f64 - 1.0) * 100.0,
            first.1,
            last.1,
            first.2,
            last.2
        )
        .unwrap();
        Self {
            text,
            first,
            last,
            lost,
            problems,
        }
    }

    fn check(&self) {
        assert!(self.problems.is_empty(), "{:?}", self.problems);
        assert!(
            self.lost.is_empty(),
            "classifications lost without being counted: {:?}",
            self.lost
        );
        let (rss0, threads0, fds0) = self.first;
        let (rss1, threads1, fds1) = self.last;
        assert!(
            rss1 * 10 <= rss0 * 11,
            "RSS grew from {rss0} KiB to {rss1} KiB (more than 10 %)"
        );
        assert!(
            threads1 <= threads0,
            "threads grew: {threads0} → {threads1}"
        );
        assert!(fds1 <= fds0, "descriptors grew: {fds0} → {fds1}");
    }
}
