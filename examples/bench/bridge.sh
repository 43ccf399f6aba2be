#!/usr/bin/env bash
# Bridge benchmarks, in one run:
# 1. Throughput: tern-bench publishers on the edge broker -> bridge -> one
#    subscriber on a remote Mosquitto (`--sub-port`), QoS 1 (rule `bench/# out 1`).
#    Edge = Tern with [[bridge]], against edge = Mosquitto with a `connection`
#    bridge to the same kind of remote Mosquitto. Edge on core 0, remote and
#    generator on core 1 (2-core machine). RUNS (default 3), DURATION (default 5 s).
# 2. Drain, for each edge (Tern, then Mosquitto with a persistent bridge queue
#    and no queue limit): remote down, BACKLOG (default 1,000,000) QoS 1
#    messages published to the edge by LOADERS (default 8) loaders at once,
#    each running `mosquitto_pub -l` processes one after another (each message
#    acked: in Tern's store), then the remote started: seconds from its start
#    until its counting subscriber (a persistent session made beforehand) has
#    them all, with lost and repeated messages. RUNS=0 skips the throughput part.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
duration=${DURATION:-5}
backlog=${BACKLOG:-1000000}
loaders=${LOADERS:-8}
chunk=60000
edge_port=${EDGE_PORT:-18841}
remote_port=${REMOTE_PORT:-18842}
# NO_BUILD=1: use the release binaries as they are.
[[ -n ${NO_BUILD:-} ]] || cargo build --release -p tern -p tern-bench >/dev/null
bin=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

remote_conf="$work/remote.conf"
# `user`: started as root, Mosquitto would switch to the user `mosquitto`,
# which cannot write the persistence files under the root-owned 0700 $work: the
# remote would lose the counting subscriber's session at each restart.
printf 'user %s\nlistener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n' \
  "$(id -un)" "$remote_port" >"$remote_conf"
edge_mosquitto_conf="$work/edge-mosquitto.conf"
cat >"$edge_mosquitto_conf" <<EOF
user $(id -un)
listener $edge_port 127.0.0.1
allow_anonymous true
max_queued_messages 0
connection cloud
address 127.0.0.1:$remote_port
bridge_protocol_version mqttv311
try_private true
cleansession false
topic bench/# out 1
max_queued_messages 0
EOF
# The drain's Mosquitto edge: the same bridge, reconnecting every second as
# Tern's does, with as many QoS 1 messages in flight as Tern's bridge (1024),
# and persistence on (Mosquitto writes its queue at autosave and exit, not per
# message as Tern's store does before each ack).
edge_mosquitto_drain_conf="$work/edge-mosquitto-drain.conf"
cat "$edge_mosquitto_conf" >"$edge_mosquitto_drain_conf"
printf 'restart_timeout 1\nmax_inflight_messages 1024\npersistence true\npersistence_location %s/\n' \
  "$work/edge-data" >>"$edge_mosquitto_drain_conf"
edge_tern_conf="$work/edge-tern.toml"
cat >"$edge_tern_conf" <<EOF
[mqtt]
bind = "127.0.0.1:$edge_port"
[stomp]
enabled = false
[websocket]
enabled = false
[http]
enabled = false
[log]
level = "error"
[[bridge]]
name = "cloud"
addresses = ["127.0.0.1:$remote_port"]
protocol = "mqttv311"
topics = ["bench/# out 1"]
reconnect_min_secs = 1
reconnect_max_secs = 1
EOF

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

start_edge() { # $1 = tern | mosquitto, $2 = mosquitto config (default: throughput's); prints the pid
  if [[ $1 == tern ]]; then
    rm -rf "$work/data"
    TERN_STORAGE__DATA_DIR="$work/data" taskset -c 0 "$bin/tern" --config "$edge_tern_conf" \
      >/dev/null 2>"$work/tern.log" &
  else
    taskset -c 0 mosquitto -c "${2:-$edge_mosquitto_conf}" >/dev/null 2>&1 &
  fi
  echo $!
}

((runs == 0)) || echo "== throughput: publishers -> edge -> bridge -> remote subscriber (QoS 1) =="
for ((i = 1; i <= runs; i++)); do
  for edge in tern mosquitto; do
    taskset -c 1 mosquitto -c "$remote_conf" >/dev/null 2>&1 &
    remote=$!
    wait_port "$remote_port"
    pid=$(start_edge "$edge")
    wait_port "$edge_port"
    sleep 2 # the edge's bridge connects (no readiness signal from Mosquitto's bridge)
    result=$(taskset -c 1 "$bin/tern-bench" --port "$edge_port" --sub-port "$remote_port" \
      --scenario qos1 --duration "$duration" --broker-pid "$pid" --json 2>/dev/null | tail -1)
    kill "$pid" "$remote"; wait "$pid" "$remote" 2>/dev/null || true
    echo "$edge $result" | python3 -c '
import json, sys
edge, _, js = sys.stdin.read().partition(" ")
d = json.loads(js)
rate, per_cpu, lost = d["msgs_per_s"], d["msgs_per_broker_cpu_s"], d["lost"]
print(f"{edge:10} {rate:>10.0f} msg/s  {per_cpu:>10.0f} msg/edge-CPU-s  lost={lost}")'
  done
done

echo "== drain: $backlog QoS 1 messages stored while the remote is down =="
# The remote keeps a persistent session for the counting subscriber, so what
# the bridge sends before that subscriber is back is queued for it.
drain_conf="$work/remote-drain.conf"
cat "$remote_conf" >"$drain_conf"
printf 'persistence true\npersistence_location %s/\n' "$work/remote-data" >>"$drain_conf"

load() { # $1 = loader, $2 = count: publishes 1..count to bench/backlog/$1, in order
  local from to
  for ((from = 1; from <= $2; from += chunk)); do
    to=$((from + chunk - 1 < $2 ? from + chunk - 1 : $2))
    seq "$from" "$to" | taskset -c 1 mosquitto_pub -p "$edge_port" -i "load$1" -q 1 \
      -t "bench/backlog/$1" -l -M 1000 || return
  done
}

drain() { # $1 = tern | mosquitto: loads the backlog into that edge, then times its drain
  rm -rf "$work/remote-data" "$work/edge-data"
  mkdir -p "$work/remote-data" "$work/edge-data"
  taskset -c 1 mosquitto -c "$drain_conf" >/dev/null 2>&1 &
  local remote=$!
  wait_port "$remote_port"
  mosquitto_sub -p "$remote_port" -c -i drain -q 1 -t 'bench/#' -E
  kill "$remote"
  wait "$remote" 2>/dev/null || true
  local pid
  pid=$(start_edge "$1" "$edge_mosquitto_drain_conf")
  wait_port "$edge_port"
  # Each loader's messages on a topic of its own, in order; together BACKLOG.
  # A loader runs one `mosquitto_pub -l` after another, each with at most
  # CHUNK (60,000) lines: with more than 65,535 lines its packet ids wrap and
  # it disconnects, exit status 0, at the first PUBACK carrying the last line's
  # id (mosquitto 2.0.11), so a 125,000-line loader stopped after about 60,000.
  local start loaded k count loads=()
  start=$(date +%s.%N)
  for ((k = 0; k < loaders; k++)); do
    count=$((backlog / loaders + (k < backlog % loaders ? 1 : 0)))
    load "$k" "$count" &
    loads+=($!)
  done
  for k in "${loads[@]}"; do
    wait "$k" || echo "$1: a loader failed (exit $?): the backlog is short" >&2
  done
  loaded=$(date +%s.%N)
  local cpu_before begin end drained cpu_after
  cpu_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  begin=$(date +%s.%N)
  taskset -c 1 mosquitto -c "$drain_conf" >/dev/null 2>&1 &
  remote=$!
  wait_port "$remote_port"
  taskset -c 1 mosquitto_sub -p "$remote_port" -c -i drain -q 1 -t 'bench/#' -v \
    -C "$backlog" -W 900 >"$work/got" || true
  end=$(date +%s.%N)
  cpu_after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  # Received lines (QoS 1 may repeat one) and distinct topic + number pairs.
  local distinct
  drained=$(wc -l <"$work/got")
  distinct=$(sort -u "$work/got" | wc -l)
  kill "$pid" "$remote"
  wait "$pid" "$remote" 2>/dev/null || true
  python3 -c "
edge, n, got, distinct = '$1', $backlog, $drained, $distinct
load, took = $loaded - $start, $end - $begin
cpu = ($cpu_after - $cpu_before) / $(getconf CLK_TCK)
print(f'{edge:10} loaded {n:,} in {load:.1f} s ({n / load:,.0f} msg/s); '
      f'drained {got:,}/{n:,} in {took:.1f} s: {got / took:,.0f} msg/s, '
      f'{got / max(cpu, 0.01):,.0f} msg per edge CPU-second; '
      f'lost {n - distinct:,}, repeated {got - distinct:,}')"
}

for edge in tern mosquitto; do
  drain "$edge"
done
