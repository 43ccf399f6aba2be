"""Tern against the Eclipse Mosquitto command-line clients (mosquitto_pub / mosquitto_sub,
Debian package mosquitto-clients), MQTT 3.1.1 and 5.0.

mosquitto_sub runs with -d, so its stdout shows the packets it exchanges: the test
waits for "received SUBACK" before publishing, instead of sleeping. Messages are
printed with -F as one `MSG|...` line each.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time

import pytest

from mqttutil import unique

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed (tests/run.sh installs it)",
)

TIMEOUT = 10.0
BOTH = pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
# topic | qos | retain | user properties | content type | response topic | correlation data
# | message expiry | payload format | subscription ids | payload (last: it may contain '|').
FORMAT = "MSG|%t|%q|%r|%P|%C|%R|%D|%E|%F|%S|%p"
FIELDS = ["topic", "qos", "retain", "user", "content_type", "response_topic",
          "correlation", "expiry", "format", "sub_ids", "payload"]
EXIT_TIMED_OUT = 27  # mosquitto_sub -W expired
LINE_BUFFERED = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []


def endpoint(broker) -> list:
    return ["-h", broker.host, "-p", str(broker.mqtt_port)]


class Sub:
    """A running mosquitto_sub whose stdout lines are collected by a thread."""

    def __init__(self, broker, version: str, topics, *args: str, qos: int = 0, wait_suback: bool = True):
        # stdbuf: line-buffered stdout, so each packet line arrives as it happens.
        cmd = [*LINE_BUFFERED, "mosquitto_sub", *endpoint(broker), "-V", version, "-q", str(qos), "-d", "-F", FORMAT]
        for t in [topics] if isinstance(topics, str) else topics:
            cmd += ["-t", t]
        cmd += list(args)
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.seen: list = []
        threading.Thread(target=self._read, daemon=True).start()
        if wait_suback:
            try:
                self.wait_for("received SUBACK")
            except BaseException:
                self.close()  # not yet known to the fixture: do not leak the process
                raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # EOF

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"{text!r} not seen within {timeout}s; output so far: {self.seen}") from None
            if line is None:
                self.lines.put(None)
                raise AssertionError(f"mosquitto_sub ended before {text!r}: {self.seen} {self.stderr()}")
            self.seen.append(line)
            if text in line:
                return line

    def message(self, timeout: float = TIMEOUT) -> dict:
        line = self.wait_for("MSG|", timeout)
        return parse(line)

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Waits for the process to exit; returns its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.cmd} still running after {timeout}s; output {self.seen}")
        # Collect the rest of stdout.
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                self.lines.put(None)
                break
            self.seen.append(line)
        return code

    def messages_seen(self) -> list:
        return [parse(line) for line in self.seen if line.startswith("MSG|")]

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def parse(line: str) -> dict:
    parts = line.split("|", len(FIELDS))
    assert parts[0] == "MSG", line
    return dict(zip(FIELDS, parts[1:]))


def pub(broker, version: str, topic: str, *args: str, payload: str | None = "", qos: int = 0) -> str:
    cmd = ["mosquitto_pub", *endpoint(broker), "-V", version, "-q", str(qos), "-d", "-t", topic]
    if payload is not None:
        cmd += ["-m", payload]
    cmd += list(args)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def subs():
    made: list = []

    def make(*args, **kwargs) -> Sub:
        s = Sub(*args, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@BOTH
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_qos(broker, subs, version, pub_qos, sub_qos):
    topic = unique("mosq") + "/qos"
    s = subs(broker, version, topic, "-C", "1", qos=sub_qos)
    out = pub(broker, version, topic, payload=f"hello at {pub_qos}", qos=pub_qos)
    ack = {0: None, 1: "received PUBACK", 2: "received PUBCOMP"}[pub_qos]
    if ack:
        assert ack in out, f"publisher's flow did not complete:\n{out}"
    m = s.message()
    assert (m["topic"], m["payload"], m["retain"]) == (topic, f"hello at {pub_qos}", "0")
    assert int(m["qos"]) == min(pub_qos, sub_qos)
    assert s.finish() == 0
    if min(pub_qos, sub_qos) == 2:
        assert any("received PUBREL" in line for line in s.seen), s.seen


@BOTH
def test_retained(broker, subs, version):
    topic = unique("mosq") + "/retained"
    pub(broker, version, topic, "-r", payload="first", qos=1)
    pub(broker, version, topic, "-r", payload="second", qos=1)
    s = subs(broker, version, topic, "-C", "1", "-W", "10", qos=1, wait_suback=False)
    m = s.message()
    assert (m["payload"], m["retain"], m["qos"]) == ("second", "1", "1")
    assert s.finish() == 0

    # A null (-n) retained message clears it.
    pub(broker, version, topic, "-r", "-n", payload=None, qos=1)
    s = subs(broker, version, topic, "-C", "1", "-W", "1", qos=1, wait_suback=False)
    assert s.finish() == EXIT_TIMED_OUT, f"retained message not cleared: {s.messages_seen()}"
    assert s.messages_seen() == []


@BOTH
def test_retained_large_binary_payload(broker, version, tmp_path):
    topic = unique("mosq") + "/blob"
    blob = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(blob)
    pub(broker, version, topic, "-r", "-f", str(path), payload=None, qos=1)
    result = subprocess.run(
        ["mosquitto_sub", *endpoint(broker), "-V", version, "-t", topic, "-C", "1", "-W", "10", "-N", "-F", "%p"],
        capture_output=True, timeout=TIMEOUT + 5, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == blob, f"payload changed: {len(result.stdout)} bytes back for {len(blob)}"


@BOTH
def test_will_on_abrupt_disconnect(broker, subs, version):
    will_topic = unique("mosq") + "/will"
    watcher = subs(broker, version, will_topic, "-C", "1", qos=1)
    dying = subs(
        broker, version, unique("mosq") + "/idle",
        "--will-topic", will_topic, "--will-payload", "died", "--will-qos", "1",
    )
    dying.proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the kernel just closes the socket
    dying.proc.wait(5)
    m = watcher.message()
    assert (m["topic"], m["payload"], m["qos"]) == (will_topic, "died", "1")
    assert watcher.finish() == 0


@BOTH
def test_no_will_after_clean_disconnect(broker, subs, version):
    will_topic = unique("mosq") + "/will"
    trigger = unique("mosq") + "/trigger"
    watcher = subs(broker, version, will_topic, "-C", "1", qos=1)
    polite = subs(
        broker, version, trigger, "-C", "1",
        "--will-topic", will_topic, "--will-payload", "should not appear", "--will-qos", "1",
    )
    pub(broker, version, trigger, payload="go", qos=1)
    assert polite.finish() == 0
    assert any("sending DISCONNECT" in line for line in polite.seen), polite.seen
    # The watcher takes one message: it must be the sentinel, not the will.
    pub(broker, version, will_topic, payload="sentinel", qos=1)
    assert watcher.message()["payload"] == "sentinel"
    assert watcher.finish() == 0


@BOTH
def test_persistent_session(broker, subs, version):
    topic = unique("mosq") + "/inbox"
    cid = unique("mosqpersist")
    first = subs(broker, version, topic, "-c", "-i", cid, "-E", qos=1, wait_suback=False)
    assert first.finish() == 0
    for i in range(3):
        pub(broker, version, topic, payload=f"queued {i}", qos=1)
    again = subs(broker, version, topic, "-c", "-i", cid, "-C", "3", qos=1, wait_suback=False)
    got = [again.message()["payload"] for _ in range(3)]
    assert got == ["queued 0", "queued 1", "queued 2"]
    assert any("received CONNACK" in line for line in again.seen)
    assert again.finish() == 0


@BOTH
def test_wildcards(broker, subs, version):
    root = unique("mosq")
    s = subs(broker, version, [f"{root}/+/temp", f"{root}/x/#"], "-C", "3", qos=1)
    for t in [f"{root}/a/temp", f"{root}/a/hum", f"{root}/x", f"{root}/b/c/temp", f"{root}/z/temp"]:
        pub(broker, version, t, payload=t, qos=1)
    got = [s.message()["topic"] for _ in range(3)]
    assert got == [f"{root}/a/temp", f"{root}/x", f"{root}/z/temp"]
    assert s.finish() == 0


def test_v5_properties(broker, subs):
    topic = unique("mosq") + "/props"
    s = subs(broker, "mqttv5", topic, "-C", "1", qos=1)
    pub(
        broker, "mqttv5", topic,
        "-D", "PUBLISH", "user-property", "k", "v",
        "-D", "PUBLISH", "user-property", "k", "v2",
        "-D", "PUBLISH", "user-property", "site", "north",
        "-D", "PUBLISH", "content-type", "application/json",
        "-D", "PUBLISH", "response-topic", "reply/here",
        "-D", "PUBLISH", "correlation-data", "corr-42",
        "-D", "PUBLISH", "message-expiry-interval", "60",
        "-D", "PUBLISH", "payload-format-indicator", "1",
        payload='{"t":1}', qos=1,
    )
    m = s.message()
    assert m["payload"] == '{"t":1}'
    assert m["user"] == "k:v k:v2 site:north", "user properties: all pairs, in order"
    assert m["content_type"] == "application/json"
    assert m["response_topic"] == "reply/here"
    assert m["correlation"] == "corr-42"
    assert int(m["expiry"]) in (59, 60)
    assert m["format"] == "1"
    assert s.finish() == 0


def test_v5_properties_invisible_to_v311_subscriber(broker, subs):
    topic = unique("mosq") + "/props311"
    s = subs(broker, "mqttv311", topic, "-C", "1", qos=1)
    pub(broker, "mqttv5", topic, "-D", "PUBLISH", "user-property", "k", "v",
        "-D", "PUBLISH", "content-type", "text/plain", payload="to an old client", qos=1)
    m = s.message()
    assert m["payload"] == "to an old client"
    assert (m["user"], m["content_type"]) == ("", "")
    assert s.finish() == 0


def test_v5_subscription_identifier(broker, subs):
    topic = unique("mosq") + "/subid"
    s = subs(broker, "mqttv5", topic, "-C", "1", "-D", "SUBSCRIBE", "subscription-identifier", "77", qos=1)
    pub(broker, "mqttv5", topic, payload="x", qos=1)
    assert s.message()["sub_ids"] == "77"
    assert s.finish() == 0


def test_v5_message_expiry_while_offline(broker, subs):
    topic = unique("mosq") + "/expiry"
    cid = unique("mosqexp")
    first = subs(broker, "mqttv5", topic, "-c", "-i", cid, "-E", qos=1, wait_suback=False)
    assert first.finish() == 0
    pub(broker, "mqttv5", topic, "-D", "PUBLISH", "message-expiry-interval", "1", payload="expires", qos=1)
    pub(broker, "mqttv5", topic, "-D", "PUBLISH", "message-expiry-interval", "300", payload="stays", qos=1)
    time.sleep(2.2)  # the behaviour under test is the passing of time
    again = subs(broker, "mqttv5", topic, "-c", "-i", cid, "-C", "1", qos=1, wait_suback=False)
    m = again.message()
    assert m["payload"] == "stays", f"expired message delivered: {m}"
    assert int(m["expiry"]) <= 298
    assert again.finish() == 0


def test_cross_version_delivery(broker, subs):
    """A 3.1.1 publisher reaches a 5.0 subscriber and the other way round."""
    topic = unique("mosq") + "/cross"
    s5 = subs(broker, "mqttv5", topic, "-C", "1", qos=2)
    s3 = subs(broker, "mqttv311", topic, "-C", "1", qos=2)
    pub(broker, "mqttv311", topic, payload="from 3.1.1", qos=2)
    assert (s5.message()["payload"], s3.message()["payload"]) == ("from 3.1.1", "from 3.1.1")
    assert s5.finish() == 0 and s3.finish() == 0
