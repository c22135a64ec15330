//! A real RTSP server (gst-rtsp-server) on 127.0.0.1 serving live H.264 from x264enc, that
//! tests can stop and start again on the same port. It runs in the test process: when it
//! drops, the test fails if GLib logged a warning or a critical meanwhile ([`crate::glib_log`]).

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;

use gst::glib;
use gst_rtsp_server::prelude::*;

/// Launch line of the served stream: a live test pattern, H.264, one mount `/cam`.
const LAUNCH: &str = "( videotestsrc is-live=true pattern=ball ! \
    video/x-raw,width=320,height=240,framerate=15/1 ! \
    x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! \
    rtph264pay name=pay0 pt=96 config-interval=1 )";

/// Launch line of `/long-gop`: like `/cam`, with a key frame every 3 s.
const LONG_GOP: &str = "( videotestsrc is-live=true pattern=ball ! \
    video/x-raw,width=320,height=240,framerate=15/1 ! \
    x264enc tune=zerolatency speed-preset=ultrafast key-int-max=45 option-string=scenecut=0 ! \
    rtph264pay name=pay0 pt=96 config-interval=1 )";

/// Launch line of `/unsupported`: a stream of a codec no decoder knows (caps
/// `video/x-effistream-unknown`, carried as GStreamer's own RTP payload).
const UNSUPPORTED: &str = "( videotestsrc is-live=true ! \
    video/x-raw,width=64,height=64,framerate=5/1 ! \
    capssetter caps=video/x-effistream-unknown join=false replace=true ! \
    rtpgstpay name=pay0 pt=96 )";

pub struct RtspServer {
    port: u16,
    running: Option<Running>,
    /// Checks when the server has stopped (fields drop after `Drop::drop`).
    _glib: crate::glib_log::Check,
}

struct Running {
    main_loop: glib::MainLoop,
    thread: JoinHandle<()>,
}

impl RtspServer {
    /// Starts on a free port.
    pub fn start() -> Self {
        let glib = crate::glib_log::check();
        gst::init().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            running: None,
            _glib: glib,
        };
        server.resume();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rtsp://127.0.0.1:PORT/cam`.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// `rtsp://127.0.0.1:PORT/long-gop`: like [`RtspServer::url`], a key frame every 3 s.
    pub fn long_gop_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/long-gop", self.port)
    }

    /// `rtsp://127.0.0.1:PORT/unsupported`: a stream in a codec nothing can decode.
    pub fn unsupported_url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/unsupported", self.port)
    }

    /// Serves again on the same port.
    pub fn resume(&mut self) {
        assert!(self.running.is_none(), "already running");
        let (ready_tx, ready_rx) = mpsc::channel();
        let port = self.port;
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread_loop = main_loop.clone();
        let thread = std::thread::spawn(move || {
            context
                .with_thread_default(|| {
                    let server = gst_rtsp_server::RTSPServer::new();
                    server.set_address("127.0.0.1");
                    server.set_service(&port.to_string());
                    let factory = gst_rtsp_server::RTSPMediaFactory::new();
                    factory.set_launch(LAUNCH);
                    factory.set_shared(true);
                    let mounts = server.mount_points().unwrap();
                    mounts.add_factory("/cam", factory);
                    let long_gop = gst_rtsp_server::RTSPMediaFactory::new();
                    long_gop.set_launch(LONG_GOP);
                    long_gop.set_shared(true);
                    mounts.add_factory("/long-gop", long_gop);
                    let unsupported = gst_rtsp_server::RTSPMediaFactory::new();
                    unsupported.set_launch(UNSUPPORTED);
                    unsupported.set_shared(true);
                    mounts.add_factory("/unsupported", unsupported);
                    let source = server.attach(Some(&context)).expect("RTSP server attach");
                    ready_tx.send(()).unwrap();
                    thread_loop.run();
                    // Stop listening, then drop every client connection.
                    if let Some(source) = context.find_source_by_id(&source) {
                        source.destroy();
                    }
                    server
                        .client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
                })
                .unwrap();
        });
        ready_rx.recv().unwrap();
        self.running = Some(Running { main_loop, thread });
    }

    /// Stops serving: the port refuses connections and clients are disconnected.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.main_loop.quit();
            running.thread.join().unwrap();
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.stop();
    }
}
