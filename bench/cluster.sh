#!/usr/bin/env bash
# Cluster mode on this machine (issue 14, "Measure"): the same file job (bench/jobs/throughput.toml,
# requests from scripts/gen_requests.py) on 1 process x 2 workers, 2 x 1, 3 x 1 and 2 x 2
# (`tidings run --local N`), each from fresh state with the same --now. Reports per shape:
# wall time, receivers/s and its ratio to 1 x 2 (2 cores: the ratio is the exchange's cost,
# not a speedup), and the bytes timely exchanged between processes per receiver (the
# loopback interface's received bytes during the run; a file job has no other loopback
# traffic), and checks every shape wrote the same rows.
#
#   bench/cluster.sh [REQUESTS]          (default 100000; uses target/release/tidings if built,
#                                         else target/debug/tidings — ratios hold per profile)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
bin=target/release/tidings
[ -x "$bin" ] || bin=target/debug/tidings
profile=$(basename "$(dirname "$bin")")
work=target/bench/cluster
rm -rf "$work" && mkdir -p "$work"
python3 scripts/gen_requests.py --count "$n" --out "$work/requests.jsonl" --no-bad >/dev/null
root=$PWD
sed -e "s#\.\./\.\./target/bench/requests.jsonl#$root/$work/requests.jsonl#" \
    -e "s#\.\./\.\./target/bench/#$root/$work/run/#g" \
    -e "s#\.\./\.\./#$root/#g" bench/jobs/throughput.toml > "$work/job.toml"
lo_rx() { awk '/^ *lo:/ { sub(/^ *lo:/, ""); print $1 }' /proc/net/dev; }
printf "| shape | wall s | receivers | receivers/s | ratio to 1x2 | loopback bytes / receiver |\n|---|---|---|---|---|---|\n"
base=""
for shape in 1x2 2x1 3x1 2x2; do
  p=${shape%x*}; w=${shape#*x}
  rm -rf "$work/run"
  args=(run "$work/job.toml" --now 2025-11-22T10:00:00+08:00 -w "$w")
  [ "$p" -gt 1 ] && args+=(--local "$p")
  rx0=$(lo_rx); t0=$(date +%s.%N)
  "$bin" "${args[@]}" > "$work/$shape.out" 2> "$work/$shape.err"
  t1=$(date +%s.%N); rx1=$(lo_rx)
  rows=$("$bin" sql --dir "$work/run/tracking" --format csv \
    "SELECT message_id, receiver, state, coalesce(reason, '') FROM events ORDER BY 1, 2, 3, 4" | md5sum | cut -c1-12)
  recv=$("$bin" sql --dir "$work/run/tracking" --format csv \
    "SELECT count(*) FROM events WHERE state = 'RECEIVE'" | tail -1)
  python3 - "$shape" "$t0" "$t1" "$recv" "$rx0" "$rx1" "$rows" "$base" <<'PY'
import sys
shape, t0, t1, recv, rx0, rx1, rows, base = sys.argv[1:]
wall = float(t1) - float(t0); recv = int(recv); rate = recv / wall
ratio = "1.00" if not base else f"{rate / float(base.split(':')[0]):.2f}"
same = "" if not base or base.split(':')[1] == rows else " (ROWS DIFFER)"
print(f"| {shape} | {wall:.1f} | {recv} | {rate:,.0f} | {ratio}{same} | {(int(rx1) - int(rx0)) / recv:,.0f} |")
open('/tmp/tidings-cluster-base', 'w').write(f"{rate}:{rows}" if not base else base)
PY
  [ -z "$base" ] && base=$(cat /tmp/tidings-cluster-base)
done
echo
echo "$n requests, $profile profile, $(nproc) cores; rows fingerprint equal across shapes unless marked"
