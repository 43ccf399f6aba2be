#!/usr/bin/env python3
"""Opens N server-sent event streams (GET /v1/events?topic=T) and reads them
as fast as possible, discarding the bytes; prints the events seen once stopped
(SIGTERM / SIGINT). Used by http.sh for the SSE fan-out figure."""

import asyncio
import signal
import sys


async def stream(host: str, port: int, topic: str, counts: list, index: int, ready: asyncio.Event,
                 opened: list, total: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/events?topic={topic}&retained=false HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    await writer.drain()
    tail = b""
    first = True
    while True:
        chunk = await reader.read(1 << 16)
        if not chunk:
            return
        if first:
            first = False
            opened[0] += 1
            if opened[0] == total:
                ready.set()
        data = tail + chunk
        counts[index] += data.count(b"\nevent: message")
        tail = data[-16:]


async def main() -> None:
    host, port, topic, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    counts = [0] * n
    opened = [0]
    ready = asyncio.Event()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(stream(host, port, topic, counts, i, ready, opened, n)) for i in range(n)]
    await ready.wait()
    print("ready", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    print(f"events {sum(counts)}", flush=True)


asyncio.run(main())
