"""The status page (`GET /` for browsers): what it shows is gathered here (`gather`) and rendered by one
Jinja template with autoescaping (process ids, tags and the Host header are client data). Server-rendered,
no external assets, no script; a refresh meta tag reloads it.

The attestation verdict is the node checking its own key-binding evidence with the verifier of `aocu evidence
verify` (strict policy; a simulated TEE's own root trusted, and labelled SIMULATED), plus the key binding
(REPORT_DATA = the binding of this node's keys); it is cached per evidence and re-checked after VERDICT_TTL_S."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from cu import __version__
from cu.http.processes import ProcessPage
from cu.http.state import NodeApp

VERDICT_TTL_S = 600.0
RECENT_WINDOW_S = 300.0       # throughput "recently": over the page loads of the last 5 minutes
REFRESH_S = 10


@dataclass
class Verdict:
    ok: bool
    simulated: bool
    tee: str
    summary: str
    failed: list[str]
    checks: int
    binding: str              # "matches" | "does not match ..." | "not checked ..."
    checked_at: float


@dataclass
class StatusCache:
    """Per app: the cached verdict and throughput samples of this worker."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    verdict: tuple[object, Verdict] | None = None                  # (evidence it is for, verdict)
    samples: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=256))


def _verify_own(signer: Any, data_dir: Path) -> Verdict:
    from attestation.evidence import verify_evidence
    from attestation.policy import Policy
    from attestation.trust import TrustStore

    service = signer.evidence
    ev = service.key_evidence()
    now = time.time()
    if ev is None:
        reason = service.no_evidence_reason or "no TEE: no evidence"
        return Verdict(False, False, "none", f"NOT ATTESTED: {reason}", [], 0, "not checked (no evidence)", now)
    policy = Policy.strict()
    trust = TrustStore.default()
    if ev.simulated:
        roots = Path(getattr(service.provider, "roots_path", "") or data_dir / "sim-tee" / "roots.pem")
        try:
            trust = trust.with_simulated(roots.read_bytes())
            policy.allow_simulated = True
        except OSError as exc:
            return Verdict(False, True, ev.tee, f"NOT VERIFIED: simulated root unreadable ({exc.strerror})", [],
                           0, "not checked", now)
    rep = verify_evidence(ev, policy=policy, trust=trust)
    rd = str(rep.fields.get("report_data") or "").lower()
    want = service.key_report_data().hex()
    binding = ("matches this node's keys and epoch" if rd == want else
               "not checked (REPORT_DATA not decoded)" if not rd else
               "DOES NOT MATCH this node's keys and epoch")
    ok = rep.ok and rd == want
    word = "VERIFIED" if ok else "NOT VERIFIED"
    failed = [c.name for c in rep.failed()]
    summary = f"{word}: {rep.kind} evidence, {len(failed)} of {len(rep.checks)} checks failed"
    return Verdict(ok, rep.simulated, ev.tee, summary, failed, len(rep.checks), binding, now)


def verdict(cache: StatusCache, signer: Any, data_dir: Path) -> Verdict:
    ev = signer.evidence.key_evidence()
    with cache.lock:
        got = cache.verdict
        if got is not None and got[0] is ev and time.time() - got[1].checked_at < VERDICT_TTL_S:
            return got[1]
    v = _verify_own(signer, data_dir)
    with cache.lock:
        cache.verdict = (ev, v)
    return v


def throughput(cache: StatusCache, metrics: dict[str, float], uptime_s: float) -> list[tuple[str, str]]:
    """(what, value) rows from the evaluator's counters: totals and means since it started, and the rate over
    this worker's page loads of the last RECENT_WINDOW_S."""
    n = metrics.get("evaluations", 0.0)
    secs = metrics.get("eval_seconds", 0.0)
    commits = metrics.get("commits", 0.0)
    mono = time.monotonic()
    with cache.lock:
        cache.samples.append((mono, n, secs))
        while cache.samples and mono - cache.samples[0][0] > RECENT_WINDOW_S:
            cache.samples.popleft()
        first = cache.samples[0]
    rows = [("evaluator up", _duration(uptime_s)),
            ("evaluations", f"{int(n)}"),
            ("evaluations per second (since start)", f"{n / uptime_s:.2f}" if uptime_s > 0 else "-"),
            ("mean evaluation latency", _ms(secs / n) if n else "-"),
            ("dry-runs", f"{int(metrics.get('dry_runs', 0))}"),
            ("store commits", f"{int(commits)}"),
            ("mean commit latency (fsync)", _ms(metrics.get("commit_seconds", 0.0) / commits) if commits else "-")]
    if "warm_bytes" in metrics:
        rows.append(("warm instances' memory", f"{metrics['warm_bytes'] / (1 << 20):.1f} MiB"))
    span = mono - first[0]
    if span >= 1.0:
        dn = n - first[1]
        rows.append((f"evaluations per second (last {_duration(span)})", f"{dn / span:.2f}"))
        rows.append((f"mean evaluation latency (last {_duration(span)})", _ms((secs - first[2]) / dn) if dn else "-"))
    return rows


def _ms(s: float) -> str:
    return f"{s * 1000:.2f} ms"


def _duration(s: float) -> str:
    s = int(s)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def gather(st: NodeApp, signer: Any, cache: StatusCache, page: ProcessPage, base_url: str) -> dict[str, Any]:
    """Everything the template shows."""
    ident = signer.identity.public_info() if signer is not None else {"address": st.identity.address}
    v = verdict(cache, signer, st.config.data_dir) if signer is not None else None
    facts = page.facts
    counts = st.store.outbox_counts()
    oldest = st.store.outbox_oldest_pending()
    first = next((p for p in page.processes if p.get("latest_result")), None)
    simulated = st.config.tee == "sim" or bool(v and v.simulated)
    verify_flags = " --allow-simulated" if simulated else " --policy rv.json" if st.config.tee != "none" else ""
    return {
        "version": __version__, "base": base_url.rstrip("/"), "refresh": REFRESH_S,
        "now": _when(int(time.time() * 1000)),
        "tee": st.config.tee, "tee_notice": st.tee_notice, "simulated": simulated,
        "evidence_tee": v.tee if v else st.config.tee, "verdict": v, "identity": ident,
        "processes": [dict(p, last=_when(p["last_activity"]), short_module=_short(p["module"]),
                           evaluating=p.get("evaluating", False))
                      for p in page.processes],
        "more": page.next, "evaluator_error": page.evaluator,
        "throughput": throughput(cache, facts.metrics, facts.uptime_s) if facts else [],
        "warm_count": facts.warm_count if facts else None, "queued": facts.queued if facts else None,
        "outbox": [(s, counts.get(s, 0)) for s in ("local", "pending", "delivered", "failed")],
        "outbox_oldest": _duration(max(0.0, time.time() - oldest / 1000)) if oldest else None,
        "bridge": facts.bridge if facts else None,
        "verify_example": first["latest_result"] if first else None, "verify_flags": verify_flags,
    }


def _short(module: str) -> str:
    return module if len(module) <= 16 else module[:8] + "…" + module[-6:]


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(ctx: dict[str, Any]) -> str:
    return TEMPLATE.render(**ctx)


TEMPLATE = _ENV.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{ refresh }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>aocu node{% if simulated %} (SIMULATED TEE){% endif %}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:16px;margin:22px 0 8px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
.banner{padding:12px 16px;font-weight:700;font-size:18px;border-radius:6px;margin:10px 0}
.sim{background:#fff1cc;border:3px solid #e0a100;color:#7a4b00}
.none{background:#ffe0e0;border:3px solid #c62828;color:#8b0000}
.ok{color:#1b6e2e;font-weight:700}.bad{color:#b3261e;font-weight:700}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{background:#eef1f5;font-weight:600}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
pre{background:#1d2330;color:#e8ebf0;padding:10px 12px;border-radius:6px;overflow-x:auto;font-size:12px}
.kv th{width:230px;background:#fff}.muted{color:#5f6b7a}.grid{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}
</style></head>
<body><main>
<h1>aocu node <span class="muted">{{ version }}</span></h1>
<div class="muted">{{ base }} &middot; {{ now }} &middot; refreshes every {{ refresh }} s</div>
{% if simulated %}
<div class="banner sim" id="tee-banner">SIMULATED TEE: this node's attestation evidence is simulated, not produced
by TEE hardware. Its results prove nothing about confidential execution.</div>
{% elif tee == "none" %}
<div class="banner none" id="tee-banner">NO TEE: results are signed by the node key but not attested.</div>
{% endif %}

<h2>Node identity and keys</h2>
<table class="kv">
<tr><th>address (Arweave wallet)</th><td class="mono" id="address">{{ identity.address }}</td></tr>
{% if identity.ed25519 is defined %}
<tr><th>ed25519 public key</th><td class="mono">{{ identity.ed25519 }}</td></tr>
<tr><th>key ids</th><td class="mono">{% for alg, kid in identity.keyids.items() %}{{ alg }}: {{ kid }}<br>{% endfor %}</td></tr>
<tr><th>key epoch</th><td>{{ identity.epoch }}</td></tr>
{% endif %}
<tr><th>TEE kind</th><td id="tee-kind"><b>{{ tee }}</b> <span class="muted">({{ tee_notice }}; evidence: {{ evidence_tee }})</span></td></tr>
</table>

<h2>Attestation verdict of this node's own evidence</h2>
<table class="kv">
{% if verdict %}
<tr><th>verdict</th><td id="verdict"><span class="{{ 'ok' if verdict.ok else 'bad' }}">{{ verdict.summary }}</span>
{% if verdict.simulated %} <b class="bad">(SIMULATED, not hardware evidence)</b>{% endif %}</td></tr>
<tr><th>key binding (REPORT_DATA)</th><td>{{ verdict.binding }}</td></tr>
{% if verdict.failed %}<tr><th>failed checks</th><td class="mono">{{ verdict.failed | join(", ") }}</td></tr>{% endif %}
<tr><th>checked</th><td>{{ verdict.checks }} checks with the verifier of <code>aocu evidence verify</code> (strict policy{% if verdict.simulated %}, simulated root trusted{% endif %})</td></tr>
{% else %}
<tr><th>verdict</th><td id="verdict" class="bad">no signer in this worker</td></tr>
{% endif %}
<tr><th>evidence and endorsements</th><td><a href="/~attestation@1.0/evidence">/~attestation@1.0/evidence</a></td></tr>
</table>

<div class="grid"><div>
<h2>Throughput and latency</h2>
{% if evaluator_error %}<p class="bad" id="evaluator-error">evaluator facts unavailable: {{ evaluator_error }}</p>{% endif %}
<table class="kv" id="throughput">
{% for what, value in throughput %}<tr><th>{{ what }}</th><td>{{ value }}</td></tr>{% endfor %}
{% if warm_count is not none %}<tr><th>warm processes</th><td>{{ warm_count }}</td></tr>
<tr><th>crank queue</th><td>{{ queued }}</td></tr>{% endif %}
</table>
</div><div>
<h2>Outbox</h2>
<table class="kv" id="outbox">
{% for state, n in outbox %}<tr><th>{{ state }}</th><td>{{ n }}</td></tr>{% endfor %}
<tr><th>oldest pending</th><td>{{ outbox_oldest or "-" }}</td></tr>
</table>
<h2>Legacynet bridge</h2>
<table class="kv" id="bridge">
{% if bridge %}
<tr><th>gateway</th><td class="mono">{{ bridge.gateway }}</td></tr>
{% if bridge.su_url %}<tr><th>scheduler (every process)</th><td class="mono">{{ bridge.su_url }}</td></tr>{% endif %}
<tr><th>bridged processes</th><td>{{ bridge.processes }} ({{ bridge.warm }} warm)</td></tr>
{% for r in bridge.evaluating %}
<tr><th>replay in progress</th><td><span class="mono">{{ r.pid }}</span>: slot {{ r.slot }} reached, {{ r.evaluated }} evaluated ({{ r.committed_slot }} committed)</td></tr>
{% else %}<tr><th>replay in progress</th><td>none</td></tr>{% endfor %}
{% elif bridge is none %}<tr><td class="muted">unknown: the evaluator did not answer</td></tr>
{% else %}<tr><td class="muted">not configured (<code>aocu serve --gateway URL</code> enables it)</td></tr>{% endif %}
</table>
</div></div>

<h2>Processes <span class="muted">(the {{ processes | length }} most recently active; full list: <a href="/processes">/processes</a>{% if more %}, <a href="/processes?cursor={{ more | urlencode }}">next page</a>{% endif %})</span></h2>
<table id="processes">
<tr><th>process</th><th>origin</th><th>module</th><th>slot</th><th>slots</th><th>evaluated to</th><th>last activity</th><th>warm</th><th>latest result</th></tr>
{% for p in processes %}
<tr class="process"><td class="mono">{{ p.id }}</td><td>{{ p.origin }}{% if p.evaluating %} (evaluating){% endif %}</td>
<td class="mono" title="{{ p.module }}">{{ p.short_module }}</td><td class="slot">{{ p.slot }}</td><td class="slots">{{ p.slots }}</td>
<td>{{ "-" if p.evaluated_slot is none else p.evaluated_slot }}</td><td>{{ p.last }}</td>
<td>{{ "?" if p.warm is none else ("yes" if p.warm else "no") }}</td>
<td>{% if p.latest_result %}<a href="{{ p.latest_result }}">result</a>{% else %}-{% endif %}</td></tr>
{% else %}<tr><td colspan="9" class="muted">no processes yet</td></tr>{% endfor %}
</table>

<h2>Verify a result yourself</h2>
<p>Every result this node serves is signed by its key and carries its attestation evidence. Check one offline
with the verifier (<code>aocu verify</code> is pure Python: it runs without the node's native build):</p>
<pre id="verify">{% if verify_example %}aocu verify "{{ base }}{{ verify_example }}"{{ verify_flags }}
{% endif %}aocu verify "{{ base }}/result/MESSAGE-ID?process-id=PROCESS-ID"{{ verify_flags }}
aocu verify "{{ base }}/PROCESS-ID~process@1.0/compute?slot=N"{{ verify_flags }}</pre>
{% if simulated %}<p class="muted"><code>--allow-simulated</code> trusts the simulated root in <code>./data/sim-tee/roots.pem</code> (the node's data dir): for testing only.</p>
{% elif tee != "none" %}<p class="muted"><code>rv.json</code>: the reference values the operator publishes (<code>aocu measure</code>).</p>{% endif %}
<p class="muted">JSON for clients: <code>GET /</code> with <code>Accept: application/json</code>, <a href="/~meta@1.0/info">/~meta@1.0/info</a>, <a href="/processes">/processes</a>, <a href="/metrics">/metrics</a>.</p>
</main></body></html>
""")
