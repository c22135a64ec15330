#!/bin/sh
# A test pattern classified and published over MQTT.
#
# Needs: the plugin (cargo build --release --workspace), weights (see README.md), an MQTT
# broker at $BROKER.
# Run:   pipelines/testsrc.sh          and, elsewhere: mosquitto_sub -t 'effistream/#' -v
# Variables: BROKER (mqtt://127.0.0.1:1883), CAMERA (testsrc), PATTERN (ball),
#            MODEL, WEIGHTS, NUM_BUFFERS (-1: until Ctrl-C).
set -eu
. "$(dirname "$0")/lib/defaults.sh"
exec gst-launch-1.0 -e \
    videotestsrc is-live=true pattern="${PATTERN:-ball}" num-buffers="$NUM_BUFFERS" ! \
    video/x-raw,width=640,height=480,framerate=10/1 ! videoconvert ! \
    effnetclassify model="$MODEL" weights="$WEIGHTS" camera="${CAMERA:-testsrc}" ! \
    effnetpublish server="$BROKER" ! \
    fakesink
