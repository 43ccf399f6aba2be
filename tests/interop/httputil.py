"""Helpers for the HTTP /v1 interop tests (test_http*.py): the web port's base
URL, and a reader of server-sent events over `requests`."""

from __future__ import annotations

import json
import queue
import threading
from typing import Optional

import requests

TIMEOUT = 10.0


def base_url(broker) -> str:
    host, port = broker.endpoints["ws"]
    return f"http://{host}:{port}/v1"


class SseReader:
    """A GET /v1/events stream read on a thread; events (dicts with `id`,
    `event`, `data` parsed as JSON) and comments go to queues."""

    def __init__(self, url: str, params, headers: Optional[dict] = None, auth=None):
        self.response = requests.get(url, params=params, headers=headers or {}, auth=auth,
                                     stream=True, timeout=(TIMEOUT, 60))
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.comments: "queue.Queue[str]" = queue.Queue()
        self.ended = threading.Event()
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        event: dict = {}
        try:
            for raw in self.response.iter_lines(decode_unicode=False):
                line = raw.decode()
                if line == "":
                    if "data" in event:
                        event["data"] = json.loads(event["data"])
                        self.events.put(event)
                    event = {}
                elif line.startswith(":"):
                    self.comments.put(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value
        except Exception:  # noqa: BLE001 - the stream was closed under us
            pass
        finally:
            self.ended.set()

    def expect(self, timeout: float = TIMEOUT) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no server-sent event within {timeout}s") from None

    def wait_comment(self, text: str, timeout: float = TIMEOUT) -> None:
        while True:
            try:
                if self.comments.get(timeout=timeout) == text:
                    return
            except queue.Empty:
                raise AssertionError(f"no ': {text}' comment within {timeout}s") from None

    def close(self) -> None:
        self.response.close()
