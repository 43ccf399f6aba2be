#!/usr/bin/env bash
# Selectors (#22): fan-out 1 -> 100 MQTT 5 subscribers where each has the
# selector `bucket = 3` (the publisher tags message n with the user property
# bucket = n mod 10, so each subscriber gets 10 % of the messages), against the
# same tagged messages without selectors (every subscriber gets all of them),
# and untagged messages without selectors (what the tag itself costs);
# `distinct`: subscriber i has `bucket = i mod 10` (10 distinct selectors, each
# message goes to 10 subscribers).
# Reported: messages through the broker per second (published, whatever the
# selectors keep), deliveries per second, broker CPU seconds per million
# published messages. Broker on core 0, generator on
# core 1. RUNS (default 3), DURATION (default 5 s), SELECTOR (default
# "bucket = 3"; with a selector that matches more than one bucket the loss
# counts are not meaningful).
set -euo pipefail
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
duration=${DURATION:-5}
selector=${SELECTOR:-bucket = 3}
port=${PORT:-18830}
http=${HTTP_PORT:-19090}
cargo build --release -p tern -p tern-bench >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release

start() {
  dir=$(mktemp -d)
  TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_WEBSOCKET__ENABLED=false \
    TERN_HTTP__BIND=127.0.0.1:$http TERN_STORAGE__DATA_DIR=$dir \
    TERN_LOG__LEVEL=error taskset -c 0 "$bin/tern" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
}
summary() {
  python3 -c '
import json, sys
d = json.loads(sys.stdin.read().splitlines()[-1])
rate = d.get("msgs_per_s") or 0
deliveries = d.get("deliveries_per_s") or 0
cpu = d.get("broker_cpu_util")
per_m = "%.2f" % (cpu / rate * 1e6) if cpu and rate else "?"
print("messages %d/s, deliveries %d/s, lost %s, broker CPU s per 1M messages %s" % (rate, deliveries, d.get("lost"), per_m))
'
}

for ((i = 1; i <= runs; i++)); do
  for mode in plain tagged selector distinct; do
    start
    args=(--port "$port" --scenario fan-out --mqtt-v5 --duration "$duration" --broker-pid "$pid" --json)
    case $mode in
      tagged) args+=(--selector-buckets 10) ;;
      selector) args+=(--selector-buckets 10 --selector "$selector") ;;
      distinct) args+=(--selector-buckets 10 --selector 'bucket = {sub}') ;;
    esac
    # A run with errors (a stall on a loaded machine) still reports its figures.
    r=$( (taskset -c 1 "$bin/tern-bench" "${args[@]}" 2>/dev/null || true) | summary)
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; rm -rf "$dir"
    echo "fan-out 1->100, $mode: $r"
  done
done
