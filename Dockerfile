# Meridian: the `meridian` binary (edge, worker, check, keygen, token) in a distroless image.
#
#   docker build -t meridian:dev .
#   docker run --rm meridian:dev check --config /etc/meridian/edge.toml
#
# Two stages. The builder compiles with the Debian bookworm toolchain image. The binary is
# linked dynamically against glibc (libc, libm, libgcc_s for unwinding; ring's and quinn's
# system calls go through libc), so the runtime is distroless/cc — bookworm's glibc 2.36, the
# one the builder linked against — not distroless/static. The runtime image has no shell and
# no package manager, and runs as uid/gid 65532 ("nonroot").
# Deploy manifests: deploy/kubernetes/ and deploy/helm/meridian/.

# ---------------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependency layer. Copy only the workspace manifests and the lock file, put empty stand-ins
# where the real targets go (each crate's lib/main and the [[bench]] files the manifests
# name: cargo loads every workspace member even with -p), and build. That compiles every
# third-party crate into a layer that stays cached until Cargo.toml or Cargo.lock change.
# Then `cargo clean -p` drops the stand-ins' own artifacts, so the real sources copied below
# are always rebuilt, whatever their timestamps.
# A new workspace member needs its manifest (and its stand-ins) added here.
COPY Cargo.toml Cargo.lock ./
COPY protocol/Cargo.toml protocol/
COPY fabric/Cargo.toml fabric/
COPY edge-node/Cargo.toml edge-node/
COPY bench-harness/Cargo.toml bench-harness/
COPY tests/Cargo.toml tests/
RUN set -eux; \
    for lib in protocol fabric tests; do mkdir -p "$lib/src"; : > "$lib/src/lib.rs"; done; \
    for bin in edge-node bench-harness; do mkdir -p "$bin/src"; echo 'fn main() {}' > "$bin/src/main.rs"; done; \
    mkdir -p protocol/benches fabric/benches; \
    for bench in protocol/benches/codec fabric/benches/route fabric/benches/relay; do \
        echo 'fn main() {}' > "$bench.rs"; \
    done; \
    cargo build --release --locked -p meridian-edge; \
    cargo clean --release -p meridian-protocol -p meridian-fabric -p meridian-edge

# The real sources (see .dockerignore for what stays out of the context).
COPY . .
RUN cargo build --release --locked -p meridian-edge \
    && install -m 0755 target/release/meridian /usr/local/bin/meridian \
    && /usr/local/bin/meridian --version

# ---------------------------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="meridian" \
      org.opencontainers.image.description="Meridian: QUIC routing fabric for LLM inference (edge, worker, check)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/meridian" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /usr/local/bin/meridian /usr/local/bin/meridian

# glibc raises its mmap threshold after the first large buffers are freed, and later 1 MiB
# request buffers then come from the heap and are never returned to the OS (~97 MB kept after
# a burst). A fixed threshold keeps large buffers mmap'd, so RSS falls back after load
# (README "Hostile input and memory").
ENV MALLOC_MMAP_THRESHOLD_=131072

# 8443/udp: QUIC (meridian/1 and HTTP/3); 8443/tcp: HTTP/1.1 and HTTP/2 front door;
# 9090/tcp: edge admin (/metrics, /healthz, /readyz); 5433/udp: worker QUIC listener;
# 9091/tcp: worker health listener (/healthz, /readyz).
EXPOSE 8443/udp 8443/tcp 9090/tcp 5433/udp 9091/tcp

# distroless's nonroot:nonroot, written numerically: a kubelet enforcing runAsNonRoot can
# only verify a numeric user (a named one fails with "non-numeric user ... cannot verify").
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meridian"]
CMD ["--help"]
