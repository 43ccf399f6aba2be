"""Helpers of the cluster tests that are not fixtures."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time


def node_env(node: str, nats_urls, extra: dict | None = None) -> dict:
    """The TERN_CLUSTER__* variables that make a tern process node `node` of the cluster."""
    env = {
        "TERN_CLUSTER__ENABLED": "true",
        "TERN_CLUSTER__NODE": node,
        "TERN_CLUSTER__NATS_URLS": ",".join(nats_urls),
    }
    env.update(extra or {})
    return env


def stop_node(broker) -> None:
    """SIGSTOPs a node's process and returns once every thread of it stopped.

    `kill` only queues the signal: the process stops when one of its threads
    takes it (when next scheduled) and stops the others. Until then, a few
    ms on a loaded machine, its other threads run on: a node "stopped" that
    way still answers a sync or attaches a session. Waiting for the stop
    (the parent is told, `WUNTRACED`) leaves no such window.
    """
    os.kill(broker.proc.pid, signal.SIGSTOP)
    _, status = os.waitpid(broker.proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        # Reaped here: the Popen must still know how it ended.
        broker.proc.returncode = os.waitstatus_to_exitcode(status)
        raise AssertionError(f"{broker.node} ended instead of stopping: {broker.proc.returncode}")


def resume_node(broker) -> None:
    """Lets a node stopped by `stop_node` run again."""
    os.kill(broker.proc.pid, signal.SIGCONT)


PROBE_TIMEOUT = 15.0


def await_route(send_probe, next_probe, timeout: float = PROBE_TIMEOUT) -> None:
    """Waits until messages from one node reach a subscriber on another.

    A node subscribes on NATS after it acknowledged the client's SUBSCRIBE, so
    the first messages may miss a brand-new remote subscriber. This sends
    probes (`send_probe(text)`) until one arrives (`next_probe(wait)` returns
    the payload text or None), then a last probe, and consumes everything up
    to it: per-publisher order means no probe comes after it.
    """
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        send_probe(f"probe-{n}")
        got = next_probe(0.2)
        if got is not None and got.startswith("probe-"):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no probe crossed between the nodes within {timeout}s")
    send_probe("probe-last")
    while True:
        got = next_probe(max(deadline - time.monotonic(), 0.1))
        if got is None:
            raise AssertionError("the last probe did not arrive")
        if got == "probe-last":
            return


def mqtt_probe(publisher, subscriber, topic: str):
    """The (send_probe, next_probe) pair for two MqttClients; `topic` must match the subscriber."""

    def send(text: str) -> None:
        publisher.publish(topic, text.encode(), qos=1)

    def receive(wait: float):
        try:
            return subscriber.messages.get(timeout=wait).payload.decode()
        except queue.Empty:
            return None

    return send, receive


def flood_qos1(node, prefix: str, publishers: int, per_publisher: int, inflight: int):
    """`publishers` paho clients on `node`, each publishing `per_publisher`
    QoS 1 messages `"<index>-<n>"` on `prefix/p<index>` from its own thread,
    pipelined up to `inflight` unacknowledged; waits for the PUBACKs (bounded).
    Returns the clients (connected) and each one's publish infos."""
    from mqttutil import MqttClient, unique

    clients = []
    for _ in range(publishers):
        client = MqttClient(node, "5.0", client_id=unique("pub"))
        client.client.max_inflight_messages_set(inflight)
        clients.append(client.connect())
    infos: list = [[] for _ in range(publishers)]

    def flood(index: int) -> None:
        client = clients[index].client
        for n in range(per_publisher):
            infos[index].append(client.publish(f"{prefix}/p{index}", f"{index}-{n}".encode(), qos=1))

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(publishers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for batch in infos:
        for info in batch:
            info.wait_for_publish(60)
    return clients, infos
