"""Memory per retained message and per subscription level: starts `tern` (TERN_BIN,
default target/debug/tern) with storage off, sends retained messages and deep
SUBSCRIBEs with paho-mqtt, and prints the growth of the broker's VmRSS (Linux).

    python3 examples/retained_memory.py
"""
import os, re, subprocess, tempfile, time

import paho.mqtt.client as mqtt

BIN = os.environ.get("TERN_BIN", "target/debug/tern")
env = dict(os.environ, TERN_MQTT__BIND="127.0.0.1:0", TERN_STOMP__BIND="127.0.0.1:0",
           TERN_WEBSOCKET__BIND="127.0.0.1:0", TERN_HTTP__BIND="127.0.0.1:0",
           TERN_STORAGE__ENABLED="false", TERN_LOG__LEVEL="warn", TERN_SYS__INTERVAL_SECS="0")
p = subprocess.Popen([BIN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, cwd=tempfile.mkdtemp())
banner = p.stdout.readline()
port = int(re.search(r"mqtt=[\d.]+:(\d+)", banner).group(1))

def rss():
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024

def client(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c

def settle():
    time.sleep(1.0)
    return rss()

c = client("measure")
base = settle()
N = 20000
for i in range(N):
    info = c.publish(f"site/{i % 10}/dev/{i}", b"x" * 16, qos=1, retain=True)
info.wait_for_publish(60)
after = settle()
print(f"retained: {N} messages (4-level topics ~20 B, 16 B payload): {(after-base)/N:.0f} B each (RSS {base/1e6:.1f} -> {after/1e6:.1f} MB)")

# Deepest allowed retained topics: 128 levels.
M = 1000
base = settle()
for i in range(M):
    topic = "/".join([f"l{i}"] + ["x"] * 127)
    info = c.publish(topic, b"x" * 16, qos=1, retain=True)
info.wait_for_publish(60)
after = settle()
print(f"retained: {M} messages on 128-level topics: {(after-base)/M:.0f} B each, {(after-base)/M/128:.0f} B per level")

# A 32,000-level topic is refused now (3.1.1: connection closed).
base = settle()
d = client("deep")
d.publish("/".join(["a"] * 32000), b"x", qos=1, retain=True)
time.sleep(1)
after = settle()
print(f"32,000-level retained publish: RSS change {(after-base)/1e6:.2f} MB")

# Subscriptions: 1000 filters of 128 levels on one client.
s = client("subs")
base = settle()
S = 1000
for i in range(S):
    r, mid = s.subscribe("/".join([f"s{i}"] + ["y"] * 126 + ["#"]), 0)
time.sleep(2)
after = settle()
print(f"subscriptions: {S} filters of 128 levels: {(after-base)/S:.0f} B each, {(after-base)/S/128:.0f} B per level")
p.terminate(); p.wait(10)
