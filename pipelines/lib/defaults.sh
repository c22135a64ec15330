# Sourced by the pipelines in ..: the defaults of the variables they share, and the
# plugin's location. Not a pipeline itself.
root=$(cd "$(dirname "$0")/.." && pwd)

# The network, and its weights file. Empty WEIGHTS makes the element look in
# $EFFISTREAM_WEIGHTS_DIR/<model>.{safetensors,pth,bin}, the Hugging Face hub cache, then
# the hub. Unset, Lite0 takes the file scripts/fetch-test-assets fetches.
: "${MODEL:=tf_efficientnet_lite0}"
if [ -z "${WEIGHTS+set}" ]; then
    WEIGHTS=
    if [ "$MODEL" = tf_efficientnet_lite0 ] && [ -z "${EFFISTREAM_WEIGHTS_DIR:-}" ]; then
        WEIGHTS=$root/target/test-assets/lite0.pth
    fi
fi
: "${BROKER:=mqtt://127.0.0.1:1883}"
# Frames before the pipeline ends by itself; -1: never (Ctrl-C sends EOS).
: "${NUM_BUFFERS:=-1}"
# `cargo build --release --workspace` puts libgsteffistream.so there.
: "${GST_PLUGIN_PATH:=$root/target/release}"
export GST_PLUGIN_PATH
# For `identity eos-after=`, which ends the stream on the Nth buffer instead of passing it.
eos_after=-1
if [ "$NUM_BUFFERS" -ge 0 ]; then
    eos_after=$((NUM_BUFFERS + 1))
fi
