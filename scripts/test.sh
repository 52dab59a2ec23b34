#!/usr/bin/env bash
# The project's test command (README "Quick start"): installs the test peers, then runs the
# format check, clippy with warnings denied, and every test of the workspace. Integration tests
# use the real peers; with CI=true a missing peer fails its test instead of skipping it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "installing test peers (scripts/peers.sh)"
bash scripts/peers.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace --no-fail-fast

printf '\n==> all checks passed in %ss\n' "$(($(date +%s) - start))"
