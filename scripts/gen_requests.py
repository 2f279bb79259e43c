#!/usr/bin/env python3
"""Generate tidings send requests as kcat -J envelopes (one JSON object per line).

The mix reaches every state of CONTRACT §4 with the demo job (examples/demo/job.toml):
valid and invalid receivers, a discarded template, strangers outside the whitelist, night
traffic for night_drop and night_delay templates, repeated content (content dedup), chatty
receivers (frequency dedup), a provider that refuses some receivers (SEND_FAIL), and every
kind of bad record (dead letters).

    scripts/gen_requests.py --count 1000 --out examples/demo/requests.jsonl
    scripts/gen_requests.py --count 1000000 --out /tmp/big.jsonl --no-bad

Deterministic: the same arguments give the same file.
"""
import argparse
import json
import random

# 2025-11-22 00:00 Asia/Shanghai, in ms since the epoch.
DAY_START = 1763740800000
HOUR = 3600 * 1000

PHONES, EMAILS, CIDS, DING, WECOM, FEISHU, OPENIDS = [], [], [], [], [], [], []


def pools(scale):
    """Receiver pools; `scale` multiplies their sizes (the demo uses 1)."""
    global PHONES, EMAILS, CIDS, DING, WECOM, FEISHU, OPENIDS
    PHONES = [f"138001380{i:02d}" for i in range(60)] + [f"1390{i:07d}" for i in range(60 * (scale - 1))]
    EMAILS = [f"user{i}@example.com" for i in range(40 * scale)]
    CIDS = [f"cid-{i:03d}" for i in range(30 * scale)]
    DING = [f"ding-{i:02d}" for i in range(10 * scale)]
    WECOM = [f"wecom-{i:02d}" for i in range(10)] + [f"wecom-x{i}" for i in range(10 * (scale - 1))]
    FEISHU = [f"fs-{i:02d}" for i in range(10 * scale)]
    OPENIDS = [f"oOpen{i:04d}" for i in range(20 * scale)]


pools(1)
STRANGERS = ["13900139000", "stranger@example.com", "cid-stranger"]


def whitelist():
    return PHONES + EMAILS + CIDS + DING + WECOM + FEISHU + OPENIDS


def envelope(ts, payload, key="k"):
    body = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return json.dumps({"ts": ts, "key": key, "payload": body}, separators=(",", ":"))


def send(template, params, biz=None):
    if len(params) == 1:
        p = dict(params[0])
        if biz:
            p["bizId"] = biz
        return {"code": "send", "messageTemplateId": template, "messageParam": p}
    return {"code": "send", "messageTemplateId": template, "messageParamList": params}


def good(rng, i, ts):
    kind = rng.random()
    if kind < 0.30:  # login codes; a few receivers are chatty, some codes repeat
        r = rng.choice(PHONES[:5]) if rng.random() < 0.3 else rng.choice(PHONES)
        code = str(1000 + (i % 7 if rng.random() < 0.3 else rng.randrange(9000)))
        if rng.random() < 0.05:
            r = rng.choice(["12345", "1380013800", "abc"])  # invalid phone
        return send(1, [{"receiver": r, "variables": {"code": code}}], biz=f"login-{i}")
    if kind < 0.45:  # email notice (night_delay)
        rs = rng.sample(EMAILS, rng.randint(1, 3))
        if rng.random() < 0.05:
            rs.append("not-an-email")
        if rng.random() < 0.03:
            rs.append("stranger@example.com")
        return send(2, [{"receiver": ",".join(rs), "variables": {"name": "Ann", "order": f"o-{i % 50}"}}], biz=f"order-{i}")
    if kind < 0.58:  # push marketing (night_drop), a batch request
        params = [{"receiver": ",".join(rng.sample(CIDS, rng.randint(1, 4))), "variables": {"sale": f"{rng.randint(5, 9)}0%"}}
                  for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.05:
            params.append({"receiver": "cid-stranger", "variables": {"sale": "10%"}})
        return send(3, params)
    if kind < 0.66:  # DingTalk robot alerts, dedup exempt
        return send(4, [{"receiver": rng.choice(DING), "variables": {"service": "api", "level": "warn"}}])
    if kind < 0.70:  # discarded marketing SMS
        return send(5, [{"receiver": rng.choice(PHONES), "variables": {"sale": "20%"}}])
    if kind < 0.80:  # WeCom notices; the account refuses wecom-09
        return send(6, [{"receiver": ",".join(rng.sample(WECOM, rng.randint(1, 3))), "variables": {"task": f"T{i % 20}"}}])
    if kind < 0.90:  # Feishu robot
        return send(7, [{"receiver": rng.choice(FEISHU), "variables": {"build": f"#{i % 30}"}}])
    return send(8, [{"receiver": rng.choice(OPENIDS), "variables": {"order": f"o-{i}", "amount": f"{rng.randint(1, 500)}.00"}}])


def bad(rng, i):
    k = i % 8
    if k == 0:
        return "{not json"
    if k == 1:
        return {"code": "blast", "messageTemplateId": 1, "messageParam": {"receiver": PHONES[0]}}
    if k == 2:
        return {"code": "send", "messageTemplateId": 999, "messageParam": {"receiver": PHONES[0]}}
    if k == 3:
        return {"code": "send", "messageTemplateId": 1, "messageParam": {"receiver": PHONES[0], "variables": {"code": "1"}},
                "messageParamList": [{"receiver": PHONES[1], "variables": {"code": "1"}}]}
    if k == 4:
        return {"code": "send", "messageTemplateId": 1}
    if k == 5:
        return send(1, [{"receiver": PHONES[2]}])  # missing variable
    if k == 6:
        many = ",".join(f"1380013{n:04d}" for n in range(101))
        return send(1, [{"receiver": many, "variables": {"code": "1"}}])
    return send(1, [{"receiver": " , ", "variables": {"code": "1"}}])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hours", type=float, default=12.0, help="event times span this many hours from local midnight")
    ap.add_argument("--no-bad", action="store_true", help="leave out the bad records")
    ap.add_argument("--scale", type=int, default=1, help="multiply the receiver pools (1 = the demo's)")
    args = ap.parse_args()
    pools(args.scale)
    rng = random.Random(args.seed)
    span = int(args.hours * HOUR)
    with open(args.out, "w") as f:
        for i in range(args.count):
            # Mostly increasing event time with a little disorder.
            ts = DAY_START + span * i // args.count + rng.randint(-60_000, 60_000)
            ts = max(ts, DAY_START)
            if not args.no_bad and rng.random() < 0.02:
                f.write(envelope(ts, bad(rng, i)) + "\n")
            else:
                f.write(envelope(ts, good(rng, i, ts), key=str(i)) + "\n")


if __name__ == "__main__":
    main()
