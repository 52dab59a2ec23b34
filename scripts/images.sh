#!/usr/bin/env bash
# Builds the project's container images as OCI image archives, without a container daemon:
#
#   target/images/secrets-store-csi-driver.tar      ghcr.io/secrets-store-rs/secrets-store-csi-driver:<version>
#   target/images/secrets-store-provider-azure.tar  ghcr.io/secrets-store-rs/secrets-store-provider-azure:<version>
#   target/images/keyvault-emulator.tar             ghcr.io/secrets-store-rs/keyvault-emulator:<version>
#   target/images/secrets-store-sync-controller.tar ghcr.io/secrets-store-rs/secrets-store-sync-controller:<version>
#
# <version> is the workspace version, the charts' default tag. Each image is one layer: the
# binary built with `--profile dist` (fat LTO, optimised for size) and linked statically on glibc
# targets (`-C target-feature=+crt-static`, into target/<host triple>/dist/), the driver and the
# provider relinked with the functions they run at start (and the provider's mount path) placed
# first (callgrind profiles taken here; needs valgrind), as /usr/local/bin/<name> (the entrypoint), the shared libraries it loads if any (none for a static
# build; for a dynamic one its loader, libc... as ldd resolves them on this machine), this
# machine's CA bundle, /etc/nsswitch.conf (`hosts: files dns`), /etc/passwd and /etc/group with root and
# nonroot (65532), and /tmp. The driver runs as root (it calls mount(2)); the provider and the
# emulator run as 65532. Labels: org.opencontainers.image.{title,version,revision,source,licenses}.
#
#   bash scripts/images.sh            build what changed (a second run with nothing changed only
#                                     runs cargo's up-to-date check and compares hashes)
#   bash scripts/images.sh --force    rebuild the archives even when the stamp matches
#
# Import into containerd:  ctr -n k8s.io images import target/images/secrets-store-csi-driver.tar
# Push to a registry:      skopeo copy oci-archive:target/images/secrets-store-csi-driver.tar \
#                            docker://REGISTRY/secrets-store-csi-driver:TAG
# Environment: SSCSI_IMAGE_REPOSITORY (default ghcr.io/secrets-store-rs), SSCSI_IMAGE_SOURCE (the
# source label), CARGO_TARGET_DIR (as cargo reads it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib/oci.sh
source "$root/scripts/lib/oci.sh"
# shellcheck source=scripts/lib/rootfs.sh
source "$root/scripts/lib/rootfs.sh"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
  --force) force=1 ;;
  -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

repository=${SSCSI_IMAGE_REPOSITORY:-ghcr.io/secrets-store-rs}
source_url=${SSCSI_IMAGE_SOURCE:-https://github.com/secrets-store-rs/secrets-store-rs}
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=$target/images
ca_bundle=/etc/ssl/certs/ca-certificates.crt

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[[ -n $version ]] || die "no version in [workspace.package] of Cargo.toml"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  revision+=-dirty
fi
[[ -f $ca_bundle ]] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"
command -v ldd >/dev/null || die "ldd is required (Debian package libc-bin)"

# name user description
images=(
  "secrets-store-csi-driver 0:0 Secrets Store CSI Driver node plugin (Rust)"
  "secrets-store-provider-azure 65532:65532 Azure Key Vault provider for the Secrets Store CSI Driver (Rust)"
  "keyvault-emulator 65532:65532 Local Key Vault, Entra ID and IMDS emulator for trying and testing mounts"
  "secrets-store-sync-controller 65532:65532 Secrets Store Sync Controller: SecretSync objects to Kubernetes Secrets through a provider (Rust)"
)

start=$(date +%s)
bins=()
for spec in "${images[@]}"; do bins+=(--bin "${spec%% *}"); done
# Static on glibc (issue 15: no 2 MiB of shared libc/libm/loader pages per process; glibc >= 2.34
# has its `files` and `dns` name services inside libc, so `hosts: files dns` needs no dlopen).
# `--target` keeps the flag off build scripts and proc macros, which must stay dynamic.
triple=$(rustc -vV | sed -n 's/^host: //p')
[[ -n $triple ]] || die "rustc -vV names no host triple"
rustflags=${RUSTFLAGS:-}
[[ $triple == *-linux-gnu ]] && rustflags+="${rustflags:+ }-C target-feature=+crt-static"
# Start-up code first (issue 15): an idle daemon's RSS is mostly the code pages it touched, and
# the kernel maps 64 KiB around each fault, so functions that run at start spread over the whole
# text keep most of it resident. lld (rustc's default linker here) places the functions named in
# $order first, in that order; the list is what callgrind saw the two daemons run while starting,
# written after a build and applied by relinking them (their names carry hashes that change with
# the code, so the list is made here, never committed). Unknown names are ignored: a stale list
# only orders less.
mkdir -p "$out"
order=$out/startup-functions.txt
[[ -f $order ]] || : >"$order"
rustflags+=" -C link-arg=-Wl,--symbol-ordering-file=$order -C link-arg=-Wl,--no-warn-symbol-ordering"
# build [EXTRA_ARGS...]: the images' binaries (and EXTRA_ARGS, e.g. more --bin).
build() {
  log "RUSTFLAGS='$rustflags' cargo build --profile dist --target $triple --locked ${bins[*]} $*"
  RUSTFLAGS=$rustflags cargo build --profile dist --target "$triple" --locked "${bins[@]}" "$@"
}
# The CLI drives the provider's mounts while callgrind profiles it (below); not an image, so
# not relinked with the order.
if command -v valgrind >/dev/null && [[ $(id -u) == 0 ]]; then
  build --bin secrets-store
else
  build
fi

# functions_of CALLGRIND_FILE: the function names it recorded (then removes the file).
functions_of() {
  grep -ohE '^c?fn=\([0-9]+\) .*' "$1" | sed -E 's/^c?fn=\([0-9]+\) //' | grep -v '^(below\|^0x'
  rm -f "$1"
}

# profile_startup NAME ARGS...: the functions NAME runs in its first seconds, first call first.
profile_startup() {
  local name=$1 calls
  shift
  calls=$(mktemp "$out/callgrind.XXXXXX")
  # SIGTERM after 8 s: the daemon drains and exits, and callgrind writes its counts.
  timeout -s TERM 8 valgrind --tool=callgrind --demangle=no --callgrind-out-file="$calls" \
    "$target/$triple/dist/$name" "$@" >/dev/null 2>&1 || true
  functions_of "$calls"
}

# profile_provider_mounts SCRATCH: the functions the provider runs while starting and then serving
# mounts (a secret, an RSA key, RSA and EC certificates as cert and as secret, so PFX to PEM;
# managed and pod identity; the first mounts cold, the next ones from its cache), driven by
# `secrets-store mount --provider-dir` against keyvault-emulator. A node's provider spends its life in these functions: placed right
# after the start-up ones, a load touches a few code pages instead of most of the text (issue 15:
# peak RSS under 10 x 64 mounts 9.9 -> 7.0 MiB). Runs in mount and network namespaces of its own
# (loopback only, the emulator's default ports, a private /etc/hosts naming the vault), bounded by
# timeouts; needs root (unshare).
profile_provider_mounts() {
  local scratch=$1 dist=$target/$triple/dist calls tenant=72f988bf-86f1-41af-91ab-2d7cd011db47
  local identity=11111111-1111-1111-1111-111111111111
  calls=$(mktemp "$out/callgrind.XXXXXX")
  mkdir -p "$scratch/providers"
  printf '127.0.0.1 localhost\n127.0.0.1 profile.vault.test\n' >"$scratch/hosts"
  cat >"$scratch/seed.yaml" <<SEED
tenant: $tenant
vaults:
  - name: profile
    access: [$identity]
    secrets: [{ name: s, value: profile-value }]
    keys: [{ name: k, kty: RSA, key_size: 2048 }]
    certificates:
      - { name: crsa, generate: { subject: CN=profile, kty: RSA, key_size: 2048 } }
      - { name: cec, generate: { subject: CN=profile, kty: EC, crv: P-256 } }
identities:
  managed_identities:
    - { client_id: $identity, default: true }
  pod_identities:
    - { namespace: default, pod: secrets-store-mount, client_id: $identity }
SEED
  printf '%s\n' '{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://127.0.0.1:8443/","keyVaultEndpoint":"https://vault.test:8443","keyVaultDNSSuffix":"vault.test:8443"}' \
    >"$scratch/cloud.json"
  cat >"$scratch/class.yaml" <<CLASS
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: { name: profile, namespace: default }
spec:
  provider: azure
  parameters:
    keyvaultName: profile
    tenantId: $tenant
    cloudName: AzureStackCloud
    cloudEnvFileName: $scratch/cloud.json
    useVMManagedIdentity: "true"
    objects: |
      array:
        - |
          objectName: s
          objectType: secret
        - |
          objectName: k
          objectType: key
        - |
          objectName: crsa
          objectType: cert
        - |
          objectName: crsa
          objectType: secret
          objectAlias: crsa.pem
        - |
          objectName: cec
          objectType: secret
CLASS
  # shellcheck disable=SC2016 # the inner shell expands these
  timeout -s KILL 600 unshare --mount --net --propagation private -- bash -c '
    set -euo pipefail
    scratch=$1 dist=$2 calls=$3
    ip link set lo up
    mount --bind "$scratch/hosts" /etc/hosts
    "$dist/keyvault-emulator" --seed "$scratch/seed.yaml" --ca-out "$scratch/ca.pem" \
      >"$scratch/emulator.log" 2>&1 &
    emulator=$!
    trap "kill -TERM $emulator 2>/dev/null; wait $emulator 2>/dev/null || true" EXIT
    for _ in $(seq 300); do
      [[ -s $scratch/ca.pem ]] && (exec 3<>/dev/tcp/127.0.0.1/8443) 2>/dev/null && break
      sleep 0.1
    done
    SSL_CERT_FILE=$scratch/ca.pem AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:8080 \
      valgrind --tool=callgrind --demangle=no --callgrind-out-file="$calls" \
      "$dist/secrets-store-provider-azure" --endpoint="unix://$scratch/providers/azure.sock" \
      --healthz-port=0 --prometheus-port=0 >"$scratch/provider.log" 2>&1 &
    provider=$!
    for _ in $(seq 600); do [[ -S $scratch/providers/azure.sock ]] && break; sleep 0.1; done
    # Three rounds of four concurrent mounts: managed identity (IMDS) and pod identity (NMI),
    # twice each, so the cache coalescing and concurrent HTTP/2 streams run too.
    sed "s/useVMManagedIdentity/usePodIdentity/" "$scratch/class.yaml" >"$scratch/class-pod.yaml"
    for n in 1 2 3; do
      pids=()
      for class in class class-pod; do
        for m in a b; do
          timeout 120 "$dist/secrets-store" mount --provider-dir "$scratch/providers" \
            --class "$scratch/$class.yaml" --target "$scratch/target-$n-$class-$m" \
            >"$scratch/mount-$n-$class-$m.log" 2>&1 &
          pids+=($!)
        done
      done
      for pid in "${pids[@]}"; do wait "$pid"; done
    done
    kill -TERM "$provider"
    wait "$provider" || true
  ' profile "$scratch" "$dist" "$calls" ||
    die "profiling the provider's mounts failed: $(tail -n 5 "$scratch"/mount-*.log "$scratch/provider.log" "$scratch/emulator.log" 2>/dev/null)"
  functions_of "$calls"
}
if command -v valgrind >/dev/null; then
  scratch=$(mktemp -d "$out/profile.XXXXXX")
  printf 'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n' >"$scratch/kubeconfig"
  # Start-up functions of both first (what every idle daemon keeps resident), then the rest of
  # what the provider runs for mounts (a callgrind file lists functions in no useful order, so
  # mixing the two would spread the start-up ones again: idle 4.2 -> 5.4 MiB, measured).
  new_order=$(
    {
      profile_startup secrets-store-provider-azure --endpoint="unix://$scratch/azure.sock" \
        --healthz-port=0 --prometheus-port=0
      profile_startup secrets-store-csi-driver --endpoint="unix://$scratch/csi.sock" --nodeid=profile \
        --provider-volume="$scratch" --metrics-addr=127.0.0.1:0 --kubeconfig="$scratch/kubeconfig"
      if [[ $(id -u) == 0 ]]; then
        profile_provider_mounts "$scratch/mounts"
      else
        log "NOTICE: not root (no unshare): the provider's mount path is not ordered (more RSS under load)"
      fi
    } | awk '!seen[$0]++'
  )
  rm -rf "$scratch"
  [[ -n $new_order ]] || die "callgrind recorded no function of the daemons"
  if [[ $new_order != "$(cat "$order")" ]]; then
    printf '%s\n' "$new_order" >"$order"
    log "start-up order: $(wc -l <"$order") functions; relinking the daemons"
    # The list is a file cargo does not track: touching the binaries' roots relinks just them.
    touch crates/provider-azure/src/main.rs crates/driver/src/main.rs
    build
  fi
elif [[ ${CI:-} == true ]]; then
  die "valgrind is missing (Debian package valgrind; scripts/peers.sh installs it)"
else
  log "NOTICE: valgrind is missing: the daemons are linked without their start-up order (more RSS)"
fi

built=0
for spec in "${images[@]}"; do
  read -r name user description <<<"$spec"
  binary=$target/$triple/dist/$name
  [[ -x $binary ]] || die "cargo did not produce $binary"
  ref=$repository/$name:$version
  libs_text=$(rootfs_libraries "$binary") || die "cannot list the libraries of $binary"
  libs=()
  [[ -z $libs_text ]] || mapfile -t libs <<<"$libs_text"
  # Everything the archive is made of; the archive is rebuilt only when this changes.
  want=$(
    printf '%s\n' "$ref" "$user" "$description" "$revision" "$source_url"
    sha256sum "$binary" "$ca_bundle" "${libs[@]}" "$root/scripts/images.sh" "$root/scripts/lib/oci.sh" "$root/scripts/lib/rootfs.sh"
  )
  stamp=$out/$name.stamp
  if ((!force)) && [[ -f $out/$name.tar && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    log "$name: up to date ($out/$name.tar)"
    continue
  fi

  rootfs=$(mktemp -d "$out/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  rootfs_assemble "$binary" "$name" "$rootfs" || die "cannot assemble the root filesystem of $name"
  rootfs_kib=$(du -sk --apparent-size "$rootfs" | cut -f1)

  OCI_WORK_DIR=$out oci_archive --gzip --user "$user" \
    --env PATH=/usr/local/bin:/usr/bin:/bin \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.description=$description" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.source=$source_url" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    "$out/$name.tar" "$ref" "$rootfs" "[\"/usr/local/bin/$name\"]"
  rm -rf "$rootfs"
  trap - EXIT
  printf '%s' "$want" >"$stamp"
  built=$((built + 1))
  log "$name: $ref -> $out/$name.tar ($(($(stat -c %s "$out/$name.tar") / 1024)) KiB; unpacked $rootfs_kib KiB)"
done
log "$built image(s) built in $(($(date +%s) - start))s under $out"
