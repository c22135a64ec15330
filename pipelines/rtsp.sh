#!/bin/sh
# An RTSP camera classified live and published over MQTT. A leaky queue keeps only the
# newest frame while the network is busy, so latency stays low when the camera sends more
# frames than the CPU classifies.
#
# Needs: the plugin, weights (see README.md), a broker at $BROKER, an RTSP camera
#        (credentials in the URL: rtsp://user:password@host/path).
# Run:   RTSP_URL=rtsp://192.168.1.20:554/stream1 CAMERA=front-door pipelines/rtsp.sh
# Variables: RTSP_URL (rtsp://127.0.0.1:8554/cam), BROKER (mqtt://127.0.0.1:1883),
#            CAMERA (rtsp), MODEL, WEIGHTS, NUM_BUFFERS (-1: until Ctrl-C).
set -eu
. "$(dirname "$0")/lib/defaults.sh"
exec gst-launch-1.0 -e \
    rtspsrc location="${RTSP_URL:-rtsp://127.0.0.1:8554/cam}" protocols=tcp latency=200 ! \
    decodebin ! videoconvert ! \
    queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 ! \
    identity eos-after="$eos_after" ! \
    effnetclassify model="$MODEL" weights="$WEIGHTS" camera="${CAMERA:-rtsp}" ! \
    effnetpublish server="$BROKER" ! \
    fakesink sync=false
