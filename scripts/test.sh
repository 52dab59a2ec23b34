#!/usr/bin/env bash
# The project's test command (README "Quick start"): installs the test peers, builds the
# container images, then runs the format check, clippy with warnings denied, and every test of the
# workspace. Integration tests use the real peers; with CI=true a missing peer fails its test
# instead of skipping it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

# A cold build of the workspace and its peers needs several GiB; say so plainly instead of failing
# half-way with ENOSPC inside pip, go or rustc.
free_kib=$(df -Pk "$root" | awk 'NR==2 {print $4}')
if [ "${free_kib:-0}" -lt $((3 * 1024 * 1024)) ]; then
  echo "error: only $((free_kib / 1024)) MiB free on the filesystem of $root; the build needs at least 3 GiB" >&2
  echo "       (about 10 GiB for a cold build). Free space, e.g. 'cargo clean' in old work trees." >&2
  exit 1
elif [ "$free_kib" -lt $((10 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kib / 1024)) MiB free on the filesystem of $root; a cold build needs about 10 GiB" >&2
fi

step "installing test peers (scripts/peers.sh)"
bash scripts/peers.sh

# The release binaries in container images (OCI archives in target/images/, checked by
# crates/e2e/tests/images.rs). Skips an image whose inputs have not changed.
step "building the container images (scripts/images.sh)"
bash scripts/images.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --no-fail-fast

printf '\n==> all checks passed in %ss\n' "$(($(date +%s) - start))"
