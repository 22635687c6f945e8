"""Node benchmark: message -> result round trip through `aocu serve` (gunicorn + evaluator) on loopback.

    python bench/node.py [--clients 4] [--seconds 10] [--workers 2] [--threads 4] [--evaluators N]
    python bench/node.py --scaling [--matrix 1:1,1:2,2:1,2:2[:WORKERS]] [--repeat N]   # CPUs x shards, same run

Each client process owns one AO process (the project's Lua test module, trivial `Echo` handler), and in a
loop POSTs a pre-signed ed25519 message to `/` and GETs `/result/{id}`; the pair is one round trip. The p50 of each
half is shown too: the POST until its durable acknowledgement, then the GET of its result.
Baseline from the same run and the same clients: `GET /health` round trips. Targets (2-core machine):
p50 < 3 ms and >= 1,000 results/s.

The node runs with `--tee sim`, so every result is signed (ed25519) with key-binding evidence. Attestation
phase: 1-client round trips with `?attest-nonce=` (fresh simulated evidence per result) and with
`accept-codec: ans104@1.0` (RSA-4096 item), and in-process per-result costs of cu.node.signer on the real
result body (ed25519 / RSA-PSS-4096 HTTP signatures, ANS-104 item, fresh-nonce evidence). The node has no
unsigned mode, so the unsigned round trip is the signed one minus the in-process signing cost measured here.
Target: attestation adds <= 5% to a result's latency in key-binding mode.

`--profile-workers DIR`: py-spy (if installed) samples the gunicorn workers during the concurrent phase (threads
holding the GIL); the raw stacks go to DIR and the most frequent frames are printed.

`--scaling --lean-baseline`: each configuration also runs with the workers' lean request path off
(AOCU_LEAN_HTTP=0: every request through gunicorn's parser and Response, cu/serve/lean.py), in the same turns.

`--scaling`: instead, the concurrent message->result phase on a fresh node per configuration
CPUS:EVALUATORS[:WORKERS] (the node pinned with sched_setaffinity, like `taskset -c 0` / `taskset -c 0,1`,
`--evaluators`, and gunicorn `--workers`), all in one run: results/s and CPU per result by component (evaluator
shards summed), and per result the file read/write calls and context switches of the evaluators and workers (counts
that move less with the machine's speed than CPU time). The machine's speed itself is measured before and after:
the Echo message evaluated in-process (p50), and node CPU per result is also printed in units of it. When the node
has fewer CPUs than the machine, the clients are pinned to the others, so they do not take the node's CPU.
`--repeat N` runs the configurations N times in turns and shows medians.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cu.codec.ans104 import DataItem  # noqa: E402
from cu.codec.wallet import ArweaveWallet, Ed25519Key  # noqa: E402


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(data_dir: Path, port: int, workers: int, threads: int, evaluators: int | None = None,
               cpus: set[int] | None = None, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    env.pop("AOCU_EVALUATORS", None)
    extra = ["--evaluators", str(evaluators)] if evaluators else []
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None     # taskset for the node and its children
    proc = subprocess.Popen([sys.executable, "-m", "cu.cli", "serve", "--bind", f"127.0.0.1:{port}",
                             "--data-dir", str(data_dir), "--tee", "sim", "--workers", str(workers),
                             "--threads", str(threads), "--quiet", *extra],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("node did not start")


def stop_node(node: subprocess.Popen) -> None:
    """SIGTERM to `aocu serve` (it stops its workers and evaluators, which checkpoint), then waits until every
    process of its group is gone, so the data dir can be removed."""
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(node.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(node.pid, signal.SIGKILL)


class RawClient:
    """A minimal keep-alive HTTP/1.1 client (Content-Length responses only, which is all the node sends), so
    the load generator's own CPU stays small next to the node's on a 2-CPU machine; `--client http.client`
    measures with the standard library client instead. Interface of http.client.HTTPConnection as used here."""

    def __init__(self, host: str, port: int, timeout: float = 60.0) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def call(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.addr[0]}\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        req = (head + "\r\n").encode() + (body or b"")
        if self.sock is None:
            self.sock = socket.create_connection(self.addr, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(req)
        buf = self.buf
        while (i := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        head_b, rest = buf[:i].lower(), buf[i + 4:]
        j = head_b.find(b"\r\ncontent-length:")
        if j < 0:
            raise http.client.HTTPException("response without Content-Length")
        n = int(head_b[j + 17:head_b.find(b"\r\n", j + 2) if head_b.find(b"\r\n", j + 2) > 0 else None])
        while len(rest) < n:
            rest += self._recv()
        self.buf = rest[n:]
        if b"\r\nconnection: close" in head_b:
            self.close()
        return int(head_b[9:12]), rest[:n]

    def _recv(self) -> bytes:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the node closed the connection")
        return chunk


def connect(port: int, kind: str) -> RawClient | http.client.HTTPConnection:
    return RawClient("127.0.0.1", port) if kind == "raw" else http.client.HTTPConnection("127.0.0.1", port, timeout=60)


def call(conn: RawClient | http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    h = dict(headers or {})
    if body:
        h["Content-Type"] = "application/octet-stream"
    if isinstance(conn, RawClient):
        return conn.call(method, path, body, h)
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    return r.status, r.read()


def setup(port: int, wasm: bytes, clients: int) -> list[str]:
    wallet = ArweaveWallet.generate()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    module = DataItem.create(wallet, data=wasm, tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
        ("Compute-Limit", "9000000000000")])
    assert call(conn, "POST", "/", module.to_bytes())[0] == 202
    pids = []
    for i in range(clients):
        p = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                   ("Module", module.id), ("Name", f"bench-{i}")])
        assert call(conn, "POST", "/", p.to_bytes())[0] == 202
        pids.append(p.id)
    for pid in pids:   # warm: first evaluation boots the instance
        m = DataItem.create(Ed25519Key.generate(), data=b"warm", target=pid,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
        assert call(conn, "POST", "/", m.to_bytes())[0] == 202
        status, body = call(conn, "GET", f"/result/{m.id}?process-id={pid}")
        assert status == 200 and json.loads(body)["Output"] == "warm", body
    return pids


PAIR = "<http pair>"   # a client that measures the HTTP floor of a round trip
MODES = {"key": ("", {}), "fresh": ("&attest-nonce=" + "ab" * 32, {}),
         "ans104": ("", {"accept-codec": "ans104@1.0"})}


def client(port: int, pid: str | None, seconds: float, n_presigned: int, start_at: float, q: mp.Queue,
           mode: str = "key", kind: str = "raw", cpus: set[int] | None = None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    suffix, headers = MODES[mode]
    lat: list[float] = []
    # of message round trips: (POST until the durable acknowledgement, the GET of the result after it)
    split: list[tuple[float, float]] = []
    errors = 0
    cpu0 = 0.0
    try:
        conn = connect(port, kind)
        items = []
        if pid is not None and pid != PAIR:
            key = Ed25519Key.generate()
            items = [DataItem.create(key, data=f"m{i}".encode(), target=pid, tags=[
                ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")]) for i in range(n_presigned)]
            items = [(it.id, it.to_bytes()) for it in items]
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        i = 0
        cpu0 = time.process_time()
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                if pid is None:
                    status, _ = call(conn, "GET", "/health")
                    ok = status == 200
                elif pid == PAIR:
                    # the same two requests through gunicorn + Flask, answered without the evaluator
                    s1, _ = call(conn, "POST", "/", b"not a data item")
                    s2, _ = call(conn, "GET", "/health")
                    ok = s1 == 400 and s2 == 200
                else:
                    if i >= len(items):
                        break
                    mid, raw = items[i]
                    i += 1
                    s1, _ = call(conn, "POST", "/", raw)
                    t1 = time.perf_counter()
                    s2, body = call(conn, "GET", f"/result/{mid}?process-id={pid}{suffix}", headers=headers)
                    split.append((t1 - t0, time.perf_counter() - t1))
                    ok = s1 == 202 and s2 == 200 and b'"Output":"m' in body
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = connect(port, kind)
            lat.append(time.perf_counter() - t0)
            errors += not ok
    finally:
        q.put((lat, errors, time.process_time() - cpu0, split))


def gather(q: mp.Queue, clients: int, timeout: float) -> tuple[list[float], int]:
    """The latencies and error counts that `clients` client processes each put on `q` as (latencies, errors)."""
    lat: list[float] = []
    errors = 0
    for _ in range(clients):
        got, e = q.get(timeout=timeout)
        lat += got
        errors += e
    return lat, errors


def node_processes(node_pid: int) -> Iterator[tuple[str, str, list[str]]]:
    """(role, /proc entry, stat fields after the command name) of each process in the node's process group;
    role is master, evaluator or workers."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[2]) != node_pid:     # process group of the node
            continue
        yield ("master" if int(entry) == node_pid else
               "evaluator" if b"cu.node.service" in cmd else "workers"), entry, stat


def node_cpu(node_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of the node's processes, by role (evaluator: every evaluator shard
    together, workers, master), and under "<role> io" / "<role> cs" the read and write system calls
    (/proc/PID/io syscr + syscw: file reads and writes, e.g. SQLite's page I/O; socket calls are not counted) and
    the context switches of its live threads. Counts move less with the machine's speed than CPU time does."""
    out = {"evaluator": 0.0, "workers": 0.0, "master": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for role, entry, stat in node_processes(node_pid):
        out[role] += (int(stat[11]) + int(stat[12])) / tick
        out[f"{role} io"] = out.get(f"{role} io", 0.0) + _proc_io_calls(entry)
        out[f"{role} cs"] = out.get(f"{role} cs", 0.0) + _proc_switches(entry)
    return out


def _proc_io_calls(entry: str) -> int:
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{entry}/io").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(fields.get("syscr", 0)) + int(fields.get("syscw", 0))


def _proc_switches(entry: str) -> int:
    n = 0
    try:
        tasks = os.listdir(f"/proc/{entry}/task")
    except OSError:
        return 0
    for t in tasks:
        try:
            for line in Path(f"/proc/{entry}/task/{t}/status").read_text().splitlines():
                if "ctxt_switches:" in line:     # voluntary and nonvoluntary
                    n += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return n


CLIENT_KIND = "raw"


def profile_workers(node_pid: int, out_dir: Path, start_at: float, seconds: float) -> list[subprocess.Popen]:
    """py-spy (if installed) on each gunicorn worker from `start_at` for `seconds`: stacks of the threads holding
    the GIL, as raw collapsed stacks in out_dir/worker-PID.txt (one line per stack and its sample count)."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("--profile-workers: py-spy is not installed (pip install py-spy); no profile taken")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    time.sleep(max(0.0, start_at - time.time()))
    return [subprocess.Popen([spy, "record", "-p", entry, "-r", "250", "-d", str(max(1, int(seconds) - 1)), "-f", "raw",
                              "-g", "--nonblocking", "-o", str(out_dir / f"worker-{entry}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, entry, _ in node_processes(node_pid) if role == "workers"]


def profile_summary(out_dir: Path, top: int = 30) -> None:
    """The frames most often on the workers' stacks (inclusive share of the samples)."""
    incl: dict[str, int] = {}
    total = 0
    for f in sorted(out_dir.glob("worker-*.txt")):
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            total += int(n)
            for frame in {fr.split(" (")[0] + " (" + fr.split(" (")[-1].split(":")[0] + ")"
                          for fr in stack.split(";")[1:]}:
                incl[frame] = incl.get(frame, 0) + int(n)
    print(f"worker profile ({total} samples of threads holding the GIL; raw stacks in {out_dir}):")
    for frame, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")


def run_phase(port: int, pids: list[str | None], seconds: float, n_presigned: int, mode: str = "key",
              node_pid: int | None = None, client_cpus: set[int] | None = None,
              profile: Path | None = None) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + (1.0 + n_presigned * len(pids) / 4000.0 if pids[0] not in (None, PAIR) else 0.5)
    procs = [ctx.Process(target=client, args=(port, pid, seconds, n_presigned, start_at, q, mode, CLIENT_KIND,
                                              client_cpus)) for pid in pids]
    for p in procs:
        p.start()
    spies = profile_workers(node_pid, profile, start_at + 0.5, seconds) if profile and node_pid else []
    lat: list[float] = []
    split: list[tuple[float, float]] = []
    errors = 0
    client_cpu = 0.0
    cpu_before = node_cpu(node_pid) if node_pid else None
    for _ in procs:
        l_, e, c, s = q.get(timeout=seconds + 300)
        lat += l_
        split += s
        errors += e
        client_cpu += c
    cpu_after = node_cpu(node_pid) if node_pid else None
    for p in procs:
        p.join()
    for spy in spies:
        spy.wait(timeout=60)
    if spies and profile:
        profile_summary(profile)
    lat.sort()
    if not lat:
        raise SystemExit("no request completed")
    out = {
        "n": len(lat), "errors": errors, "per_s": len(lat) / seconds,
        "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
        "cpu_ms": {"clients": 1000 * client_cpu / len(lat)},
        # where a message round trip's time goes: the POST (scheduled, durably acknowledged) and the GET after it
        "ack_p50_ms": 1000 * statistics.median(a for a, _ in split) if split else 0.0,
        "get_p50_ms": 1000 * statistics.median(g for _, g in split) if split else 0.0,
    }
    if cpu_before is not None and cpu_after is not None:
        # the node's processes also start before/finish after the clients' window: a slight overestimate
        for role in cpu_before:
            if " " in role:     # a count (io calls, context switches): per result, not in ms
                out.setdefault("counts", {})[role] = (cpu_after.get(role, 0) - cpu_before[role]) / len(lat)
            else:
                out["cpu_ms"][role] = 1000 * (cpu_after[role] - cpu_before[role]) / len(lat)
    return out


def fsync_baseline(directory: Path, n: int = 200) -> float:
    """p50 of one fdatasync of a small append on the data dir's filesystem: the floor of a durable ack."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 512)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return 1000 * statistics.median(lat)


def engine_baseline(wasm: bytes, cache: Path, n: int = 300) -> float:
    """p50 of Instance.handle in-process for an Echo message shaped as the node sends it (43-character ids,
    an 86-character ed25519 signature, the legacy tags and env): the floor of one evaluation."""
    import cu.engine as engine
    from cu.node import legacy
    mod = engine.Module.load(wasm, "wasm32-unknown-emscripten2", cache_dir=cache)
    inst = engine.Instance(mod, memory_limit=512 << 20, compute_limit=9 * 10**12)
    ptags = [("Data-Protocol", "ao"), ("Type", "Process"), ("Module", "M" * 43), ("Name", "bench-0")]
    env = legacy.dumps(legacy.env_object(pid="P" * 43, process_owner="O" * 43, process_tags=ptags,
                                         module_id="M" * 43, module_owner="O" * 43, module_tags=ptags))
    lat = []
    for i in range(n):
        msg = legacy.dumps(legacy.scheduled_message(
            msg_id=f"{i:043d}", signature="S" * 86, data=f"m{i}".encode(), owner="W" * 43, target="P" * 43,
            anchor=None, tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")], epoch=0,
            nonce=i + 1, timestamp=1_700_000_000_000 + i, block_height=0, hash_chain="H" * 43))
        t0 = time.perf_counter()
        inst.handle(msg, env, keep_patches=True)
        lat.append(time.perf_counter() - t0)
    return 1000 * statistics.median(lat)


def evaluator_socket_round_trips(data_dir: Path, pid: str, shards: int, n: int = 400) -> tuple[float, float]:
    """p50 ms of the evaluator's two operations of a round trip, called directly on its Unix socket (no HTTP):
    schedule (durable, acknowledged after the fsync) and result (on the socket of the shard owning `pid`)."""
    from cu.node.items import item_meta
    from cu.node.shards import client_for
    from cu.node.store import ScheduleOp
    sock = client_for(data_dir / "evaluator.sock", shards)
    key = Ed25519Key.generate()
    sched, res = [], []
    for i in range(n):
        item = DataItem.create(key, data=f"m{i}".encode(), target=pid,
                               tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
        op = ScheduleOp("message", pid, item.id, (item_meta(item), item.to_bytes()))
        t0 = time.perf_counter()
        sock.submit(op)
        t1 = time.perf_counter()
        body = sock.result(pid, item.id)
        t2 = time.perf_counter()
        assert json.loads(body)["Output"] == f"m{i}"
        sched.append(t1 - t0)
        res.append(t2 - t1)
    return 1000 * statistics.median(sched[n // 4:]), 1000 * statistics.median(res[n // 4:])


def result_body(port: int, pid: str) -> bytes:
    """The unsigned body of a real Echo result (the signed response's body is the result JSON itself)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    m = DataItem.create(Ed25519Key.generate(), data=b"m-body", target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
    assert call(conn, "POST", "/", m.to_bytes())[0] == 202
    status, body = call(conn, "GET", f"/result/{m.id}?process-id={pid}")
    assert status == 200, body
    return body


def _p50_us(fn, n: int) -> float:
    fn()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(lat)


def signing_costs(tmp: Path, body: bytes) -> dict[str, float]:
    """p50 microseconds per result of cu.node.signer.sign_result (what the response post-processor runs)."""
    from cu.node.signer import ResultId, build_signer, sign_result
    sim = build_signer(tmp / "sign-sim", "sim")
    none = build_signer(tmp / "sign-none", "none")
    rid = ResultId(process="P" * 43, message="M" * 43)
    return {
        "ed25519, key binding (default)": _p50_us(lambda: sign_result(sim, 200, body, rid), 2000),
        "ed25519, tee none": _p50_us(lambda: sign_result(none, 200, body, rid), 2000),
        "rsa-pss-sha512 (RSA-4096), key binding": _p50_us(
            lambda: sign_result(sim, 200, body, rid, alg="rsa-pss-sha512"), 100),
        "ANS-104 item (RSA-4096), key binding": _p50_us(
            lambda: sign_result(sim, 200, body, rid, accept_codec="ans104@1.0"), 60),
        "ed25519 + fresh-nonce sim evidence": _p50_us(
            lambda: sign_result(sim, 200, body, rid, attest_nonce=os.urandom(32).hex()), 100),
    }


def node_counters(port: int) -> dict[str, float]:
    """The node's unlabelled /metrics samples (evaluator counters summed over the shards)."""
    status, body = call(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "GET", "/metrics")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if status == 200 and line and not line.startswith("#") and "{" not in name:
            out[name] = float(value)
    return out


def parse_matrix(text: str, workers: int) -> list[tuple[int, int, int]]:
    """`1:1,2:2,2:1:1` -> [(cpus, evaluators, gunicorn workers), ...] (workers default: `workers`)."""
    out = []
    for part in text.split(","):
        fields = part.strip().split(":")
        if not (len(fields) in (2, 3) and all(f.isdigit() and int(f) >= 1 for f in fields)):
            raise SystemExit(f"--matrix: {part!r} is not CPUS:EVALUATORS[:WORKERS]")
        out.append((int(fields[0]), int(fields[1]), int(fields[2]) if len(fields) == 3 else workers))
    return out


def scaling(args: argparse.Namespace, wasm: bytes) -> int:
    """The concurrent phase on a fresh node per CPUS:EVALUATORS configuration, in one run."""
    allowed = sorted(os.sched_getaffinity(0))
    matrix = parse_matrix(args.matrix or f"1:1,1:{len(allowed)},{len(allowed)}:1,{len(allowed)}:{len(allowed)}",
                          args.workers)
    if any(c > len(allowed) for c, _, _ in matrix):
        raise SystemExit(f"--matrix asks for more CPUs than the {len(allowed)} this process may use")
    # the machine's speed drifts (2 shared vCPUs): the in-process evaluation of the Echo message, before and after,
    # is the yardstick that makes CPU per result comparable between runs on a faster or slower machine
    cache = Path(tempfile.mkdtemp(prefix="aocu-bench-mc-"))
    engine_ms = [engine_baseline(wasm, cache)]
    runs = []
    leans = (True, False) if args.lean_baseline else (True,)
    # --repeat: the configurations take turns, so a change in the machine's load hits each of them alike
    for _ in range(args.repeat):
        for cpus, evaluators, workers in matrix:
            for lean in leans:
                runs.append(((cpus, evaluators, workers, lean),
                             _scaling_run(args, wasm, allowed, cpus, evaluators, workers, lean)))
    engine_ms.append(engine_baseline(wasm, cache))
    shutil.rmtree(cache, ignore_errors=True)
    floor = statistics.mean(engine_ms)
    rows = []
    for conf in matrix:
        for lean in leans:
            mine = [r for c, r in runs if c == (*conf, lean)]
            rows.append((*conf, lean, _median_run(mine)))
    print(f"aocu node scaling bench: {args.clients} clients, gunicorn threads={args.threads}, --tee sim, trivial "
          f"handler (Lua Echo), {len(allowed)} CPUs allowed, {CLIENT_KIND} client; clients pinned to the CPUs the "
          f"node does not have (if any); {args.repeat} run(s) per configuration, in turns (medians)")
    print(f"{'node CPUs':>9} {'evaluators':>10} {'workers':>7} {'lean':>4} {'n':>7} {'err':>4} {'per s':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'POST/GET p50':>12} {'CPU/result ms: evaluators':>26} {'workers':>8} {'master':>7} {'node':>6} {'clients':>8} "
          f"{'commits/result':>14} {'commit ms':>9} {'load':>5}   per result: file I/O calls, context switches "
          f"(evaluators / workers)")
    for cpus, evaluators, workers, lean, r in rows:
        c, k = r["cpu_ms"], r["counts"]
        node_ms = _node_ms(c)
        print(f"{cpus:9d} {evaluators:10d} {workers:7d} {'on' if lean else 'off':>4} {r['n']:7d} {r['errors']:4d} "
              f"{r['per_s']:8.0f} "
              f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['ack_p50_ms']:5.2f} / {r['get_p50_ms']:4.2f} "
              f"{c.get('evaluator', 0):26.2f} {c.get('workers', 0):8.2f} "
              f"{c.get('master', 0):7.2f} {node_ms:6.2f} {c['clients']:8.2f} {r['commits']:14.2f} {r['commit_ms']:9.2f} "
              f"{r['load']:5.1f}   io {k.get('evaluator io', 0):.1f} / {k.get('workers io', 0):.1f}, "
              f"cs {k.get('evaluator cs', 0):.1f} / {k.get('workers cs', 0):.1f}")
    print(f"yardstick (same run): the Echo message evaluated in-process, p50 {engine_ms[0]:.2f} ms before and "
          f"{engine_ms[1]:.2f} ms after; node CPU per result in those units: " + ", ".join(
              f"{c} CPU x {e} ev x {w} workers{'' if lean else ' (lean off)'}: "
              f"{_node_ms(r['cpu_ms']) / floor:.2f}"
              for c, e, w, lean, r in rows))
    base = rows[0][4]["per_s"]
    print("throughput ratios vs the first row (same run): " + ", ".join(
        f"{c} CPU x {e} ev x {w} workers{'' if lean else ' (lean off)'}: x{r['per_s'] / base:.2f}"
        for c, e, w, lean, r in rows))
    return 0 if all(r["errors"] == 0 for _, r in runs) else 1


def _node_ms(cpu_ms: dict[str, float]) -> float:
    """CPU per result of the node's processes (clients excluded), from a run's `cpu_ms`."""
    return cpu_ms.get("evaluator", 0) + cpu_ms.get("workers", 0) + cpu_ms.get("master", 0)


def _median_run(runs: list[dict]) -> dict:
    """Per field, the median over the runs of one configuration (errors: the sum)."""
    out = {k: statistics.median(r[k] for r in runs) for k in ("n", "per_s", "p50_ms", "p99_ms", "ack_p50_ms",
                                                        "get_p50_ms", "load", "commits", "commit_ms")}
    out["n"] = int(out["n"])
    out["errors"] = sum(r["errors"] for r in runs)
    out["cpu_ms"] = {k: statistics.median(r["cpu_ms"].get(k, 0.0) for r in runs) for k in runs[0]["cpu_ms"]}
    out["counts"] = {k: statistics.median(r.get("counts", {}).get(k, 0.0) for r in runs)
                     for k in runs[0].get("counts", {})}
    return out


def _scaling_run(args: argparse.Namespace, wasm: bytes, allowed: list[int], cpus: int, evaluators: int,
                 workers: int, lean: bool = True) -> dict:
    """The concurrent message->result phase on a fresh node with `cpus` CPUs, `evaluators` shards, `workers`
    (`lean` False: the workers' lean request path off)."""
    node_cpus = set(allowed[:cpus])
    rest = set(allowed) - node_cpus
    with tempfile.TemporaryDirectory(prefix="aocu-bench-", dir=args.data_root) as tmp:
        port = free_port()
        node = start_node(Path(tmp) / "data", port, workers, args.threads, evaluators, node_cpus,
                          None if lean else {"AOCU_LEAN_HTTP": "0"})
        try:
            pids = setup(port, wasm, args.clients)
            n_pre = int(args.seconds * 2500 / args.clients) + 100
            load0 = os.getloadavg()[0]
            m0 = node_counters(port)
            r = run_phase(port, list(pids), args.seconds, n_pre, node_pid=node.pid, client_cpus=rest or None)
            m1 = node_counters(port)
            r["load"] = (load0 + os.getloadavg()[0]) / 2
            commits = m1.get("aocu_store_commits_total", 0) - m0.get("aocu_store_commits_total", 0)
            r["commits"] = commits / r["n"]
            spent = m1.get("aocu_store_commit_seconds_total", 0) - m0.get("aocu_store_commit_seconds_total", 0)
            r["commit_ms"] = 1000 * spent / commits if commits else 0.0
            r["shards"] = sum(1 for role, _, _ in node_processes(node.pid) if role == "evaluator")
        finally:
            stop_node(node)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--data-root", help="directory for the node's data dir (e.g. /dev/shm to take the disk's "
                                        "fsync out of the measurement; default: the system temp dir)")
    ap.add_argument("--wasm", help="a prebuilt lua32 module (default: tests.modules.build)")
    ap.add_argument("--client", choices=("raw", "http.client"), default="raw",
                    help="load generator's HTTP client (default raw: a minimal keep-alive client)")
    ap.add_argument("--evaluators", type=int, default=None,
                    help="the node's evaluator shards (default: the node's own default, half the CPUs, at least 1)")
    ap.add_argument("--scaling", action="store_true",
                    help="only the concurrent phase, on a fresh node per --matrix configuration")
    ap.add_argument("--matrix", help="CPUS:EVALUATORS[:WORKERS],... for --scaling (default 1:1,1:N,N:1,N:N, N = CPUs "
                                     "allowed; WORKERS default --workers)")
    ap.add_argument("--profile-workers", metavar="DIR",
                    help="py-spy the gunicorn workers during the concurrent phase; raw stacks to DIR, top frames "
                         "printed")
    ap.add_argument("--lean-baseline", action="store_true",
                    help="--scaling: also run each configuration with the workers' lean request path off")
    ap.add_argument("--repeat", type=int, default=1,
                    help="--scaling: runs per configuration, taking turns; the table shows medians")
    args = ap.parse_args()
    global CLIENT_KIND
    CLIENT_KIND = args.client
    if args.wasm:
        wasm = Path(args.wasm).read_bytes()
    else:
        from tests.modules.build import build
        wasm = build("lua32").read_bytes()
    if args.scaling:
        return scaling(args, wasm)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="aocu-bench-", dir=args.data_root) as tmp:
        fsync_ms = fsync_baseline(Path(tmp))
        engine_ms = engine_baseline(wasm, Path(tmp) / "mc")
        node = start_node(Path(tmp) / "data", port, args.workers, args.threads, args.evaluators)
        try:
            pids = setup(port, wasm, args.clients)
            # ~2x the target rate per client is plenty of pre-signed messages
            n_pre = int(args.seconds * 2500 / args.clients) + 100
            base1 = run_phase(port, [None], args.seconds / 2, 0)
            pair = run_phase(port, [PAIR], args.seconds / 2, 0)
            one = run_phase(port, [pids[0]], args.seconds / 2, n_pre, node_pid=node.pid)
            shards = sum(1 for role, _, _ in node_processes(node.pid) if role == "evaluator")
            sock_sched, sock_result = evaluator_socket_round_trips(Path(tmp) / "data", pids[0], shards)
            base = run_phase(port, [None] * args.clients, args.seconds, 0)
            many = run_phase(port, list(pids), args.seconds, n_pre, node_pid=node.pid,
                             profile=Path(args.profile_workers) if args.profile_workers else None)
            fresh = run_phase(port, [pids[0]], args.seconds / 2, n_pre, "fresh")
            ans = run_phase(port, [pids[0]], args.seconds / 2, n_pre, "ans104")
            body = result_body(port, pids[0])
            costs = signing_costs(Path(tmp), body)
        finally:
            stop_node(node)
    print(f"aocu node bench: gunicorn workers={args.workers} threads={args.threads}, evaluators={shards}"
          f"{'' if args.evaluators else ' (the default: half the CPUs, at least 1)'}, loopback, "
          f"{os.cpu_count()} CPUs, {CLIENT_KIND} client, trivial handler (Lua Echo), data under {args.data_root or tempfile.gettempdir()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'phase':38} {'n':>7} {'err':>4} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}   p50 of its POST (ack) / GET")
    rows = [("baseline GET /health, 1 client", base1), ("message->result, 1 client", one),
            (f"baseline GET /health, {args.clients} clients", base),
            (f"message->result, {args.clients} clients", many)]
    for name, r in rows:
        split = f"   {r['ack_p50_ms']:.2f} / {r['get_p50_ms']:.2f} ms" if r["ack_p50_ms"] else ""
        print(f"{name:38} {r['n']:7d} {r['errors']:4d} {r['per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}{split}")
    print(f"floors (same run): fdatasync on the data dir p50 {fsync_ms:.2f} ms (every ack waits for one); "
          f"engine handle() of the Echo message in-process p50 {engine_ms:.2f} ms")
    print(f"where a 1-client round trip goes (same run, p50): the two requests through gunicorn + Flask answered "
          f"without the evaluator (POST / -> 400, GET /health) {pair['p50_ms']:.2f} ms; the evaluator's "
          f"operations on its socket without HTTP: schedule (durable ack) {sock_sched:.2f} ms + result "
          f"{sock_result:.2f} ms; sum {pair['p50_ms'] + sock_sched + sock_result:.2f} ms vs measured "
          f"{one['p50_ms']:.2f} ms")
    for name, r in (("1 client", one), (f"{args.clients} clients", many)):
        cpu = r["cpu_ms"]
        total = sum(cpu.values())
        print(f"CPU per result, {name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items())
              + f"; total {total:.2f} ms -> at most {1000 * (os.cpu_count() or 1) / total:.0f} results/s on "
              f"{os.cpu_count()} CPUs; the evaluator ({shards} shard process(es), one GIL each) alone caps at "
              f"{1000 * min(shards, os.cpu_count() or 1) / max(cpu.get('evaluator', 0.0), 1e-9):.0f}/s")
    print(f"ratios vs baseline (same run): 1 client p50 x{one['p50_ms'] / base1['p50_ms']:.1f}, "
          f"{args.clients} clients throughput {many['per_s'] / base['per_s']:.2f} of /health")
    print(f"attestation, 1 client round trips (same run): fresh-nonce evidence p50 {fresh['p50_ms']:.2f} ms "
          f"(x{fresh['p50_ms'] / one['p50_ms']:.2f} of key binding), accept-codec ans104 p50 {ans['p50_ms']:.2f} ms "
          f"(x{ans['p50_ms'] / one['p50_ms']:.2f})")
    key_us = costs["ed25519, key binding (default)"]
    unsigned_ms = one["p50_ms"] - key_us / 1000
    print(f"per-result signing cost in-process ({len(body)}-byte result body), p50; share of the unsigned round trip "
          f"(1-client p50 {one['p50_ms']:.2f} ms minus the key-binding signing cost = {unsigned_ms:.2f} ms):")
    for name, us in costs.items():
        print(f"  {name:42} {us:9.1f} us  {100 * us / 1000 / unsigned_ms:7.1f} %")
    share = 100 * key_us / 1000 / unsigned_ms
    print(f"attestation target (key binding adds <= 5% to a result's latency): {share:.1f}% -> "
          f"{'MET' if share <= 5 else 'NOT MET'}")
    ok = one["p50_ms"] < 3.0 and many["per_s"] >= 1000
    print(f"targets (p50 < 3 ms single client, >= 1000 results/s concurrent): {'MET' if ok else 'NOT MET'}")
    return 0 if many["errors"] == 0 and one["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
