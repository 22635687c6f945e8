"""`GET /metrics` in one process (create_app, no PROMETHEUS_MULTIPROC_DIR): the exposition parses with
prometheus_client's own parser, every family has HELP and TYPE, names follow Prometheus conventions, no PID or
worker label, request counters and latency histograms count what was asked, the evaluator's counters come
through the EVALUATOR_FAMILIES table. (Several workers under `aocu serve`: tests/test_ready.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from cu.http import metrics as m


def prom_value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name` whose labels include `labels` (parsed by prometheus_client)."""
    found = [s.value for fam in text_string_to_metric_families(text) for s in fam.samples
             if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    if len(found) != 1:
        raise LookupError(f"{len(found)} samples {name}{labels} in:\n{text}")
    return found[0]


def check_exposition(text: str) -> list:
    """Parses `text` and checks the conventions every family of the node follows; returns the families."""
    families = list(text_string_to_metric_families(text))
    assert families
    for fam in families:
        assert fam.type in ("counter", "gauge", "histogram"), (fam.name, fam.type)
        assert fam.documentation.strip(), f"{fam.name} has no HELP"
        exposed = fam.name + "_total" if fam.type == "counter" else fam.name
        # the text itself carries both lines for the family (the parser would accept a missing TYPE)
        assert f"# HELP {exposed} " in text and f"# TYPE {exposed} {fam.type}\n" in text, exposed
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", fam.name), fam.name
        assert not fam.name.endswith("_total"), fam.name     # the parser strips it from counters
        if fam.type == "counter":
            assert all(s.name.endswith("_total") for s in fam.samples), fam.name
        for s in fam.samples:
            assert not {"pid", "worker", "worker_pid"} & set(s.labels), (s.name, s.labels)
            assert not s.name.endswith("_milliseconds") and "_ms" not in s.name, s.name
    return families


@pytest.fixture(scope="module")
def node_wallet(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys") / "node.json"
    path.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def app(tmp_path_factory, node_wallet):
    app = create_app({"data_dir": tmp_path_factory.mktemp("node"), "tee": "sim", "eager": False,
                      "wallet": node_wallet})
    yield app
    app.extensions["aocu"].dispatcher.stop()


def test_exposition_parses_and_follows_the_conventions(app):
    c = app.test_client()
    for _ in range(3):
        assert c.get("/health").status_code == 200
    assert c.get("/result/x").status_code == 400
    for method in ("BREW", "PROPFIND"):       # made-up methods do not each make a series
        assert c.open("/health", method=method).status_code == 405
    resp = c.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = resp.data.decode()
    names = {f.name for f in check_exposition(text)}
    assert {"aocu_http_requests", "aocu_http_request_duration_seconds", "aocu_build_info", "aocu_evaluator_up",
            "aocu_evaluations", "aocu_outbox_deliveries", "aocu_store_rows", "aocu_outbox_entries",
            "process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds"} <= names
    assert prom_value(text, "aocu_http_requests_total", route="/health", method="GET", code="200") == 3
    assert prom_value(text, "aocu_http_requests_total", route="/result/<message_id>", method="GET",
                      code="400") == 1
    assert prom_value(text, "aocu_http_request_duration_seconds_count", route="/health", method="GET") == 3
    assert prom_value(text, "aocu_http_request_duration_seconds_bucket", route="/health", method="GET",
                      le="+Inf") == 3
    assert prom_value(text, "aocu_http_requests_total", route="<unmatched>", method="other", code="405") == 2
    assert "BREW" not in text and "PROPFIND" not in text
    assert prom_value(text, "aocu_build_info", version=m.version(), tee="sim") == 1
    assert prom_value(text, "aocu_evaluator_up") == 1
    assert prom_value(text, "aocu_http_requests_in_flight") == 1          # this scrape
    assert prom_value(text, "process_resident_memory_bytes") > 1e6
    # no evaluator process of its own in one process: no aocu_evaluator_process_*
    assert "aocu_evaluator_process_" not in text


def test_evaluator_counters_come_through_the_table(app, node_wallet):
    c = app.test_client()
    wallet = ArweaveWallet.from_jwk(json.loads(open(node_wallet).read()))
    module = DataItem.create(wallet, data=b"\0asm\1\0\0\0", tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Content-Type", "application/wasm")])
    assert c.post("/", data=module.to_bytes(), content_type="application/octet-stream").status_code in (200, 201, 202)
    counters = app.extensions["aocu"].dispatcher.core.evaluator.metrics
    assert counters.get("commits", 0) >= 1
    # every key the evaluator counts has a family (a new key needs its line in EVALUATOR_FAMILIES)
    assert m.unmapped_keys(counters) == []
    text = c.get("/metrics").data.decode()
    check_exposition(text)
    assert prom_value(text, "aocu_store_commits_total") == counters["commits"]
    assert prom_value(text, "aocu_outbox_deliveries_total", outcome="retry") == 0


def test_a_new_evaluator_key_needs_one_table_line(monkeypatch):
    counters = {"evaluations": 2, "widgets_made": 5, "widget_queue": 3, "outbox_deliveries_bounced": 1}
    assert m.unmapped_keys(counters) == ["widget_queue", "widgets_made"]
    monkeypatch.setattr(m, "EVALUATOR_FAMILIES", (
        *m.EVALUATOR_FAMILIES, ("widgets_made", "aocu_widgets_made_total", "counter", "widgets made", None),
        ("widget_queue", "aocu_widget_queue", "gauge", "widgets waiting", None)))
    assert m.unmapped_keys(counters) == []
    fams = {f.name: f for f in m.evaluator_families(counters, warm=1, queued=0)}
    assert fams["aocu_widgets_made"].type == "counter" and fams["aocu_widgets_made"].samples[0].value == 5
    assert fams["aocu_widget_queue"].type == "gauge" and fams["aocu_widget_queue"].samples[0].value == 3
    assert [(s.labels, s.value) for s in fams["aocu_outbox_deliveries"].samples] == [({"outcome": "bounced"}, 1)]
    assert fams["aocu_evaluations"].samples[0].value == 2 and fams["aocu_checkpoints"].samples[0].value == 0


def test_prom_value_rejects_missing_and_ambiguous_samples():
    text = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"1\"} 1.0\na_total{k=\"2\"} 2.0\n"
    assert prom_value(text, "a_total", k="2") == 2
    with pytest.raises(LookupError):
        prom_value(text, "a_total")
    with pytest.raises(LookupError):
        prom_value(text, "b_total")


def test_every_evaluator_family_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md").read_text()
    missing = [name for _, name, *_ in m.EVALUATOR_FAMILIES if f"`{name}`" not in doc]
    assert not missing, f"docs/OPERATIONS.md does not name {missing}"
