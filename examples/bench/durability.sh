#!/usr/bin/env bash
# Durable QoS 1 throughput: Tern with group commit (durability = "batched", the
# default: PUBACK after the fsynced commit) against durability = "none", with a
# persistent subscriber so every message is written to the store. Broker on
# core 0, generator on core 1. RUNS (default 3) and DURATION (default 5 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
duration=${DURATION:-5}
port=${PORT:-18830}
cargo build --release -p tern -p tern-bench >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release
for ((i = 1; i <= runs; i++)); do
  for mode in batched none; do
    dir=$(mktemp -d)
    TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_STORAGE__DATA_DIR=$dir \
      TERN_STORAGE__DURABILITY=$mode TERN_LOG__LEVEL=error taskset -c 0 "$bin/tern" >/dev/null 2>&1 &
    pid=$!
    sleep 1
    result=$(taskset -c 1 "$bin/tern-bench" --port "$port" --scenario qos1 --persistent \
      --duration "$duration" --broker-pid "$pid" --json 2>/dev/null | tail -1)
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
    echo "$mode $result" | python3 -c '
import json, sys
mode, _, js = sys.stdin.read().partition(" ")
d = json.loads(js)
rate, per_cpu, lost = d["msgs_per_s"], d["msgs_per_broker_cpu_s"], d["lost"]
print(f"{mode:8} {rate:>10.0f} msg/s  {per_cpu:>10.0f} msg/broker-CPU-s  lost={lost}")'
  done
done
