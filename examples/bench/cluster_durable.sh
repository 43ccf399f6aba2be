#!/usr/bin/env bash
# Durable QoS 1 end to end (issue #19): 8 publishers x 64 in flight -> one
# persistent subscriber (`tern-bench --scenario qos1 --persistent`), every
# message written to the store before its PUBACK, in one run:
#
#   redb        one Tern node, the redb store (durability "batched").
#   nats-r1     three Tern nodes, `[storage] backend = "nats"`, each on its own
#               server of a three-server NATS cluster (JetStream), replicas 1;
#               publishers on node 1, the subscriber on node 2.
#   nats-r3     the same with `[cluster] replicas = 3`.
#   nats-r1-same, nats-r3-same  the same clusters with publishers and the
#               subscriber on node 2: the store's cost without the burst that
#               node 1 sends node 2 (node 1 acknowledges before node 2 stored).
#   nats-mqtt   nats-server's own MQTT listener on the same three servers
#               (JetStream keeps its QoS 1 sessions, `mqtt { stream_replicas: 3 }`);
#               publishers on server 1, the subscriber on server 2.
#   nats-r3-before  (with BEFORE_BIN) nats-r3 with another tern binary.
#
# CPU: the broker's processes together (Tern nodes and nats-servers) per
# million messages during the measured seconds.
#
# Usage: examples/bench/cluster_durable.sh
#
# Environment:
#   DURATION=5           measured seconds per run
#   RUNS=1               runs of every label (the table shows medians)
#   LABELS="redb nats-r1 nats-r3 nats-r1-same nats-r3-same nats-mqtt"
#   BASE_PORT=24700      ports BASE_PORT..BASE_PORT+40 are used
#   OUT=/tmp/tern-durable-bench-<time>.jsonl   raw results, one JSON line per run
#   CARGO_TARGET_DIR     where cargo builds (default: <workspace>/target)
#   BEFORE_BIN           a tern binary to run nats-r3 with too (label nats-r3-before)
#   BUILD=1              0: use the binaries in the target dir as they are
set -euo pipefail

case "${1:-}" in
    -h | --help)
        sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

DURATION=${DURATION:-5}
RUNS=${RUNS:-1}
LABELS=${LABELS:-"redb nats-r1 nats-r3 nats-r1-same nats-r3-same nats-mqtt"}
BASE=${BASE_PORT:-24700}
OUT=${OUT:-/tmp/tern-durable-bench-$(date +%Y%m%d-%H%M%S).jsonl}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOG_NAME=tern-durable-bench
# shellcheck source=examples/bench/cluster_common.sh
source "$ROOT/examples/bench/cluster_common.sh"

if [ "${BUILD:-1}" != 0 ]; then
    log "building tern and tern-bench (release)"
    (cd "$ROOT" && cargo build --release -q -p tern -p tern-bench)
fi
: >"$OUT"

# tern NAME MQTT_PORT [NATS_URL REPLICAS [BINARY]]: a node with a persistent
# store (redb alone, the NATS backend when a NATS URL is given).
tern() {
    local name=$1 port=$2 nats=${3:-} replicas=${4:-1} bin=${5:-$TERN_BIN}
    local env=(TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_WEBSOCKET__ENABLED=false
        TERN_HTTP__ENABLED=false TERN_STORAGE__DATA_DIR="$WORK/$name-data" TERN_LOG__LEVEL=warn
        TERN_SYS__INTERVAL_SECS=0 TERN_LIMITS__MAX_INFLIGHT=65535
        TERN_LIMITS__MAX_QUEUED_MESSAGES=100000)
    if [ -n "$nats" ]; then
        env+=(TERN_CLUSTER__ENABLED=true TERN_CLUSTER__NODE="$name" TERN_CLUSTER__NATS_URLS="$nats"
            TERN_CLUSTER__REPLICAS="$replicas" TERN_STORAGE__BACKEND=nats)
    fi
    env "${env[@]}" "$bin" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    wait_port "$port"
}

# nats_cluster [MQTT]: three JetStream servers (client ports BASE+11..13; with
# MQTT, MQTT listeners on BASE+21..23), waiting for their metadata leader.
nats_cluster() {
    local routes="nats-route://127.0.0.1:$((BASE + 31)),nats-route://127.0.0.1:$((BASE + 32)),nats-route://127.0.0.1:$((BASE + 33))"
    local i mqtt
    for i in 1 2 3; do
        mqtt=
        if [ -n "${1:-}" ]; then mqtt=$((BASE + 20 + i)); fi
        NATS_MQTT_EXTRA="stream_replicas: 3" nats "nats-$i" $((BASE + 10 + i)) "$mqtt" $((BASE + 30 + i)) "$routes"
    done
    wait_js_leader
}

bench() { # LABEL PORT [SUB_PORT]
    local label=$1 port=$2 sub=${3:-}
    local extra=(--broker-pid "$(pid_list)")
    if [ -n "$sub" ]; then extra+=(--sub-port "$sub"); fi
    "$BENCH_BIN" --scenario qos1 --persistent --port "$port" "${extra[@]}" --duration "$DURATION" \
        --label "$label" --json >>"$OUT" 2>"$WORK/bench.err" ||
        log "$label: $(tail -1 "$WORK/bench.err")"
}

# tern_cluster REPLICAS [BINARY]: three Tern nodes, node i on NATS server i.
tern_cluster() {
    local i
    nats_cluster
    for i in 1 2 3; do
        tern "tern-$i" $((BASE + i)) "nats://127.0.0.1:$((BASE + 10 + i))" "$1" "${2:-$TERN_BIN}"
    done
}

run() { # LABEL
    case $1 in
        redb)
            tern tern-1 $((BASE + 1))
            bench redb $((BASE + 1))
            ;;
        nats-r1 | nats-r3)
            tern_cluster "${1#nats-r}"
            bench "$1" $((BASE + 1)) $((BASE + 2))
            ;;
        nats-r1-same | nats-r3-same)
            tern_cluster "${1:6:1}"
            bench "$1" $((BASE + 2))
            ;;
        nats-r3-before)
            tern_cluster 3 "$BEFORE_BIN"
            bench "$1" $((BASE + 1)) $((BASE + 2))
            ;;
        nats-mqtt)
            nats_cluster mqtt
            wait_mqtt $((BASE + 21)) $((BASE + 22))
            bench nats-mqtt $((BASE + 21)) $((BASE + 22))
            ;;
        *)
            log "unknown label $1"
            exit 2
            ;;
    esac
    stop_all
}

labels=$LABELS
if [ -n "$BEFORE_BIN" ]; then labels="$labels nats-r3-before"; fi
for ((i = 1; i <= RUNS; i++)); do
    for label in $labels; do
        log "run $i: $label"
        run "$label"
    done
done

log "raw results: $OUT"
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
labels = list(dict.fromkeys(r["label"] for r in rows))
def median(label, f):
    values = [v for v in (f(r) for r in rows if r["label"] == label) if v is not None]
    return statistics.median(values) if values else None
rate = {l: median(l, lambda r: r.get("msgs_per_s")) for l in labels}
cpu = {l: median(l, lambda r: r["broker_cpu_s"] / (r["msgs_per_s"] * r["duration_s"]) * 1e6
                  if r.get("msgs_per_s") and r.get("broker_cpu_s") is not None else None)
       for l in labels}
redb = rate.get("redb")
print("| durable QoS 1, 8 x 64 -> 1 persistent | msg/s | vs redb | CPU-s per 1M msgs | lost + unreceived | runs |")
print("|---|---:|---:|---:|---:|---:|")
for l in labels:
    lost = sum((r.get("lost") or 0) + (r.get("unreceived") or 0) for r in rows if r["label"] == l)
    runs = sum(1 for r in rows if r["label"] == l)
    ratio = f"{rate[l] / redb:.2f}" if redb and rate[l] else "–"
    r_cell = f"{rate[l]:,.0f}" if rate[l] else "–"
    c_cell = f"{cpu[l]:.1f}" if cpu[l] else "–"
    print(f"| {l} | {r_cell} | {ratio} | {c_cell} | {lost} | {runs} |")
if rate.get("nats-r3") and rate.get("nats-mqtt"):
    print(f"nats-r3 / nats-mqtt: {rate['nats-r3'] / rate['nats-mqtt']:.2f}")
PY
