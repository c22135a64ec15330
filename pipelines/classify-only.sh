#!/bin/sh
# Classification without MQTT: gst-launch-1.0 -m prints each effnet-classification
# element message (camera, seq, pts, model, batch-size, inference-ms, class-ids, labels,
# scores). With the default photo the top class is espresso.
#
# Needs: the plugin, weights (see README.md); the default IMAGE comes with
#        scripts/fetch-test-assets.
# Run:   pipelines/classify-only.sh      or: IMAGE=cat.jpg pipelines/classify-only.sh
# Variables: IMAGE (target/test-assets/photos/coffee.png; any JPEG or PNG), TOP_K (3),
#            MODEL, WEIGHTS, NUM_BUFFERS (5 frames of the picture).
set -eu
. "$(dirname "$0")/lib/defaults.sh"
[ "$NUM_BUFFERS" = -1 ] && NUM_BUFFERS=5
exec gst-launch-1.0 -m \
    filesrc location="${IMAGE:-$root/target/test-assets/photos/coffee.png}" ! decodebin ! \
    imagefreeze num-buffers="$NUM_BUFFERS" ! videoconvert ! \
    effnetclassify model="$MODEL" weights="$WEIGHTS" camera=image top-k="${TOP_K:-3}" ! \
    fakesink
