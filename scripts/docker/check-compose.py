#!/usr/bin/env python3
"""Checks docker-compose.yml and the Dockerfile without a Docker engine (CI has none).

- the compose file parses and has the services the deployment promises;
- every bind-mounted host path exists;
- Kafka advertises a listener the containers can reach (the service name, not localhost) and
  the live job reads exactly that one, plus one for the host;
- the live job tracks to (and checkpoints on) the MinIO bucket the compose file creates, and
  every node can reach it;
- Prometheus scrapes every tidings node on its container port;
- every tidings command in the file (and the Dockerfile's CMD) parses with the binary given
  as the first argument (`tidings ARGS --help` exits 0);
- the Dockerfile's stages copy only files that exist.

Usage: check-compose.py TIDINGS_BINARY
"""
import json
import os
import re
import subprocess
import sys

import yaml

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
os.chdir(root)
binary = sys.argv[1]
problems = []


def problem(msg):
    problems.append(msg)


def subst(s):
    # ${NAME:-default} as compose interpolates it, with the environment unset.
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", s)


compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services", {})
for name in ["kafka", "redis", "minio", "minio-init", "tidings-1", "tidings-2", "submit", "prometheus", "grafana"]:
    if name not in services:
        problem(f"docker-compose.yml: no service {name}")

for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith(".") and not os.path.exists(src):
            problem(f"docker-compose.yml: {name} mounts {src}, which does not exist")
    for dep in svc.get("depends_on", []):
        if dep not in services:
            problem(f"docker-compose.yml: {name} depends on unknown service {dep}")

env = services.get("kafka", {}).get("environment", {})
advertised = env.get("KAFKA_ADVERTISED_LISTENERS", "")
listeners = dict(
    (l.split("://")[0], l.split("://")[1]) for l in advertised.split(",") if "://" in l
)
internal = [a for a in listeners.values() if a.startswith("kafka:")]
external = [a for a in listeners.values() if a.startswith("localhost:")]
if not internal:
    problem("kafka: no advertised listener by its service name (kafka:PORT) for the containers")
if not external:
    problem("kafka: no advertised listener on localhost for the host")
live = open("examples/live/job.toml").read()
m = re.search(r'^brokers\s*=\s*"([^"]+)"', live, re.M)
if not m or m.group(1) not in internal:
    problem(f"examples/live/job.toml: brokers {m and m.group(1)} is not the containers' listener {internal}")

# The live job tracks to the compose file's MinIO: a bucket minio-init creates, and an endpoint
# every tidings service is given.
m = re.search(r'^dir\s*=\s*"s3://([^/"]+)', live, re.M)
init = " ".join(services.get("minio-init", {}).get("entrypoint", []))
if not m:
    problem("examples/live/job.toml: tracking.dir is not on the compose file's MinIO (s3://BUCKET/...)")
elif f"local/{m.group(1)}" not in init:
    problem(f"docker-compose.yml: minio-init does not create bucket {m.group(1)}")
# Its checkpoints too, so either node can run it.
m = re.search(r'^state_dir\s*=\s*"s3://([^/"]+)', live, re.M)
if not m:
    problem("examples/live/job.toml: state_dir is not on the compose file's MinIO (s3://BUCKET/...)")
elif f"local/{m.group(1)}" not in init:
    problem(f"docker-compose.yml: minio-init does not create bucket {m.group(1)}")
for name, svc in services.items():
    if svc.get("image", "").startswith("tidings") and "serve" in svc.get("command", []):
        if svc.get("environment", {}).get("AWS_ENDPOINT_URL") != "http://minio:9000":
            problem(f"docker-compose.yml: {name} has no AWS_ENDPOINT_URL of the minio service")

prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
targets = [t for c in prom["scrape_configs"] for s in c["static_configs"] for t in s["targets"]]
for name, svc in services.items():
    if svc.get("image", "").startswith("tidings") and "serve" in svc.get("command", []):
        if f"{name}:7070" not in targets:
            problem(f"prometheus.yml: does not scrape {name}:7070")


def parses(args, where):
    args = [subst(a) for a in args]
    r = subprocess.run([binary] + args + ["--help"], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"{where}: `tidings {' '.join(args)}` does not parse: {r.stderr.strip()}")


for name, svc in services.items():
    if svc.get("image", "").startswith("tidings"):
        parses(svc["command"], f"docker-compose.yml {name}.command")
        hc = svc.get("healthcheck", {}).get("test", [])
        if hc[:2] == ["CMD", "tidings"]:
            parses(hc[2:], f"docker-compose.yml {name}.healthcheck")

docker = open("Dockerfile").read()
cmd = re.search(r"^CMD (\[.*\])", docker, re.M)
if cmd:
    parses(json.loads(cmd.group(1)), "Dockerfile CMD")
for src in re.findall(r"^COPY --from=build /src/(\S+)", docker, re.M):
    if not os.path.exists(src):
        problem(f"Dockerfile: copies /src/{src}, which does not exist")
if "scripts/docker/build.sh" not in docker:
    problem("Dockerfile: the build stage does not run scripts/docker/build.sh (which CI checks)")

for p in problems:
    print(f"error: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"docker-compose.yml ({len(services)} services) and Dockerfile check out")
