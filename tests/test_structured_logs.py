"""One log line per call (JSON or text) and terminal failures to Sentry, with no secret in either."""

import base64
import json
import os
import socket
from contextlib import contextmanager
from datetime import datetime, timedelta
from unittest.mock import patch

import sentry_sdk
from sentry_sdk.transport import Transport

from odoo import fields
from odoo.tests import tagged
from odoo.tools import config, mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from ..const import (
    LOG_FORMAT_CONFIG_OPTION,
    LOG_FORMAT_ENV_VARIABLE,
    SENTRY_DSN_CONFIG_OPTION,
    SENTRY_DSN_ENV_VARIABLE,
)
from ..core import sentry
from ..core.calllog import FIELDS
from ..core.exceptions import IntegrationCircuitOpenError, IntegrationConnectionError, IntegrationHTTPError
from .common import CONNECTOR_LOGGER, IntegrationHubCase, Reply, capture_call_lines, run_job

# The connectors' secrets, each searched for in every line and every event.
API_KEY_IN_HEADER = "ak-Header-Secret-4f1d"
API_KEY_IN_QUERY = "ak-Query-Secret-9c2e"
BEARER_TOKEN = "bt-Bearer-Secret-77aa"
BASIC_PASSWORD = "pw-Basic-Secret-3b8c"
BASIC_CREDENTIALS = base64.b64encode(f"partner:{BASIC_PASSWORD}".encode()).decode()
SECRETS = (API_KEY_IN_HEADER, API_KEY_IN_QUERY, BEARER_TOKEN, BASIC_PASSWORD, BASIC_CREDENTIALS)
FAKE_DSN = "https://public@127.0.0.1/1"


@contextmanager
def log_format(env=None, option=None):
    """The call lines' format, as set by the environment variable and the config option."""
    with (
        patch.dict(os.environ, {LOG_FORMAT_ENV_VARIABLE: env or ""}),
        patch.dict(config.options, {LOG_FORMAT_CONFIG_OPTION: option or ""}),
    ):
        yield


@contextmanager
def sentry_dsn(dsn):
    with (
        patch.dict(os.environ, {SENTRY_DSN_ENV_VARIABLE: dsn or ""}),
        patch.dict(config.options, {SENTRY_DSN_CONFIG_OPTION: ""}),
    ):
        yield


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _echo_secrets(request):
    """A partner that echoes everything it received (URL, headers) in its answer."""
    status = int(request.path.rsplit("/", 1)[-1]) if request.path.rsplit("/", 1)[-1].isdigit() else 200
    echoed = {"query": request.raw_query, "headers": request.headers}
    return Reply(status, echoed, {"X-Echo": json.dumps(request.headers)[:900]})


class CallLinesCase(IntegrationHubCase):
    @classmethod
    def _secret_connectors(cls):
        """One connector per way a secret travels: a header, a query parameter, a bearer
        token, HTTP basic."""
        return [
            cls._create_connector(
                code="logs-header", auth_type="api_key", api_key_name="X-Partner", api_key=API_KEY_IN_HEADER
            ),
            cls._create_connector(
                code="logs-query",
                auth_type="api_key",
                api_key_location="query",
                api_key_name="access",
                api_key=API_KEY_IN_QUERY,
            ),
            cls._create_connector(code="logs-bearer", auth_type="bearer", bearer_token=BEARER_TOKEN),
            cls._create_connector(
                code="logs-basic", auth_type="basic", basic_username="partner", basic_password=BASIC_PASSWORD
            ),
        ]

    def setUp(self):
        super().setUp()
        self.server.reset(_echo_secrets)
        self.lines = capture_call_lines(self)

    def _messages(self):
        return [record.getMessage() for record in self.lines.records]

    def _levels(self):
        return [record.levelname for record in self.lines.records]

    def assertNoSecret(self, text):
        for secret in SECRETS:
            self.assertNotIn(secret, text)

    def _exercise(self, connector):
        """Quiet success, success while debugging, 500, 404, connection refused: the records
        logged by each step."""
        steps = {}
        with mute_logger(CONNECTOR_LOGGER):
            start = len(self.lines.records)
            connector._request("GET", "/orders", params={"page": "2"})
            steps["quiet"] = self.lines.records[start:]

            connector.debug_until = fields.Datetime.now() + timedelta(hours=1)
            start = len(self.lines.records)
            connector._request("GET", "/orders", params={"page": "2"}, operation="List orders")
            steps["debug"] = self.lines.records[start:]
            connector.debug_until = False

            for status in (500, 404):
                start = len(self.lines.records)
                with self.assertRaises(IntegrationHTTPError):
                    connector._request("POST", f"/orders/{status}", json={"sku": "A1"}, log_errors=False)
                steps[status] = self.lines.records[start:]

            base_url = connector.base_url
            connector.base_url = f"http://127.0.0.1:{_closed_port()}/api"
            start = len(self.lines.records)
            with self.assertRaises(IntegrationConnectionError):
                connector._request("GET", "/orders", log_errors=False)
            steps["refused"] = self.lines.records[start:]
            connector.base_url = base_url
        return steps


@tagged("post_install", "-at_install")
class TestJsonCallLines(CallLinesCase):
    def test_json_lines_follow_the_debug_switch_and_carry_no_secret(self):
        for connector in self._secret_connectors():
            with self.subTest(connector=connector.code), log_format(env="json"):
                steps = self._exercise(connector)
                self.assertEqual(steps["quiet"], [], "a success is not logged while the debug switch is off")
                expectations = {
                    "debug": ("INFO", 200, "GET", "ok", "List orders"),
                    500: ("ERROR", 500, "POST", "retryable_error", "POST /orders/500"),
                    404: ("WARNING", 404, "POST", "client_error", "POST /orders/404"),
                    "refused": ("ERROR", None, "GET", "connection_error", "GET /orders"),
                }
                for step, (level, status, method, outcome, operation) in expectations.items():
                    self.assertEqual(len(steps[step]), 1, f"one line for {step}")
                    record = steps[step][0]
                    line = json.loads(record.getMessage())
                    self.assertEqual(tuple(line), FIELDS)
                    self.assertEqual((record.levelname, line["level"]), (level, level))
                    self.assertEqual(
                        (line["connector"], line["status"], line["method"], line["outcome"], line["operation"]),
                        (connector.code, status, method, outcome, operation),
                    )
                    self.assertIsNone(line["job_uuid"])
                    self.assertIsNone(line["attempt"])
                    self.assertGreaterEqual(line["duration_ms"], 0)
                    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
                    self.assertLess(abs(datetime.now(stamp.tzinfo) - stamp), timedelta(minutes=1))
                    self.assertTrue(line["url"].startswith("http://127.0.0.1:"))
                self.assertIn("/api/orders?page=2", json.loads(steps["debug"][0].getMessage())["url"])
                if connector.code == "logs-query":
                    self.assertIn("access=***", json.loads(steps[500][0].getMessage())["url"])
                self.assertEqual(json.loads(steps["refused"][0].getMessage())["error"], "IntegrationConnectionError")
        self.assertEqual(len(self.lines.records), 4 * 4)
        for text in self._messages() + self.lines.lines:
            self.assertNotIn("\n", text)
            self.assertNoSecret(text)

    def test_a_job_call_line_carries_its_job_and_attempt_and_the_last_attempt_is_an_error(self):
        self.server.reset(lambda request: Reply(503, "overloaded"))
        connector = self._create_connector(code="logs-job", retry_max_attempts=2, circuit_threshold=0)
        uuid = connector._enqueue_call("POST", "/orders", json={"order": "SO042"}, operation="Push order").uuid
        with log_format(option="json"), mute_logger(CONNECTOR_LOGGER):
            self.assertIsInstance(run_job(self.env, uuid), RetryableJobError)
            self.assertIsInstance(run_job(self.env, uuid), IntegrationHTTPError)
        lines = [json.loads(message) for message in self._messages()]
        self.assertEqual(self._levels(), ["WARNING", "ERROR"], "the first attempt is retried, the second is final")
        self.assertEqual([line["attempt"] for line in lines], [1, 2])
        for line in lines:
            self.assertEqual(
                (line["job_uuid"], line["operation"], line["status"], line["outcome"]),
                (uuid, "Push order", 503, "retryable_error"),
            )

    def test_a_call_refused_by_the_open_circuit_is_a_failure_line(self):
        self.server.reset(lambda request: Reply(500, "down"))
        connector = self._create_connector(code="logs-circuit", circuit_threshold=1, circuit_reset_timeout=600)
        with log_format(env="json"), mute_logger(CONNECTOR_LOGGER):
            with self.assertRaises(IntegrationHTTPError):
                connector._request("GET", "/orders", log_errors=False)
            with self.assertRaises(IntegrationCircuitOpenError):
                connector._request("GET", "/orders", log_errors=False)
        self.assertEqual(len(self.server.received), 1, "the second call was not sent")
        refused = json.loads(self._messages()[-1])
        self.assertEqual(self._levels()[-1], "WARNING")
        self.assertEqual(
            (refused["outcome"], refused["status"], refused["duration_ms"], refused["error"]),
            ("refused", None, 0.0, "IntegrationCircuitOpenError"),
        )


@tagged("post_install", "-at_install")
class TestTextCallLines(CallLinesCase):
    def test_text_lines_under_the_same_conditions_and_without_secrets(self):
        for connector in self._secret_connectors():
            with self.subTest(connector=connector.code), log_format(option="text"):
                steps = self._exercise(connector)
                self.assertEqual(steps["quiet"], [])
                self.assertEqual([len(steps[step]) for step in ("debug", 500, 404, "refused")], [1, 1, 1, 1])
                self.assertEqual(
                    [steps[step][0].levelname for step in ("debug", 500, 404, "refused")],
                    ["INFO", "ERROR", "WARNING", "ERROR"],
                )
                debug_line = steps["debug"][0].getMessage()
                self.assertTrue(debug_line.startswith(f'connector={connector.code} operation="List orders" method=GET'))
                self.assertIn("status=200", debug_line)
                self.assertIn("outcome=ok", debug_line)
                self.assertIn("status=500", steps[500][0].getMessage())
                self.assertIn("status=- ", steps["refused"][0].getMessage())
                with self.assertRaises(json.JSONDecodeError):
                    json.loads(debug_line)
        for text in self._messages() + self.lines.lines:
            self.assertNotIn("\n", text)
            self.assertNoSecret(text)

    def test_the_environment_wins_over_the_configuration_file(self):
        connector = self._create_connector(code="logs-format")
        connector.debug_until = fields.Datetime.now() + timedelta(hours=1)
        for env, option, expected_json in (("", "json", True), ("text", "json", False), ("JSON", "", True)):
            with self.subTest(env=env, option=option), log_format(env=env, option=option):
                connector._request("GET", "/orders")
                message = self._messages()[-1]
                self.assertEqual(message.startswith("{"), expected_json, message)

    def test_control_characters_never_start_a_line_of_their_own(self):
        connector = self._create_connector(code="logs-crlf")
        connector.debug_until = fields.Datetime.now() + timedelta(hours=1)
        for fmt in ("json", "text"):
            with log_format(env=fmt):
                connector._request("GET", "/orders", operation="Sync\r\nFAKE LINE ERROR admin logged in")
        for message in self._messages():
            self.assertNotIn("\n", message)
            self.assertNotIn("\r", message)
            self.assertIn("Sync FAKE LINE", message)


class CapturingTransport(Transport):
    """Keeps every envelope the client would send (nothing leaves the machine)."""

    envelopes = []

    def capture_envelope(self, envelope):
        type(self).envelopes.append(envelope)


@tagged("post_install", "-at_install")
class TestSentry(CallLinesCase):
    def setUp(self):
        super().setUp()
        CapturingTransport.envelopes = []
        sentry.init(FAKE_DSN, transport=CapturingTransport)
        self.addCleanup(sentry.reset)

    def _events(self):
        return [envelope.get_event() for envelope in CapturingTransport.envelopes]

    def _serialised(self):
        return b"".join(envelope.serialize() for envelope in CapturingTransport.envelopes).decode()

    def test_a_terminal_failure_is_captured_once_with_tags_and_no_secret(self):
        # The secret is in the path (which URL redaction keeps) and in the query parameter;
        # the partner echoes both in its answer, which the message quotes.
        connector = self._secret_connectors()[1]
        connector.write({"retry_max_attempts": 2, "circuit_threshold": 0})
        self.server.reset(lambda request: Reply(503, f"overloaded at {request.path}?{request.raw_query}"))
        uuid = connector._enqueue_call("GET", f"/orders/{API_KEY_IN_QUERY}", operation="Read order").uuid
        with sentry_dsn(FAKE_DSN), mute_logger(CONNECTOR_LOGGER):
            run_job(self.env, uuid)
            self.assertEqual(self._events(), [], "an attempt that will be retried is not an issue yet")
            run_job(self.env, uuid)
        events = self._events()
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(event["level"], "error")
        self.assertEqual(event["tags"], {"connector": "logs-query", "operation": "Read order", "job_uuid": uuid})
        self.assertEqual(event["exception"]["values"][0]["type"], "IntegrationHTTPError")
        self.assertIn("gave up after 2 attempts", event["message"])
        self.assertIn("/orders/***", event["extra"]["url"])
        self.assertNoSecret(self._serialised())
        # The error log has the same failure, redacted the same way.
        error = self.env["integration.error"].search([("connector_id", "=", connector.id)])
        self.assertEqual(error.message, event["exception"]["values"][0]["value"].split(": ", 2)[-1])
        self.assertFalse(sentry_sdk.get_client().is_active(), "the addon's client is never bound globally")

    def test_before_send_scrubs_what_anything_else_put_in_the_event(self):
        client = sentry.client_for(FAKE_DSN)
        event = {
            "level": "error",
            "message": f"token {BEARER_TOKEN}",
            "breadcrumbs": {"values": [{"message": f"GET /x?access={API_KEY_IN_QUERY}&page=1"}]},
            "request": {"headers": {"Authorization": f"Basic {BASIC_CREDENTIALS}", "X-Partner": "anything"}},
            "exception": {
                "values": [{"value": "boom", "stacktrace": {"frames": [{"vars": {"password": BASIC_PASSWORD}}]}}]
            },
            "extra": {"note": f"key {API_KEY_IN_HEADER}"},
        }
        hint = {sentry.HINT_SECRETS: [BEARER_TOKEN, API_KEY_IN_HEADER], sentry.HINT_NAMES: ["X-Partner", "access"]}
        client.capture_event(event, hint=hint)
        self.assertEqual(len(CapturingTransport.envelopes), 1)
        captured = self._events()[0]
        self.assertEqual(captured["request"]["headers"]["X-Partner"], "***")
        self.assertIn("page=1", captured["breadcrumbs"]["values"][0]["message"])
        self.assertNoSecret(self._serialised())

    def test_without_a_dsn_nothing_is_captured(self):
        connector = self._create_connector(code="logs-nodsn")
        self.server.reset(lambda request: Reply(400, "bad"))
        # (assertRaises would roll back the error log's write: Odoo's wraps it in a savepoint.)
        with sentry_dsn(""), mute_logger(CONNECTOR_LOGGER), self.assertRaisesRegex(IntegrationHTTPError, "HTTP 400"):
            connector._request("GET", "/orders")
        self.assertTrue(self.env["integration.error"].search([("connector_id", "=", connector.id)]))
        self.assertEqual(CapturingTransport.envelopes, [])
        self.assertIsNone(sentry.client_for(""))
