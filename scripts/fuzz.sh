#!/usr/bin/env bash
# Fuzz every parser of outside input for a bounded time (cargo-fuzz/libFuzzer).
#
#   scripts/fuzz.sh [--time SECONDS] [--merge] [TARGET...]
#
# --time N   run each target N seconds (default 60)
# --merge    afterwards, add to fuzz/corpus/<target>/ up to 15 (FUZZ_MERGE_MAX)
#            of the new inputs that cover what the corpus does not (libFuzzer
#            -set_cover_merge=1; existing files are kept; review before committing)
# TARGET     pem_certs csr_pem csr_der ca_material jwt jwks grpc_request
#            agent_report sds_request serve_config (default: all; fuzz/src/lib.rs
#            says what each feeds to which parser)
#
# Each target is fed the committed corpus fuzz/corpus/<target>/ and writes new
# inputs to a scratch directory, so a run without --merge leaves the corpus as
# it was. A crash,
# a panic, a timeout, an out-of-memory or an allocation above 512 MB makes the
# script exit 1, naming the reproducer (fuzz/artifacts/<target>/...); rerun
# it with `RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> <file>` in fuzz/.
# The corpus is also replayed by the test suite (crates/*/tests/fuzz_corpus.rs).
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 enables them on
# the stable toolchain of rust-toolchain/CI (set FUZZ_CARGO="cargo +nightly"
# to use a nightly toolchain instead). FUZZ_ARGS adds libFuzzer options.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS_ALL=(pem_certs csr_pem csr_der ca_material jwt jwks grpc_request agent_report sds_request serve_config)
time_s=60
merge=0
merge_max="${FUZZ_MERGE_MAX:-15}"
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) time_s="${2:?--time needs a number of seconds}"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { print } /^set /{ exit }' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$time_s" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: --time wants whole seconds, got '$time_s'" >&2; exit 2; }
[[ ${#targets[@]} -gt 0 ]] || targets=("${TARGETS_ALL[@]}")
for t in "${targets[@]}"; do
  [[ " ${TARGETS_ALL[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (known: ${TARGETS_ALL[*]})" >&2; exit 2; }
  [[ -d "fuzz/corpus/$t" ]] || { echo "fuzz.sh: missing corpus directory fuzz/corpus/$t" >&2; exit 1; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi
read -r -a fuzz_cargo <<<"${FUZZ_CARGO:-cargo}"
export RUSTC_BOOTSTRAP=1

cd fuzz
echo "fuzz.sh: building ${#targets[@]} target(s) (release, ASan)"
if [[ ${#targets[@]} -eq ${#TARGETS_ALL[@]} ]]; then
  "${fuzz_cargo[@]}" fuzz build -O
else
  for t in "${targets[@]}"; do "${fuzz_cargo[@]}" fuzz build -O "$t"; done
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  echo "fuzz.sh: $t for ${time_s}s"
  status=0
  "${fuzz_cargo[@]}" fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$time_s" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [[ $status -ne 0 ]]; then
    failed+=("$t")
    echo "=============== fuzz.sh: $t FAILED (exit $status) ===============" >&2
    grep -E 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|out-of-memory|malloc\(|Test unit written|Timeout' "$log" >&2 || true
    tail -n 40 "$log" >&2
    summary+=("$t: FAILED after ${execs:-?} runs, see fuzz/artifacts/$t/")
  else
    summary+=("$t: ok, ${time_s}s, ${execs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}")
  fi
  if [[ $merge -eq 1 && $status -eq 0 ]]; then
    # Merge into a copy, then keep at most $merge_max of the new inputs so the corpus stays small.
    merged="$scratch/merged-$t"
    cp -r "corpus/$t" "$merged"
    "${fuzz_cargo[@]}" fuzz run -O "$t" "$merged" "$scratch/$t" -- -set_cover_merge=1 -max_len=16384 >"$log.merge" 2>&1
    added=0
    while IFS= read -r f; do
      [[ -e "corpus/$t/$f" ]] && continue
      [[ $added -ge $merge_max ]] && break
      cp "$merged/$f" "corpus/$t/$f"
      added=$((added + 1))
    done < <(ls "$merged" | sort)
    echo "fuzz.sh: $t: $added new input(s) kept, corpus now $(find "corpus/$t" -type f | wc -l) files"
  fi
done

echo "fuzz.sh summary:"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: CRASH in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s) ran without a finding"
