#!/bin/sh
# A video file (any container and codec GStreamer decodes) classified frame by frame, as
# fast as the CPU allows, and published over MQTT.
#
# Needs: the plugin, weights (see README.md), a broker at $BROKER, a video file
#        (scripts/demo makes target/demo/clip.avi of four photos).
# Run:   FILE=video.mp4 pipelines/file.sh
# Variables: FILE (target/demo/clip.avi), BROKER (mqtt://127.0.0.1:1883), CAMERA (file),
#            INTERVAL (1: every frame), MODEL, WEIGHTS, NUM_BUFFERS (-1: the whole file).
set -eu
. "$(dirname "$0")/lib/defaults.sh"
FILE=${FILE:-$root/target/demo/clip.avi}
exec gst-launch-1.0 -e \
    filesrc location="$FILE" ! decodebin ! videoconvert ! \
    identity eos-after="$eos_after" ! \
    effnetclassify model="$MODEL" weights="$WEIGHTS" camera="${CAMERA:-file}" \
        inference-interval="${INTERVAL:-1}" ! \
    effnetpublish server="$BROKER" ! \
    fakesink sync=false
