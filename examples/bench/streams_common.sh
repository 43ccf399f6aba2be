# Sourced by streams.sh and streams_memory.sh: starting Tern with or without a
# stream and filling the stream. Uses bin, port and http; sets pid.

# A config file declaring the stream "bench" on bench/#.
stream_conf() { printf '[[stream]]\nname = "bench"\ntopics = ["bench/#"]\n' >"$1"; }

start() { # config file, data dir
  TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_WEBSOCKET__ENABLED=false \
    TERN_HTTP__BIND=127.0.0.1:$http TERN_HTTP__ADMIN_TOKEN=bench TERN_STORAGE__DATA_DIR=$2 \
    TERN_LOG__LEVEL=error taskset -c 0 "$bin/tern" --config "$1" >/dev/null 2>&1 &
  pid=$!
  # Up once its listener answers.
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
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
