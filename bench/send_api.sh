#!/usr/bin/env bash
# The HTTP send API (issue 15, "Measure"): `POST /send` latency p50/p99 and requests/s of
# `tidings gateway` with its job running (Kafka source, blackhole provider, Parquet tracking),
# loaded by wrk (Debian's `wrk`, closed loop: each connection sends its next request when the
# last is answered) at 1, 16 and 64 connections for SECONDS each. Needs the broker of
# scripts/services.sh (KAFKA_BROKERS).
#
#   bench/send_api.sh [SECONDS]     (default 20; target/release/tidings if built, else debug)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
bin=target/release/tidings
[ -x "$bin" ] || bin=target/debug/tidings
profile=$(basename "$(dirname "$bin")")
command -v wrk >/dev/null || { echo "send_api.sh: needs wrk (apt-get install wrk)" >&2; exit 2; }
work=target/bench/send-api
rm -rf "$work" && mkdir -p "$work"
unique=$(date +%s%N)
cat > "$work/templates.toml" <<'T'
[[template]]
id = 1
name = "login code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
shield = "none"
account = "sink"
dedup = false
[template.content]
content = "Your code is {$code}."
T
cat > "$work/job.toml" <<J
name = "send-api"
templates = "templates.toml"
[source]
kind = "kafka"
brokers = "${KAFKA_BROKERS:-127.0.0.1:19092}"
topic = "send-api-$unique"
group = "send-api-$unique"
[tracking]
dir = "var/tracking"
[accounts.sink]
channel = "sms"
provider = "blackhole"
[gateway]
bind = "127.0.0.1:0"
J
cat > "$work/post.lua" <<'L'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"code":"send","messageTemplateId":1,"messageParam":{"bizId":"b","receiver":"13800138000","variables":{"code":"4711"}}}'
L
"$bin" run "$work/job.toml" > "$work/job.out" 2> "$work/job.err" &
job=$!
"$bin" gateway --job "$work/job.toml" > "$work/gateway.out" 2> "$work/gateway.err" &
gw=$!
trap 'kill $gw $job 2>/dev/null; wait $gw $job 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$work/gateway.out" ] && break; sleep 0.1; done
url=$(head -1 "$work/gateway.out")
# Warm up (the first produce waits for the topic's metadata).
curl -s -X POST "$url/send" -H 'Content-Type: application/json' \
  -d '{"code":"send","messageTemplateId":1,"messageParam":{"receiver":"13800138000","variables":{"code":"1"}}}' >/dev/null
printf "| connections | requests/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|\n"
for c in 1 16 64; do
  t=2; [ "$c" -lt 2 ] && t=1
  wrk -t"$t" -c"$c" -d"${secs}s" --latency -s "$work/post.lua" "$url/send" > "$work/wrk-$c.txt"
  python3 - "$c" "$work/wrk-$c.txt" <<'PY'
import re, sys
c, path = sys.argv[1:]
t = open(path).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(f"| {c} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {bad.group(1) if bad else 0} |")
PY
done
echo
echo "$profile profile, $(nproc) cores, ${secs} s per row; the job ran beside the gateway on the same cores"
