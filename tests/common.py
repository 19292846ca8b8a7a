"""Shared test set-up: a real HTTP(S) server on 127.0.0.1 and record factories."""

import base64
import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest.mock import patch
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from odoo import SUPERUSER_ID, api, fields, sql_db
from odoo.tests import common
from odoo.tools import config

from odoo.addons.queue_job.exception import RetryableJobError
from odoo.addons.queue_job.job import Job

from ..const import CALL_LOGGER, KEYS_CONFIG_OPTION, KEYS_ENV_VARIABLE, MANAGER_GROUP, USER_GROUP

# Logger names, by the part of the addon that logs (a package's name covers its files):
# tests mute or capture these, never a module path that a refactoring may move.
ADDON_LOGGER = "odoo.addons.integration_hub"
CONNECTOR_LOGGER = f"{ADDON_LOGGER}.models.connector"
HEALTH_LOGGER = f"{CONNECTOR_LOGGER}.health"
EVENT_LOGGER = f"{ADDON_LOGGER}.models.webhook_event"
ROUTE_LOGGER = f"{ADDON_LOGGER}.controllers.webhook"
OAUTH2_ROUTE_LOGGER = f"{ADDON_LOGGER}.controllers.oauth2"
SYNC_FLOW_LOGGER = f"{ADDON_LOGGER}.models.integration_sync_flow"
SYNC_RUN_LOGGER = f"{ADDON_LOGGER}.models.integration_sync_run"
# CALL_LOGGER (from const, imported above): the line of each outbound call, under CONNECTOR_LOGGER.

# Fixed keys for the tests: the key list under test is set explicitly, never inherited.
KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()


@dataclass
class ReceivedRequest:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    raw_query: str = ""
    received_at: float = field(default_factory=time.time)

    def json(self):
        return json.loads(self.body or b"null")

    def form(self):
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=lambda: {"ok": True})
    headers: dict = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every answer

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = ReceivedRequest(
            method=self.command,
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k: v for k, v in self.headers.items()},
            body=body,
            raw_query=parts.query,
        )
        with self.server.lock:
            self.server.received.append(request)
        reply = self.server.responder(request)
        payload = reply.body
        if reply.status in (204, 304):
            payload = b""  # no body allowed
        elif not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
            reply.headers.setdefault("Content-Type", "application/json")
        if isinstance(payload, str):
            payload = payload.encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format, *args):  # noqa: A002 - keep the test log readable
        return


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 that records what it receives.

    ``responder(request) -> Reply`` decides each answer; ``received`` lists requests.
    With ``tls=True`` it serves HTTPS with a freshly made self-signed certificate.
    """

    def __init__(self, responder=None, tls=False, family=socket.AF_INET):
        server_class = ThreadingHTTPServer
        if family == socket.AF_INET6:
            server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
        self.httpd = server_class(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0), _Handler)
        self.host = "[::1]" if family == socket.AF_INET6 else "127.0.0.1"
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.received = []
        self.httpd.responder = responder or (lambda request: Reply())
        self.scheme = "http"
        if tls:
            self._tmpdir = tempfile.TemporaryDirectory()
            cert, key = _self_signed_certificate(self._tmpdir.name)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"{self.scheme}://{self.host}:{self.httpd.server_address[1]}"

    @property
    def received(self):
        return self.httpd.received

    def respond_with(self, responder):
        self.httpd.responder = responder

    def reset(self, responder=None):
        with self.httpd.lock:
            self.httpd.received.clear()
        self.httpd.responder = responder or (lambda request: Reply())

    def requests_to(self, path):
        return [r for r in self.received if r.path == path]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _self_signed_certificate(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


class CaptureAll(logging.Handler):
    """Keeps every record it sees at ``level`` or above, and its formatted line (see
    ``capture_logs`` and ``errors_logged``)."""

    def __init__(self, level=logging.DEBUG):
        super().__init__(level)
        self.records = []
        self.lines = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record):
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def text(self):
        return "\n".join(self.lines)


@contextmanager
def errors_logged():
    """The records logged at ERROR or above meanwhile, by any logger that reaches the root
    (the addon, Odoo's HTTP layer and its tracebacks, werkzeug): a list, filled as they come."""
    handler = CaptureAll(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def capture_logs(test, names=(ADDON_LOGGER, "urllib3", "requests")):
    """Every line logged for the rest of ``test``, these loggers opened down to DEBUG:
    the haystack in which tests look for secrets that must not be there."""
    handler = CaptureAll()
    root = logging.getLogger()
    root.addHandler(handler)
    test.addCleanup(root.removeHandler, handler)
    for name in names:
        logger = logging.getLogger(name)
        test.addCleanup(logger.setLevel, logger.level)
        logger.setLevel(logging.DEBUG)
    return handler


def capture_call_lines(test, level=logging.INFO):
    """The call lines (``CALL_LOGGER``, one per outbound call) logged for the rest of
    ``test`` at ``level`` and up; the handler sits on that logger itself, so the lines are
    caught even while ``mute_logger(CONNECTOR_LOGGER)`` keeps them out of the test log."""
    handler = CaptureAll(level)
    logger = logging.getLogger(CALL_LOGGER)
    logger.addHandler(handler)
    test.addCleanup(logger.removeHandler, handler)
    test.addCleanup(logger.setLevel, logger.level)
    logger.setLevel(level)
    return handler


@contextmanager
def encryption_keys(keys):
    """Set the configured encryption keys (a string as in odoo.conf; '' for none)."""
    with (
        patch.dict(os.environ, {KEYS_ENV_VARIABLE: ""}),
        patch.dict(config.options, {KEYS_CONFIG_OPTION: keys}),
    ):
        yield


def _resolves_to_loopback_only(host):
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos}
    return bool(addresses) and all(
        (a.ipv4_mapped or a).is_loopback if a.version == 6 else a.is_loopback for a in addresses
    )


class IntegrationHubMixin:
    """Set-up shared by the integration_hub tests (``_setup_env``, ``_setup_records``)."""

    @classmethod
    def _request_handler(cls, session, prepared, /, **kwargs):
        # Odoo's handler raises the timeouts of local calls to 10 s and cannot compare our
        # (connect, read) tuples; calls to 127.0.0.1 go out untouched, others stay blocked.
        if _resolves_to_loopback_only(urlsplit(prepared.url).hostname):
            return common._super_send(session, prepared, **kwargs)
        if isinstance(kwargs.get("timeout"), tuple):
            kwargs["timeout"] = max(kwargs["timeout"])
        return super()._request_handler(session, prepared, **kwargs)

    @classmethod
    def _setup_env(cls):
        keys = encryption_keys(KEY_A)
        keys.__enter__()
        cls.addClassCleanup(keys.__exit__, None, None, None)
        cls.server = LocalServer()
        cls.addClassCleanup(cls.server.stop)

    @classmethod
    def _setup_records(cls):
        cls.company = cls.env.company
        cls.other_company = cls.env["res.company"].create({"name": "Other Company (integration tests)"})
        cls.manager = cls._create_user("ih_manager", "Integration Manager", MANAGER_GROUP)
        cls.operator = cls._create_user("ih_operator", "Integration Operator", USER_GROUP)

    @classmethod
    def _create_user(cls, login, name, group):
        return (
            cls.env["res.users"]
            .with_context(no_reset_password=True)
            .create(
                {
                    "name": name,
                    "login": login,
                    "password": f"{login}_pw1",
                    "company_id": cls.company.id,
                    "company_ids": [(6, 0, cls.company.ids)],
                    "groups_id": [(6, 0, [cls.env.ref(group).id])],
                }
            )
        )

    @classmethod
    def _create_connector(cls, **values):
        vals = {
            "name": "Test API",
            "code": f"test-api-{len(cls.env['integration.connector'].with_context(active_test=False).search([]))}",
            "base_url": cls.server.url + "/api",
            "health_path": "/health",
            "timeout_connect": 5,
            "timeout_read": 5,
            # The test servers listen on 127.0.0.1 over plain http.
            "allow_http": True,
            "allow_private_network": True,
        }
        vals.update(values)
        return cls.env["integration.connector"].create(vals)

    def setUp(self):
        super().setUp()
        self.server.reset()


class IntegrationHubCase(IntegrationHubMixin, common.TransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # Errors and call logs are written through fresh cursors (the failing transaction
        # rolls back); in test mode those cursors share the test's transaction.
        cls.registry.enter_test_mode(cls.cr)
        cls.addClassCleanup(cls.registry.leave_test_mode)
        cls._setup_env()
        cls._setup_records()


WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "lib", "call_worker.py")


class CommittedConnector:
    """A connector committed for real, so that other OS processes can use it.

    Test transactions are invisible to other processes; this one is created and deleted
    through its own cursor.
    """

    def __init__(self, dbname, values):
        self.dbname = dbname
        with sql_db.db_connect(dbname).cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            self.id = env["integration.connector"].create(values).id

    def read_state(self):
        """(circuit state, consecutive failures, opened at as epoch seconds)."""
        with sql_db.db_connect(self.dbname).cursor() as cr:
            cr.execute(
                "SELECT circuit_state, circuit_failures, circuit_opened_at"
                " FROM integration_connector_state WHERE connector_id = %s",
                [self.id],
            )
            return cr.fetchone()

    def delete(self):
        with sql_db.db_connect(self.dbname).cursor() as cr:
            api.Environment(cr, SUPERUSER_ID, {})["integration.connector"].browse(self.id).unlink()


def run_workers(dbname, connector_id, calls, count=1, path="/", start_in=4.0, timeout=120, bare=False):
    """Start ``count`` OS processes making ``calls`` calls each; returns their JSON results."""
    start_at = time.time() + start_in
    command = [
        sys.executable,
        WORKER,
        "--config",
        config.rcfile,
        "--db",
        dbname,
        "--connector",
        str(connector_id),
        "--calls",
        str(calls),
        "--path",
        path,
        "--start-at",
        str(start_at),
    ]
    if bare:
        command.append("--bare")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_odoo_root(), os.environ.get("PYTHONPATH")])))
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for _i in range(count)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        if process.returncode:
            raise AssertionError(f"worker failed ({process.returncode}): {err.decode()[-2000:]}")
        results.append(json.loads(out))
    return results


@contextmanager
def odoo_server(dbname, timeout=90):
    """A real Odoo server on ``dbname`` in an OS process of its own (not in test mode, so
    its requests commit as in production); yields its base URL, stops it after."""
    ports = []
    for _i in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    command = [sys.executable, "-m", "odoo", "server", "-c", config.rcfile, "-d", dbname]
    command += ["--http-interface", "127.0.0.1", "--http-port", str(ports[0]), "--gevent-port", str(ports[1])]
    command += ["--workers", "0", "--max-cron-threads", "0", "--load", "base,web", "--log-level", "warn"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_odoo_root(), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{ports[0]}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"Odoo did not start: {log.read()[-2000:].decode(errors='replace')}")
                try:
                    if requests.get(url + "/web/health", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _odoo_root():
    import odoo

    return os.path.dirname(os.path.dirname(os.path.abspath(odoo.__file__)))


class JobRunner:
    """queue_job's runner, played by a thread while a browser test runs (``with JobRunner(...)``).

    Tests start no job runner, and a job run inline (``queue_job__no_delay``) would be done
    before the page that queued it is even shown. This thread runs the due pending jobs of
    ``model`` one at a time, each through a test cursor: the transaction the browser's requests
    share, serialised with them by the registry's test lock, so the screens see a job's work
    as they would in production, in its own time. ``ran`` lists the jobs run; ``errors`` what
    they (or the thread) raised, a retryable error aside (postponed, as the runner does), for
    the test to assert on. ``min_age`` (seconds) leaves a new job waiting that long first, as
    behind a busy runner: a page then shows the job's work queued before it shows it done.
    """

    def __init__(self, registry, model, interval=0.25, min_age=0):
        self.registry = registry
        self.model = model
        self.interval = interval
        self.min_age = min_age
        self.ran = []
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"test job runner ({model})", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(60)
        if self._thread.is_alive():
            self.errors.append(AssertionError("the job runner thread did not stop within 60 s"))

    def _loop(self):
        while not self._stop.wait(self.interval):
            try:
                self._run_one()
            except Exception as exc:  # noqa: BLE001 - handed to the test, which fails on it
                self.errors.append(exc)

    def _run_one(self):
        with self.registry.cursor() as cr:
            env = api.Environment(cr, SUPERUSER_ID, {})
            now = fields.Datetime.now()
            job = env["queue.job"].search(
                [
                    ("state", "=", "pending"),
                    ("model_name", "=", self.model),
                    ("date_created", "<=", now - datetime.timedelta(seconds=self.min_age)),
                    "|",
                    ("eta", "=", False),
                    ("eta", "<=", now),
                ],
                order="priority, id",
                limit=1,
            )
            if not job:
                return
            self.ran.append(job.uuid)
            error = run_job(env, job.uuid)
            if error is not None and not isinstance(error, RetryableJobError):
                self.errors.append(error)  # a retryable one was postponed, as the runner does


def run_job(env, job_uuid):
    """Run a stored job the way queue_job's runner does; returns the exception or None.

    A job whose function allows commits runs on a cursor of its own (in tests, one on the
    same transaction): it reads what the test wrote once flushed, and the test reads what
    it wrote once its caches are dropped.
    """
    env.flush_all()
    try:
        return _run_job(env, job_uuid)
    finally:
        env.invalidate_all()


def _run_job(env, job_uuid):
    job = Job.load(env, job_uuid)
    job.set_started()
    job.store()
    try:
        job.perform()
    except RetryableJobError as exc:
        job.postpone(result=str(exc), seconds=exc.seconds)
        job.set_pending(reset_retry=False)
        job.store()
        return exc
    except Exception as exc:  # noqa: BLE001 - the runner stores any failure on the job
        job.set_failed(exc_info="", exc_name=type(exc).__name__, exc_message=str(exc))
        job.store()
        return exc
    job.set_done()
    job.store()
    return None


# Screens saved for the README: ``INTEGRATION_HUB_SCREENSHOT_DIR=$PWD/static/description``.
SCREENSHOT_DIR_VARIABLE = "INTEGRATION_HUB_SCREENSHOT_DIR"
SCREEN_SIGNAL = "integration_hub: screen shown"


def screenshot(case, url, selector, login, filename, check="", click=None, timeout=120):
    """Open ``url`` in the test browser as ``login``, wait for ``selector`` and the fonts,
    and return a PNG of the page (also written to ``$INTEGRATION_HUB_SCREENSHOT_DIR/filename``
    when that variable is set). With ``click``, that element (a tab) is clicked first.

    ``check`` is JavaScript run once the selector is there; returning a string fails the
    test with it. An error dialog or a server ERROR line fails it too.
    """
    shots = []
    stop = common.ChromeBrowser.stop

    def screenshot_then_stop(browser):
        if browser._result.done() and browser._result.exception() is None:
            shot = browser._websocket_request("Page.captureScreenshot", params={"format": "png"}, timeout=30)
            shots.append(base64.b64decode(shot["data"]))
        return stop(browser)

    # Wait for the screen and its fonts, then signal: the browser is stopped (and shot) after it.
    code = (
        "(async () => {"
        "  const until = (test) => new Promise((resolve) => {"
        "    const poll = () => (test() ? resolve() : setTimeout(poll, 50)); poll(); });"
        + (
            f"  await until(() => document.querySelector({json.dumps(click)}));"
            f"  document.querySelector({json.dumps(click)}).click();"
            if click
            else ""
        )
        + f"  await until(() => document.querySelector({json.dumps(selector)}));"
        "  await document.fonts.ready;"
        "  await new Promise((resolve) => setTimeout(resolve, 500));"
        f"  const problem = (() => {{ {check} }})();"
        "  if (document.querySelector('.o_error_dialog')) { console.error('an error dialog is shown'); }"
        "  else if (problem) { console.error(problem); }"
        f"  else {{ console.log({json.dumps(SCREEN_SIGNAL)}); }}"
        "})();"
    )
    with errors_logged() as errors, patch.object(common.ChromeBrowser, "stop", screenshot_then_stop):
        case.browser_js(
            url, code, ready="odoo.isReady === true", login=login, timeout=timeout, success_signal=SCREEN_SIGNAL
        )
    case.assertFalse(errors, f"the server logged errors while {url} opened")
    case.assertEqual(len(shots), 1, f"one screenshot of {url}")
    directory = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    if directory:
        with open(os.path.join(directory, filename), "wb") as fh:
            fh.write(shots[0])
    return shots[0]


def failed_tour_event(connector, event_id="tour-evt-1"):
    """A ``tour.order.created`` webhook event of ``connector`` (order TOUR-1) that failed
    after 5 attempts because "partner API was down", its job cancelled: what the tours retry."""
    Event = connector.env["integration.webhook.event"]
    body = json.dumps({"order": "TOUR-1"}).encode()
    record_id, _created = Event._ingest(
        connector._webhook_receiver(connector.code), body, {}, event_id, "tour.order.created"
    )
    Event._job_dispatch_received()
    event = Event.browse(record_id)
    event.write({"state": "failed", "attempts": 5, "last_error": "IntegrationHTTPError: partner API was down"})
    event.job_id.button_cancelled()
    return event


@contextmanager
def tour_orders_imported_inline(connector):
    """While a tour presses Retry: the handler of ``tour.order.created`` imports the order
    ("order TOUR-1 imported"), and the queued job runs inline through queue_job's documented
    no-delay switch, in place of the job runner that tests do not start."""

    def import_order(connector, event):
        return f"order {event._payload_json()['order']} imported"

    with (
        patch.object(type(connector), "_webhook_handle_generic_rest_tour_order_created", import_order, create=True),
        patch.dict(os.environ, {"QUEUE_JOB__NO_DELAY": "1"}),
    ):
        yield
