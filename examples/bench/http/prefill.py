#!/usr/bin/env python3
"""Puts N messages of PAYLOAD bytes into queue Q through POST /v1/publish
(NDJSON, 1000 lines a request). Used by http.sh before the pull figure."""

import http.client
import json
import sys

host, port, queue, n, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
line = json.dumps({"topic": f"$queue/{queue}", "payload": "x" * size, "qos": 0}) + "\n"
conn = http.client.HTTPConnection(host, port, timeout=60)
done = 0
while done < n:
    batch = min(1000, n - done)
    conn.request("POST", "/v1/publish", body=(line * batch).encode())
    reply = json.loads(conn.getresponse().read())
    assert reply["accepted"] == batch, reply
    done += batch
print(done)
