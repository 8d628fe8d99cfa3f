# The gateway's image: `docker build .` (or `podman build .`) builds the binary from source
# in the `build` stage and copies it into a small Debian runtime that runs as a non-root user.
#
# Where the binary comes from: the `runtime` stage copies it from the stage named `binary`.
# A plain build makes `binary` from `build`; a build given a binary already made on the host
# replaces that stage with a folder holding `streamflight-gateway`, and then never needs the
# Rust image (.ci/run does this through scripts/image.sh):
#   cargo build --profile dist -p streamflight-gateway
#   mkdir -p /tmp/bin && cp target/dist/streamflight-gateway /tmp/bin/
#   podman build --target runtime --build-context binary=/tmp/bin .
# (a folder with the binary alone: target/dist whole would be read as the context). The `dist`
# profile is the release one with whole-program LTO (Cargo.toml).
#
# Base images, each a build argument: BASE for the runtime (CI makes one with mmdebstrap and
# imports it under this name: no image registry is reached there), RUST_IMAGE for the build.
# Both should be the same Debian release, so that the binary finds the C library it was
# linked against.
ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p streamflight-gateway \
 && install -D -m 0755 target/dist/streamflight-gateway /out/streamflight-gateway

# The binary alone: the runtime's one source for it (see above).
FROM scratch AS binary
COPY --from=build /out/streamflight-gateway /streamflight-gateway

FROM ${BASE} AS runtime
# curl runs the health check; ca-certificates are the system's roots for an https:// upstream
# or rediss:// store. The user owns nothing: the gateway writes no file.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 streamflight \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin streamflight
COPY --from=binary /streamflight-gateway /usr/local/bin/streamflight-gateway
USER 10001:10001
# Clients on 8080; /metrics, /healthz and /readyz on the admin port 9090. HEALTHCHECK_URL is
# what the health check asks: the one place to change should the admin port move.
ENV STREAMFLIGHT_LISTEN=0.0.0.0:8080 \
    STREAMFLIGHT_ADMIN_LISTEN=0.0.0.0:9090 \
    HEALTHCHECK_URL=http://127.0.0.1:9090/readyz
EXPOSE 8080 9090
# SIGTERM drains: open requests get --shutdown-grace (30 s by default) to finish; give a
# `docker stop` more than that (`--time 40`, compose's stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS --max-time 2 -o /dev/null "$HEALTHCHECK_URL" || exit 1
ENTRYPOINT ["/usr/local/bin/streamflight-gateway"]
