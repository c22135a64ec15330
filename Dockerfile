# The effistream daemon image: `effistream` on Debian 12 with the GStreamer runtime.
#
#   docker build -t effistream:0.1.0 .        (or: podman build -t effistream:0.1.0 .)
#   docker run --rm -p 9464:9464 -v ./cameras.toml:/etc/effistream/effistream.toml:ro \
#       -v effistream-weights:/weights:ro effistream:0.1.0 run --config /etc/effistream/effistream.toml
#
# scripts/build-image builds the same image from Debian's packages alone (mmdebstrap and
# buildah, no registry) and checks it under podman; docs/scaling.md, "The image", has the
# details (weights, the HTTP address, CPU limits).

# --- build: the release binary, with the Rust toolchain the project requires -----------
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin effistream \
    && install -D -m 0755 target/release/effistream /out/effistream

# --- runtime: Debian 12, the GStreamer plugins cameras need, a non-root user -------------
FROM docker.io/library/debian:bookworm-slim
# Keep this list equal to RUNTIME_PACKAGES in scripts/build-image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl \
        libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
        gstreamer1.0-plugins-bad gstreamer1.0-libav \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 effistream \
    && useradd --uid 10001 --gid 10001 --create-home \
        --home-dir /var/lib/effistream --shell /usr/sbin/nologin effistream \
    && mkdir -p /weights /etc/effistream
COPY --from=build /out/effistream /usr/local/bin/effistream
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/effistream
# Hub downloads (no --weights, no [model] weights) are cached here; mount a volume on it
# to keep them across restarts.
ENV HF_HOME=/var/lib/effistream/huggingface
EXPOSE 9464
# Liveness only: /healthz answers as soon as the HTTP server is up. The default
# http.listen is 127.0.0.1:9464; a configuration that moves the port sets
# EFFISTREAM_HTTP_PORT too (and may use it: listen = "0.0.0.0:${EFFISTREAM_HTTP_PORT}").
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${EFFISTREAM_HTTP_PORT:-9464}/healthz"
ENTRYPOINT ["effistream"]
CMD ["run"]
