#!/usr/bin/env bash
# Where meshca's server spends its time under the steady benchmark, natively
# (perf is not available on every machine and valgrind's instruction counts
# miss the kernel, the cache and the CPU's own crypto paths): run the steady
# scenario for a while, sample every thread's stack of `meshca serve` with gdb
# N times, and print how the samples of running threads split by category
# (ECDSA verify/sign, kernel send path, HTTP/2, tonic, TLS records, ...).
#
#   scripts/profile.sh [SAMPLES] [KEY]      # default 200 samples, ec-p256
#
# A thread counts as running when its top frame is not a wait (epoll, futex,
# sleep). Caveat: a thread preempted inside a syscall (e.g. writev waking the
# client) is sampled there too, so syscall shares read high against the
# kernel CPU time the benchmark reports. Stacks go to bench/work/profile/.
set -euo pipefail
cd "$(dirname "$0")/.."
samples="${1:-200}"
key="${2:-ec-p256}"
command -v gdb >/dev/null || { echo "profile.sh: gdb is required (apt-get install gdb)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "profile.sh: python3 is required" >&2; exit 1; }
cargo build --release -q -p meshca -p meshca-bench
out=bench/work/profile
rm -rf "$out"; mkdir -p "$out"
target/release/meshca-bench --systems meshca --keys "$key" --duration 600s --warmup 200 \
  --storm-count 0 --conn-storm-count 0 --per-conn-connections 0 --handshakes 20 \
  --work "$out/work" --out "$out/bench.json" >"$out/bench.log" 2>&1 &
bench=$!
pid=""
# The harness does not stop its server when it is killed: stop both.
trap 'kill $bench 2>/dev/null || true; [ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  pid=$(pgrep -f "release/meshca serve --data-dir $out/work" | head -1 || true)
  [ -n "$pid" ] && break
  sleep 0.1
done
[ -n "$pid" ] || { echo "profile.sh: the benchmark's meshca server did not start (see $out/bench.log)" >&2; exit 1; }
# Wait for the steady load: the server using more than 60% of a core.
for _ in $(seq 1 600); do
  a=$(awk '{print $14+$15}' "/proc/$pid/stat"); sleep 0.5; b=$(awk '{print $14+$15}' "/proc/$pid/stat")
  [ $((b - a)) -gt 30 ] && break
done
echo "profile.sh: sampling meshca serve (pid $pid) $samples times" >&2
for _ in $(seq 1 "$samples"); do
  gdb -p "$pid" -batch -nx -ex "set pagination off" -ex "thread apply all bt 25" 2>/dev/null \
    | grep -E "^#|^Thread" >>"$out/stacks.txt" || true
  echo "=====" >>"$out/stacks.txt"
done
python3 scripts/profile_stacks.py "$out/stacks.txt"
