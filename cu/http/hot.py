"""The two requests of every message round trip (aoconnect's legacy flow), answered without Flask's generic
request machinery: `POST /` with a data item and `GET /result/<id>?process-id=P`.

A WSGI layer just inside the Flask app (wrapped by CORS and cluster forwarding like the app itself). It takes a
request only when Flask would route it to the same view with nothing unusual about it (ASCII path, a
Content-Length body within the limit, only `process-id` in the query, no `accept-codec`), and only while the app
has exactly the hooks `create_app` installed; everything else goes to Flask unchanged. A request it takes gets
what the Flask path gives it: the view's logic (`routes_mu.accept_item`, `routes_cu.result_reply`), the
`X-Aocu-Tee` header, result signing (`signing.sign_reply`), the request log line and the HTTP metrics. A request
whose handling raises is finished by Flask itself (a request context, its error handlers and after-request
hooks), so errors are mapped, signed, logged and counted exactly as on the Flask path.

Why: Flask's request context, URL matching, hooks and response object cost about as much CPU per request as
the rest of a worker's share of a result (bench/node.py)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, g
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_input_stream

from cu.codec.hashes import B64URL_CHARS
from cu.http import metrics as m
from cu.http.routes_cu import result_reply
from cu.http.routes_mu import accept_item
from cu.http.signing import sign_reply
from cu.http.state import NodeApp
from cu.node.signer import ResultId, ResultSigner

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict, StartResponse], Iterable[bytes]]

RESULT_PREFIX = "/result/"
PID_ARG = "process-id="
# characters of an id the hot path takes as they are (no percent-decoding, no '&', '+' or '/'); with at most 256
# of them, an id is a valid Ao-Process / Ao-Message value (cu.wire.response.check_identity_value)
JSON = "application/json"


def _hook_dicts(app: Flask) -> tuple[dict, ...]:
    """The app's request hooks: a hook added after create_app sends every request to Flask."""
    return (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs,
            app.url_value_preprocessors, app.url_default_functions)


def _count(dicts: tuple[dict, ...]) -> tuple[int, ...]:
    return tuple(sum(len(v) for v in d.values()) for d in dicts)


class HotRoutes:
    def __init__(self, app: Flask, flask_wsgi: WSGIApp, state: NodeApp, signer: ResultSigner,
                 signing_hook: Any, metrics: m.HttpMetrics) -> None:
        self.app, self.flask_wsgi, self.state, self.signer = app, flask_wsgi, state, signer
        self.signing_hook = signing_hook
        self.metrics = metrics
        self._dicts = _hook_dicts(app)
        self.hooks = _count(self._dicts)
        self._watch()
        adapter = app.url_map.bind("localhost")
        post_rule = adapter.match("/", "POST", return_rule=True)[0]
        result_rule = adapter.match(RESULT_PREFIX + "x", "GET", return_rule=True)[0]
        if (post_rule.endpoint, result_rule.endpoint) != ("mu.post_item", "cu.result"):
            raise RuntimeError(f"hot routes: / and /result/<id> route to {post_rule.endpoint} and "
                               f"{result_rule.endpoint}, not the views this layer stands in for")
        self.post_route, self.result_route = post_rule.rule, result_rule.rule
        self._status: dict[int, str] = {}

    def _watch(self) -> None:
        # checked per request without walking the dicts: their sizes and their hook lists' total length (a hook
        # added under a new key grows a dict, one added under a known key grows its list)
        self._lists = [v for d in self._dicts for v in d.values()]
        self._sizes = (tuple(map(len, self._dicts)), sum(map(len, self._lists)))

    def _usable(self) -> bool:
        st = self.state
        if not (len(st.post_processors) == 1 and st.post_processors[0] is self.signing_hook):
            return False
        if (tuple(map(len, self._dicts)), sum(map(len, self._lists))) == self._sizes:
            return True
        if _count(self._dicts) != self.hooks:       # a hook was added
            return False
        self._watch()           # only new keys without hooks (a defaultdict read): the same hooks
        return True

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO") or ""
        if method == "POST" and path == "/":
            length = environ.get("CONTENT_LENGTH") or ""
            if (not environ.get("QUERY_STRING") and length.isdigit() and length.isascii()
                    and int(length) <= self.state.config.max_body and "HTTP_TRANSFER_ENCODING" not in environ
                    and self._usable()):
                return self._serve(environ, start_response, self.post_route, self._post, None)
        elif method == "GET" and path.startswith(RESULT_PREFIX):
            mid = path[len(RESULT_PREFIX):]
            query = environ.get("QUERY_STRING") or ""
            pid = query[len(PID_ARG):] if query.startswith(PID_ARG) else ""
            if (0 < len(mid) <= 256 and 0 < len(pid) <= 256 and B64URL_CHARS.issuperset(mid)
                    and B64URL_CHARS.issuperset(pid)
                    and "HTTP_ACCEPT_CODEC" not in environ and self._usable()):
                return self._serve(environ, start_response, self.result_route, self._result, (pid, mid))
        return self.flask_wsgi(environ, start_response)

    # -- the two views, each (status, body, headers) as the Flask view + X-Aocu-Tee give it -----------------
    def _post(self, environ: dict, _arg: None) -> tuple[int, bytes, list[list[str]]]:
        # read as the Flask view reads it (request.get_data): werkzeug's stream under the app's limit; a body the
        # worker already holds whole (cu/serve/lean.py), within that limit, is those bytes as they are
        stream, limit = environ["wsgi.input"], self.app.config["MAX_CONTENT_LENGTH"]
        if type(stream) is io.BytesIO and (limit is None or int(environ["CONTENT_LENGTH"]) <= limit):
            raw = stream.read()
        else:
            raw = get_input_stream(environ, max_content_length=limit).read()
        body = accept_item(self.state, raw)
        return 202, body, [["Content-Type", JSON], ["Content-Length", str(len(body))],
                           ["X-Aocu-Tee", self.state.tee_notice]]

    def _result(self, _environ: dict, arg: tuple[str, str]) -> tuple[int, bytes, list[list[str]]]:
        status, body = result_reply(self.state, arg[0], arg[1], False)
        return status, body, [["Content-Type", JSON], ["Content-Length", str(len(body))],
                              ["X-Aocu-Tee", self.state.tee_notice]]

    def _sign(self, pid: str, mid: str, status: int, body: bytes,
              headers: list[list[str]]) -> tuple[int, bytes, list[list[str]]]:
        """The signing post-processor's work on a /result reply (its identity as routes_attestation.identify
        names it: both ids were checked to be valid Ao-Process / Ao-Message values)."""
        ctype = _get(headers, "Content-Type") or JSON
        status, body, new_type, signed = sign_reply(self.signer, ResultId(process=pid, message=mid), status, body,
                                                    ctype, attest_nonce=None, accept_codec=None)
        _set(headers, "Content-Length", str(len(body)))
        if new_type is not None:
            _set(headers, "Content-Type", new_type)
        for k, v in signed:
            _set(headers, k, v)
        return status, body, headers

    # -- what Flask's hooks do around a view ----------------------------------------------------------------
    def _serve(self, environ: dict, start_response: StartResponse, route: str,
               view: Callable[[dict, Any], tuple[int, bytes, list[list[str]]]], arg: Any) -> Iterable[bytes]:
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            status, body, headers = view(environ, arg)
        except Exception as exc:  # noqa: BLE001 - every error is Flask's to answer, as on the Flask path
            return self._flask_finish(environ, start_response, exc, t0, in_view=True)
        try:
            if arg is not None:
                status, body, headers = self._sign(arg[0], arg[1], status, body, headers)
        except Exception as exc:  # noqa: BLE001 - an after-request hook that raised, as Flask handles it
            return self._flask_finish(environ, start_response, exc, t0, in_view=False)
        try:
            seconds = time.perf_counter() - t0
            method = environ["REQUEST_METHOD"]
            m.log_request(method, environ.get("PATH_INFO") or "", route, status, seconds, len(body),
                          environ.get("REMOTE_ADDR"))
            self.metrics.observe(route, method, status, seconds)
        finally:
            self.metrics.in_flight.dec()
        start_response(self._status_line(status), [(k, v) for k, v in headers])
        return [body]

    def _status_line(self, status: int) -> str:
        line = self._status.get(status)
        if line is None:   # as werkzeug writes it
            line = self._status[status] = f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"
        return line

    def _flask_finish(self, environ: dict, start_response: StartResponse, exc: Exception, t0: float, *,
                      in_view: bool) -> Iterable[bytes]:
        """The rest of Flask.wsgi_app/full_dispatch_request for a request whose view (`in_view`) or
        after-request work raised `exc`: the app's error handlers, then its after-request hooks (X-Aocu-Tee,
        signing, log line, metrics), then its teardown."""
        app = self.app
        ctx = app.request_context(environ)
        error: BaseException | None = None
        try:
            try:
                ctx.push()
                g.t0, g.aocu_in_flight = t0, True     # what the before-request hooks set (in_flight is counted)
                try:
                    if not in_view:
                        raise exc
                    response = app.finalize_request(app.handle_user_exception(exc))
                except Exception as e:  # noqa: BLE001
                    error = e
                    response = app.handle_exception(e)
            except BaseException as e:
                error = e
                raise
            return response(environ, start_response)
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)


def _get(headers: list[list[str]], name: str) -> str | None:
    low = name.lower()
    return next((v for k, v in headers if k.lower() == low), None)


def _set(headers: list[list[str]], name: str, value: str) -> None:
    """werkzeug's Headers.__setitem__: replaces the first header of that name (case-insensitive) in place and
    drops the others, or appends."""
    low = name.lower()
    found = False
    for h in list(headers):
        if h[0].lower() == low:
            if found:
                headers.remove(h)
            else:
                h[0], h[1] = name, value
                found = True
    if not found:
        headers.append([name, value])


def install(app: Flask, state: NodeApp, signer: ResultSigner, signing_hook: Any, metrics: m.HttpMetrics) -> None:
    """Wraps the Flask app's WSGI callable (create_app calls this once, before CORS and forwarding)."""
    app.wsgi_app = HotRoutes(app, app.wsgi_app, state, signer, signing_hook, metrics)  # type: ignore[method-assign]
