# The Secrets Store CSI node plugin, with the layout `bash scripts/images.sh` writes without a
# daemon (scripts/lib/rootfs.sh): the `dist` binary (fat LTO, size-optimised, glibc static) as /usr/local/bin/secrets-store-csi-driver,
# exactly the shared libraries it loads (none when static), a CA bundle, /etc/nsswitch.conf, /etc/passwd and /etc/group.
# No mount tools: the driver calls mount(2) itself, which is also why it runs as root (the chart
# runs it privileged). Build from the repository root:
#   docker build -f docker/driver.Dockerfile --build-arg REVISION="$(git rev-parse HEAD)" \
#     -t ghcr.io/secrets-store-rs/secrets-store-csi-driver:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN triple=$(rustc -vV | sed -n 's/^host: //p') \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile dist --target "$triple" --locked --bin secrets-store-csi-driver \
 && bash -c "source scripts/lib/rootfs.sh && rootfs_assemble target/$triple/dist/secrets-store-csi-driver secrets-store-csi-driver /rootfs"

FROM scratch
# VERSION is the workspace version (Cargo.toml); the images test checks that they agree.
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.opencontainers.image.title="secrets-store-csi-driver" \
      org.opencontainers.image.description="Secrets Store CSI Driver node plugin (Rust)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/secrets-store-rs/secrets-store-rs" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 0:0
ENTRYPOINT ["/usr/local/bin/secrets-store-csi-driver"]
