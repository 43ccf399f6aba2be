#!/usr/bin/env bash
# Durable streams (#20): the broker's memory while one subscriber replays a
# big stream, fast and slow, and what that replay does to other clients.
#
# The stream (a [[stream]] on bench/#) is filled with MESSAGES 64-byte messages
# (fan-in, QoS 0). Then, each phase with the peak resident memory reset first
# (/proc/<pid>/clear_refs) and VmRSS sampled every 0.2 s:
#   idle: no replay;
#   fast: `--scenario stream-replay` reads the MESSAGES from `first` at full speed;
#   slow: the same at SLOW_RATE messages a second (a slow reader: its socket
#         and session queue stay full) for SLOW_SECS seconds.
# Beside each phase a live pair (the latency scenario on live/pair, QoS 0,
# PAIR_RATE msg/s, not in the stream) reports its rate and latency (during the
# fast replay for its first FAST_PAIR_SECS, default 8).
# Broker on core 0, tern-bench on core 1. CACHE sets [storage] cache_size
# (default: the built-in 64MiB); MESSAGES default 10,000,000.
set -euo pipefail
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; true' EXIT
cd "$(dirname "$0")/../.."
messages=${MESSAGES:-10000000}
slow_rate=${SLOW_RATE:-20000}
slow_secs=${SLOW_SECS:-30}
pair_rate=${PAIR_RATE:-5000}
port=${PORT:-18831}
http=${HTTP_PORT:-19091}
if [ -z "${BIN:-}" ]; then cargo build --release -p tern -p tern-bench >/dev/null; fi
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release}
. examples/bench/streams_common.sh
dir=$(mktemp -d)
stream_conf "$dir/tern.toml"
[ -n "${CACHE:-}" ] && export TERN_STORAGE__CACHE_SIZE=$CACHE
start "$dir/tern.toml" "$dir/data"
echo "cache_size: ${CACHE:-64MiB (default)}"

held=$(fill "$messages")
echo "stream holds $held messages, store file $(du -h "$dir/data/tern.redb" | cut -f1);" \
  "after the fill: $(grep -E 'VmRSS' /proc/$pid/status | tr -s ' ')"

kib() { awk -v k="$1" '/^'"$1"':/{print $2}' /proc/$pid/status; }
pair() { # the live pair beside a phase: rate and latency
  taskset -c 1 "$bin/tern-bench" --port "$port" --scenario latency --topic live/pair \
    --client-prefix pair --rate "$pair_rate" --duration "$1" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read().splitlines()[-1]); l=d["latency"]
print("pair %.0f msg/s, p50 %.0f us, p99 %.0f us" % (d["msgs_per_s"], l["p50_us"], l["p99_us"]))'
}
phase() { # name, the pair's seconds, then the replay's arguments (or none)
  echo 5 >/proc/$pid/clear_refs # resets VmHWM to the current RSS
  local max=0 out=$dir/replay.json rp=
  if [ "$3" != none ]; then
    taskset -c 1 "$bin/tern-bench" --port "$port" --scenario stream-replay "${@:3}" --json \
      >"$out" 2>/dev/null &
    rp=$!
  fi
  pair "$2" >"$dir/pair.txt" &
  local pp=$!
  while kill -0 "$pp" 2>/dev/null || { [ -n "$rp" ] && kill -0 "$rp" 2>/dev/null; }; do
    r=$(kib VmRSS); [ "$r" -gt "$max" ] && max=$r; sleep 0.2
  done
  wait "$pp" || true
  local replay=-
  if [ -n "$rp" ]; then
    wait "$rp" || true
    replay=$(python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1])
print("%d msgs at %.0f msg/s" % (d["received"], d["msgs_per_s"]))' "$out")
  fi
  echo "$1: peak RSS $((max / 1024)) MiB sampled, VmHWM $(($(kib VmHWM) / 1024)) MiB;" \
    "replay $replay; $(cat "$dir/pair.txt")"
}
phase idle 10 none
phase fast "${FAST_PAIR_SECS:-8}" --messages "$messages" --duration 600 # the pair ends before the replay
phase slow "$slow_secs" --messages "$messages" --duration "$slow_secs" --replay-rate "$slow_rate"
kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
