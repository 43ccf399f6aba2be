#!/usr/bin/env bash
# Durable streams (#20): what keeping a stream costs QoS 1 publishers, and how
# fast one subscriber replays a stream from its first message.
#
# 1. append: the qos1 scenario (8 publishers, QoS 1, 64 B) against Tern with
#    and without a [[stream]] on bench/#; group commit either way.
# 2. replay: the stream filled with MESSAGES 64-byte messages (fan-in, QoS 0),
#    then `--scenario stream-replay` reads them from `first` at QoS 0 and QoS 1.
# Broker on core 0, generator on core 1. RUNS (default 3), DURATION (default 5 s),
# MESSAGES (default 1,000,000); APPEND_ONLY=1 skips the replay. BACKENDS
# (default "redb"; "redb nats" for both in one run): with nats the store is a
# nats-server -js of its own (also on core 0; its CPU counts as the broker's).
# APPEND_ARGS: more tern-bench arguments for the append runs, both modes
# (e.g. "--publishers 64": more messages in flight, so more per group commit).
# Memory during a replay: streams_memory.sh.
set -euo pipefail
pid=
nats_pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$nats_pid" ] && kill "$nats_pid" 2>/dev/null; true' EXIT
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
duration=${DURATION:-5}
messages=${MESSAGES:-1000000}
port=${PORT:-18830}
http=${HTTP_PORT:-19090}
cargo build --release -p tern -p tern-bench >/dev/null
bin=${CARGO_TARGET_DIR:-target}/release
. examples/bench/streams_common.sh
conf=$(mktemp --suffix=.toml)
stream_conf "$conf"
empty=$(mktemp --suffix=.toml)

# The last JSON report on stdin as "<rate> msg/s, <n> msg per broker CPU-s".
figures() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1])
print("%.0f msg/s, %.0f msg per broker CPU-s" % (d["msgs_per_s"], d["msgs_per_broker_cpu_s"]))'; }

for backend in ${BACKENDS:-redb}; do
for ((i = 1; i <= runs; i++)); do
  for mode in none stream; do
    dir=$(mktemp -d)
    if [ "$mode" = stream ]; then start "$conf" "$dir"; else start "$empty" "$dir"; fi
    # shellcheck disable=SC2086 # APPEND_ARGS is a list of arguments
    r=$(taskset -c 1 "$bin/tern-bench" --port "$port" --scenario qos1 --duration "$duration" \
      ${APPEND_ARGS:-} --broker-pid "$pids" --json | figures)
    stop; rm -rf "$dir"
    echo "$backend: append qos1, $mode: $r"
  done
done

if [ -n "${APPEND_ONLY:-}" ]; then continue; fi
dir=$(mktemp -d)
start "$conf" "$dir"
held=$(fill "$messages")
echo "$backend: stream holds $held messages"
for q in 0 1; do
  for ((i = 1; i <= runs; i++)); do
    r=$(taskset -c 1 "$bin/tern-bench" --port "$port" --scenario stream-replay --replay-qos "$q" \
      --messages "$messages" --duration 300 --broker-pid "$pids" --json 2>/dev/null | figures)
    echo "$backend: replay qos$q: $r"
  done
done
stop; rm -rf "$dir"
done
rm -f "$conf" "$empty"
