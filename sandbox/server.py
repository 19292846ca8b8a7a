"""What every sandbox shape shares: a threaded HTTP server on 127.0.0.1, a per-token rate
limit (sliding window), fault switches and a stats endpoint.

Control endpoints, on every shape:

- ``GET /_sandbox/stats``: requests, refusals, 429s, the busiest 60-second window, and what
  the shape counts itself (e.g. pages skipped after a 429);
- ``POST /_sandbox/faults`` with a JSON object: ``fail_rate`` (share of 5xx answers, 0..1,
  drawn at random), ``fail_every`` (every N-th request answered 503: the same share, evenly
  spread, for a figure that must hold from the first requests on), ``delay`` (seconds before
  answering), ``burst_429`` (the next N requests get 429), ``fail_paths`` (path prefixes
  the faults apply to; empty: every path), ``malformed`` (one of ``MALFORMED_KINDS``) with
  ``malformed_pages`` (default 1): the next N pages (200 answers holding a list of records)
  are answered 200 but malformed that way;
- ``GET /health``: ``200 {"status": "ok"}``, a status endpoint for health probes (none of the
  partners' documents gives one), subject to the faults like any other path.

Each shape's command line takes ``--fail-rate``, ``--fail-every`` and ``--fail-path``
(repeatable) to start with faults switched on.
"""

import json
import random
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Reply:
    """An answer: status, JSON body (or None), headers; ``raw`` bytes sent instead of the
    JSON, as ``content_type``."""

    def __init__(self, status=200, body=None, headers=None, raw=None, content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.raw = raw
        self.content_type = content_type


def _malformed_records(rows, kind):
    if kind == "missing_keys":
        return [{key: value for key, value in row.items() if key not in ("pedidoId", "codigo", "id")} for row in rows]
    # wrong_types: every value of the wrong JSON type (an id that is an object, text for numbers).
    return [
        {key: {"value": value} if key in ("pedidoId", "id") else [value] for key, value in row.items()} for row in rows
    ]


# What a partner's broken page can look like, each answered 200 (see ``malformed_reply``).
MALFORMED_KINDS = {
    "not_json": "plain text instead of JSON",
    "object": "a JSON object wrapping the records instead of their list",
    "missing_keys": "records without their id and code",
    "wrong_types": "records whose values are of the wrong JSON types",
    "truncated": "the JSON cut in the middle (Content-Length of what is sent)",
    "html": "an HTML error page from a proxy",
    "invalid_utf8": "the JSON with Latin-1 bytes in its text (not UTF-8)",
}


def malformed_reply(reply, kind):
    """The page of ``reply`` (a list of records) broken as ``kind`` says, still a 200."""
    rows = reply.body
    headers = dict(reply.headers)
    if kind == "not_json":
        return Reply(200, headers=headers, raw=b"this is not JSON: records follow", content_type="text/plain")
    if kind == "object":
        return Reply(200, {"pedidos": rows}, headers)
    if kind in ("missing_keys", "wrong_types"):
        return Reply(200, _malformed_records(rows, kind), headers)
    if kind == "truncated":
        text = json.dumps(rows).encode()
        return Reply(200, headers=headers, raw=text[: max(1, len(text) // 2)])
    if kind == "html":
        page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
        return Reply(200, headers=headers, raw=page, content_type="text/html")
    if kind == "invalid_utf8":
        text = json.dumps(rows, ensure_ascii=False).replace("Cliente", "Cliente S\u00e3o")
        return Reply(200, headers=headers, raw=text.encode("latin-1"))
    raise ValueError(f"unknown malformed kind {kind!r} (one of {', '.join(MALFORMED_KINDS)})")


class RateLimit:
    """At most ``limit`` requests per ``period`` seconds per key, as a sliding window.

    ``hit`` answers None when the request may go, else the seconds until it may (what a
    ``Retry-After`` says)."""

    def __init__(self, limit, period=60.0):
        self.limit = limit
        self.period = period
        self._hits = {}
        self._lock = threading.Lock()

    def hit(self, key, now=None):
        if not self.limit:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.period:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(1, int(hits[0] + self.period - now) + 1)
            hits.append(now)
            return None


class SandboxServer:
    """Base of a shape: subclasses implement ``route(method, path, query, headers, body)``."""

    name = "sandbox"

    def __init__(self, port=0, seed=7):
        self.random = random.Random(seed)
        self.faults = {"fail_rate": 0.0, "fail_every": 0, "delay": 0.0, "burst_429": 0, "fail_paths": []}
        self._faulty_requests = 0
        self.stats = {"requests": 0, "answered_429": 0, "answered_5xx": 0, "statuses": {}}
        self._arrivals = deque()  # monotonic times, for the busiest 60-second window
        self._busiest = 0
        self._lock = threading.Lock()
        sandbox = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm and
            # the client's delayed ACK hold every answer about 40 ms (no partner does that).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                return

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = sandbox._dispatch(self.command, self.path, self.headers, body)
                if reply.raw is not None:
                    payload = reply.raw
                else:
                    payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, str(value))
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=f"sandbox-{self.name}", daemon=True)

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self.thread.start()
        return self

    def serve(self):
        """A shape's command line: start, say where, serve until the process is stopped."""
        self.start()
        sys.stdout.write(f"{self.name} sandbox on {self.url}\n")
        sys.stdout.flush()
        self.thread.join()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, key, amount=1):
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + amount

    def _dispatch(self, method, raw_path, headers, body):
        parts = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if parts.path.startswith("/_sandbox/"):
            return self._control(method, parts.path, body)
        faulty = _under(parts.path, self.faults.get("fail_paths"))
        now = time.monotonic()
        with self._lock:
            self.stats["requests"] += 1
            self._arrivals.append(now)
            while self._arrivals and self._arrivals[0] <= now - 60:
                self._arrivals.popleft()
            self._busiest = max(self._busiest, len(self._arrivals))
            burst = faulty and self.faults.get("burst_429", 0) > 0
            if burst:
                self.faults["burst_429"] -= 1
            every = int(self.faults.get("fail_every") or 0)
            if faulty:
                self._faulty_requests += 1
            nth = faulty and every > 0 and self._faulty_requests % every == 0
        if faulty and self.faults.get("delay"):
            time.sleep(float(self.faults["delay"]))
        if burst:
            reply = Reply(429, {"error": "too_many_requests"}, {"Retry-After": 1})
        elif nth:
            reply = Reply(503, {"error": "unavailable", "message": "injected failure"})
        elif faulty and self.faults.get("fail_rate") and self.random.random() < float(self.faults["fail_rate"]):
            reply = Reply(503, {"error": "unavailable", "message": "injected failure"})
        elif parts.path == "/health" and method == "GET":
            reply = Reply(200, {"status": "ok", "sandbox": self.name})
        else:
            reply = self.route(method, parts.path, query, headers, body)
        if reply.status == 200 and isinstance(reply.body, list) and self.faults.get("malformed"):
            reply = self._malformed(reply)
        with self._lock:
            statuses = self.stats["statuses"]
            statuses[str(reply.status)] = statuses.get(str(reply.status), 0) + 1
            if reply.status == 429:
                self.stats["answered_429"] += 1
            elif reply.status >= 500:
                self.stats["answered_5xx"] += 1
        return reply

    def _control(self, method, path, body):
        """The control endpoints: stats, and the fault switches."""
        if path == "/_sandbox/stats":
            with self._lock:
                return Reply(200, dict(self.stats, busiest_60s=self._busiest))
        if path == "/_sandbox/faults" and method == "POST":
            changes = json.loads(body or b"{}")
            if changes.get("malformed") and changes["malformed"] not in MALFORMED_KINDS:
                return Reply(
                    400, {"error": "bad_request", "message": f"malformed: one of {', '.join(MALFORMED_KINDS)}"}
                )
            if changes.get("malformed"):
                changes.setdefault("malformed_pages", 1)
            self.faults.update(changes)
            return Reply(200, self.faults)
        return Reply(404, {"error": "not_found"})

    def _malformed(self, reply):
        """A page answered malformed while the switch has pages left, else as it was."""
        with self._lock:
            kind = self.faults["malformed"] if self.faults.get("malformed_pages", 0) > 0 else None
            if kind:
                self.faults["malformed_pages"] -= 1
        if not kind:
            return reply
        self.count("pages_malformed")
        return malformed_reply(reply, kind)

    def route(self, method, path, query, headers, body):
        raise NotImplementedError


def _under(path, prefixes):
    """Whether ``path`` is one of ``prefixes`` or under one (no prefixes: every path is)."""
    if not prefixes:
        return True
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes)


def add_fault_arguments(parser):
    """``--fail-rate`` and ``--fail-path``: a shape's command line starting with faults on."""
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 503 (0..1), at random")
    parser.add_argument("--fail-every", type=int, default=0, help="answer every N-th request 503 (0: never)")
    parser.add_argument(
        "--fail-path",
        action="append",
        default=[],
        help="path prefix the faults apply to (repeatable; default: every path)",
    )


def apply_fault_arguments(sandbox, args):
    sandbox.faults.update(fail_rate=args.fail_rate, fail_every=args.fail_every, fail_paths=list(args.fail_path))
    return sandbox
