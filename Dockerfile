# syntax=docker/dockerfile:1
#
# One small image with the three binaries: oomlens-agent (the DaemonSet),
# oomlens-collector (the Deployment) and the oomlens CLI.
#
#   docker build -t oomlens:dev .
#
# Nothing is generated at build time beyond Cargo's own work: the protobuf
# code comes from protox (pure Rust, no protoc) and SQLite is bundled, so
# the build stage needs only a Rust toolchain and a C compiler.

# The toolchain CI tests with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo fetch --locked
# The agent without the embedded collector (`--standalone`, `demo`): the
# DaemonSet sends to the collector, and leaves SQLite and PostgreSQL out.
RUN cargo build --release --locked -p oomlens-agent --no-default-features --bins \
 && cargo build --release --locked -p oomlens-collector --bins \
 && mkdir -p /out/bin /out/data \
 && cp target/release/oomlens-agent target/release/oomlens-collector target/release/oomlens /out/bin/ \
 && /out/bin/oomlens-agent --version \
 && /out/bin/oomlens-collector --version \
 && /out/bin/oomlens --version

# glibc and libgcc only, no shell, no package manager; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# The collector's SQLite file lives here (a PVC in the cluster), writable by
# the nonroot user when nothing is mounted.
COPY --from=build --chown=65532:65532 /out/data /var/lib/oomlens
WORKDIR /var/lib/oomlens
USER 65532:65532
# glibc keeps freed large buffers in per-thread arenas; with these the
# collector's peak under its heaviest load stays near what its limits hold
# (docs/reliability.md).
ENV MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576
EXPOSE 7460 7461 7462
# The collector by default; the agent's DaemonSet sets its own command and
# runs as root (see deploy/ and docs/install.md for why).
ENTRYPOINT ["/usr/local/bin/oomlens-collector"]
CMD ["serve", "--listen", "0.0.0.0:7460", "--metrics-listen", "0.0.0.0:7461", "--database", "/var/lib/oomlens/oomlens.db"]
