"""Nodes join the cluster through NATS, or refuse to start with a clear error."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from clusterutil import node_env
from natsproc import NATS_BIN, free_port
from ternproc import clean_env, tern_bin


def nats_connection_names(server) -> set:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/connz", timeout=5) as r:
        connz = json.load(r)
    return {c.get("name") for c in connz.get("connections", [])}


def test_two_nodes_start_and_connect(nats, nodes):
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    assert "cluster: connected to NATS" in a.stderr_text()
    assert "cluster: connected to NATS" in b.stderr_text()
    assert {"tern:tern-a", "tern:tern-b"} <= nats_connection_names(nats)


def run_tern(tmp_path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tern_bin())],
        env=clean_env(
            TERN_MQTT__BIND="127.0.0.1:0",
            TERN_STOMP__BIND="127.0.0.1:0",
            TERN_WEBSOCKET__BIND="127.0.0.1:0",
            TERN_HTTP__BIND="127.0.0.1:0",
            TERN_STORAGE__DATA_DIR=str(tmp_path / "data"),
            **env,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_unreachable_nats_stops_the_start_with_exit_code_2(tmp_path):
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_tern(tmp_path, node_env("tern-a", [url]))
    assert result.returncode == 2, result.stderr
    assert "cannot connect to NATS" in result.stderr
    assert url in result.stderr
    assert "listening" not in result.stdout


def test_bad_nats_url_is_a_configuration_error_naming_the_key(tmp_path):
    result = run_tern(tmp_path, node_env("tern-a", ["http://127.0.0.1:4222"]))
    assert result.returncode == 2, result.stderr
    assert "cluster.nats_urls" in result.stderr


def test_bad_node_name_is_a_configuration_error_naming_the_key(tmp_path):
    result = run_tern(tmp_path, node_env("tern a.b", ["nats://127.0.0.1:4222"]))
    assert result.returncode == 2, result.stderr
    assert "cluster.node" in result.stderr


def test_nodes_join_a_three_server_nats_cluster(nats_cluster, nodes):
    urls = [s.url for s in nats_cluster]
    for i, server in enumerate(nats_cluster):
        # Each node given one server first: they spread over the cluster.
        nodes.start(f"tern-{i + 1}", urls[i:] + urls[:i])
    names = set()
    for server in nats_cluster:
        names |= nats_connection_names(server)
    assert {"tern:tern-1", "tern:tern-2", "tern:tern-3"} <= names


def test_cluster_settings_come_from_the_environment(tmp_path):
    result = subprocess.run(
        [str(tern_bin()), "check-config"],
        env=clean_env(
            TERN_CLUSTER__NODE="tern-7",
            TERN_CLUSTER__NATS_URLS="nats://10.0.0.1:4222,nats://10.0.0.2:4222",
            TERN_CLUSTER__PASSWORD="secret",
            TERN_CLUSTER__USER="tern",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout.split("\n", 1)[1])
    assert settings["cluster"]["node"] == "tern-7"
    assert settings["cluster"]["nats_urls"] == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    assert settings["cluster"]["password"] == "<redacted>"


def test_the_three_node_example_configs_are_valid():
    example = Path(__file__).resolve().parents[2] / "config" / "cluster"
    nodes = set()
    for i in (1, 2, 3):
        result = subprocess.run(
            [str(tern_bin()), "check-config", "--config", str(example / f"tern-{i}.toml")],
            env=clean_env(), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stderr
        settings = json.loads(result.stdout.split("\n", 1)[1])
        assert settings["cluster"]["enabled"] is True
        nodes.add(settings["cluster"]["node"])
        checked = subprocess.run(
            [NATS_BIN, "-c", str(example / f"nats-{i}.conf"), "-t"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert checked.returncode == 0, checked.stderr + checked.stdout
    assert nodes == {"tern-1", "tern-2", "tern-3"}
