#!/usr/bin/env bash
# Cross-node throughput and latency of a Tern cluster against one Tern node and
# against nats-server's own MQTT listener (MQTT 3.1.1 over JetStream), one run each.
#
# Usage: examples/bench/cluster.sh
#
#   single      one Tern node, cluster off: publishers and subscribers on it.
#   cross       two Tern nodes on one nats-server -js: publishers on node A,
#               subscribers on node B (every message crosses NATS).
#   local       the same two nodes, publishers and subscribers both on node A
#               (cluster on; what a node's own subscribers pay for it).
#   cross-spread  (TERN_NATS with spread) two Tern nodes on two servers of a
#               three-server NATS cluster: A on server 1, B on server 2 (a
#               message crosses node A, two nats-servers and node B).
#   nats        nats-server with `mqtt { port }` and JetStream: both sides on it.
#   nats-cross  three nats-servers (JetStream cluster) with MQTT: publishers on
#               server 1, subscribers on server 2.
#   cross-before, local-before, cross-spread-before  (with BEFORE_BIN) the
#               same with another tern binary, e.g. the build before a change,
#               for a before/after in the same run.
#
# CPU: the broker's processes together (the Tern nodes and their nats-server,
# or the nats-servers) per million deliveries during the measured seconds.
#
# Environment:
#   DURATION=5                    measured seconds per run
#   SCENARIOS="fan-in fan-out latency qos1"
#   BENCH_ARGS=""                 extra tern-bench arguments for every run
#   BASE_PORT=23000               ports BASE_PORT.. are used (none of the defaults)
#   OUT=/tmp/tern-cluster-bench-<time>.jsonl   raw results, one JSON line per run
#   CARGO_TARGET_DIR              where cargo builds (default: <workspace>/target)
#   BEFORE_BIN                    a tern binary to run the two-node cells with too (label *-before)
#   TERN_NATS="same spread"       the two Tern nodes' NATS: same (one server, `cross` and
#                                 `local`) and/or spread (two servers of three, `cross-spread`)
#   BUILD=1                       0: use the binaries in the target dir as they are
set -euo pipefail

case "${1:-}" in
    -h | --help)
        sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

DURATION=${DURATION:-5}
TERN_NATS=${TERN_NATS:-"same spread"}
SCENARIOS=${SCENARIOS:-"fan-in fan-out latency qos1"}
BENCH_ARGS=${BENCH_ARGS:-}
BASE=${BASE_PORT:-23000}
OUT=${OUT:-/tmp/tern-cluster-bench-$(date +%Y%m%d-%H%M%S).jsonl}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOG_NAME=tern-cluster-bench
# shellcheck source=examples/bench/cluster_common.sh
source "$ROOT/examples/bench/cluster_common.sh"

if [ "${BUILD:-1}" != 0 ]; then
    log "building tern and tern-bench (release)"
    (cd "$ROOT" && cargo build --release -q -p tern -p tern-bench)
fi
: >"$OUT"

# tern NAME MQTT_PORT [NATS_URL [BINARY]]: a node (cluster on when a NATS URL is given).
tern() {
    local name=$1 port=$2 nats=${3:-} bin=${4:-$TERN_BIN}
    local env=(TERN_MQTT__BIND=127.0.0.1:$port TERN_STOMP__ENABLED=false TERN_WEBSOCKET__ENABLED=false
        TERN_HTTP__ENABLED=false TERN_STORAGE__ENABLED=false TERN_LOG__LEVEL=warn
        TERN_SYS__INTERVAL_SECS=0 TERN_LIMITS__MAX_INFLIGHT=65535)
    if [ -n "$nats" ]; then
        env+=(TERN_CLUSTER__ENABLED=true TERN_CLUSTER__NODE="$name" TERN_CLUSTER__NATS_URLS="$nats")
    fi
    env "${env[@]}" "$bin" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    wait_port "$port"
}

bench() { # LABEL SCENARIO PORT [SUB_PORT]
    local label=$1 scenario=$2 port=$3 sub=${4:-}
    local extra=(--broker-pid "$(pid_list)")
    if [ -n "$sub" ]; then extra+=(--sub-port "$sub"); fi
    # shellcheck disable=SC2086
    "$BENCH_BIN" --scenario "$scenario" --port "$port" "${extra[@]}" --duration "$DURATION" \
        --label "$label" --json $BENCH_ARGS >>"$OUT" 2>"$WORK/bench.err" ||
        log "$label $scenario: $(tail -1 "$WORK/bench.err")"
}

# nats_cluster [MQTT]: three clustered JetStream servers (client ports
# BASE+11..13; with MQTT, MQTT listeners on BASE+21..23), once it has a leader.
nats_cluster() {
    local routes="nats-route://127.0.0.1:$((BASE + 31)),nats-route://127.0.0.1:$((BASE + 32)),nats-route://127.0.0.1:$((BASE + 33))"
    for i in 1 2 3; do
        nats "nats-$i" $((BASE + 10 + i)) "${1:+$((BASE + 20 + i))}" $((BASE + 30 + i)) "$routes"
    done
    wait_js_leader
}

# pair LABEL SCENARIO TOPOLOGY BINARY: nodes A and B on NATS as TOPOLOGY says
# (same: one server; spread: A on server 1, B on server 2 of three), then the
# publishers on A and the subscribers on B (and, on one server, both on A as
# `local`); LABEL gets -spread and -before as fits.
pair() {
    local label=$1 scenario=$2 topology=$3 bin=$4 url_a url_b
    if [ "$topology" = spread ]; then
        nats_cluster
        url_a="nats://127.0.0.1:$((BASE + 11))" url_b="nats://127.0.0.1:$((BASE + 12))"
    else
        nats nats-1 $((BASE + 10))
        url_a="nats://127.0.0.1:$((BASE + 10))" url_b=$url_a
    fi
    tern tern-a $((BASE + 1)) "$url_a" "$bin"
    tern tern-b $((BASE + 2)) "$url_b" "$bin"
    local suffix=${label#cross}
    if [ "$topology" = spread ]; then suffix=-spread$suffix; fi
    bench "cross$suffix" "$scenario" $((BASE + 1)) $((BASE + 2))
    if [ "$topology" != spread ]; then bench "local$suffix" "$scenario" $((BASE + 1)); fi
    stop_all
}

for scenario in $SCENARIOS; do
    log "$scenario: single node"
    tern tern-1 $((BASE + 1))
    bench single "$scenario" $((BASE + 1))
    stop_all

    for topology in $TERN_NATS; do
        log "$scenario: two nodes ($topology NATS), publishers on A, subscribers on B, then both on A"
        pair cross "$scenario" "$topology" "$TERN_BIN"
        if [ -n "$BEFORE_BIN" ]; then
            log "$scenario: the same with $BEFORE_BIN"
            pair cross-before "$scenario" "$topology" "$BEFORE_BIN"
        fi
    done

    log "$scenario: nats-server MQTT, one server"
    nats nats-1 $((BASE + 10)) $((BASE + 20))
    bench nats "$scenario" $((BASE + 20))
    stop_all

    log "$scenario: nats-server MQTT, three servers, publishers on 1, subscribers on 2"
    nats_cluster mqtt
    # Until the JetStream cluster has a leader, its MQTT listener refuses sessions.
    wait_mqtt $((BASE + 21)) $((BASE + 22))
    bench nats-cross "$scenario" $((BASE + 21)) $((BASE + 22))
    stop_all
done

log "raw results: $OUT"
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
labels = [l for l in ["single", "local", "local-before", "cross", "cross-before", "cross-spread",
                      "cross-spread-before", "nats", "nats-cross"]
          if any(r.get("label") == l for r in rows)]
by = {(r["scenario"], r.get("label")): r for r in rows}
print("| scenario | measure | " + " | ".join(labels) + " |")
print("|---|---|" + "---|" * len(labels))
for scenario in dict.fromkeys(r["scenario"] for r in rows):
    for measure, key in [("msg/s (deliveries)", "deliveries_per_s"), ("CPU-s / 1M deliveries", "cpu"),
                         ("p50 µs", "p50"), ("p99 µs", "p99"), ("lost", "lost")]:
        cells = []
        for label in labels:
            r = by.get((scenario, label))
            if r is None:
                cells.append("–")
                continue
            if key in ("p50", "p99"):
                value = (r.get("latency") or {}).get(f"{key}_us")
            elif key == "cpu":
                rate, cpu = r.get("deliveries_per_s"), r.get("broker_cpu_s")
                value = cpu / (rate * r["duration_s"]) * 1e6 if rate and cpu is not None else None
            else:
                value = r.get(key)
            digits = 1 if key == "cpu" else 0
            cells.append("–" if value is None else f"{value:,.{digits}f}")
        print(f"| {scenario} | {measure} | " + " | ".join(cells) + " |")
PY
