#!/usr/bin/env python3
"""Fuzz run: N records (valid requests, structured mutations of them, random bytes, extreme
event times) through `tidings run` on a file source with a blackhole provider.

Prints one JSON line: records, lines with dead letters, RECEIVE rows, terminal rows, parked,
peak RSS of the job, its exit code and whether any panic was printed. The job must exit 0 and
print no panic; every RECEIVE must end in one terminal state.

    scripts/fuzz.py --records 1000000 [--binary target/release/tidings] [--workers 2]
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

DAY = 1_763_740_800_000  # 2025-11-22 00:00 Asia/Shanghai

TEMPLATES = """
[[template]]
id = 1
name = "code"
channel = "sms"
msg_type = "auth_code"
id_type = "phone"
account = "hole"
[template.content]
content = "Your code is {$code}."

[[template]]
id = 2
name = "night"
channel = "email"
msg_type = "notice"
id_type = "email"
shield = "night_delay"
account = "hole-mail"
[template.content]
title = "Hi {$name}"
content = "Order {$order}"

[[template]]
id = 3
name = "push"
channel = "push"
msg_type = "marketing"
id_type = "cid"
shield = "night_drop"
account = "hole-push"
[template.content]
title = "{$sale}"
content = "Sale {$sale}"
"""

JOB = """name = "fuzz"
timezone = "Asia/Shanghai"
templates = "templates.toml"
workers = {workers}
state_dir = "var/state"
[source]
kind = "file"
path = "requests.jsonl"
[dedup]
content = {{ num = 1, time = 300 }}
frequency = {{ num = 5 }}
[tracking]
dir = "var/tracking"
[accounts.hole]
channel = "sms"
provider = "blackhole"
[accounts.hole-mail]
channel = "email"
provider = "blackhole"
[accounts.hole-push]
channel = "push"
provider = "blackhole"
"""


def valid(rng):
    t = rng.choice([1, 2, 3])
    n = rng.choice([1, 1, 1, 2, 3])
    if t == 1:
        rec = ",".join(f"1380013{rng.randrange(10000):04d}" for _ in range(n))
        var = {"code": str(rng.randrange(10000))}
    elif t == 2:
        rec = ",".join(f"user{rng.randrange(5000)}@example.com" for _ in range(n))
        var = {"name": "Ann", "order": f"o-{rng.randrange(100000)}"}
    else:
        rec = ",".join(f"cid-{rng.randrange(5000):04d}" for _ in range(n))
        var = {"sale": f"{rng.randrange(90)}%"}
    req = {"code": "send", "messageTemplateId": t, "messageParam": {"receiver": rec, "variables": var}}
    return json.dumps(req, separators=(",", ":"))


def mutate(rng, s):
    b = bytearray(s.encode())
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] = rng.randrange(32, 127)
        elif op == 1:
            b = b[: rng.randrange(len(b) + 1)]
        elif op == 2:
            b[i:i] = bytes(rng.choice([b'"', b"{", b"}", b"[", b"null", b"1e309", b"\\u0000", b",", b":"]))
        elif op == 3 and b:
            del b[i]
        else:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    return bytes(b).replace(b"\n", b" ").replace(b"\r", b" ")


def line(rng):
    r = rng.random()
    ts = DAY + rng.randrange(2 * 86_400_000)
    if r < 0.55:
        return json.dumps({"ts": ts, "key": "k", "payload": valid(rng)}, separators=(",", ":")).encode()
    if r < 0.80:
        return mutate(rng, json.dumps({"ts": ts, "payload": valid(rng)}, separators=(",", ":")))
    if r < 0.88:
        bad_ts = rng.choice([2**63 - 1, -(2**63), 0, -5, 253_402_300_800_000, 10**30, 1.5e12, "x", None])
        return json.dumps({"ts": bad_ts, "payload": valid(rng)}).encode()
    if r < 0.95:
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b" ").replace(b"\r", b" ")
    return mutate(rng, valid(rng))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--binary", default="target/debug/tidings")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    rng = random.Random(a.seed)
    d = tempfile.mkdtemp(prefix="tidings-fuzz-")
    with open(os.path.join(d, "templates.toml"), "w") as f:
        f.write(TEMPLATES)
    with open(os.path.join(d, "job.toml"), "w") as f:
        f.write(JOB.format(workers=a.workers))
    with open(os.path.join(d, "requests.jsonl"), "wb") as f:
        for _ in range(a.records):
            f.write(line(rng) + b"\n")
    start = time.time()
    p = subprocess.run(
        [binary, "run", os.path.join(d, "job.toml"), "--now", "2025-11-25T12:00:00+08:00"],
        capture_output=True,
    )
    wall = time.time() - start
    rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    def sql(q):
        out = subprocess.run(
            [binary, "sql", "--dir", os.path.join(d, "var/tracking"), "--format", "csv", q],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()
        return [int(x) if x.isdigit() else x for x in out[1].split(",")]

    receive, terminal, parked = sql(
        "SELECT sum(CASE WHEN state = 'RECEIVE' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN state NOT IN ('RECEIVE', 'NIGHT_SHIELD_NEXT_SEND') THEN 1 ELSE 0 END), "
        "sum(CASE WHEN state = 'NIGHT_SHIELD_NEXT_SEND' THEN 1 ELSE 0 END) FROM events"
    )
    (dead,) = sql("SELECT count(*) FROM dead_letters")
    (dead_lines,) = sql("SELECT count(DISTINCT source) FROM dead_letters")
    stderr = p.stderr.decode(errors="replace")
    report = {
        "records": a.records,
        "workers": a.workers,
        "exit": p.returncode,
        "panics": stderr.count("panicked"),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(rss_mib, 1),
        "dead_letters": dead,
        "lines_with_dead_letters": dead_lines,
        "receive_rows": receive,
        "terminal_rows": terminal,
        "night_shield_next_send_rows": parked,
    }
    print(json.dumps(report))
    ok = p.returncode == 0 and report["panics"] == 0 and receive == terminal
    if not ok:
        print(stderr[-4000:], file=sys.stderr)
    subprocess.run(["rm", "-rf", d])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
