#!/usr/bin/env python3
"""What a heaptrack recording holds live at one moment, by call site.

heaptrack_print reports the heap at its peak and what is left at the end; this reads the
recording's event stream (`zstdcat FILE`: `a` allocation infos, `+`/`-` allocations and frees,
`c` timestamps in ms) to sum the bytes live per call stack at any moment:

    bench/heaptrack_live.py heaptrack.tidings-bench.1234.zst            # total live per tick (~10 ms)
    bench/heaptrack_live.py heaptrack.tidings-bench.1234.zst 17738      # by site at 17,738 ms

Sites are named by their innermost frames in tidings' crates (and parquet, arrow, librdkafka),
by file and line (frames without line tables fall together). Reads heaptrack's file format 3
(heaptrack 1.2 on; its `v` line).
"""
import collections
import subprocess
import sys

OURS = ("operators/", "dataflows/", "sinks/", "model/", "bench/", "parquet", "arrow", "rdkafka")


def main():
    path = sys.argv[1]
    at = int(sys.argv[2]) if len(sys.argv) > 2 else None
    stream = subprocess.Popen(["zstdcat", path], stdout=subprocess.PIPE, bufsize=1 << 20).stdout
    strings, ips, traces, infos = [None], [None], [None], []
    per = collections.Counter()
    live, t = 0, 0
    for raw in stream:
        c = raw[:1]
        if c == b"+" or c == b"-":
            size, trace = infos[int(raw[2:], 16)]
            sign = 1 if c == b"+" else -1
            live += sign * size
            if at is not None:
                per[trace] += sign * size
        elif c == b"v" and int(raw.split()[2], 16) < 3:
            sys.exit(f"{path}: heaptrack file format {raw.split()[2].decode()}, not 3")
        elif c == b"a":
            _, size, trace = raw.split()
            infos.append((int(size, 16), int(trace, 16)))
        elif c == b"c":
            t = int(raw.split()[1], 16)
            if at is None:
                print(t, round(live / 1e6, 1))
            elif t >= at:
                break
        elif at is not None and c == b"s":
            strings.append(raw[2:].rstrip(b"\n").split(b" ", 1)[1].decode(errors="replace"))
        elif at is not None and c == b"i":
            rest = raw.split()[3:]
            ips.append([(int(rest[k + 1], 16), int(rest[k + 2], 16)) for k in range(0, len(rest) - 2, 3)])
        elif at is not None and c == b"t":
            _, ip, parent = raw.split()
            traces.append((int(ip, 16), int(parent, 16)))
    if at is None:
        return

    def site(trace, depth=5):
        frames = []
        while trace and len(frames) < depth:
            ip, parent = traces[trace]
            for file, line in ips[ip]:
                name = strings[file] if 0 < file < len(strings) else ""
                if any(o in name for o in OURS):
                    short = name.split("/src/")[-1] if (".cargo" in name or "/out/src/" in name) else name
                    frames.append(f"{short}:{line}")
            trace = parent
        return " <- ".join(frames[:depth])

    by_site = collections.Counter()
    for trace, size in per.items():
        if size:
            by_site[site(trace)] += size
    print(f"live at {t} ms: {live / 1e6:.1f} MB")
    for name, size in by_site.most_common(30):
        print(f"{size / 1e6:8.1f} MB  {name[:240]}")


if __name__ == "__main__":
    main()
