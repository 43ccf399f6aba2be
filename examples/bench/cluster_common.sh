# Sourced by cluster.sh and cluster_durable.sh: starting and stopping NATS
# servers around tern-bench runs. Expects ROOT and LOG_NAME; sets the binaries'
# paths, WORK (a scratch directory, removed at exit) and PIDS (every process
# started, stopped at exit).

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TERN_BIN=$TARGET/release/tern
BEFORE_BIN=${BEFORE_BIN:-}
BENCH_BIN=$TARGET/release/tern-bench
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)
WORK=$(mktemp -d "/tmp/$LOG_NAME.XXXXXX")
PIDS=()

log() { echo "$LOG_NAME: $*" >&2; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "port $1 did not open"
    exit 1
}

any_alive() {
    for pid in "$@"; do
        if kill -0 "$pid" 2>/dev/null; then return 0; fi
    done
    return 1
}

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A broker still saving a backlog after 5 s is killed: the next run starts clean.
    for _ in $(seq 1 50); do
        any_alive "${PIDS[@]}" || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    rm -rf "${WORK:?}"/*
}

# The processes started, comma-separated (tern-bench --broker-pid).
pid_list() {
    local IFS=,
    echo "${PIDS[*]}"
}

# nats NAME CLIENT_PORT [MQTT_PORT] [CLUSTER_PORT ROUTES]: a JetStream server;
# NATS_MQTT_EXTRA is added to its mqtt block (e.g. "stream_replicas: 3").
nats() {
    local name=$1 port=$2 mqtt=${3:-} cport=${4:-} routes=${5:-}
    local conf="$WORK/$name.conf"
    {
        echo "server_name: $name"
        echo "listen: 127.0.0.1:$port"
        echo "jetstream { store_dir: \"$WORK/$name-js\" }"
        if [ -n "$mqtt" ]; then echo "mqtt { listen: 127.0.0.1:$mqtt${NATS_MQTT_EXTRA:+, $NATS_MQTT_EXTRA} }"; fi
        if [ -n "$cport" ]; then echo "cluster { name: bench, listen: 127.0.0.1:$cport, routes: [$routes] }"; fi
    } >"$conf"
    "$NATS" -c "$conf" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    if [ -n "$mqtt" ]; then wait_port "$mqtt"; fi
}

# Waits until the started servers' JetStream cluster has a metadata leader.
wait_js_leader() {
    for _ in $(seq 1 300); do
        if grep -qh "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$WORK"/nats-*.log; then
            return 0
        fi
        sleep 0.1
    done
    log "the NATS cluster elected no JetStream leader"
    exit 1
}

# wait_mqtt PORT...: nats-server's MQTT listeners take sessions a moment
# after the JetStream leader is known: waits until each took one.
wait_mqtt() {
    for port in "$@"; do
        for _ in $(seq 1 100); do
            if mosquitto_pub -p "$port" -i "warm-$port" -t warm/up -m x -q 1 2>/dev/null; then break; fi
            sleep 0.1
        done
    done
}
