//! `effistream bench-frames`: the CPU a source spends turning one decoded frame into the
//! network input, per pixel format, beside what converting the whole frame to RGB first
//! (the path before `effistream::video`) costs.

use std::time::Instant;

use anyhow::Context;
use effistream::model::Variant;
use effistream::preprocess::{Preprocess, RgbImage};
use effistream::video::FrameScaler;
use gst::prelude::*;
use gst_video::prelude::*;

#[derive(Debug, clap::Args)]
pub struct BenchFramesArgs {
    /// Model variant whose input the frames are scaled to (see `effistream models`).
    #[arg(long, default_value = "efficientnet_b1_pruned")]
    model: String,
    /// Frame width.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(16..=8192))]
    width: u32,
    /// Frame height.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(16..=8192))]
    height: u32,
    /// Pixel formats, comma-separated (GStreamer names).
    #[arg(long, default_value = "I420,NV12,RGB", value_delimiter = ',')]
    formats: Vec<String>,
    /// Frames per measurement.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    frames: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// CPU and wall time per frame of one path, milliseconds.
#[derive(serde::Serialize)]
struct Cost {
    cpu_ms: f64,
    wall_ms: f64,
}

pub fn bench_frames(args: BenchFramesArgs) -> anyhow::Result<std::process::ExitCode> {
    gst::init()?;
    let variant = Variant::by_name(&args.model)?;
    let pre = Preprocess::for_variant(variant);
    let mut rows = Vec::new();
    for name in &args.formats {
        let format = gst_video::VideoFormat::from_string(name);
        anyhow::ensure!(
            FrameScaler::supports(format),
            "{name}: not a format the sources scale directly ({})",
            effistream::video::caps_formats()
        );
        let sample = test_frame(format, args.width, args.height)
            .with_context(|| format!("a {name} test frame"))?;
        let buffer = sample.buffer().context("sample without buffer")?;
        let info = gst_video::VideoInfo::from_caps(sample.caps().context("sample without caps")?)?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)?;
        let mut out = vec![0f32; pre.output_len()];

        let mut scaler = FrameScaler::new(&pre);
        let mut recycled = Vec::new();
        let small = measure(args.frames, || -> anyhow::Result<()> {
            let crop = scaler.scale(&frame, std::mem::take(&mut recycled))?;
            pre.run_cropped(&crop, &mut out)?;
            recycled = crop.data;
            Ok(())
        })?;

        let mut to_rgb = FullSize::new(&info)?;
        let full = measure(args.frames.div_ceil(4), || -> anyhow::Result<()> {
            let image = to_rgb.convert(&frame)?;
            pre.run(&image, &mut out)?;
            Ok(())
        })?;
        rows.push((name.clone(), small, full));
    }
    if args.json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(format, small, full)| {
                serde_json::json!({"format": format, "scaled": small, "full_size_rgb": full})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": variant.name, "width": args.width, "height": args.height,
                "input_size": pre.input_size, "formats": rows, "cpu": crate::cpu_name(),
            })
        );
    } else {
        println!(
            "{}x{} frames to the {} input of {} (one thread; {}):",
            args.width,
            args.height,
            pre.input_size,
            variant.name,
            crate::cpu_name()
        );
        println!(
            "{:<8} {:>18} {:>26}",
            "format", "scaled (CPU ms)", "full-size RGB (CPU ms)"
        );
        for (format, small, full) in &rows {
            println!("{format:<8} {:>18.2} {:>26.2}", small.cpu_ms, full.cpu_ms);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs `f` `frames` times after two warm-up runs; CPU time of this thread per run.
fn measure(frames: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Cost> {
    f()?;
    f()?;
    let (cpu, wall) = (thread_cpu_s(), Instant::now());
    for _ in 0..frames {
        f()?;
    }
    let n = f64::from(frames);
    Ok(Cost {
        cpu_ms: (thread_cpu_s() - cpu) * 1e3 / n,
        wall_ms: wall.elapsed().as_secs_f64() * 1e3 / n,
    })
}

fn thread_cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the clock id is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// One frame of the SMPTE test pattern in `format`, as a decoder would hand it over
/// (colorimetry and chroma siting from GStreamer's defaults for the size).
fn test_frame(
    format: gst_video::VideoFormat,
    width: u32,
    height: u32,
) -> anyhow::Result<gst::Sample> {
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=1 pattern=smpte ! \
         video/x-raw,format={},width={width},height={height} ! appsink name=sink",
        format.to_str()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("no appsink")?;
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink.pull_sample();
    pipeline.set_state(gst::State::Null)?;
    Ok(sample?)
}

/// The path before frames were scaled small: the whole frame to packed RGB with
/// GStreamer's converter (what `videoconvert` did in the source), then copied out.
struct FullSize {
    converter: gst_video::VideoConverter,
    out_info: gst_video::VideoInfo,
    out: gst::Buffer,
}

impl FullSize {
    fn new(info: &gst_video::VideoInfo) -> anyhow::Result<Self> {
        let out_info =
            gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, info.width(), info.height())
                .fps(info.fps())
                .build()?;
        Ok(Self {
            converter: gst_video::VideoConverter::new(info, &out_info, None)?,
            out: gst::Buffer::with_size(out_info.size())?,
            out_info,
        })
    }

    fn convert(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    ) -> anyhow::Result<RgbImage> {
        let out = self.out.get_mut().context("RGB buffer not writable")?;
        let mut rgb = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &self.out_info)?;
        self.converter.frame_ref(frame, &mut rgb);
        let stride = usize::try_from(rgb.plane_stride()[0])?;
        Ok(RgbImage::from_frame(
            rgb.plane_data(0)?,
            rgb.width() as usize,
            rgb.height() as usize,
            stride,
        )?)
    }
}
