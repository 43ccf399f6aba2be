# Sourced by streams.sh and streams_memory.sh: starting Tern with or without a
# stream and filling the stream. Uses bin, port, http and backend (redb or
# nats); sets pid, nats_pid and pids.

# A config file declaring the stream "bench" on bench/#.
stream_conf() { printf '[[stream]]\nname = "bench"\ntopics = ["bench/#"]\n' >"$1"; }

start() { # config file, data dir; with backend=nats a nats-server of its own too (core 0)
  local env=()
  nats_pid=
  if [ "${backend:-redb}" = nats ]; then
    local nport=${NATS_PORT:-14222}
    taskset -c 0 "$(command -v nats-server || echo /usr/sbin/nats-server)" -js -a 127.0.0.1 \
      -p "$nport" -sd "$2/nats" >/dev/null 2>"${NATS_LOG:-/dev/null}" &
    nats_pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$nport) 2>/dev/null && break; sleep 0.1; done
    env=(TERN_CLUSTER__ENABLED=true TERN_CLUSTER__NODE=bench
      TERN_CLUSTER__NATS_URLS=nats://127.0.0.1:$nport TERN_STORAGE__BACKEND=nats)
  fi
  env TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_WEBSOCKET__ENABLED=false \
    TERN_HTTP__BIND=127.0.0.1:$http TERN_HTTP__ADMIN_TOKEN=bench TERN_STORAGE__DATA_DIR=$2 \
    TERN_LOG__LEVEL=${LOG_LEVEL:-error} "${env[@]}" taskset -c 0 "$bin/tern" --config "$1" >/dev/null 2>"${LOG_FILE:-/dev/null}" &
  pid=$!
  # The broker's processes (tern-bench --broker-pid): tern, and its nats-server.
  pids=$pid${nats_pid:+,$nats_pid}
  # Up once its listener answers.
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
}

stop() { # what start started
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ -n "$nats_pid" ]; then kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; fi
}

fill() { # publishes (fan-in, QoS 0) until the stream holds $1 messages; prints how many
  local held
  while :; do
    # 0 while the admin listener is not up yet.
    held=$(curl -s -H 'Authorization: Bearer bench' "http://127.0.0.1:$http/api/streams/bench" |
      python3 -c 'import json,sys
try: print(json.load(sys.stdin)["messages"])
except ValueError: print(0)')
    [ "$held" -ge "$1" ] && break
    taskset -c 1 "$bin/tern-bench" --port "$port" --scenario fan-in --duration 5 --json >/dev/null 2>&1 || true
  done
  echo "$held"
}
