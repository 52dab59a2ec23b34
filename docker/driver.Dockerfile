# The Secrets Store CSI node plugin. Build from the repository root:
#   docker build -f docker/driver.Dockerfile -t secrets-store-csi-driver .
# The driver mounts tmpfs into pod volumes, so its DaemonSet runs it privileged (see the chart);
# the image itself adds nothing beyond the binary and the mount tools it calls.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin secrets-store-csi-driver

FROM debian:bookworm-slim
# util-linux provides mount/umount for environments where the driver falls back to them;
# ca-certificates for nothing secret-bearing, only the Kubernetes API's public CA chains.
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/secrets-store-csi-driver /usr/local/bin/secrets-store-csi-driver
ENTRYPOINT ["/usr/local/bin/secrets-store-csi-driver"]
