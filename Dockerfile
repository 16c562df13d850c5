# dbmazz container image: the release binary on Debian 12 slim, run as a non-root user.
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t dbmazz .
#   (podman: add --format docker, or the OCI format drops the HEALTHCHECK)
#   docker run --rm -e DATABASE_URL=... -e TABLES=... -e STARROCKS_URL=... dbmazz
#
# The base images are build arguments so that a mirror, or a locally built base on a machine
# without registry access, can stand in for them (see README, "Deploying").
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The whole workspace: Cargo.toml names tools/starrocks-double and the bench and test targets,
# which cargo reads even when it builds only the daemon. .dockerignore keeps target/ and .git out.
COPY . .
# protoc comes from the protoc-bin-vendored build dependency, curl is built from source with
# rustls (curl's static-curl feature, so the image's own libcurl-dev is never linked): nothing
# beyond the Rust image is needed. The release profile is fat LTO, one codegen unit;
# its line tables are stripped (symbols stay, so a backtrace still names the functions).
# --build-arg GIT_COMMIT=$(git rev-parse --short=12 HEAD): .git is not copied, so dbmazz
# --version names the commit only when it is given here.
ARG GIT_COMMIT=unknown
RUN DBMAZZ_GIT_COMMIT="$GIT_COMMIT" cargo build --release --locked --bin dbmazz \
 && cp target/release/dbmazz /usr/local/bin/dbmazz \
 && strip --strip-debug /usr/local/bin/dbmazz

FROM ${RUNTIME_IMAGE}
# ca-certificates: the system trust store for https:// STARROCKS_URL and sslmode=verify-*.
# The binary links only libc, libm, libgcc_s and libz, all in the slim image. The trust store is
# taken at the version current when the image is built (hence no pin).
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && groupadd --system --gid 10001 dbmazz \
 && useradd --system --uid 10001 --gid dbmazz --home-dir /var/lib/dbmazz --shell /usr/sbin/nologin dbmazz \
 && install -d -o dbmazz -g dbmazz -m 0700 /var/lib/dbmazz
COPY --from=build /usr/local/bin/dbmazz /usr/local/bin/dbmazz

# Listen beyond loopback inside the container; set GRPC_TOKEN (or GRPC_TOKEN_FILE) as well, as
# dbmazz warns without one. Schema-provisioning uploads and the spill of large streamed
# transactions go to the work directory, not /tmp, so the root filesystem can be read-only with
# one volume at /var/lib/dbmazz.
ENV GRPC_BIND=0.0.0.0 \
    GRPC_PORT=50051 \
    METRICS_BIND=0.0.0.0 \
    METRICS_PORT=9187 \
    SCHEMA_TMP_PATH=/var/lib/dbmazz/schemas \
    SPILL_DIR=/var/lib/dbmazz/spill
USER 10001:10001
WORKDIR /var/lib/dbmazz
VOLUME ["/var/lib/dbmazz"]
EXPOSE 50051 9187

# `dbmazz health` asks the local gRPC Health service (GRPC_PORT, with GRPC_TOKEN or
# GRPC_TOKEN_FILE when set) and exits 0 only while it answers SERVING.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["dbmazz", "health"]

# SIGTERM drains, checkpoints and exits within SHUTDOWN_TIMEOUT_MS (25 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["dbmazz"]
