"""Helpers of the cluster tests that are not fixtures."""

from __future__ import annotations


def node_env(node: str, nats_urls, extra: dict | None = None) -> dict:
    """The TERN_CLUSTER__* variables that make a tern process node `node` of the cluster."""
    env = {
        "TERN_CLUSTER__ENABLED": "true",
        "TERN_CLUSTER__NODE": node,
        "TERN_CLUSTER__NATS_URLS": ",".join(nats_urls),
    }
    env.update(extra or {})
    return env
