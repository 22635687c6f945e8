"""The status page as a browser renders it: a real `aocu serve --tee sim` node with a process that got messages,
loaded in headless Chromium (Debian's `chromium`); the rendered DOM is asserted and a screenshot is saved in
test-artifacts/status-page.png."""

from __future__ import annotations

import html.parser
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_node_e2e import Node, get, lua32, result, send, spawn, upload_module, wallet  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; "
                                                          "scripts/install.sh --test installs it)")


def chromium(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-dev-shm-usage", "--hide-scrollbars", *args],
                          capture_output=True, timeout=120, check=True)


class Rows(html.parser.HTMLParser):
    """The text of each cell of each row of the table with id `processes`, and the text by element id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.by_id: dict[str, str] = {}
        self._in_table = False
        self._ids: list[tuple[str, int]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._depth += 1
        if a.get("id"):
            self._ids.append((a["id"] or "", self._depth))
            self.by_id.setdefault(a["id"] or "", "")
        if tag == "table" and a.get("id") == "processes":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th") and self.rows:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        while self._ids and self._ids[-1][1] >= self._depth:
            self._ids.pop()
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        for i, _ in self._ids:
            self.by_id[i] += data
        if self._in_table and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data.strip()


@pytest.fixture(scope="module")
def sim_node(tmp_path_factory, lua32, wallet):  # noqa: F811 - fixtures of test_node_e2e
    d = tmp_path_factory.mktemp("status") / "data"
    d.mkdir()
    node = Node(d, workers=1, extra=("--tee", "sim"))
    try:
        module = upload_module(node.url, wallet, lua32.read_bytes())
        pid = spawn(node.url, wallet, module)
        mids = [send(node.url, wallet, pid, "Eval", f"return {i} + 1") for i in range(3)]
        for mid in mids:
            result(node.url, pid, mid)           # evaluated: the process is warm now
        yield node, pid, module
    finally:
        node.stop_term()


def test_processes_over_the_evaluator_socket(sim_node):
    """`GET /processes` as gunicorn serves it: the warm flags come from the evaluator process (rpc.Status)."""
    node, pid, module = sim_node
    status, body, _ = get(node.url + "/processes?limit=1")
    doc = json.loads(body)
    assert status == 200 and "evaluator" not in doc and doc["next"] is None
    assert doc["processes"] == [{"id": pid, "origin": "local", "module": module, "slot": 3, "slots": 4,
                                 "evaluated_slot": 3, "last_activity": doc["processes"][0]["last_activity"],
                                 "warm": True, "latest_result": f"/{pid}~process@1.0/compute?slot=3"}]


def test_status_page_in_chromium(sim_node):
    node, pid, module = sim_node
    status, body, _ = get(node.url + "/")       # clients keep the JSON
    assert status == 200 and set(json.loads(body)) == {"address", "timestamp"}

    dom = chromium("--dump-dom", node.url + "/").stdout.decode()
    parsed = Rows()
    parsed.feed(dom)
    assert "SIMULATED TEE" in parsed.by_id["tee-banner"]
    assert parsed.by_id["tee-kind"].startswith("sim") and "sim-snp" in parsed.by_id["tee-kind"]
    verdict = parsed.by_id["verdict"]
    assert "VERIFIED: snp evidence, 0 of" in verdict and "NOT VERIFIED" not in verdict and "SIMULATED" in verdict
    assert parsed.by_id["address"] == json.loads(body)["address"]
    header, *rows = parsed.rows
    assert header[:6] == ["process", "origin", "module", "slot", "slots", "evaluated to"]
    row = next(r for r in rows if r[0] == pid)
    assert row[1] == "local" and row[3:6] == ["3", "4", "3"] and row[7] == "yes"    # 3 messages after the spawn
    assert row[8] == "result"
    assert f'{node.url}/{pid}~process@1.0/compute?slot=3" --allow-simulated' in parsed.by_id["verify"]
    assert "evaluations" in parsed.by_id["throughput"] and "pending" in parsed.by_id["outbox"]

    # the page's own instructions work: its latest-result link is a signed, attested result `aocu verify` accepts
    url = f"{node.url}/{pid}~process@1.0/compute?slot=3"
    out = subprocess.run([sys.executable, "-m", "cu.cli", "verify", url, "--allow-simulated",
                          str(node.data_dir / "sim-tee" / "roots.pem")], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr

    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "status-page.png"
    png.unlink(missing_ok=True)
    chromium(f"--screenshot={png}", "--window-size=1280,1600", node.url + "/")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1280, 1600) and len(data) > 20_000
