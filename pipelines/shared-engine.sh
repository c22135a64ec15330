#!/bin/sh
# Two streams sharing one engine: both effnetclassify elements name engine=shared, so one
# model serves them and their frames are inferred together in batches of 2 (batch_size in
# the payloads). Each stream publishes under its own camera id through one MQTT
# connection.
#
# Needs: the plugin, weights (see README.md), a broker at $BROKER.
# Run:   pipelines/shared-engine.sh      and: mosquitto_sub -t 'effistream/+/classification' -v
# Variables: BROKER (mqtt://127.0.0.1:1883), PATTERN_A (ball), PATTERN_B (smpte),
#            MODEL, WEIGHTS, NUM_BUFFERS (-1: until Ctrl-C), per stream.
set -eu
. "$(dirname "$0")/lib/defaults.sh"
exec gst-launch-1.0 -e \
    videotestsrc pattern="${PATTERN_A:-ball}" num-buffers="$NUM_BUFFERS" ! \
    video/x-raw,width=640,height=480 ! videoconvert ! queue ! \
    effnetclassify name=classify-a engine=shared batch-size=2 model="$MODEL" \
        weights="$WEIGHTS" camera=stream-a ! \
    effnetpublish server="$BROKER" ! fakesink sync=false \
    videotestsrc pattern="${PATTERN_B:-smpte}" num-buffers="$NUM_BUFFERS" ! \
    video/x-raw,width=640,height=480 ! videoconvert ! queue ! \
    effnetclassify name=classify-b engine=shared batch-size=2 model="$MODEL" \
        weights="$WEIGHTS" camera=stream-b ! \
    effnetpublish server="$BROKER" ! fakesink sync=false
