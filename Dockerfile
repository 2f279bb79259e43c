# tidings, built once and shipped small. Two stages:
#   build   — the Rust toolchain compiles the `tidings` binary (release; scripts/docker/build.sh,
#             which CI runs too, in the dev profile, so these steps are checked without Docker);
#   runtime — debian-slim with the binary, CA certificates and the examples; it needs only
#             libc, libm, libgcc_s and OpenSSL 3 (Kafka over TLS; scripts/docker/check-runtime.sh
#             checks that with ldd).
# A cold release build takes 15–28 minutes on 2 cores (14 min 36 s and 27 min 37 s measured on
# two machines; DataFusion at opt-level 1; 6–9 without SQL,
# TIDINGS_SQL=0 below); BuildKit's cache mounts
# keep the registry and target directory between builds.
#
#   docker build -t tidings .
#   docker run --rm tidings --help

FROM rust:1.95-bookworm AS build
# 0: the job-only binary (`docker build --build-arg TIDINGS_SQL=0`), for machines that only run
# jobs: no `tidings sql`, `report` or console, and about half the build time.
ARG TIDINGS_SQL=1
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/docker/build.sh /out

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tidings /usr/local/bin/tidings
COPY --from=build /src/examples /app/examples
COPY --from=build /src/scripts/docker/check-runtime.sh /usr/local/bin/check-runtime.sh
RUN check-runtime.sh /usr/local/bin/tidings
WORKDIR /app
# serve's REST API; a job's admin API (examples/live: 9464).
EXPOSE 7070 9464
ENTRYPOINT ["tidings"]
CMD ["serve", "--bind", "0.0.0.0:7070", "--state-dir", "/var/lib/tidings", "--token", "change-me"]
