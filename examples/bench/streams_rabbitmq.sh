#!/usr/bin/env bash
# Streams over STOMP, Tern against RabbitMQ stream queues (#20), same machine,
# same run: append (PUBLISHERS STOMP publishers, SEND with a receipt each,
# INFLIGHT unanswered per publisher, 64 B) and replay (one subscriber reads
# MESSAGES from the first offset, `ack: client`, prefetch 1000).
#
# Tern: SEND to /topic/bench/s (a [[stream]] on bench/#), read /stream/bench.
# RabbitMQ: Debian's rabbitmq-server (STOMP plugin, stream queue declared by
# `x-queue-type: stream` on /queue/bench), started here on non-default ports
# (STOMP 61714, AMQP 35672, epmd 34369) in a scratch directory and stopped at
# the end. Brokers on core 0, tern-bench on core 1. RUNS (default 3),
# DURATION (default 5 s), MESSAGES (default 1,000,000); BIN: a directory with
# release builds of tern and tern-bench to use instead of building them.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-3}
duration=${DURATION:-5}
messages=${MESSAGES:-1000000}
publishers=${PUBLISHERS:-8}
inflight=${INFLIGHT:-64}
port=${PORT:-61713}
rabbit_port=61714
if [ -z "${BIN:-}" ]; then cargo build --release -p tern -p tern-bench >/dev/null; fi
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release}
scratch=$(mktemp -d)
tern_pid=
cleanup() {
  [ -n "$tern_pid" ] && kill "$tern_pid" 2>/dev/null
  if [ -f "$scratch/env.sh" ]; then
    (. "$scratch/env.sh"; /usr/lib/rabbitmq/bin/rabbitmqctl stop >/dev/null 2>&1 || true
     epmd -port 34369 -kill >/dev/null 2>&1 || true)
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
rate() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); c=d.get("msgs_per_broker_cpu_s")
print(round(d["msgs_per_s"]), "msg/s" + ("" if c is None else ", %.0f msg per broker CPU-s" % c))'; }
bench() { taskset -c 1 "$bin/tern-bench" --json --publishers "$publishers" --inflight "$inflight" "$@" 2>/dev/null | rate; }

# --- RabbitMQ ---------------------------------------------------------------
echo "[rabbitmq_stomp]." >"$scratch/enabled_plugins"
cat >"$scratch/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:35672
stomp.listeners.tcp.1 = 127.0.0.1:$rabbit_port
loopback_users = none
CONF
cat >"$scratch/env.sh" <<ENV
export HOME=$scratch RABBITMQ_NODENAME=ternbench@localhost RABBITMQ_DIST_PORT=35673 ERL_EPMD_PORT=34369 \
  RABBITMQ_MNESIA_BASE=$scratch/mnesia RABBITMQ_LOG_BASE=$scratch/log \
  RABBITMQ_ENABLED_PLUGINS_FILE=$scratch/enabled_plugins RABBITMQ_CONFIG_FILE=$scratch/rabbitmq
ENV
(. "$scratch/env.sh"; taskset -c 0 /usr/lib/rabbitmq/bin/rabbitmq-server >"$scratch/rabbit.out" 2>&1 </dev/null &)
# Up once its STOMP listener answers (the plugin starts last).
for _ in $(seq 240); do (exec 3<>/dev/tcp/127.0.0.1/$rabbit_port) 2>/dev/null && break; sleep 0.5; done
# The STOMP host header is RabbitMQ's virtual host: tern-bench sends its --host.
(. "$scratch/env.sh"; /usr/lib/rabbitmq/bin/rabbitmqctl add_vhost 127.0.0.1 >/dev/null
 /usr/lib/rabbitmq/bin/rabbitmqctl set_permissions -p 127.0.0.1 guest '.*' '.*' '.*' >/dev/null)
echo "RabbitMQ $(. "$scratch/env.sh"; /usr/lib/rabbitmq/bin/rabbitmqctl version)"
# Its Erlang VM (the STOMP listener's process), for CPU per message.
rabbit_pid=$(ss -Hltnp "sport = :$rabbit_port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
rabbit_cpu=(); [ -n "$rabbit_pid" ] && rabbit_cpu=(--broker-pid "$rabbit_pid")
rabbit=(--port "$rabbit_port" --username guest --password guest
  --stomp-destination /queue/bench --stomp-header x-queue-type:stream)
# Declares the stream queue from one connection: RabbitMQ 3.10 fails the
# publishers (a crash in rabbit_queue_type:deliver) when 8 declare it at once.
# Its replica needs a moment before the first consumer.
taskset -c 1 "$bin/tern-bench" --json --publishers 1 "${rabbit[@]}" --scenario stomp-stream-append \
  --duration 1 >/dev/null 2>&1
sleep 2
for ((i = 1; i <= runs; i++)); do
  echo "rabbitmq append: $(bench "${rabbit[@]}" "${rabbit_cpu[@]}" --scenario stomp-stream-append --duration "$duration")"
done
while :; do # fill to MESSAGES
  held=$(. "$scratch/env.sh"; /usr/lib/rabbitmq/bin/rabbitmqctl list_queues -p 127.0.0.1 -q name messages |
    awk '$1=="bench"{print $2}')
  [ "${held:-0}" -ge "$messages" ] && break
  bench "${rabbit[@]}" --scenario stomp-stream-append --duration 5 >/dev/null
done
for ((i = 1; i <= runs; i++)); do
  echo "rabbitmq replay: $(bench "${rabbit[@]}" --scenario stomp-stream-replay --messages "$messages" --duration 300)"
done
(. "$scratch/env.sh"; /usr/lib/rabbitmq/bin/rabbitmqctl stop >/dev/null)

# --- Tern -------------------------------------------------------------------
printf '[[stream]]\nname = "bench"\ntopics = ["bench/#"]\n' >"$scratch/tern.toml"
TERN_STOMP__BIND=127.0.0.1:$port TERN_MQTT__BIND=127.0.0.1:0 TERN_WEBSOCKET__ENABLED=false \
  TERN_HTTP__ENABLED=false TERN_STORAGE__DATA_DIR=$scratch/tern TERN_LOG__LEVEL=error \
  taskset -c 0 "$bin/tern" --config "$scratch/tern.toml" >/dev/null 2>&1 &
tern_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
tern=(--port "$port" --stomp-destination /topic/bench/s)
for ((i = 1; i <= runs; i++)); do
  echo "tern append: $(bench "${tern[@]}" --scenario stomp-stream-append --duration "$duration" --broker-pid "$tern_pid")"
done
filled=0
while [ "$filled" -lt "$messages" ]; do # about 10k msg/s per publisher: enough runs to pass MESSAGES
  n=$(taskset -c 1 "$bin/tern-bench" --json --publishers "$publishers" --inflight "$inflight" "${tern[@]}" \
    --scenario stomp-stream-append --duration 5 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["sent"])')
  filled=$((filled + n))
done
tern=(--port "$port" --stomp-destination /stream/bench)
for ((i = 1; i <= runs; i++)); do
  echo "tern replay: $(bench "${tern[@]}" --scenario stomp-stream-replay --messages "$messages" --duration 300)"
done
