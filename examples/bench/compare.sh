#!/usr/bin/env bash
# Compare Tern and Mosquitto with tern-bench: same machine, same pinning, same
# scenarios, run alternately, medians in a markdown table with the Tern/Mosquitto ratio.
#
# Usage: examples/bench/compare.sh [--no-pin]
#
#   (default)  each broker pinned to core 0 (taskset -c 0), the generator to core 1
#              with one runtime thread: a one-core broker against a one-core load.
#   --no-pin   nothing pinned (brokers may use every core; the generator runs with
#              one thread per core beside them): the "both cores to the broker" check.
#
# Environment:
#   RUNS=3            runs per scenario and broker (median reported)
#   DURATION=10       measured seconds per run
#   SCENARIOS="fan-in qos1 qos2 fan-out latency idle"       run against both brokers
#   SCENARIOS_TERN_ONLY="stomp-fan-in stomp-fan-out cross"  STOMP has no Mosquitto
#                     side: run against Tern only (set to "" to skip)
#   BENCH_ARGS=""     extra tern-bench arguments for every run (e.g. "--payload 256")
#   PORT_MOSQUITTO=21883 PORT_TERN=21884 PORT_TERN_STOMP=21885
#   OUT=/tmp/tern-compare-<time>.jsonl   raw results, one JSON line per run
#   CARGO_TARGET_DIR  where cargo builds (default: <workspace>/target)
#   (Tern reads every TERN_* variable as configuration, so none of these use that prefix.)
#
# Every run gets a freshly started broker (fresh Tern data directory), so one
# scenario's leftovers (memory, queues) never affect the next. Both brokers get the
# same per-client queue limit (100,000 messages) and neither has an in-flight limit
# (Mosquitto: max_inflight_messages 0; Tern: limits.max_inflight 65535, all the
# packet ids there are; its default of 100 halves QoS 2 throughput). Both disable Nagle's
# algorithm (Tern always does; Mosquitto needs set_tcp_nodelay true, without which
# its p99 latency at 5,000 msg/s is ~12 ms of Nagle + delayed-ACK waits instead of
# ~0.5 ms). Per-connection logging is off on both (Mosquitto: errors and warnings
# only; Tern: TERN_LOG__LEVEL=warn).
set -euo pipefail

PIN=1
for arg in "$@"; do
    case "$arg" in
        --no-pin) PIN=0 ;;
        -h | --help)
            sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
SCENARIOS=${SCENARIOS:-"fan-in qos1 qos2 fan-out latency idle"}
SCENARIOS_TERN_ONLY=${SCENARIOS_TERN_ONLY-"stomp-fan-in stomp-fan-out cross"}
BENCH_ARGS=${BENCH_ARGS:-}
PORT_MOSQUITTO=${PORT_MOSQUITTO:-21883}
PORT_TERN=${PORT_TERN:-21884}
PORT_TERN_STOMP=${PORT_TERN_STOMP:-21885}
OUT=${OUT:-/tmp/tern-compare-$(date +%Y%m%d-%H%M%S).jsonl}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TERN_BIN=$TARGET/release/tern
BENCH_BIN=$TARGET/release/tern-bench
MOSQUITTO=/usr/sbin/mosquitto

log() { echo "compare: $*" >&2; }

# --- Mosquitto, from Debian, only if missing --------------------------------------
if [ ! -x "$MOSQUITTO" ]; then
    log "installing mosquitto"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
    # The package may start its own service on 1883; ours uses PORT_MOSQUITTO.
fi
"$MOSQUITTO" -h 2>/dev/null | head -1 >&2 || true

# --- Build ------------------------------------------------------------------------
log "building tern and tern-bench (release)"
BUILD_LOG=$(mktemp /tmp/tern-compare-build.XXXXXX)
if ! (cd "$ROOT" && cargo build --release -p tern --bin tern && cargo build --release -p tern-bench) >"$BUILD_LOG" 2>&1; then
    cat "$BUILD_LOG" >&2
    rm -f "$BUILD_LOG"
    exit 1
fi
rm -f "$BUILD_LOG"

# --- Pinning ----------------------------------------------------------------------
CORES=$(nproc)
if [ "$PIN" -eq 1 ] && { [ "$CORES" -lt 2 ] || ! command -v taskset >/dev/null; }; then
    log "pinning needs taskset and 2 cores; running with --no-pin"
    PIN=0
fi
if [ "$PIN" -eq 1 ]; then
    BROKER_PIN=(taskset -c 0)
    GEN_PIN=(taskset -c 1)
    GEN_THREADS=1
    MODE="broker on core 0, generator on core 1 (1 thread)"
else
    BROKER_PIN=()
    GEN_PIN=()
    GEN_THREADS=$CORES
    MODE="no pinning ($CORES cores shared; generator $CORES threads)"
fi

# Idle runs open 10,000+ sockets on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d /tmp/tern-compare.XXXXXX)
BROKER_PID=""

stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$BROKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}

cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$WORK/mosquitto.conf" <<EOF
listener $PORT_MOSQUITTO 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 100000
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_mosquitto() {
    "${BROKER_PIN[@]}" "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 100); do
        port_open "$PORT_MOSQUITTO" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "mosquitto did not start:"
    tail -5 "$WORK/mosquitto.log" >&2
    return 1
}

start_tern() {
    rm -rf "$WORK/tern-data"
    : >"$WORK/tern.out"
    TERN_MQTT__BIND=127.0.0.1:$PORT_TERN \
        TERN_STOMP__BIND=127.0.0.1:$PORT_TERN_STOMP \
        TERN_STORAGE__DATA_DIR=$WORK/tern-data \
        TERN_LIMITS__MAX_QUEUED_MESSAGES=100000 \
        TERN_LIMITS__MAX_INFLIGHT=65535 \
        TERN_LOG__LEVEL=warn \
        "${BROKER_PIN[@]}" "$TERN_BIN" >"$WORK/tern.out" 2>>"$WORK/tern.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do
        grep -q "listening:" "$WORK/tern.out" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "tern did not start:"
    tail -5 "$WORK/tern.log" >&2
    return 1
}

# run_one BROKER SCENARIO RUN
run_one() {
    local broker=$1 scenario=$2 run=$3 port args=()
    case "$broker" in
        mosquitto) start_mosquitto || return 0 ;;
        tern) start_tern || return 0 ;;
    esac
    case "$broker:$scenario" in
        mosquitto:*) port=$PORT_MOSQUITTO ;;
        tern:stomp-*) port=$PORT_TERN_STOMP ;;
        tern:cross)
            port=$PORT_TERN
            args=(--stomp-port "$PORT_TERN_STOMP")
            ;;
        tern:*) port=$PORT_TERN ;;
    esac
    sleep 0.3
    local line
    # shellcheck disable=SC2086 # BENCH_ARGS is a list of words on purpose
    line=$("${GEN_PIN[@]}" "$BENCH_BIN" --port "$port" --scenario "$scenario" \
        --duration "$DURATION" --broker-pid "$BROKER_PID" --threads "$GEN_THREADS" \
        --json --label "$broker" "${args[@]}" $BENCH_ARGS 2>>"$WORK/bench.log" | tail -1) || true
    stop_broker
    if [ -z "$line" ]; then
        log "$scenario run $run $broker: no result (see below)"
        tail -3 "$WORK/bench.log" >&2
        return 0
    fi
    echo "{\"broker\":\"$broker\",\"run\":$run,\"result\":$line}" >>"$OUT"
    python3 - "$line" <<'EOF' >&2 || true
import json, sys
r = json.loads(sys.argv[1])
if r.get("connects_per_s") is not None:
    s = f"{r['connects_per_s']:.0f} connects/s, {r.get('rss_per_connection') or 0:.0f} B RSS/conn"
else:
    s = f"{r['msgs_per_s']:.0f} msg/s"
    if r.get("latency"):
        s += f", p99 {r['latency']['p99_us']:.0f} us"
    s += f", lost {r.get('lost', 0)}, unreceived {r.get('unreceived', 0)}"
s += f", gen CPU {100 * r['gen_cpu_util']:.0f}%"
if r.get("broker_cpu_util") is not None:
    s += f", broker CPU {100 * r['broker_cpu_util']:.0f}%"
if r.get("errors"):
    s += f", errors: {r['errors'][:2]}"
print(f"compare:   {r.get('label')}: {s}")
EOF
}

: >"$OUT"
log "mode: $MODE; $RUNS run(s) x ${DURATION}s; results in $OUT"
total=0
for s in $SCENARIOS; do total=$((total + 2 * RUNS)); done
for s in $SCENARIOS_TERN_ONLY; do total=$((total + RUNS)); done
n=0
for scenario in $SCENARIOS; do
    for run in $(seq "$RUNS"); do
        # Alternate which broker goes first, so drift in machine load hits both.
        if [ $((run % 2)) -eq 1 ]; then order="tern mosquitto"; else order="mosquitto tern"; fi
        for broker in $order; do
            n=$((n + 1))
            log "[$n/$total] $scenario run $run: $broker"
            run_one "$broker" "$scenario" "$run"
        done
    done
done
for scenario in $SCENARIOS_TERN_ONLY; do
    for run in $(seq "$RUNS"); do
        n=$((n + 1))
        log "[$n/$total] $scenario run $run: tern (no Mosquitto counterpart)"
        run_one tern "$scenario" "$run"
    done
done

# --- Table of medians ----------------------------------------------------------------
python3 - "$OUT" "$MODE" "$RUNS" "$DURATION" <<'EOF'
import json, statistics, sys
from collections import OrderedDict, defaultdict

path, mode, runs, duration = sys.argv[1:5]
results = defaultdict(lambda: defaultdict(list))  # scenario -> broker -> [result]
order = OrderedDict()
with open(path) as f:
    for line in f:
        row = json.loads(line)
        r = row["result"]
        order[r["scenario"]] = True
        results[r["scenario"]][row["broker"]].append(r)

def get(r, key):
    v = r
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v

def median(rs, key):
    vals = [get(r, key) for r in rs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * v:.0f}%"
    if kind == "int":
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}"

# (label, key, format, how: "median" or "sum")
flow = [
    ("msg/s (higher is better)", "msgs_per_s", "int", "median"),
    ("msg per broker CPU-s (higher is better)", "msgs_per_broker_cpu_s", "int", "median"),
    ("latency p50 us", "latency.p50_us", "int", "median"),
    ("latency p99 us", "latency.p99_us", "int", "median"),
    ("broker CPU (1 core = 100%)", "broker_cpu_util", "pct", "median"),
    ("generator CPU (1 core = 100%)", "gen_cpu_util", "pct", "median"),
    ("lost / unreceived / duplicated (all runs)", None, "lostdup", "sum"),
]
fanout = [("deliveries/s (higher is better)", "deliveries_per_s", "int", "median")]
latency = [
    ("msg/s (paced)", "msgs_per_s", "int", "median"),
    ("latency p50 us (lower is better)", "latency.p50_us", "int", "median"),
    ("latency p99 us (lower is better)", "latency.p99_us", "int", "median"),
    ("latency p999 us (lower is better)", "latency.p999_us", "int", "median"),
    ("broker CPU (1 core = 100%)", "broker_cpu_util", "pct", "median"),
    ("lost / unreceived / duplicated (all runs)", None, "lostdup", "sum"),
]
idle = [
    ("connects/s (higher is better)", "connects_per_s", "int", "median"),
    ("broker RSS per connection, bytes (lower is better)", "rss_per_connection", "int", "median"),
    ("connected (of requested)", "connected", "int", "median"),
    ("broker CPU (1 core = 100%)", "broker_cpu_util", "pct", "median"),
]

print()
print(f"Tern vs Mosquitto: medians of {runs} run(s) x {duration}s; {mode}")
print()
print("| scenario | metric | Tern | Mosquitto | Tern/Mosquitto |")
print("|---|---|---:|---:|---:|")
for scenario in order:
    by = results[scenario]
    if scenario == "idle":
        rows = idle
    elif scenario == "latency":
        rows = latency
    elif "fan-out" in scenario:
        rows = flow[:1] + fanout + flow[1:]
    else:
        rows = flow
    for label, key, kind, how in rows:
        cells = []
        vals = []
        for broker in ("tern", "mosquitto"):
            rs = by.get(broker, [])
            if not rs:
                cells.append("n/a")
                vals.append(None)
                continue
            if kind == "lostdup":
                lost = sum(r.get("lost") or 0 for r in rs)
                unreceived = sum(r.get("unreceived") or 0 for r in rs)
                dup = sum(r.get("duplicates") or 0 for r in rs)
                cells.append(f"{lost} / {unreceived} / {dup}")
                vals.append(None)
            else:
                v = median(rs, key)
                cells.append(fmt(v, kind))
                vals.append(v)
        t, m = vals
        ratio = f"{t / m:.2f}" if t is not None and m not in (None, 0) else ""
        print(f"| {scenario} | {label} | {cells[0]} | {cells[1]} | {ratio} |")
print()
print("Notes: throughput scenarios run with full windows (each publisher keeps up to")
print("--window messages unreceived), so their latency is queueing delay; the latency")
print("scenario measures latency at a fixed rate. lost = skipped messages (a later one")
print("arrived); unreceived = not delivered by the end of draining. Generator CPU near")
print("100% means the figure is bounded by the load generator, not the broker.")
errors = [
    (row_s, b, e)
    for row_s, by in results.items()
    for b, rs in by.items()
    for r in rs
    for e in r.get("errors", [])
]
if errors:
    print()
    print("Errors and stalls reported by the generator:")
    for s, b, e in errors[:30]:
        print(f"- {s} / {b}: {e}")
EOF
echo
log "raw results: $OUT"
