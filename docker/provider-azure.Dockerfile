# The Azure Key Vault provider. Build from the repository root:
#   docker build -f docker/provider-azure.Dockerfile -t secrets-store-provider-azure .
# Minimal runtime (distroless, no shell) running as a non-root user by default. The chart runs it
# as UID 0 with every capability dropped only because the providers hostPath folder the driver
# reads is root-owned; the process needs no privilege beyond creating its socket there.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin secrets-store-provider-azure

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/secrets-store-provider-azure /secrets-store-provider-azure
USER 65532:65532
ENTRYPOINT ["/secrets-store-provider-azure"]
