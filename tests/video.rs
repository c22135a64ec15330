//! Video frames scaled small (`effistream::video`): how far the network input is from the
//! full-size path (the whole frame converted to RGB, then PIL's eval transform) on real
//! photos turned into H.264 video, and key-frame-only decoding.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use effistream::config::{CameraConfig, Decode, ReconnectConfig};
use effistream::engine::{Engine, ResultCallback};
use effistream::model::{Classifier, Variant};
use effistream::preprocess::{Preprocess, RgbImage};
use effistream::source::Source;
use effistream::video::FrameScaler;
use gst::prelude::*;
use gst_video::prelude::*;

/// Runs `description` (ending in `appsink name=sink`) to its end; the last sample.
fn last_sample(description: &str) -> gst::Sample {
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut last = None;
    while let Ok(sample) = sink.pull_sample() {
        last = Some(sample);
    }
    pipeline.set_state(gst::State::Null).unwrap();
    last.unwrap_or_else(|| panic!("no frame from {description}"))
}

/// `photo` as the 5th frame of an H.264 stream (x264 at a camera's bitrate), decoded by
/// avdec_h264 to I420 at `width × height`.
fn photo_as_video(photo: &Path, width: u32, height: u32) -> gst::Sample {
    last_sample(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! \
         video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1 ! \
         imagefreeze num-buffers=5 ! video/x-raw,framerate=25/1 ! \
         x264enc bitrate=4000 speed-preset=faster key-int-max=25 ! h264parse ! \
         avdec_h264 ! video/x-raw,format=I420 ! appsink name=sink sync=false",
        photo.display()
    ))
}

/// The whole frame to packed RGB with GStreamer's converter: what the sources did before.
fn full_size_rgb(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> RgbImage {
    let (out, out_info) = effistream_testkit::convert_frame(frame, gst_video::VideoFormat::Rgb);
    effistream_testkit::packed_rgb(&out, &out_info)
}

/// The same samples as the I420 `frame`, with U and V interleaved (NV12).
fn nv12_of(
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
) -> (gst::Buffer, gst_video::VideoInfo) {
    let info = frame.info();
    let out_info =
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Nv12, info.width(), info.height())
            .colorimetry(&info.colorimetry())
            .chroma_site(info.chroma_site())
            .build()
            .unwrap();
    let mut out = gst::Buffer::with_size(out_info.size()).unwrap();
    {
        let mut dst =
            gst_video::VideoFrameRef::from_buffer_ref_writable(out.get_mut().unwrap(), &out_info)
                .unwrap();
        let (w, h) = (info.width() as usize, info.height() as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let stride = |f: &[i32], i: usize| f[i] as usize;
        let (s_in, s_out) = (frame.plane_stride().to_vec(), dst.plane_stride().to_vec());
        for y in 0..h {
            let src = &frame.plane_data(0).unwrap()[y * stride(&s_in, 0)..][..w];
            dst.plane_data_mut(0).unwrap()[y * stride(&s_out, 0)..][..w].copy_from_slice(src);
        }
        for y in 0..ch {
            for x in 0..cw {
                let u = frame.plane_data(1).unwrap()[y * stride(&s_in, 1) + x];
                let v = frame.plane_data(2).unwrap()[y * stride(&s_in, 2) + x];
                let row = y * stride(&s_out, 1);
                let uv = dst.plane_data_mut(1).unwrap();
                uv[row + 2 * x] = u;
                uv[row + 2 * x + 1] = v;
            }
        }
    }
    (out, out_info)
}

fn scaled(
    scaler: &mut FrameScaler,
    pre: &Preprocess,
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Vec<f32> {
    let crop = scaler.scale(frame, Vec::new()).unwrap();
    let mut out = vec![0f32; pre.output_len()];
    pre.run_cropped(&crop, &mut out).unwrap();
    out
}

/// The whole I420 frame to RGB with exact arithmetic (f64, the stream's matrix and range,
/// chroma interpolated linearly between its sited samples, as GStreamer's converter
/// does): today's full-size path without the rounding of GStreamer's 8-bit fast path.
fn exact_rgb(frame: &gst_video::VideoFrameRef<&gst::BufferRef>) -> RgbImage {
    let info = frame.info();
    let (w, h) = (info.width() as usize, info.height() as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let colorimetry = info.colorimetry();
    let (kr, kb) = colorimetry.matrix().kr_kb().unwrap();
    let (y_off, y_range, c_range) = if colorimetry.range() == gst_video::VideoColorRange::Range0_255
    {
        (0.0, 255.0, 255.0)
    } else {
        (16.0, 219.0, 224.0)
    };
    let site = info.chroma_site();
    // Where chroma sample i sits, in luma pixel indices: 2i when cosited, 2i + 0.5 when
    // centred.
    let offset = |cosited: bool| if cosited { 0.0 } else { 0.5 };
    let (ox, oy) = (
        offset(site.contains(gst_video::VideoChromaSite::H_COSITED)),
        offset(site.contains(gst_video::VideoChromaSite::V_COSITED)),
    );
    let plane = |i: u32| {
        (
            frame.plane_data(i).unwrap(),
            frame.plane_stride()[i as usize] as usize,
        )
    };
    let ((yp, ys), (up, us), (vp, vs)) = (plane(0), plane(1), plane(2));
    let lerp_at = |pos: f64, len: usize| {
        let p = pos.clamp(0.0, (len - 1) as f64);
        let i = (p.floor() as usize).min(len.saturating_sub(2));
        (i, p - i as f64)
    };
    let chroma = |p: &[u8], stride: usize, x: usize, y: usize| {
        let (i, fx) = lerp_at((x as f64 - ox) / 2.0, cw);
        let (j, fy) = lerp_at((y as f64 - oy) / 2.0, ch);
        let at = |i: usize, j: usize| p[j * stride + i.min(cw - 1)] as f64;
        let j1 = (j + 1).min(ch - 1);
        let top = at(i, j) * (1.0 - fx) + at(i + 1, j) * fx;
        let bottom = at(i, j1) * (1.0 - fx) + at(i + 1, j1) * fx;
        top * (1.0 - fy) + bottom * fy
    };
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let luma = (yp[y * ys + x] as f64 - y_off) / y_range;
            let cb = (chroma(up, us, x, y) - 128.0) / c_range;
            let cr = (chroma(vp, vs, x, y) - 128.0) / c_range;
            let r = luma + 2.0 * (1.0 - kr) * cr;
            let b = luma + 2.0 * (1.0 - kb) * cb;
            let g = (luma - kr * r - kb * b) / (1.0 - kr - kb);
            data.extend([r, g, b].map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8));
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

#[test]
fn video_frames_scaled_small_match_the_full_size_path_on_real_photos() {
    let _glib = effistream_testkit::glib_log::check();
    gst::init().unwrap();
    let assets = effistream_testkit::assets();
    let variant = Variant::by_name("tf_efficientnet_lite0").unwrap();
    let classifier = Classifier::load(variant, Some(&assets.join("lite0.pth"))).unwrap();
    let pre = classifier.preprocess().clone();
    let mut scaler = FrameScaler::new(&pre);
    let (mut vs_today_worst, mut vs_exact_worst) = ((0f32, 0f32), (0f32, 0f32));
    for photo in effistream_testkit::PHOTOS {
        for (width, height) in [(1920, 1080), (640, 480)] {
            let sample = photo_as_video(&assets.join("photos").join(photo), width, height);
            let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
            let frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info)
                    .unwrap();
            let today = pre.to_chw(&full_size_rgb(&frame)).unwrap();
            let exact = pre.to_chw(&exact_rgb(&frame)).unwrap();
            let small = scaled(&mut scaler, &pre, &frame);
            let diff = |a: &[f32], b: &[f32]| {
                (
                    effistream_testkit::golden::max_abs_diff(a, b).0,
                    mean_abs_diff(a, b),
                )
            };
            let (vs_today, vs_exact, today_vs_exact) = (
                diff(&small, &today),
                diff(&small, &exact),
                diff(&today, &exact),
            );
            let logits = classifier
                .logits(
                    [&small, &exact, &today]
                        .into_iter()
                        .flatten()
                        .copied()
                        .collect(),
                )
                .unwrap();
            let top1: Vec<usize> = logits
                .iter()
                .map(|l| effistream_testkit::golden::top_k(l, 1)[0])
                .collect();
            eprintln!(
                "{photo} {width}x{height} ({}): scaled small vs today's path max {:.3} mean {:.4}, \
                 vs exact full-size max {:.3} mean {:.4}; today's vs exact max {:.3} mean {:.4}; \
                 top-1 small/exact/today {top1:?}",
                info.colorimetry(),
                vs_today.0,
                vs_today.1,
                vs_exact.0,
                vs_exact.1,
                today_vs_exact.0,
                today_vs_exact.1
            );
            for (worst, (max, mean)) in [
                (&mut vs_today_worst, vs_today),
                (&mut vs_exact_worst, vs_exact),
            ] {
                worst.0 = worst.0.max(max);
                worst.1 = worst.1.max(mean);
            }
            // The same picture gives the same answer as the full-size path computed
            // exactly (today's path rounds on the way, see the README).
            assert_eq!(top1[0], top1[1], "{photo} {width}x{height}: top-1 differs");
            // NV12 holds the same samples as I420: the same input.
            let (nv12, nv12_info) = nv12_of(&frame);
            let nv12_frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(nv12.as_ref(), &nv12_info)
                    .unwrap();
            let (max_nv12, _) = effistream_testkit::golden::max_abs_diff(
                &scaled(&mut scaler, &pre, &nv12_frame),
                &small,
            );
            assert_eq!(
                max_nv12, 0.0,
                "{photo} {width}x{height}: NV12 and I420 differ"
            );
            // Packed RGB skips only PIL's two-pass order: within a rounding step or two.
            let (rgb, rgb_info) =
                effistream_testkit::convert_frame(&frame, gst_video::VideoFormat::Rgb);
            let rgb_frame =
                gst_video::VideoFrameRef::from_buffer_ref_readable(rgb.as_ref(), &rgb_info)
                    .unwrap();
            let from_rgb = scaled(&mut scaler, &pre, &rgb_frame);
            let (max_rgb, _) = effistream_testkit::golden::max_abs_diff(&from_rgb, &today);
            assert!(
                max_rgb < 0.1 && mean_abs_diff(&from_rgb, &today) < 0.005,
                "{photo} {width}x{height}: RGB frames differ from PIL by max {max_rgb}, mean {}",
                mean_abs_diff(&from_rgb, &today)
            );
        }
    }
    eprintln!(
        "worst: vs today's path {vs_today_worst:?}, vs the exact full-size path {vs_exact_worst:?}"
    );
    // Bounds a little above what was measured (README, "Video frames").
    assert!(
        vs_exact_worst.1 < 0.01 && vs_exact_worst.0 < 0.5,
        "{vs_exact_worst:?}"
    );
    assert!(
        vs_today_worst.1 < 0.03 && vs_today_worst.0 < 0.5,
        "{vs_today_worst:?}"
    );
}

/// Writes a 2 s H.264 clip (25 fps, a key frame every 10 frames, B-frames) to `path`.
fn h264_clip(path: &Path) {
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=50 pattern=ball ! \
         video/x-raw,width=320,height=240,framerate=25/1 ! \
         x264enc key-int-max=10 bframes=2 option-string=scenecut=0 speed-preset=ultrafast ! \
         mp4mux ! filesink location={}",
        path.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let message = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the clip was not written within 60 s");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(message.view(), gst::MessageView::Eos(_)),
        "{message:?}"
    );
}

/// Starts `camera`'s source on `engine`, its results to `on_result`.
fn spawn(engine: &Engine, camera: &CameraConfig, on_result: ResultCallback) -> Source {
    let stream = engine.stream(&camera.id, on_result).unwrap();
    let settings = camera
        .resolve("test", &ReconnectConfig::default())
        .expect("a valid camera");
    Source::spawn(&settings, stream, Arc::new(|_, _| {})).unwrap()
}

#[test]
fn keyframes_only_decodes_the_key_frames_and_classifies_them() {
    let _glib = effistream_testkit::glib_log::check();
    gst::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    h264_clip(&clip);
    let engine = effistream_testkit::lite0_engine(Duration::from_secs(5), 1);
    for (decode, decoded) in [(Decode::All, 50), (Decode::Keyframes, 5)] {
        let mut camera = CameraConfig::new("clip", format!("file://{}", clip.display()));
        camera.fps = 25.0;
        camera.decode = decode;
        let results = Arc::new(Mutex::new(0u64));
        let r = results.clone();
        let mut source = spawn(&engine, &camera, Arc::new(move |_| *r.lock().unwrap() += 1));
        // The file plays in real time (2 s) and the source ends at its end.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !source.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            source.join(Duration::from_secs(1)),
            "{decode:?}: still running"
        );
        let counters = source.counters();
        assert_eq!(
            counters.decoded.load(Ordering::Relaxed),
            decoded,
            "{decode:?}: frames decoded"
        );
        assert_eq!(
            counters.frames.load(Ordering::Relaxed),
            decoded,
            "{decode:?}"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *results.lock().unwrap() < decoded && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(*results.lock().unwrap(), decoded, "{decode:?}: classified");
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn a_live_camera_with_key_frames_further_apart_than_its_stall_timeout_is_not_rebuilt() {
    let _glib = effistream_testkit::glib_log::check();
    let server = effistream_testkit::rtsp::RtspServer::start();
    let engine = effistream_testkit::lite0_engine(Duration::from_secs(5), 1);
    // Key frames every 3 s, a stall timeout of 1 s: the delta units taken away before the
    // decoder show that the camera is alive.
    let mut camera = CameraConfig::new("gop", server.long_gop_url());
    camera.fps = 15.0;
    camera.decode = Decode::Keyframes;
    camera.stall_timeout_s = 1;
    let mut source = spawn(&engine, &camera, Arc::new(|_| {}));
    std::thread::sleep(Duration::from_secs(8));
    let counters = source.counters().clone();
    assert!(source.join(Duration::from_secs(5)));
    let decoded = counters.decoded.load(Ordering::Relaxed);
    assert_eq!(
        counters.reconnects.load(Ordering::Relaxed),
        0,
        "rebuilt as stalled ({decoded} key frames decoded)"
    );
    // 8 s with a key frame every 3 s (the first may take up to 3 s to come).
    assert!((2..=4).contains(&decoded), "{decoded} frames decoded");
    engine.shutdown(Duration::from_secs(5));
}
