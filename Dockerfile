# syntax=docker/dockerfile:1
# mlserve on CPU: a drop-in for ghcr.io/immich-app/immich-machine-learning:<version>
# (same port, same /cache volume layout, same environment variables).
#
#   docker build -t mlserve .
#   docker run -p 127.0.0.1:3003:3003 -v model-cache:/cache mlserve
#
# deploy/docker-compose.yml replaces Immich's machine-learning service with
# it; docs/remote-gpu.md covers the CUDA (Dockerfile.cuda) and OpenVINO
# (Dockerfile.openvino) images.

# --- build --------------------------------------------------------------------
FROM golang:1.26.8-bookworm AS build
# OpenCV core+imgproc and the codecs' headers only (third_party/gocv): the
# binary links about 25 libraries, not OpenCV's whole tree.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopencv-core-dev libopencv-imgproc-dev libjpeg-dev libpng-dev libwebp-dev nodejs npm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party/gocv/go.mod third_party/gocv/
COPY third_party/onnxruntime_go/go.mod third_party/onnxruntime_go/
RUN go mod download
COPY . .
# ONNX Runtime 1.30 (CPU) from the pinned npm package, sha256-checked.
RUN scripts/setup.sh --no-apt --runtime
ARG VERSION=dev
RUN go build -trimpath -ldflags "-s -w -X github.com/mlserve/mlserve/config.Version=${VERSION}" -o /out/mlserve ./cmd/mlserve \
 && scripts/check-libs.sh /out/mlserve \
 && mkdir -p /out/lib \
 && cp .deps/onnxruntime/libonnxruntime.so.1 /out/lib/

# --- runtime ------------------------------------------------------------------
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libopencv-core406 libopencv-imgproc406 libjpeg62-turbo libpng16-16 libwebp7 tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /cache --no-create-home mlserve \
 && mkdir -p /cache \
 && chown mlserve:mlserve /cache
COPY --from=build /out/mlserve /usr/local/bin/mlserve
COPY --from=build /out/lib/ /usr/local/lib/mlserve/
ENV MLSERVE_ORT_LIBRARY=/usr/local/lib/mlserve/libonnxruntime.so.1 \
    MLSERVE_PROVIDERS=CPU \
    MACHINE_LEARNING_CACHE_FOLDER=/cache \
    IMMICH_HOST=0.0.0.0 \
    IMMICH_PORT=3003
USER mlserve
VOLUME /cache
EXPOSE 3003
# GET /ping as Immich's healthcheck.py does, with bash alone (no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${IMMICH_PORT:-3003} && printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]
ENTRYPOINT ["tini", "--"]
CMD ["mlserve", "serve"]
