"""Proof under faults: bad input at scale (issue 13). Run by ``scripts/proofs fuzz``:

    python3 scripts/lib/proof_fuzz.py <odoo.conf> <database> <odoo-bin>

1. Webhooks: Odoo with 2 HTTP workers; a corpus of hostile deliveries sent raw (sockets,
   so that headers, lengths and bytes are exactly as written) from THREADS threads, each
   case many times, to connectors of three signature profiles. Every request must get the
   status its case expects (never a 5xx, never a dropped connection), the server must log
   no ERROR, and nothing may be stored but the validly signed unusable bodies, once each
   (the README's decision: a verified body is kept, and fails its processing readably).
   Then slowloris senders, one at a time and then two (as many as workers), trickle a body
   a byte a second, and go on after they are answered, while a valid delivery is sent
   every POLL seconds: each trickle must be answered 408 within CUT_BOUND seconds, every
   valid delivery 202 and stored; their latency is measured.
2. Flows: the order sandbox (started here on a free port) answers one page malformed in
   each way it knows (``sandbox.server.MALFORMED_KINDS``); each such window must end
   failed (or partial, when every record of the page is refused one by one) with a
   readable error, move no cursor and create nothing; the same window read again with
   the fault off must succeed and move the cursor.

Prints its figure lines, then ``proof fuzz: ok`` or ``proof fuzz: FAILED: <reason>``.
"""

import base64
import json
import os
import queue
import random
import re
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import datetime, timedelta

from bench_sync import order_flow, start_sandbox
from bench_webhook import OdooServer, contact_rule, env_for
from fault_tools import REPO

sys.path.insert(0, REPO)  # the sandbox package, beside the addon's code
import odoo
from odoo.modules.registry import Registry

from sandbox import webhook_senders as signing  # noqa: E402

THREADS = int(os.environ.get("PROOF_FUZZ_THREADS", "8"))
REPEAT = int(os.environ.get("PROOF_FUZZ_REPEAT", "200"))  # sends of each cheap case
STALL_REPEAT = 6  # each of these holds a worker for the socket timeout (2 s)
SLOW_SECONDS = float(os.environ.get("PROOF_FUZZ_SLOW_SECONDS", "15"))
POLL = 0.2
CUT_BOUND = 6.0  # seconds within which a trickled body must be answered or cut
STANDARD_SECRET = "whsec_" + base64.b64encode(b"proof-fuzz-standard-webhooks-32b").decode()
PLAIN_SECRET = "proof-fuzz-plain-secret"
CODES = {"standard_webhooks": "fuzz-std", "github": "fuzz-gh", "hmac_sha256": "fuzz-hmac"}
DAY = datetime(2026, 1, 1)


# --- Signing: sandbox/webhook_senders.py, as headers in the order they are sent ---------------


def sign_standard(body, msg_id, timestamp=None):
    return list(signing.standard_webhooks_headers(STANDARD_SECRET, body, msg_id, timestamp).items())


def sign_github(body, delivery):
    return list(signing.github_headers(PLAIN_SECRET, body, delivery, "fuzz").items())


def sign_hmac(body):
    return list(signing.generic_hmac_headers(PLAIN_SECRET, body, prefix="sha256=").items())


# --- Raw HTTP -------------------------------------------------------------------------------


def request_bytes(code, body, headers, length=None, content_type="application/json", path=None):
    """A POST as bytes; ``length`` overrides the Content-Length (None: the body's; False: none)."""
    lines = [f"POST {path or f'/integration/webhook/{code}'} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if length is not False:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    lines += [f"{name}: {value}" for name, value in headers]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def exchange(port, data, timeout=30):
    """Send ``data``, read the answer to the end: (status or 'closed', answer body, seconds)."""
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused early (413, 431): the answer may still be there to read
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    return parse_status(answer), answer.partition(b"\r\n\r\n")[2], time.monotonic() - started


def parse_status(answer):
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return int(match.group(1)) if match else "closed"


# --- The corpus -----------------------------------------------------------------------------


def nested(depth):
    return b"[" * depth + b"]" * depth


def corpus():
    """[(case name, expected statuses, repeat, build(number) -> request bytes)]."""
    std, gh, mac = CODES["standard_webhooks"], CODES["github"], CODES["hmac_sha256"]
    order = json.dumps({"type": "order.created", "data": {"id": "F-1"}}).encode()

    def uid(prefix, number):
        return f"fuzz-{prefix}-{number}"

    def repeated_signature(number):
        body = json.dumps({"type": "order.created", "n": number}).encode()
        good = sign_standard(body, uid("rep", number))
        bogus = sign_standard(b"other", uid("rep", number))[2]
        if number % 2:
            return request_bytes(std, body, [*good, bogus])
        valid = sign_github(body, uid("rep", number))
        return request_bytes(gh, body, [*valid, ("X-Hub-Signature-256", "sha256=" + "0" * 64)])

    content_types = ("text/plain", "multipart/form-data", "application/x-www-form-urlencoded", "image/png", "")
    return [
        ("not JSON, unsigned", {401}, REPEAT, lambda n: request_bytes(std, b"this is not JSON", [])),
        (
            "not JSON, signed with another secret",
            {401},
            REPEAT,
            lambda n: request_bytes(gh, b"not json", sign_github(b"other body", uid("nj", n))),
        ),
        ("invalid UTF-8, unsigned", {401}, REPEAT, lambda n: request_bytes(mac, b'{"name": "Caf\xe9\xff"}', [])),
        (
            "NUL byte, bad signature",
            {401},
            REPEAT,
            lambda n: request_bytes(std, b'{"a": "\x00"}', sign_standard(b"x", uid("nul", n))),
        ),
        ("one 64 KB header", {431}, REPEAT, lambda n: request_bytes(std, order, [("X-Padding", "p" * 65536)])),
        ("200 headers", {431}, REPEAT, lambda n: request_bytes(gh, order, [(f"X-H{i}", "v") for i in range(200)])),
        ("10,000 nested arrays, unsigned", {401}, REPEAT, lambda n: request_bytes(mac, nested(10000), [])),
        (
            "wrong content types, unsigned",
            {401},
            REPEAT,
            lambda n: request_bytes(gh, order, [], content_type=content_types[n % len(content_types)]),
        ),
        ("signature header repeated, two values", {401}, REPEAT, repeated_signature),
        (
            "oversized body (1 MiB + 1 declared)",
            {413},
            REPEAT,
            lambda n: request_bytes(std, b"x" * 65536, [], length=1024 * 1024 + 1),
        ),
        ("no Content-Length (chunked)", {411}, REPEAT, lambda n: chunked(std)),
        (
            "Content-Length shorter than the body",
            {401},
            REPEAT,
            lambda n: request_bytes(
                gh, order + b"tail", sign_github(order + b"tail", uid("cls", n)), length=len(order)
            ),
        ),
        (
            "Content-Length longer than the body (stalls)",
            {408},
            STALL_REPEAT,
            lambda n: request_bytes(mac, order, sign_hmac(order), length=len(order) + 100),
        ),
        ("empty body", {401}, REPEAT, lambda n: request_bytes(std, b"", [])),
        (
            "unknown connector code",
            {404},
            REPEAT,
            lambda n: request_bytes("no-such-connector", order, sign_standard(order, uid("unk", n))),
        ),
        (
            "a NUL in the connector code",
            {404},
            REPEAT,
            lambda n: request_bytes(None, order, [], path="/integration/webhook/fuzz%00std"),
        ),
    ]


def chunked(code):
    head = request_bytes(code, b"", [], length=False)
    return head + b'7\r\n{"a":1}\r\n0\r\n\r\n'


def signed_unusable():
    """Validly signed bodies that are no usable JSON (or barely):
    [(name, request bytes, delivery id, processing outcome: the state, and the error's words)].

    Each is sent REPEAT // 4 times under one delivery id: stored once (202), then duplicates
    (200). Processed by a rule that upserts a contact, as tests/test_webhook_hostile.py does.
    """
    std, gh = CODES["standard_webhooks"], CODES["github"]
    cases = []
    for name, code, body, content_type, outcome in (
        ("not JSON", std, b"this is not JSON", "application/json", ("failed", "not valid JSON")),
        (
            "invalid UTF-8",
            gh,
            b'{"type": "x", "data": {"id": "U-1", "name": "Caf\xe9"}}',
            "application/json",
            ("done", ""),
        ),
        (
            "a raw NUL byte",
            std,
            b'{"type": "x", "data": {"name": "A\x00B"}}',
            "application/json",
            ("failed", "Invalid control character"),
        ),
        ("10,000 nested arrays", gh, nested(10000), "application/json", ("failed", "deeper than 128 levels")),
        (
            "wrong content type",
            std,
            b'{"type": "x", "data": {"id": "U-5", "name": "Five"}}',
            "text/plain",
            ("done", ""),
        ),
    ):
        delivery = f"fuzz-signed-{len(cases)}"
        headers = sign_standard(body, delivery) if code == std else sign_github(body, delivery)
        cases.append((name, request_bytes(code, body, headers, content_type=content_type), delivery, outcome))
    return cases


# --- Webhook half ---------------------------------------------------------------------------


def make_connectors(db):
    with Registry(db).cursor() as cr:
        env = env_for(cr)
        ids = {}
        for profile, code in CODES.items():
            values = {"name": f"Fuzz {profile}", "code": code, "base_url": "http://127.0.0.1:9/"}
            values["webhook_signature"] = profile
            if profile == "hmac_sha256":
                values.update(webhook_hmac_header="X-Signature", webhook_hmac_prefix="sha256=")
            connector = env["integration.connector"].create(values)
            connector.webhook_secret = STANDARD_SECRET if profile == "standard_webhooks" else PLAIN_SECRET
            ids[profile] = connector.id
        for connector_id in ids.values():
            contact_rule(env, connector_id, "*")
        return ids


def send_all(port, jobs):
    """Send ``jobs`` [(case, request bytes)] from THREADS threads; [(case, status, body, seconds)]."""
    work = queue.Queue()
    for job in jobs:
        work.put(job)
    results, lock = [], threading.Lock()

    def run():
        while True:
            try:
                case, data = work.get_nowait()
            except queue.Empty:
                return
            try:
                status, body, seconds = exchange(port, data)
            except OSError as exc:
                status, body, seconds = f"error {type(exc).__name__}", b"", 0.0
            with lock:
                results.append((case, status, body, seconds))

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def slowloris(port, seconds, senders):
    """``senders`` trickling senders at a time for ``seconds`` (each re-opened when cut), a
    valid delivery every POLL seconds meanwhile: (trickle outcomes, valid deliveries)."""
    stop_at = time.monotonic() + seconds
    trickles, valid, lock = [], [], threading.Lock()
    code = CODES["github"]

    def trickle():
        # A sender that trickles a byte a second and goes on after it is answered.
        while time.monotonic() < stop_at:
            started = time.monotonic()
            answer, answered_after = b"", None
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                try:
                    sock.sendall(request_bytes(code, b"", [], length=1000))
                    for _byte in range(1000):
                        sock.sendall(b"x")
                        if _readable(sock, 1.0) and answered_after is None:
                            answer = sock.recv(65536)
                            answered_after = time.monotonic() - started
                        if answered_after is not None and time.monotonic() - started > answered_after + 3:
                            break
                except OSError:
                    pass  # the server dropped the connection
            with lock:
                trickles.append((parse_status(answer), answered_after or time.monotonic() - started))

    def deliver():
        number = 0
        while time.monotonic() < stop_at:
            body = json.dumps({"type": "order.created", "data": {"id": f"S-{senders}-{number}"}}).encode()
            data = request_bytes(code, body, sign_github(body, f"fuzz-slow-{senders}-{number}"))
            status, _body, elapsed = exchange(port, data, timeout=60)
            with lock:
                valid.append((status, elapsed))
            number += 1
            time.sleep(POLL)

    threads = [threading.Thread(target=trickle) for _ in range(senders)] + [threading.Thread(target=deliver)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)  # the trickles hold their workers before the first delivery
    for thread in threads:
        thread.join()
    return trickles, valid


def _readable(sock, wait):
    return bool(select.select([sock], [], [], wait)[0])


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def serve_corpus(conf, db, odoo_bin, cases, unusable):
    """Odoo with 2 workers: the corpus, the slowloris phase, one valid delivery twice and
    /web/health; what each got, and the server's log lines."""
    log = tempfile.NamedTemporaryFile(prefix="proof_fuzz_", suffix=".log", delete=False)
    log.close()
    server = OdooServer(odoo_bin, conf, db, "base,web", logfile=log.name)
    outcome = {}
    try:
        jobs = [(name, build(number)) for name, _expected, repeat, build in cases for number in range(repeat)]
        jobs += [(f"signed: {name}", data) for name, data, _delivery, _outcome in unusable for _ in range(REPEAT // 4)]
        random.Random(13).shuffle(jobs)  # the cases interleaved, the same way every run
        started = time.monotonic()
        outcome["results"] = send_all(server.port, jobs)
        outcome["elapsed"] = time.monotonic() - started
        # One trickling sender (one worker held), then as many as there are workers.
        outcome["slow"] = {senders: slowloris(server.port, SLOW_SECONDS, senders) for senders in (1, 2)}
        # Afterwards: a valid delivery is stored once, its repeat is a duplicate; Odoo is healthy.
        body = json.dumps({"type": "order.created", "data": {"id": "AFTER-1", "name": "After"}}).encode()
        again = request_bytes(CODES["standard_webhooks"], body, sign_standard(body, "fuzz-after"))
        outcome["after"] = [exchange(server.port, again)[0] for _ in range(2)]
        with urllib.request.urlopen(server.url + "/web/health", timeout=10) as response:
            outcome["health"] = response.status
    finally:
        server.stop()
        with open(log.name, encoding="utf-8", errors="replace") as handle:
            outcome["log"] = handle.read().splitlines()
        os.unlink(log.name)
    return outcome


def stored_and_processed(db, connector_ids, unusable):
    """{event id: duplicates counted} of the connectors, and the unusable bodies' events
    processed as their jobs would be: {delivery id: (state, error)} (rolled back)."""
    with Registry(db).cursor() as cr:
        cr.execute(
            "SELECT e.event_id, COALESCE(d.count, 0) FROM integration_webhook_event e"
            " LEFT JOIN integration_webhook_duplicate d ON d.event_id = e.id WHERE e.connector_id IN %s",
            [tuple(connector_ids.values())],
        )
        stored = dict(cr.fetchall())
        events = env_for(cr)["integration.webhook.event"].search(
            [("event_id", "in", [delivery for _name, _data, delivery, _outcome in unusable])]
        )
        for event in events:
            event._job_process()  # outside a job: in this transaction, rolled back below
        outcomes = {event.event_id: (event.state, event.last_error or "") for event in events}
        cr.rollback()  # the proof's database keeps no contact from it
    return stored, outcomes


def check_statuses(results, cases, problems):
    expected = {name: allowed for name, allowed, _repeat, _build in cases}
    wrong = Counter()
    for case, status, _body, _seconds in results:
        if status not in expected.get(case, {202, 200}):  # signed unusable: 202 once, then 200
            wrong[(case, status)] += 1
    for (case, status), count in sorted(wrong.items(), key=str):
        problems.append(f"{case}: {count} answered {status}")


def check_stored(stored, outcomes, unusable, signed_sent, problems):
    """Nothing stored from the hostile corpus; each unusable signed body once, processed as
    the README says. Returns (events stored from the corpus, duplicates, readable failures)."""
    deliveries = [delivery for _name, _data, delivery, _outcome in unusable]
    corpus_stored = {event_id: count for event_id, count in stored.items() if event_id.startswith("fuzz-signed-")}
    others = sorted(event_id for event_id in stored if not event_id.startswith(("fuzz-signed-", "fuzz-slow-")))
    if others != ["fuzz-after"]:
        problems.append(f"stored besides the signed bodies and the valid deliveries: {others[:5]}")
    if sorted(corpus_stored) != sorted(deliveries):
        problems.append(f"signed unusable bodies stored: {sorted(corpus_stored)} instead of once each")
    duplicates = sum(corpus_stored.values())
    if duplicates != signed_sent - len(deliveries):
        problems.append(f"duplicates counted {duplicates}, sent {signed_sent - len(deliveries)} repeats")
    if stored.get("fuzz-after", -1) != 1:
        problems.append(f"the valid delivery sent twice: {stored.get('fuzz-after')} duplicate, not stored once")
    readable = 0
    for name, _data, delivery, (state, words) in unusable:
        got_state, error = outcomes.get(delivery, ("missing", ""))
        if got_state != state or words not in error or "Traceback" in error:
            problems.append(f"signed {name}: processed {got_state} {error[:200]!r}, not {state} {words!r}")
        readable += got_state == state == "failed" and words in error
    return len([event_id for event_id in others if event_id != "fuzz-after"]), duplicates, readable


def check_slowloris(trickles, valid, stored, senders, problems):
    cut = [seconds for status, seconds in trickles if status == 408]
    late = [(status, round(seconds, 1)) for status, seconds in trickles if status != 408 or seconds > CUT_BOUND]
    if not trickles or late:
        problems.append(f"trickled bodies not cut with 408 within {CUT_BOUND} s: {late[:5]}")
    latencies = [seconds * 1000 for status, seconds in valid if status == 202]
    if len(latencies) != len(valid) or not valid:
        problems.append(f"valid deliveries during slowloris: {Counter(status for status, _s in valid)}")
    stored_slow = sum(1 for event_id in stored if event_id.startswith(f"fuzz-slow-{senders}-"))
    if stored_slow != len(valid):
        problems.append(f"valid deliveries during slowloris: {len(valid)} sent, {stored_slow} stored")
    return cut, latencies or [0.0]


def leave_nothing_pending(db, connector_ids):
    """The proof's server ran no job runner: its stored events and the dispatcher their
    deliveries queued would otherwise run in the next proof's server, and count there."""
    with Registry(db).cursor() as cr:
        cr.execute(
            "UPDATE integration_webhook_event SET state = 'ignored'"
            " WHERE connector_id IN %s AND state IN ('received', 'queued')",
            [tuple(connector_ids.values())],
        )
        cr.execute(
            "UPDATE queue_job SET state = 'cancelled'"
            " WHERE channel LIKE 'root.integration.webhook%%' AND state IN ('pending', 'enqueued')"
        )


def webhook_half(conf, db, odoo_bin, problems):
    connector_ids = make_connectors(db)
    try:
        return _webhook_half(conf, db, odoo_bin, problems, connector_ids)
    finally:
        leave_nothing_pending(db, connector_ids)


def _webhook_half(conf, db, odoo_bin, problems, connector_ids):
    cases, unusable = corpus(), signed_unusable()
    served = serve_corpus(conf, db, odoo_bin, cases, unusable)
    results = served["results"]
    check_statuses(results, cases, problems)
    hostile = [result for result in results if not result[0].startswith("signed: ")]
    signed_sent = len(results) - len(hostile)
    statuses = Counter(result[1] for result in hostile)
    fivexx = sum(count for status, count in statuses.items() if isinstance(status, int) and status >= 500)
    unanswered = sum(count for status, count in statuses.items() if not isinstance(status, int))
    stored, outcomes = stored_and_processed(db, connector_ids, unusable)
    from_corpus, duplicates, readable = check_stored(stored, outcomes, unusable, signed_sent, problems)
    # http.server's own refusals (431) are logged by werkzeug at ERROR, one line each, no traceback.
    refusals = [line for line in served["log"] if re.search(r" ERROR .* werkzeug: .* code 4\d\d, message ", line)]
    errors = [line for line in served["log"] if re.search(r" (ERROR|CRITICAL) |Traceback", line)]
    errors = [line for line in errors if line not in refusals]
    if errors:
        problems.append(f"the server logged {len(errors)} ERROR line(s), first: {errors[0][:200]}")
    if served["after"] != [202, 200]:
        problems.append(f"a valid delivery sent twice afterwards answered {served['after']}, not [202, 200]")
    if served["health"] != 200:
        problems.append(f"/web/health answered {served['health']}")

    print(
        f"fuzz webhook: {len(hostile):,} hostile requests in {len(cases)} cases from {THREADS} threads "
        f"in {served['elapsed']:.1f} s: statuses {dict(sorted(statuses.items(), key=str))}, "
        f"5xx {fivexx}, unanswered {unanswered}, stored {from_corpus}"
    )
    print(
        f"fuzz webhook: {signed_sent:,} validly signed unusable bodies ({len(unusable)} kinds, each sent "
        f"{REPEAT // 4} times): stored {len(unusable)} (once each), duplicates counted {duplicates}; "
        f"processed: {readable} failed readably, {len(outcomes) - readable} done"
    )
    for senders, (trickles, valid) in served["slow"].items():
        cut, latencies = check_slowloris(trickles, valid, stored, senders, problems)
        print(
            f"fuzz webhook: slowloris, {senders} sender(s) at a time trickling a byte a second for "
            f"{SLOW_SECONDS:.0f} s: {len(trickles)} trickles, {len(cut)} cut with 408 after at most "
            f"{max(cut, default=0):.1f} s; valid deliveries meanwhile: {len(valid)} answered 202, "
            f"p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms"
        )
    print(
        f"fuzz webhook: afterwards a valid delivery sent twice: {served['after']}, stored once; /web/health "
        f"{served['health']}; server log: {len(errors)} errors or tracebacks ({len(refusals)} lines of "
        f"werkzeug's own 431 refusals)"
    )
    for name, _data, delivery, _outcome in unusable:
        state, error = outcomes.get(delivery, ("missing", ""))
        print(f"  signed {name}: stored once, processed {state}{': ' + error.splitlines()[0][:120] if error else ''}")


# --- Flow half ------------------------------------------------------------------------------

# What each malformed page's error must name (and never a traceback or an exception's repr).
EXPECTED_ERRORS = {
    "not_json": "holds no list of records",
    "object": "holds no list of records",
    "missing_keys": "without an id",
    "wrong_types": "without an id",
    "truncated": "holds no list of records",
    "html": "holds no list of records",
    "invalid_utf8": "not UTF-8",
}
UNREADABLE = re.compile(r"Traceback|KeyError|TypeError|AttributeError|UnicodeDecodeError|<class |object at 0x")


def set_fault(url, **faults):
    request = urllib.request.Request(
        url + "/_sandbox/faults", data=json.dumps(faults).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def make_flow(env, url):
    return order_flow(
        env,
        url,
        "fuzz",
        connector_values={"name": "Fuzz orders", "code": "fuzz-orders", "retry_max_attempts": 1},
        name="Fuzz orders",
        code="fuzz_orders",
        window_minutes=60,
    )


def run_window(registry, flow_id, until):
    """Plan the flow up to ``until`` and run its window(s) here, as the runner would run
    each job; (runs' (state, error, created), cursor after, partners bound, unreadable)."""
    with registry.cursor() as cr:
        flow = env_for(cr)["integration.sync.flow"].browse(flow_id)
        runs = flow._plan_import(until=until)
        run_ids = runs.ids
        runs.write({"job_uuid": False})  # run here rather than by a runner
        cr.execute("DELETE FROM queue_job WHERE model_name = 'integration.sync.run'")
    crashed = None
    for run_id in run_ids:
        try:
            with registry.cursor() as cr:
                env_for(cr)["integration.sync.run"].browse(run_id)._job_run()
        except Exception as exc:  # noqa: BLE001 - what the runner would store as a traceback
            crashed = f"{type(exc).__name__}: {exc}"
    with registry.cursor() as cr:
        env = env_for(cr)
        runs = env["integration.sync.run"].browse(run_ids)
        outcome = [(run.state, run.error or "", run.created_count) for run in runs]
        flow = env["integration.sync.flow"].browse(flow_id)
        bound = env["integration.binding"].search_count([("connector_id", "=", flow.connector_id.id)])
        return outcome, flow.cursor_at, bound, crashed


def flow_half(db, problems):
    from sandbox.server import MALFORMED_KINDS  # noqa: PLC0415 - the repository root is on sys.path

    sandbox, url = start_sandbox(
        "orders", "--orders", "1000", "--rate", "0", "--hours", "24", "--start", "2026-01-01T00:00:00Z"
    )
    registry = Registry(db)
    try:
        with registry.cursor() as cr:
            flow_id = make_flow(env_for(cr), url).id
        failed_readably, cursor_moves, created_bad, clean_moves = 0, 0, 0, 0
        states = Counter()
        window_end = DAY
        lines = []
        for kind in MALFORMED_KINDS:
            window_end += timedelta(hours=1)
            set_fault(url, malformed=kind, malformed_pages=1)
            with registry.cursor() as cr:
                flow = env_for(cr)["integration.sync.flow"].browse(flow_id)
                before = flow.cursor_at
                bound_before = env_for(cr)["integration.binding"].search_count(
                    [("connector_id", "=", flow.connector_id.id)]
                )
            outcome, cursor, bound, crashed = run_window(registry, flow_id, window_end)
            state, error, created = outcome[0] if outcome else ("none", "", 0)
            states[state] += 1
            readable = (
                crashed is None
                and state in ("failed", "partial")
                and EXPECTED_ERRORS[kind] in error
                and not UNREADABLE.search(error)
            )
            failed_readably += readable
            cursor_moves += cursor != before
            created_bad += created + (bound - bound_before)
            if not readable:
                problems.append(f"malformed page {kind}: {state}, error {error[:200]!r}, crashed {crashed}")
            if cursor != before:
                problems.append(f"malformed page {kind}: the cursor moved from {before} to {cursor}")
            if created or bound != bound_before:
                problems.append(f"malformed page {kind}: {created} created, {bound - bound_before} bound")
            lines.append(f"  {kind}: {state}: {error.splitlines()[0][:150] if error else ''}")
            # The fault is spent: the same window, read again, goes through and moves the cursor.
            outcome, cursor, bound, crashed = run_window(registry, flow_id, window_end)
            clean = outcome and outcome[-1][0] == "done" and cursor == window_end and not crashed
            clean_moves += bool(clean)
            if not clean:
                problems.append(f"after {kind}: the clean window ended {outcome}, cursor {cursor}, crashed {crashed}")
        with urllib.request.urlopen(url + "/_sandbox/stats", timeout=10) as response:
            malformed_served = json.load(response).get("pages_malformed", 0)
    finally:
        sandbox.terminate()
        sandbox.wait(10)
    print(
        f"fuzz flows: {len(MALFORMED_KINDS)} malformed page kinds ({malformed_served} pages served malformed): "
        f"{failed_readably} windows failed readably ({dict(states)}), cursor moved {cursor_moves}, "
        f"records created {created_bad}; then {clean_moves} clean windows moved the cursor"
    )
    for line in lines:
        print(line)


def main(conf, db, odoo_bin):
    odoo.tools.config.parse_config(["-c", conf, "-d", db, "--log-level", "warn"])
    problems = []
    try:
        webhook_half(conf, db, odoo_bin, problems)
        flow_half(db, problems)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure (Odoo not starting too) on the last line
        problems.append(f"{type(exc).__name__}: {exc}")
    for problem in problems[1:]:
        print(f"  problem: {problem}")
    print(f"proof fuzz: FAILED: {problems[0]}" if problems else "proof fuzz: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    sys.exit(main(*sys.argv[1:4]))
