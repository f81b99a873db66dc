# syntax=docker/dockerfile:1.7
#
# FlexGate container image: one static-ish Rust binary that serves
#   8080  the proxy
#   8081  the admin API, /health/live, /health/ready and (later) the built admin UI
#   9090  Prometheus metrics (/metrics)
# No nginx, no sidecar process. Build from the repository root:
#
#   docker buildx build -t flexgate:dev .
#   docker run --rm -p 8080:8080 -p 8081:8081 -p 9090:9090 flexgate:dev
#
# Stages: rust (binary + Wasm plugins) | ui-src + ui (admin UI, optional until admin-ui/ exists) | runtime.
# Needs BuildKit (default in Docker 23+ and buildx) for the cache and bind mounts.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------------
# 1. Rust: the `flexgate` binary and the first-party Wasm plugins (wasm32-wasip2 components).
# ---------------------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS rust
RUN rustup target add wasm32-wasip2
WORKDIR /src
# Only the Cargo workspace's inputs, so edits to docs, infra/ or admin-ui/ do not rebuild the binary.
# Add new top-level build inputs (.cargo/, rust-toolchain.toml, ...) here.
COPY Cargo.toml Cargo.lock ./
# [env] for the build: jemalloc's settings (return freed memory after ~1 s).
COPY .cargo .cargo
COPY host host
COPY sdk sdk
COPY plugins plugins
COPY wit wit
# The cache mounts keep the crates.io registry and the target dirs between builds on one builder;
# the results are copied out to /out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    bash plugins/build.sh; \
    mkdir -p /out/plugins; \
    for f in plugins/dist/*.wasm; do \
        case "${f##*/}" in fixture-*) ;; *) cp "$f" /out/plugins/ ;; esac; \
    done; \
    cargo build --release -p flexgate --locked; \
    install -D -m 0755 target/release/flexgate /out/flexgate; \
    /out/flexgate --version

# ---------------------------------------------------------------------------------------------------
# 2. Admin UI (React). Guarded: until admin-ui/package.json exists this produces an empty dist/.
#    ui-src copies admin-ui/ out of the build context if it is there (a plain COPY would fail when the
#    folder is absent); its output only changes when admin-ui/ does, so `npm ci` stays cached.
# ---------------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS ui-src
RUN --mount=type=bind,target=/ctx \
    mkdir -p /ui && if [ -d /ctx/admin-ui ]; then cp -a /ctx/admin-ui/. /ui/; fi

FROM ${NODE_IMAGE} AS ui
WORKDIR /ui
COPY --from=ui-src /ui/ ./
RUN --mount=type=cache,target=/root/.npm \
    set -eux; \
    if [ -f package.json ]; then \
        npm ci --no-audit --no-fund && npm run build; \
    else \
        echo "NOTE: admin-ui/package.json not present yet: the image ships without the admin UI"; \
    fi; \
    mkdir -p dist

# ---------------------------------------------------------------------------------------------------
# 3. Runtime: Debian slim (glibc, CA certificates, bash for the HEALTHCHECK), non-root.
# ---------------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="flexgate" \
      org.opencontainers.image.description="WebAssembly-extensible edge API gateway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ca-certificates: TLS to upstreams and rediss://. Nothing else is installed (tracking Debian's
# security updates matters more here than pinning a version).
# hadolint ignore=DL3008
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 flexgate; \
    useradd --system --uid 10001 --gid flexgate --home-dir /var/lib/flexgate --no-create-home \
            --shell /usr/sbin/nologin flexgate; \
    install -d -o flexgate -g flexgate -m 0750 /var/lib/flexgate; \
    install -d -m 0755 /etc/flexgate /usr/lib/flexgate/plugins /usr/share/flexgate/admin-ui

COPY --from=rust /out/flexgate /usr/local/bin/flexgate
# First-party plugins (test fixtures left out): `source: /usr/lib/flexgate/plugins/<name>.wasm`.
COPY --from=rust /out/plugins/ /usr/lib/flexgate/plugins/
COPY --from=ui /ui/dist/ /usr/share/flexgate/admin-ui/
# Default config (0.0.0.0 listeners); compose and Kubernetes mount their own over it.
COPY infra/config/flexgate.container.yaml /etc/flexgate/flexgate.yaml

USER 10001:10001
WORKDIR /var/lib/flexgate
EXPOSE 8080 8081 9090

# SIGTERM drains in-flight requests for `server.grace_period` (default 30s), then exits 0.
STOPSIGNAL SIGTERM

# The image has no curl; bash's /dev/tcp does one HTTP/1.0 request to the admin listener (loopback
# works whether admin.listen is 0.0.0.0 or 127.0.0.1). Kubernetes ignores this and uses its own probes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8081 && printf 'GET /health/ready HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["flexgate"]
CMD ["serve", "--config", "/etc/flexgate/flexgate.yaml"]
