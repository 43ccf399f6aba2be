#!/usr/bin/env bash
# The Debian package, end to end, on this machine (as root; tests/run.sh runs it):
# builds it (dist/build-deb.sh), checks its contents and the release binary's
# size, installs it with dpkg -i, checks the user, paths and `systemd-analyze
# verify` of the unit, starts /usr/bin/tern the way tern.service does (its
# ExecStart, as User=tern, in WorkingDirectory, no capabilities, no new
# privileges), publishes and subscribes with mosquitto_pub/sub and stomp.py,
# stops it with SIGTERM, restarts it and finds a persistent session's queued
# message, then removes (data stays) and purges (data goes) the package.
#
# The installed broker listens on ports the kernel picks (TERN_*__BIND=...:0 over
# /etc/tern/tern.toml), never on 1883/61613/8080/9090, so a broker a developer
# runs is undisturbed; where systemd runs, a policy-rc.d keeps dpkg from
# starting the service during the test. A tern package installed before the test
# is left alone: the test refuses to run.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check "what" command...: ok when the command succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
finish() {
    printf '\ntest_deb.sh: %d passed, %d failed\n' "$passed" "$failed"
    [ "$failed" -eq 0 ]
}
die() {
    fail "$*"
    finish || true
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (dpkg -i, the tern user)"
# dpkg's state of the tern package: installed, half-configured, config-files, ... or empty.
package_state() { dpkg-query -W -f='${db:Status-Status}' tern 2>/dev/null || true; }
if [ -n "$(package_state)" ] && [ "$(package_state)" != not-installed ]; then
    die "a tern package is already installed; this test would replace and purge it (remove it first: dpkg -P tern)"
fi
for tool in cargo-deb mosquitto_pub mosquitto_sub systemd-analyze setpriv readelf python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (tests/run.sh installs what this test needs)"
done
python3 -c 'import stomp' || die "stomp.py is missing"

work=$(mktemp -d /tmp/tern-deb-test.XXXXXX)
tern_pid=""
policy_made=""
cleanup() {
    if [ -n "$tern_pid" ] && kill -0 "$tern_pid" 2>/dev/null; then
        kill -KILL "$tern_pid" 2>/dev/null || true
    fi
    if [ -n "$(package_state)" ] && [ "$(package_state)" != not-installed ]; then
        dpkg -P tern >/dev/null 2>&1 || true
    fi
    [ -n "$policy_made" ] && rm -f /usr/sbin/policy-rc.d
    rm -rf "$work"
}
trap cleanup EXIT

# --- build ---------------------------------------------------------------------
started=$SECONDS
deb=$(dist/build-deb.sh) || die "dist/build-deb.sh failed"
printf 'built %s in %d s\n' "$deb" $((SECONDS - started))
[ -f "$deb" ] || die "no package at '$deb'"

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/tern ./etc/tern/tern.toml ./usr/lib/systemd/system/tern.service \
    ./usr/share/man/man1/tern.1.gz ./usr/share/bash-completion/completions/tern \
    ./usr/share/zsh/vendor-completions/_tern ./usr/share/fish/vendor_completions.d/tern.fish \
    ./usr/share/doc/tern/examples/tern.toml; do
    check "package holds $path" grep -q " $path\$" <<<"$contents"
done
check "/etc/tern/tern.toml is a conffile" grep -qx /etc/tern/tern.toml <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)

# --- install -----------------------------------------------------------------------
if [ -d /run/systemd/system ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    # deb-systemd-invoke asks policy-rc.d: 101 means "do not start services now".
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_made=1
fi
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log"; die "dpkg -i failed"; }
ok "dpkg -i $(basename "$deb")"

size=$(stat -c %s /usr/bin/tern)
printf '/usr/bin/tern: %d bytes\n' "$size"
# The bound catches regressions; it was 12 MB before the NATS client (cluster),
# HTTP /v1 and streams came in, 16 MB before schemas (jsonschema, apache-avro),
# selectors and bridges (then 16,562,552 bytes).
check "/usr/bin/tern is at most 20 MB" test "$size" -le 20000000
# The line tables are in tern-dbgsym, under the binary's build id, where
# backtraces (std looks in /usr/lib/debug/.build-id), gdb and perf find them.
build_id=$(readelf -n /usr/bin/tern | sed -n 's/.*Build ID: *\([0-9a-f]*\).*/\1/p')
ddeb=$(dirname "$deb")/$(basename "$deb" .deb | sed 's/^tern_/tern-dbgsym_/').ddeb
debug_file=usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug
mkdir -p "$work/dbgsym"
if [ -n "$build_id" ] && [ -f "$ddeb" ] && dpkg-deb -x "$ddeb" "$work/dbgsym" \
    && [ -f "$work/dbgsym/$debug_file" ]; then
    check "tern-dbgsym holds the line tables of /usr/bin/tern (build id $build_id)" \
        grep -q '\.debug_line' <(readelf -S --wide "$work/dbgsym/$debug_file")
else
    fail "no /$debug_file in $ddeb for /usr/bin/tern (build id '$build_id')"
fi
uid=$(id -u tern 2>/dev/null || echo none)
check "tern is a system user (uid $uid)" test "$uid" != none -a "$uid" -lt 1000
check "tern's shell is nologin" grep -q '^tern:.*:/usr/sbin/nologin$' /etc/passwd
check "/var/lib/tern is tern's, mode 750" test "$(stat -c '%U:%G %a' /var/lib/tern)" = "tern:tern 750"
check "/etc/tern/tern.toml is root:tern, mode 640" test "$(stat -c '%U:%G %a' /etc/tern/tern.toml)" = "root:tern 640"
check "man page installed" test -s /usr/share/man/man1/tern.1.gz

unit=/usr/lib/systemd/system/tern.service
if systemd-analyze verify "$unit" >"$work/verify.log" 2>&1; then
    ok "systemd-analyze verify $unit"
else
    cat "$work/verify.log"
    fail "systemd-analyze verify $unit"
fi
# Anything said about tern.service is a finding, even when verify exits 0.
check "systemd-analyze says nothing about the unit" test -z "$(grep tern "$work/verify.log" || true)"
for directive in Type=notify User=tern StateDirectory=tern ExecReload= NoNewPrivileges=yes \
    ProtectSystem=strict ProtectHome=yes PrivateTmp=yes 'CapabilityBoundingSet=$' \
    RestrictAddressFamilies= SystemCallFilter=@system-service; do
    check "unit sets $directive" grep -q "^$directive" "$unit"
done

as_tern=(setpriv --reuid=tern --regid=tern --init-groups --no-new-privs --inh-caps=-all --bounding-set=-all)
check "tern check-config accepts /etc/tern/tern.toml" \
    "${as_tern[@]}" /usr/bin/tern check-config --config /etc/tern/tern.toml >/dev/null

# --- run it as the unit does -----------------------------------------------------------
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
workdir=$(sed -n 's/^WorkingDirectory=//p' "$unit")
read -r -a command <<<"$exec_start"
log_line=0
start_tern() { # starts tern, waits for its banner, sets tern_pid, mqtt_port, stomp_port
    : >"$work/tern.out"
    (
        cd "$workdir"
        umask 0027
        exec env TERN_MQTT__BIND=127.0.0.1:0 TERN_STOMP__BIND=127.0.0.1:0 \
            TERN_WEBSOCKET__BIND=127.0.0.1:0 TERN_HTTP__BIND=127.0.0.1:0 \
            "${as_tern[@]}" "${command[@]}"
    ) >"$work/tern.out" 2>>"$work/tern.log" &
    tern_pid=$!
    local waited=0
    until grep -q "listening:" "$work/tern.out"; do
        if [ "$waited" -ge 200 ] || ! kill -0 "$tern_pid" 2>/dev/null; then
            cat "$work/tern.log"
            die "tern printed no banner within 20 s"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    banner=$(head -n 1 "$work/tern.out")
    mqtt_port=$(sed -n 's/.* mqtt=127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$banner")
    stomp_port=$(sed -n 's/.* stomp=127\.0\.0\.1:\([0-9]*\).*/\1/p' <<<"$banner")
    printf 'started: %s\n' "$banner"
}
stop_tern() { # SIGTERM, then the exit code must be 0 within 30 s (TimeoutStopSec)
    kill -TERM "$tern_pid"
    local code=0 waited=0
    while kill -0 "$tern_pid" 2>/dev/null && [ "$waited" -lt 300 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$tern_pid" || code=$?
    tern_pid=""
    check "SIGTERM: tern exits 0 (got $code)" test "$code" -eq 0
}

start_tern
check "runs as user tern" test "$(ps -o user= -p "$tern_pid")" = tern
check "banner names data=/var/lib/tern" grep -q "data=/var/lib/tern" <<<"$banner"
for port in 1883 61613 8080 9090; do
    check "does not bind the default port $port" test -z "$(grep -o "=127.0.0.1:$port\b" <<<"$banner" || true)"
done

# A retained message: the subscriber gets it however late it subscribes.
mosquitto_pub -p "$mqtt_port" -q 1 -r -t pkg/retained -m "from mosquitto_pub"
got=$(mosquitto_sub -p "$mqtt_port" -t pkg/retained -C 1 -W 10 || true)
check "mosquitto_sub gets mosquitto_pub's message (got '$got')" test "$got" = "from mosquitto_pub"

# STOMP: stomp.py subscribes (the receipt says when), mosquitto_pub publishes to it.
cat >"$work/stomp_sub.py" <<'EOF'
import sys, threading
import stomp

port = int(sys.argv[1])
receipt, message = threading.Event(), []
got_message = threading.Event()

class Listener(stomp.ConnectionListener):
    def on_receipt(self, frame):
        receipt.set()
    def on_message(self, frame):
        message.append(frame.body)
        got_message.set()

conn = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
conn.set_listener("", Listener())
conn.connect(wait=True)
conn.subscribe("/topic/pkg/stomp", id="1", headers={"receipt": "subscribed"})
if not receipt.wait(10):
    sys.exit("no RECEIPT for SUBSCRIBE")
print("subscribed", flush=True)
if not got_message.wait(10):
    sys.exit("no MESSAGE")
conn.disconnect()
EOF
mkfifo "$work/stomp.pipe"
python3 "$work/stomp_sub.py" "$stomp_port" >"$work/stomp.pipe" 2>"$work/stomp.err" &
stomp_pid=$!
exec {stomp_fd}<"$work/stomp.pipe"
if read -r -t 15 line <&"$stomp_fd" && [ "$line" = subscribed ]; then
    mosquitto_pub -p "$mqtt_port" -q 1 -t pkg/stomp -m "hello stomp"
fi
stomp_code=0
wait "$stomp_pid" || stomp_code=$?
exec {stomp_fd}<&-
check "stomp.py receives mosquitto_pub's message ($(cat "$work/stomp.err"))" test "$stomp_code" -eq 0

# A persistent session (clean session off) subscribes, then goes away; a QoS 1
# message published meanwhile waits for it, across a restart.
mosquitto_sub -p "$mqtt_port" -i pkg-durable -c -q 1 -t pkg/queued -E
mosquitto_pub -p "$mqtt_port" -q 1 -t pkg/queued -m "kept across a restart"
stop_tern
check "store file in /var/lib/tern" test -s /var/lib/tern/tern.redb
start_tern
got=$(mosquitto_sub -p "$mqtt_port" -i pkg-durable -c -q 1 -t pkg/queued -C 1 -W 10 || true)
check "the persistent session's queued message survives the restart (got '$got')" \
    test "$got" = "kept across a restart"
got=$(mosquitto_sub -p "$mqtt_port" -t pkg/retained -C 1 -W 10 || true)
check "the retained message survives the restart (got '$got')" test "$got" = "from mosquitto_pub"
stop_tern
check "no errors in the log" test -z "$(grep -E ' (ERROR|WARN) ' "$work/tern.log" || true)"

# --- remove, purge ---------------------------------------------------------------------
dpkg -r tern >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log"; die "dpkg -r failed"; }
ok "dpkg -r tern"
check "remove: /usr/bin/tern is gone" test ! -e /usr/bin/tern
check "remove: the unit is gone" test ! -e "$unit"
check "remove: /var/lib/tern stays with its store" test -s /var/lib/tern/tern.redb
check "remove: the conffile /etc/tern/tern.toml stays" test -f /etc/tern/tern.toml
dpkg -P tern >"$work/dpkg-p.log" 2>&1 || { cat "$work/dpkg-p.log"; die "dpkg -P failed"; }
ok "dpkg -P tern"
check "purge: /var/lib/tern is gone" test ! -e /var/lib/tern
check "purge: /etc/tern is gone" test ! -e /etc/tern

finish
