//! Regions of a video frame (`FrameScaler::scale_region`): a region is cut from the frame
//! at the frame's resolution, before any resize, and then goes through the eval transform
//! like a whole picture. Checked on a synthetic 1920×1080 frame whose region (at odd pixel
//! offsets) holds fine detail and whose surroundings are something else entirely, in
//! packed RGB and in I420/NV12, against `preprocess.rs`'s eval transform of the RGB crop.

use effistream::model::Variant;
use effistream::preprocess::{Preprocess, RgbImage};
use effistream::video::{FrameScaler, PixelRect, RegionBox};
use effistream_testkit::{convert_frame, crop, packed_rgb};
use gst_video::prelude::*;

const WIDTH: usize = 1920;
const HEIGHT: usize = 1080;

/// Left and top land on odd pixels (1057, 217): the chroma planes start half a sample in.
const BOX: [f64; 4] = [0.5505, 0.2009, 0.95, 0.9];

/// The synthetic picture: inside `rect` a 6-pixel grey checkerboard over a slow colour
/// ramp (detail a downscale of the whole frame first would blur away); outside, saturated
/// red and blue stripes.
fn picture(rect: PixelRect) -> RgbImage {
    let mut data = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let inside = (rect.x..rect.x + rect.width).contains(&x)
                && (rect.y..rect.y + rect.height).contains(&y);
            let px = if inside {
                let (rx, ry) = (x - rect.x, y - rect.y);
                let check = if (rx / 6 + ry / 6) % 2 == 0 { 70 } else { 0 };
                [
                    (60 + check + rx * 60 / rect.width) as u8,
                    (90 + check) as u8,
                    (60 + check + ry * 60 / rect.height) as u8,
                ]
            } else if (x + y) / 40 % 2 == 0 {
                [230, 20, 30]
            } else {
                [20, 30, 220]
            };
            data.extend(px);
        }
    }
    RgbImage {
        width: WIDTH,
        height: HEIGHT,
        data,
    }
}

/// `image` as a packed RGB buffer (rows padded as GStreamer lays them out).
fn rgb_buffer(image: &RgbImage) -> (gst::Buffer, gst_video::VideoInfo) {
    let info = gst_video::VideoInfo::builder(
        gst_video::VideoFormat::Rgb,
        image.width as u32,
        image.height as u32,
    )
    .build()
    .unwrap();
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    {
        let mut frame =
            gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.get_mut().unwrap(), &info)
                .unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let plane = frame.plane_data_mut(0).unwrap();
        for y in 0..image.height {
            let row = &image.data[y * image.width * 3..(y + 1) * image.width * 3];
            plane[y * stride..y * stride + row.len()].copy_from_slice(row);
        }
    }
    (buffer, info)
}

/// `frame` converted to `format` at the same size by GStreamer's converter.
fn convert(
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    format: gst_video::VideoFormat,
) -> (gst::Buffer, gst_video::VideoInfo) {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).unwrap();
    convert_frame(&frame, format)
}

fn scaled_region(
    scaler: &mut FrameScaler,
    pre: &Preprocess,
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    region: &RegionBox,
) -> Vec<f32> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).unwrap();
    let image = scaler
        .scale_region(&frame, Some(region), Vec::new())
        .unwrap();
    let mut out = vec![0f32; pre.output_len()];
    pre.run_cropped(&image, &mut out).unwrap();
    out
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    effistream_testkit::golden::max_abs_diff(a, b).0
}

#[test]
fn a_region_is_cut_at_full_resolution_then_eval_transformed() {
    let _glib = effistream_testkit::glib_log::check();
    gst::init().unwrap();
    let pre = Preprocess::for_variant(Variant::by_name("efficientnet_b1_pruned").unwrap());
    let region = RegionBox::new(&BOX).unwrap();
    let rect = region.pixels(WIDTH, HEIGHT);
    assert_eq!(
        rect,
        PixelRect {
            x: 1057,
            y: 217,
            width: 767,
            height: 755
        }
    );
    let image = picture(rect);
    let mut scaler = FrameScaler::new(&pre);

    // Packed RGB: the region's eval transform, within the rounding of the one-pass
    // resize (the bounds tests/video.rs holds RGB frames to).
    let (rgb, rgb_info) = rgb_buffer(&image);
    let want = pre.to_chw(&crop(&image, rect)).unwrap();
    let got = scaled_region(&mut scaler, &pre, &rgb, &rgb_info, &region);
    let (max, mean) = (max_abs_diff(&got, &want), mean_abs_diff(&got, &want));
    eprintln!("RGB region vs eval transform of the crop: max {max:.4} mean {mean:.5}");
    assert!(max < 0.1 && mean < 0.005, "RGB: max {max}, mean {mean}");

    // What the network would see had the frame been resized before the cut: the whole
    // frame's shorter side to resize_size, the region cut from that and transformed.
    // The checkerboard is gone: a mean difference several times the bounds below, so
    // they tell the two orders apart.
    let resized_first = {
        // The right-hand HEIGHT² square of the frame holds the region; resized alone it
        // is what a resize of the whole frame gives there (up to the frame's edge).
        let side = pre.resize_size;
        let square_left = WIDTH - HEIGHT;
        let square = crop(
            &image,
            PixelRect {
                x: square_left,
                y: 0,
                width: HEIGHT,
                height: HEIGHT,
            },
        );
        let small = Preprocess {
            input_size: side,
            resize_size: side,
            ..pre.clone()
        }
        .crop(&square)
        .unwrap();
        let to_small = |v: usize| v * side / HEIGHT;
        let small_rect = PixelRect {
            x: to_small(rect.x - square_left),
            y: to_small(rect.y),
            width: to_small(rect.width),
            height: to_small(rect.height),
        };
        pre.to_chw(&crop(&small, small_rect)).unwrap()
    };
    let (max_first, mean_first) = (
        max_abs_diff(&resized_first, &want),
        mean_abs_diff(&resized_first, &want),
    );
    eprintln!("resized before the cut vs the crop: max {max_first:.3} mean {mean_first:.4}");
    assert!(
        mean_first > 0.1,
        "the test picture does not tell the two orders apart: max {max_first}, mean {mean_first}"
    );

    // I420 and NV12 (chroma at half resolution, the region starting on odd pixels):
    // the eval transform of the crop of the frame converted to RGB by GStreamer, within
    // the bounds tests/video.rs holds video frames to against that path.
    let (i420, i420_info) = convert(&rgb, &rgb_info, gst_video::VideoFormat::I420);
    let (back, back_info) = convert(&i420, &i420_info, gst_video::VideoFormat::Rgb);
    let want_yuv = pre
        .to_chw(&crop(&packed_rgb(&back, &back_info), rect))
        .unwrap();
    let got_i420 = scaled_region(&mut scaler, &pre, &i420, &i420_info, &region);
    let (max, mean) = (
        max_abs_diff(&got_i420, &want_yuv),
        mean_abs_diff(&got_i420, &want_yuv),
    );
    eprintln!("I420 region vs eval transform of the crop: max {max:.4} mean {mean:.5}");
    assert!(max < 0.5 && mean < 0.03, "I420: max {max}, mean {mean}");
    let (nv12, nv12_info) = convert(&i420, &i420_info, gst_video::VideoFormat::Nv12);
    let got_nv12 = scaled_region(&mut scaler, &pre, &nv12, &nv12_info, &region);
    assert_eq!(
        max_abs_diff(&got_nv12, &got_i420),
        0.0,
        "NV12 and I420 regions differ"
    );

    // No region: the whole frame, as before.
    let frame =
        gst_video::VideoFrameRef::from_buffer_ref_readable(rgb.as_ref(), &rgb_info).unwrap();
    let whole = scaler.scale(&frame, Vec::new()).unwrap();
    let full = scaler
        .scale_region(
            &frame,
            Some(&RegionBox::new(&[0.0, 0.0, 1.0, 1.0]).unwrap()),
            Vec::new(),
        )
        .unwrap();
    assert_eq!(whole.data, full.data);
}

#[test]
fn region_pixels_round_to_the_nearest_pixel_and_stay_inside() {
    let b = RegionBox::new(&[0.0, 0.0, 1.0, 1.0]).unwrap();
    assert_eq!(
        b.pixels(641, 480),
        PixelRect {
            x: 0,
            y: 0,
            width: 641,
            height: 480
        }
    );
    // A sliver narrower than a pixel is still one pixel, inside the frame.
    let thin = RegionBox::new(&[0.9999, 0.5, 1.0, 0.5001]).unwrap();
    let r = thin.pixels(100, 100);
    assert!(r.width >= 1 && r.height >= 1 && r.x + r.width <= 100 && r.y + r.height <= 100);
}
