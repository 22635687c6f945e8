"""The legacynet bridge behind the node's legacy CU routes: `aocu serve --gateway URL` computes a process that is
not scheduled on this node from the stand-in legacy SU + gateway, and the HTTP answers equal the same stream
evaluated directly with `aocu run`."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from tests.standin.reference import aocu_run
from tests.test_node_e2e import Node, get, request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    stream = world.expected_stream()
    cache = tmp_path_factory.mktemp("ref-cache")
    results, mem_hash = aocu_run(world, stream, tmp_path_factory.mktemp("aocu-run"), cache)
    return stream, results, mem_hash


@pytest.fixture(scope="module")
def bridged(standin, tmp_path_factory):
    d = tmp_path_factory.mktemp("bridged") / "data"
    d.mkdir()
    node = Node(d, extra=("--gateway", standin.url))
    yield node
    node.stop_term()


def test_legacy_routes_compute_a_remote_process(world, bridged, reference):
    stream, results, ref_hash = reference
    pid = world.pid
    idx = next(i for i, s in enumerate(stream) if s["kind"] == "message" and s["nonce"] == 42)
    status, body, headers = get(f"{bridged.url}/result/{stream[idx]['id']}?process-id={pid}")
    assert status == 200, body
    assert json.loads(body) == results[idx]
    assert "none" in headers.get("X-Aocu-Tee", "")

    # /cron evaluates to the SU's current timestamp; afterwards the memory equals aocu run's
    status, body, _ = get(f"{bridged.url}/cron/{pid}?limit=10")
    assert status == 200, body
    page = json.loads(body)
    assert page["pageInfo"]["hasNextPage"] is True and len(page["edges"]) == 10
    status, memory, headers = get(f"{bridged.url}/state/{pid}")
    assert status == 200
    assert hashlib.sha256(memory).hexdigest() == ref_hash
    assert headers["Last-Ordinate"] == str(len(world.edges) - 1)

    # /results pages through stored evaluations with legacy cursors (errors filtered out, as the legacy CU does)
    status, body, _ = get(f"{bridged.url}/results/{pid}?limit=5")
    first = json.loads(body)
    assert status == 200 and len(first["edges"]) == 5 and first["pageInfo"]["hasNextPage"]
    cursor = first["edges"][-1]["cursor"]
    assert set(json.loads(base64.b64decode(cursor + "=" * (-len(cursor) % 4)))) >= {"timestamp", "ordinate"}
    status, body, _ = get(f"{bridged.url}/results/{pid}?limit=5&from={cursor}")
    second = json.loads(body)
    assert status == 200 and second["edges"] and second["edges"][0]["cursor"] != cursor
    expected = [r for r in results if "Error" not in r][5:10]
    assert [e["node"]["Output"] for e in second["edges"]] == [r.get("Output", "") for r in expected]

    # a dry-run reads the latest state and discards its memory
    status, body, _ = request("POST", f"{bridged.url}/dry-run?process-id={pid}",
                              json.dumps({"Tags": [{"name": "Action", "value": "Count"}]}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["Output"]
    status, memory, _ = get(f"{bridged.url}/state/{pid}")
    assert hashlib.sha256(memory).hexdigest() == ref_hash


def test_unknown_remote_process_is_a_clear_error(bridged):
    status, body, _ = get(f"{bridged.url}/result/{'A' * 43}?process-id={'B' * 43}")
    assert 400 <= status < 600 and status != 500
    assert "error" in json.loads(body)


def test_node_without_gateway_does_not_bridge(world, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    node = Node(d)
    try:
        status, body, _ = get(f"{node.url}/result/{'A' * 43}?process-id={world.pid}")
        assert status == 404 and "not found" in json.loads(body)["error"]
    finally:
        node.stop_term()
