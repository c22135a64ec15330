//! GStreamer pipeline descriptions for each kind of camera source.
//!
//! Every pipeline ends in the same tail: drop frames above the camera's rate (`videorate
//! drop-only`), pace non-live sources to the clock (`clocksync`), convert to a format
//! [`crate::video::FrameScaler`] reads (a passthrough for the I420/NV12 of decoders and
//! for RGB), and an `appsink` that holds one buffer and drops older ones,
//! unsynchronised. The frame stays at the camera's size: the source scales it to the
//! network input itself. URLs,
//! paths and credentials are set as properties after parsing, never written into the
//! description (no quoting problems, and the description is safe to log).

use super::SourceSpec;

/// Name of the element whose `uri`/`location`/`device` property gets the source address.
pub const SOURCE_NAME: &str = "src";
/// Name of the appsink.
pub const SINK_NAME: &str = "sink";
/// Name of the `videoconvert`: frames the engine has no room for are dropped at its
/// sink pad, before they cost a conversion.
pub const CONVERT_NAME: &str = "effistream-convert";
/// Name of the `videorate`: every frame out of the decoder passes its sink pad.
pub const RATE_NAME: &str = "effistream-rate";

/// The launch description of a camera pipeline at `fps` frames per second.
pub fn describe(spec: &SourceSpec, fps: f64) -> String {
    let decode = "decodebin caps=\"video/x-raw(ANY)\" expose-all-streams=false";
    let uridecode = format!(
        "uridecodebin name={SOURCE_NAME} caps=\"video/x-raw(ANY)\" expose-all-streams=false"
    );
    let (head, live) = match spec {
        // rtspsrc is configured through uridecodebin's source-setup signal.
        SourceSpec::Rtsp(_) => (uridecode, true),
        SourceSpec::Http(_) | SourceSpec::File { .. } => (uridecode, false),
        SourceSpec::V4l2(_) => (format!("v4l2src name={SOURCE_NAME} ! {decode}"), true),
        SourceSpec::Test {
            pattern,
            width,
            height,
        } => (
            format!(
                "videotestsrc name={SOURCE_NAME} is-live=true pattern={pattern} ! \
                 video/x-raw,width={width},height={height},framerate={}",
                fraction(fps)
            ),
            true,
        ),
        SourceSpec::Pipeline(fragment) => (format!("{fragment} ! {decode}"), false),
    };
    let pace = if live { "" } else { " ! clocksync" };
    format!(
        "{head} ! videorate name={RATE_NAME} drop-only=true ! video/x-raw,framerate={}{pace} ! \
         videoconvert name={CONVERT_NAME} ! video/x-raw,format={} ! \
         appsink name={SINK_NAME} max-buffers=1 drop=true sync=false",
        fraction(fps),
        crate::video::caps_formats()
    )
}

/// `fps` as a GStreamer fraction string, e.g. `5/1`, `25/2`.
fn fraction(fps: f64) -> String {
    let f = gst::Fraction::approximate_f64(fps).unwrap_or_else(|| gst::Fraction::new(5, 1));
    format!("{}/{}", f.numer(), f.denom())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_source_is_live_at_the_camera_rate_and_ends_in_the_appsink() {
        let spec = SourceSpec::Test {
            pattern: "ball".into(),
            width: 320,
            height: 240,
        };
        let d = describe(&spec, 12.5);
        assert!(
            d.starts_with("videotestsrc name=src is-live=true pattern=ball"),
            "{d}"
        );
        assert!(d.contains("framerate=25/2"), "{d}");
        assert!(!d.contains("clocksync"), "{d}");
        assert!(
            d.ends_with("appsink name=sink max-buffers=1 drop=true sync=false"),
            "{d}"
        );
    }

    #[test]
    fn rtsp_url_and_credentials_stay_out_of_the_description() {
        let spec = SourceSpec::Rtsp("rtsp://user:secret@cam/stream".into());
        let d = describe(&spec, 5.0);
        assert!(!d.contains("secret") && !d.contains("rtsp://"), "{d}");
        assert!(d.starts_with("uridecodebin name=src"), "{d}");
    }

    #[test]
    fn files_are_paced_to_the_clock() {
        let spec = SourceSpec::File {
            uri: "file:///tmp/a.mp4".into(),
            path: "/tmp/a.mp4".into(),
        };
        assert!(describe(&spec, 5.0).contains("! clocksync !"));
    }
}
