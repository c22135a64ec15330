//! Serves an H.264 MP4 file over RTSP on 127.0.0.1 like a live camera: looped forever, in
//! real time, without re-encoding. The load benchmark `scripts/daemon-load --source rtsp`
//! runs it.
//!
//! ```text
//! cargo build --release --example rtsp-file
//! target/release/examples/rtsp-file --port 8554 --file clip.mp4
//! gst-launch-1.0 rtspsrc location=rtsp://127.0.0.1:8554/cam ! fakesink
//! ```
//!
//! The file is demuxed once (`qtdemux ! h264parse`) and its access units are kept in
//! memory. The mount `/cam` is not shared: every client gets its own session and pipeline,
//! `appsrc ! h264parse ! rtph264pay config-interval=1`, whose appsrc sends the access units
//! at the file's frame rate, paced by the wall clock and stamped with the pipeline's
//! running time like a live source, and starts again from the first one at the end of
//! the file. The n-th session starts at the n-th keyframe (modulo their number), so
//! that several clients see different pictures at any time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use gst::prelude::*;
use gst_rtsp_server::prelude::*;

/// Launch line of every session's pipeline; `src` is fed by [`Feed`].
const LAUNCH: &str = "( appsrc name=src is-live=true format=time ! h264parse ! \
    rtph264pay name=pay0 pt=96 config-interval=1 )";

#[derive(Parser)]
#[command(about = "Serve an H.264 MP4 file, looped in real time, at rtsp://127.0.0.1:PORT/cam")]
struct Args {
    /// TCP port to listen on, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The MP4 (H.264) file.
    #[arg(long)]
    file: PathBuf,
}

/// A file's H.264 access units in decoding order, with their caps.
struct Clip {
    caps: gst::Caps,
    frames: Vec<gst::Buffer>,
    /// Indices of the frames that are keyframes.
    keyframes: Vec<usize>,
    frame_duration: Duration,
}

impl Clip {
    fn read(path: &Path) -> Result<Self> {
        let pipeline = gst::parse::launch(
            "filesrc name=src ! qtdemux ! h264parse ! \
             video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false",
        )?
        .downcast::<gst::Bin>()
        .expect("a pipeline");
        let by_name = |name| pipeline.by_name(name).expect("named in the launch line");
        by_name("src").set_property("location", path);
        let sink = by_name("sink")
            .downcast::<gst_app::AppSink>()
            .expect("an appsink");
        pipeline.set_state(gst::State::Playing)?;
        let mut caps = None;
        let mut frames = Vec::new();
        // Ends at the end of the stream, or at an error (reported on the bus).
        while let Ok(sample) = sink.pull_sample() {
            caps.get_or_insert_with(|| sample.caps().expect("negotiated").to_owned());
            frames.extend(sample.buffer_owned());
        }
        let error = pipeline
            .bus()
            .expect("a pipeline has a bus")
            .pop_filtered(&[gst::MessageType::Error]);
        pipeline.set_state(gst::State::Null)?;
        if let Some(gst::MessageView::Error(e)) = error.as_ref().map(|m| m.view()) {
            bail!("{}: {}", path.display(), e.error());
        }
        let (Some(caps), false) = (caps, frames.is_empty()) else {
            bail!("{}: no H.264 frames", path.display());
        };
        let keyframes: Vec<usize> = (0..frames.len())
            .filter(|&i| !frames[i].flags().contains(gst::BufferFlags::DELTA_UNIT))
            .collect();
        if keyframes.is_empty() {
            bail!("{}: no keyframe", path.display());
        }
        let frame_duration = frame_duration(&caps, &frames[0]);
        Ok(Self {
            caps,
            frames,
            keyframes,
            frame_duration,
        })
    }

    fn fps(&self) -> f64 {
        1.0 / self.frame_duration.as_secs_f64()
    }
}

/// From the caps' frame rate, else the first frame's duration, else 25 fps.
fn frame_duration(caps: &gst::Caps, first: &gst::Buffer) -> Duration {
    let from_caps = caps
        .structure(0)
        .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map(|f| Duration::from_secs_f64(f.denom() as f64 / f.numer() as f64));
    let from_buffer = first.duration().map(Duration::from);
    from_caps
        .or(from_buffer)
        .unwrap_or(Duration::from_millis(40))
}

/// One session's position in the clip and the time its next frame is due.
struct Feed {
    clip: Arc<Clip>,
    next: usize,
    due: Option<Instant>,
}

impl Feed {
    /// Waits until the next frame is due and pushes it. A feed that fell behind by more
    /// than a frame (a busy machine) carries on from now instead of sending a burst.
    fn push_next(&mut self, src: &gst_app::AppSrc) {
        let period = self.clip.frame_duration;
        let now = Instant::now();
        let due = self.due.filter(|&d| d + period >= now).unwrap_or(now);
        std::thread::sleep(due.saturating_duration_since(now));
        self.due = Some(due + period);

        let mut buffer = self.clip.frames[self.next].copy();
        self.next = (self.next + 1) % self.clip.frames.len();
        let running_time = src.current_running_time();
        let b = buffer.get_mut().expect("a fresh copy is writable");
        b.set_pts(running_time);
        b.set_dts(running_time);
        b.set_duration(gst::ClockTime::try_from(period).ok());
        // Flushing: the session is going away; the pipeline stops asking.
        let _ = src.push_buffer(buffer);
    }
}

/// Makes a new session's appsrc send the clip from the keyframe the session's number
/// picks.
fn configure(media: &gst_rtsp_server::RTSPMedia, clip: &Arc<Clip>, session: usize) {
    let src = media
        .element()
        .downcast::<gst::Bin>()
        .expect("the media element is a bin")
        .by_name("src")
        .expect("named in LAUNCH")
        .downcast::<gst_app::AppSrc>()
        .expect("an appsrc");
    src.set_caps(Some(&clip.caps));
    let mut feed = Feed {
        clip: clip.clone(),
        next: clip.keyframes[session % clip.keyframes.len()],
        due: None,
    };
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| feed.push_next(src))
            .build(),
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    gst::init()?;
    let clip = Arc::new(Clip::read(&args.file)?);

    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&args.port.to_string());
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(LAUNCH);
    factory.set_shared(false);
    let sessions = AtomicUsize::new(0);
    let media_clip = clip.clone();
    factory.connect_media_configure(move |_, media| {
        configure(media, &media_clip, sessions.fetch_add(1, Ordering::Relaxed));
    });
    server
        .mount_points()
        .context("the server has mount points")?
        .add_factory("/cam", factory);
    let _source = server
        .attach(None)
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    eprintln!(
        "serving {} ({} frames, {:.2} fps, {} keyframes) at rtsp://127.0.0.1:{}/cam",
        args.file.display(),
        clip.frames.len(),
        clip.fps(),
        clip.keyframes.len(),
        args.port
    );
    gst::glib::MainLoop::new(None, false).run();
    Ok(())
}
