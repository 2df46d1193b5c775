#!/usr/bin/env bash
# Runs the CA on its embedded default: a self-signed root kept under
# ./meshca-data, gRPC (TLS) on 127.0.0.1:15012, HTTP on 127.0.0.1:15014.
# Extra arguments are passed to `meshca serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Building needs protoc (the etcd-client crate compiles etcd's .proto files).
if ! command -v protoc >/dev/null; then
  echo "run.sh: installing protobuf-compiler" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null
fi
command -v protoc >/dev/null || { echo "run.sh: protoc (Debian protobuf-compiler) is required and could not be installed" >&2; exit 1; }
exec cargo run --release -q -p meshca -- serve "$@"
