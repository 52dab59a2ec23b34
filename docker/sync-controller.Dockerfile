# The Secrets Store Sync Controller, with the layout `bash scripts/images.sh` writes without a daemon
# (scripts/lib/rootfs.sh): the `dist` binary (fat LTO, size-optimised, glibc static) as /usr/local/bin/secrets-store-sync-controller,
# exactly the shared libraries it loads (none when static), a CA bundle, /etc/nsswitch.conf, /etc/passwd and
# /etc/group; no shell. It runs as non-root (65532), as the chart runs it (syncController.enabled).
# Build from the repository root:
#   docker build -f docker/sync-controller.Dockerfile --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/secrets-store-rs/secrets-store-sync-controller:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN triple=$(rustc -vV | sed -n 's/^host: //p') \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist --target "$triple" --locked --bin secrets-store-sync-controller \
 && bash -c "source scripts/lib/rootfs.sh && rootfs_assemble target/$triple/dist/secrets-store-sync-controller secrets-store-sync-controller /rootfs"

FROM scratch
# VERSION is the workspace version (Cargo.toml); the images test checks that they agree.
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.opencontainers.image.title="secrets-store-sync-controller" \
      org.opencontainers.image.description="Secrets Store Sync Controller: SecretSync objects to Kubernetes Secrets through a provider (Rust)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/secrets-store-rs/secrets-store-rs" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/secrets-store-sync-controller"]
