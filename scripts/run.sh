#!/usr/bin/env bash
# Runs the CA on its embedded default: a self-signed root kept under
# ./meshca-data, gRPC (TLS) on 127.0.0.1:15012, HTTP on 127.0.0.1:15014.
# Extra arguments are passed to `meshca serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release -q -p meshca -- serve "$@"
