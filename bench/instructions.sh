#!/usr/bin/env bash
# Instructions per request, by stage: the job's CPU work counted by valgrind (callgrind), not
# timed. A count repeats within ~0.2% from run to run, where a timed run on this machine
# varies by ±15%; so a change of a few percent per request can be measured here when an A/B
# of `tidings-bench e2e` cannot separate it from the noise (bench/MEASURED.md "Instructions
# per request").
#
#   bench/instructions.sh                    # target/release/tidings-bench (build it first)
#   bench/instructions.sh path/to/tidings-bench
#   SPREAD_MS=5 bench/instructions.sh        # requests 5 ms of event time apart (a replay
#                                            # of a quiet day: most epochs hold a few)
#   ID_TYPE=phone bench/instructions.sh      # the template sends to phones (receivers are
#                                            # Chinese mobiles, checked and normalised)
#   KEEP=dir bench/instructions.sh           # keep the callgrind files in dir
#   TEMPLATES=500 bench/instructions.sh      # the job has this many templates (ids 1..N, all
#                                            # alike), the requests name the middle one
#   SOURCE=kafka bench/instructions.sh       # the Kafka job instead: `tidings-bench e2e
#                                            # --requests N` (a burst; needs the broker,
#                                            # scripts/services.sh start), counting the job's
#                                            # own process (run-job, a child) only; its cuts
#                                            # and librdkafka's statistics follow the wall
#                                            # clock, so its whole count varies by ~2%
#
# The job: the file source, 2 workers, one receiver per request, the e2e bench's `code`
# template to a blackhole account, dedup on, Parquet tracking. Runs it under callgrind at
# 20,000 and at 60,000 requests and divides the difference by 40,000, so the start-up (the
# job file, the templates' regexes, the threads) drops out. By default the 60,000 requests
# span one second of event time, as the e2e bench's burst does. The file source parses each
# line's kcat envelope once, for its event time and its payload, and passes the payload on as
# a Kafka record's value; so the `read` and `envelope` rows are the file source's own cost. Cuts are
# timed by the wall clock, which runs ~50x slower under valgrind: the job takes one cut an
# hour (`checkpoint_ms`), so the count has the run's last cut only, in which each key is
# written once, and does not depend on how slow valgrind was.
# glibc's memcpy copies a block of more than a few KiB with `rep movsb`, which callgrind counts
# as one instruction per byte (a 1 MiB copy: 1,048,576; the CPU moves 32-64 bytes a cycle): so
# the run sets `GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold` past any copy, and memcpy
# copies with its vector loop, counted as it runs (~100,000 for 1 MiB). Counts before
# 2026-12-05 had the per-byte count in them (bench/MEASURED.md "Instructions per request").
# memset clears a large block with `rep stosb` the same way (Parquet's Snappy codec zeroes
# each page's output buffer before it compresses into it), so its threshold is set past any
# block too (since 2026-12-06).
# Needs valgrind and python3. Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/tidings-bench}")
spread=${SPREAD_MS:-}
source=${SOURCE:-file}
id_type=${ID_TYPE:-user_id}
templates=${TEMPLATES:-1}
[[ $templates =~ ^[1-9][0-9]*$ ]] || { echo "instructions.sh: TEMPLATES=$templates: give a number of templates, 1 or more" >&2; exit 1; }
[ "$source" = file ] || [ "$templates" = 1 ] || { echo "instructions.sh: TEMPLATES is for the file job (the Kafka run's bench makes its own template)" >&2; exit 1; }
used=$(( (templates + 1) / 2 ))
command -v valgrind > /dev/null || { echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -x "$bin" ] || { echo "instructions.sh: no $bin: cargo build --release -p tidings-bench" >&2; exit 1; }
dir=${KEEP:-$(mktemp -d)}
mkdir -p "$dir"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$dir"' EXIT

for id in $(seq 1 "$templates"); do
  cat <<EOF
[[template]]
id = $id
name = "code$([ "$templates" = 1 ] || echo "-$id")"
channel = "sms"
msg_type = "auth_code"
id_type = "$id_type"
account = "hole"
[template.content]
content = "Your code is {\$code}."
EOF
done > "$dir/templates.toml"

for n in 20000 60000; do
  if [ "$source" = kafka ]; then
    # The bench produces a fresh topic and runs the job as a child: valgrind follows it, and
    # the child's file (the later pid) is the job's.
    rm -rf "$dir/kafka-$n" && mkdir -p "$dir/kafka-$n"
    (cd "$dir/kafka-$n" && GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0xffffffffffffffff:glibc.cpu.x86_rep_stosb_threshold=0xffffffffffffffff valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$dir/kafka-$n/callgrind.%p" "$bin" e2e --requests "$n" \
      > "$dir/run-$n.json" 2> "$dir/valgrind-$n.log") || { echo "instructions.sh: the Kafka run of $n requests failed: $dir/valgrind-$n.log" >&2; exit 1; }
    grep -q '"send_success":'"$n" "$dir/run-$n.json" || { echo "instructions.sh: the Kafka run of $n requests did not send them all: $dir/run-$n.json" >&2; exit 1; }
    cp "$(ls "$dir/kafka-$n"/callgrind.* | sort -t. -k2 -n | tail -1)" "$dir/callgrind-$n.out"
    continue
  fi
  python3 - "$n" "$dir/requests-$n.jsonl" "$spread" "$id_type" "$used" <<'EOF'
import json, sys
n, out, spread, id_type, used = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
with open(out, "w") as f:
    for i in range(n):
        payload = json.dumps({"code": "send", "messageTemplateId": used,
                              "messageParam": {"receiver": ("139%08d" if id_type == "phone" else "1%010d") % i, "variables": {"code": i % 10000}}},
                             separators=(",", ":"))
        ts = 1763740800000 + (i * int(spread) if spread else (i * 1000) // 60000)
        f.write(json.dumps({"ts": ts, "key": str(i), "payload": payload}) + "\n")
EOF
  cat > "$dir/job-$n.toml" <<EOF
name = "instructions"
templates = "templates.toml"
workers = 2
state_dir = "state-$n"
[source]
kind = "file"
path = "requests-$n.jsonl"
checkpoint_ms = 3600000
[tracking]
dir = "tracking-$n"
[accounts.hole]
channel = "sms"
provider = "blackhole"
EOF
  rm -rf "$dir/state-$n" "$dir/tracking-$n"
  (cd "$dir" && GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=0xffffffffffffffff:glibc.cpu.x86_rep_stosb_threshold=0xffffffffffffffff valgrind --tool=callgrind --callgrind-out-file="callgrind-$n.out" "$bin" throughput "job-$n.toml" \
    > "run-$n.json" 2> "valgrind-$n.log") || { echo "instructions.sh: the run of $n requests failed: $dir/valgrind-$n.log" >&2; exit 1; }
  grep -q '"requests":'"$n" "$dir/run-$n.json" || { echo "instructions.sh: the run of $n requests did not read them all: $dir/run-$n.json" >&2; exit 1; }
done

python3 - "$dir" "$(git rev-parse --short HEAD)" "${spread:-one second for 60,000}" "$id_type" "$source" "$templates" <<'EOF'
import collections, re, subprocess, sys
d, rev, spread, id_type, source, templates = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])

def costs(n):
    """Inclusive instructions per function (the largest entry of a name), and the total."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          f"{d}/callgrind-{n}.out"], capture_output=True, text=True, check=True).stdout
    f, total = collections.Counter(), 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        n_ir = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n_ir
            continue
        name = re.sub(r" \[.*\]$", "", re.sub(r"^[^:]*:", "", m.group(2), count=1))
        f[name] = max(f[name], n_ir)
    return total, f

(t1, a), (t2, b) = costs(20000), costs(60000)
per = lambda name: (b[name] - a[name]) / 40000
# Each stage is the inclusive cost of the function that does it (a stage's row includes the
# rows indented under it).
read = [
    ("read: the file source's turns (the envelope included)", "tidings_dataflows::source::read_turn"),
    ("· envelope: its event time and payload, parsed once when read", "tidings_operators::event_time::read_line"),
] if source == "file" else [
    ("read: the Kafka source's reads (librdkafka's queue, stamping, the payload's copy)", "tidings_dataflows::kafka::poll_batch"),
]
stages = read + [
    ("admit: validate, render, ids (per request)", "tidings_operators::validate::Validator::validate_into"),
    ("· decode: the request's own JSON (the payload; a Kafka record's whole decode)", "tidings_model::request::decode_request"),
    ("· render: the template's content (from its plan)", "tidings_model::template::Template::render"),
    ("· message id", "tidings_model::ids::message_id"),
    ("gate: receivers checked, whitelist, night, discard", "tidings_operators::gate::Gate::judge_with"),
    ("· a phone receiver's check", "tidings_model::receiver::ReceiverValidator::phone"),
    ("dedup: judging in order (both rules)", [
        "<tidings_operators::dedup::content::ContentDedup as tidings_operators::dedup::KeyedRule>::judge",
        "<tidings_operators::dedup::frequency::FrequencyDedup as tidings_operators::dedup::KeyedRule>::judge",
        "tidings_operators::dedup::sort_in_order"]),
    ("dedup: checkpoint cuts (the run's last: each key written once)" if source == "file" else
     "dedup: checkpoint cuts (every `checkpoint_ms` of the wall clock: as many as valgrind's pace makes)", "tidings_operators::dedup::checkpoint"),
    ("send: group by message, one send each", "tidings_dataflows::send::send::{{closure}}::{{closure}}::{{closure}}::{{closure}}"),
    ("· one send (account, retry policy, stats)", "tidings_dataflows::send::send_one::{{closure}}"),
    ("track: rows into columns and files", "tidings_dataflows::track::Owed::take"),
    ("· Parquet encoding", "tidings_sinks::tracking::Encoding<C>::encode"),
    ("timely: progress tracking (ChangeBatch compaction)", "timely::progress::change_batch::ChangeBatch<T,_>::compact"),
    ("allocator: mi_malloc and mi_free (self, all stages)", None),
]
if source == "kafka":
    print(f"Instructions per request of the Kafka job's process (callgrind, commit {rev}, `tidings-bench e2e`'s burst):\n")
else:
    shown = "" if templates == 1 else f", {templates} templates"
    print(f"Instructions per request (callgrind, commit {rev}, event time spread: {spread}, id_type {id_type}{shown}):\n")
print("| stage | instructions per request |")
print("|---|---|")
print(f"| **whole process** ((60,000-request run − 20,000-request run) / 40,000) | **{(t2 - t1) / 40000:,.0f}** |")
self_a = subprocess.run(["callgrind_annotate", "--threshold=100", f"{d}/callgrind-20000.out"], capture_output=True, text=True).stdout
self_b = subprocess.run(["callgrind_annotate", "--threshold=100", f"{d}/callgrind-60000.out"], capture_output=True, text=True).stdout
def alloc(text):
    s = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([\s\d.]+%\)\s+\S*:(\S*mi_\S*|__rust_alloc|__rust_dealloc|__rust_realloc)\s", line)
        if m:
            s += int(m.group(1).replace(",", ""))
    return s
for label, name in stages:
    if name is None:
        v = (alloc(self_b) - alloc(self_a)) / 40000
    elif isinstance(name, list):
        v = sum(per(n) for n in name)
    else:
        v = per(name)
    print(f"| {label} | {v:,.0f} |")
EOF
