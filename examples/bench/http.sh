#!/usr/bin/env bash
# HTTP /v1 throughput with wrk (keep-alive connections) against a release Tern,
# and the same publish against RabbitMQ's management API (the nearest broker
# with an HTTP publish that runs here; nats-server has none) when
# rabbitmq-server is installed.
#
# Usage: examples/bench/http.sh
#
# Figures (64-byte payloads, QoS 0, Tern storage off so HTTP is what is measured):
#   publish     POST /v1/topics/bench/http, requests/s (= messages/s)
#   ndjson      POST /v1/publish with 100 lines a request, messages/s
#   pull        POST /v1/queues/bench/pull?max=100 on a prefilled queue, messages/s
#               (leases not acked; counted by tern_messages_sent_total{protocol="http"})
#   sse         fan-out: 100 GET /v1/events streams read by tern-bench (--scenario
#               sse: raw TCP readers counting events, one MQTT QoS 0 publisher paced
#               on the slowest reader); deliveries/s received, and the drops
#   rabbitmq    POST /api/exchanges/%2F/amq.default/publish, requests/s
#
# Environment: DURATION=5 (seconds per figure), CONNECTIONS=16 (wrk), PIN=1 (broker
# on core 0, load on core 1), CARGO_TARGET_DIR. Needs wrk, curl, python3
# (apt-get install wrk; rabbitmq-server for the anchor).
set -euo pipefail

DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-16}
PIN=${PIN:-1}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HERE="$ROOT/examples/bench/http"
WORK=$(mktemp -d /tmp/tern-http-bench.XXXXXX)
BROKER_CPU=() LOAD_CPU=()
if [ "$PIN" = 1 ]; then BROKER_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 1); fi
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -p tern -p tern-bench -q
PAYLOAD=$(printf 'x%.0s' $(seq 64))

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
LUA

# Starts Tern (storage off, port 0 everywhere); sets WS and METRICS.
start_tern() {
    env -i PATH="$PATH" HOME="$HOME" TERN_MQTT__BIND=127.0.0.1:0 TERN_STOMP__BIND=127.0.0.1:0 \
        TERN_WEBSOCKET__BIND=127.0.0.1:0 TERN_HTTP__BIND=127.0.0.1:0 TERN_STORAGE__ENABLED=false \
        TERN_LOG__LEVEL=warn TERN_LIMITS__QUEUE_MAX_MESSAGES=5000000 \
        TERN_LIMITS__HTTP_MAX_BODY_SIZE=67108864 TERN_LIMITS__HTTP_MAX_OPEN_STREAMS=1000 \
        "${BROKER_CPU[@]}" "$TARGET/release/tern" > "$WORK/banner" 2> "$WORK/tern.stderr" &
    PIDS+=($!)
    TERN_PID=$!
    for _ in $(seq 100); do grep -q listening "$WORK/banner" 2>/dev/null && break; sleep 0.1; done
    WS=$(grep -oE ' ws=[0-9.]+:[0-9]+' "$WORK/banner" | cut -d= -f2)
    METRICS=$(grep -oE ' http=[0-9.]+:[0-9]+' "$WORK/banner" | cut -d= -f2)
}

stop_tern() { kill "$TERN_PID"; wait "$TERN_PID" 2>/dev/null || true; }

sent() { curl -s "http://$METRICS/metrics" | awk '/^tern_messages_sent_total\{protocol="http"/ {s += $2} END {print s + 0}'; }

# wrk's requests/s for URL with BODY_FILE as the body.
wrk_rate() {
    BODY_FILE=$1 "${LOAD_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/post.lua" "${@:2}" \
        | awk '/^Requests\/sec/ {print $2}'
}

printf '%s' "$PAYLOAD" > "$WORK/one"
for _ in $(seq 100); do printf '{"topic":"bench/ndjson","payload":"%s","qos":0}\n' "$PAYLOAD"; done > "$WORK/batch"
: > "$WORK/empty"

start_tern
publish=$(wrk_rate "$WORK/one" "http://$WS/v1/topics/bench/http?qos=0")
ndjson=$(wrk_rate "$WORK/batch" "http://$WS/v1/publish")
echo "publish: $publish requests/s"
echo "ndjson: $(python3 -c "print(round($ndjson * 100))") messages/s ($ndjson requests/s of 100)"

# Pull: a queue holding more than the run can take, then max=100 pulls.
python3 "$HERE/prefill.py" "${WS%:*}" "${WS#*:}" bench 3000000 64 > /dev/null
before=$(sent)
pull=$(wrk_rate "$WORK/empty" "http://$WS/v1/queues/bench/pull?max=100&visibility=3600")
after=$(sent)
echo "pull max=100: $(python3 -c "print(round(($after - $before) / $DURATION))") messages/s ($pull requests/s)"
stop_tern

# SSE fan-out: tern-bench's sse scenario, 100 GET /v1/events readers (raw TCP,
# each event's data line counted) fed by one MQTT QoS 0 publisher that paces
# itself on the slowest reader (so nothing is dropped).
start_tern
MQTT=$(grep -oE ' mqtt=[0-9.]+:[0-9]+' "$WORK/banner" | cut -d= -f2)
sse=$("${LOAD_CPU[@]}" "$TARGET/release/tern-bench" --scenario sse --port "${MQTT#*:}" --http-port "${WS#*:}" \
    --subscribers 100 --duration "$DURATION" --broker-pid "$TERN_PID" --json 2>/dev/null)
dropped=$(curl -s "http://$METRICS/metrics" | awk '/^tern_messages_dropped_total\{reason="queue_full"/ {print $2}')
echo "sse fan-out to 100: $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(f\"{round(r['deliveries_per_s'])} deliveries/s ({round(r['msgs_per_s'])} messages/s, broker CPU {r.get('broker_cpu_util', 0):.2f} cores)\")" "$sse"), ${dropped:-0} dropped by full stream queues"
stop_tern

# The anchor: RabbitMQ's management API publish to the default exchange.
if command -v rabbitmq-server >/dev/null; then
    export RABBITMQ_MNESIA_BASE="$WORK/rabbit" RABBITMQ_LOG_BASE="$WORK/rabbit-log" RABBITMQ_NODE_PORT=25672 \
        RABBITMQ_NODENAME="bench-$$@localhost" RABBITMQ_DIST_PORT=25673 \
        RABBITMQ_SERVER_START_ARGS="-rabbitmq_management listener [{port,25674}]" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/enabled_plugins"
    mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    echo '[rabbitmq_management].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    # The server drops to the rabbitmq user, which must own its directories.
    chown -R rabbitmq:rabbitmq "$WORK" 2>/dev/null || true
    "${BROKER_CPU[@]}" rabbitmq-server > "$WORK/rabbit.out" 2>&1 &
    PIDS+=($!)
    RABBIT_PID=$!
    for _ in $(seq 120); do curl -sf -u guest:guest http://127.0.0.1:25674/api/overview > /dev/null && break; sleep 0.5; done
    printf '{"properties":{},"routing_key":"bench","payload":"%s","payload_encoding":"string"}' "$PAYLOAD" > "$WORK/rabbit.json"
    cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Basic Z3Vlc3Q6Z3Vlc3Q="
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
LUA
    rabbit=$(wrk_rate "$WORK/rabbit.json" "http://127.0.0.1:25674/api/exchanges/%2F/amq.default/publish")
    echo "rabbitmq management publish: $rabbit requests/s (RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null))"
    rabbitmqctl -n "bench-$$@localhost" stop > /dev/null 2>&1 || kill "$RABBIT_PID"
fi
