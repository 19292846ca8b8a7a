"""The call path: classification, retries in jobs, error log, breaker, rate limit, SSRF, metrics."""

import json
import socket
import threading
import time
from unittest.mock import patch

from odoo.exceptions import UserError
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from ..const import CHANNEL_OUTBOUND
from ..core import backoff, transport
from ..core.exceptions import (
    IntegrationCircuitOpenError,
    IntegrationConfigError,
    IntegrationConnectionError,
    IntegrationHTTPError,
    IntegrationRateLimitedError,
    IntegrationTimeLimitError,
)
from ..models.integration_connector_metric import flush_counts
from ..models.integration_connector_state import state_cursor
from .common import CONNECTOR_LOGGER, CommittedConnector, IntegrationHubCase, LocalServer, Reply, run_job, run_workers


@tagged("post_install", "-at_install")
class TestClassification(IntegrationHubCase):
    def test_statuses(self):
        connector = self._create_connector(circuit_threshold=0)
        expectations = {200: None, 201: None, 204: None, 304: None}
        expectations.update({s: True for s in (408, 425, 429, 500, 502, 503, 504)})
        expectations.update({s: False for s in (400, 401, 403, 404, 409, 422, 501)})
        for status, retryable in expectations.items():
            self.server.reset(lambda request, status=status: Reply(status, {"status": status}))
            with self.subTest(status=status), mute_logger(CONNECTOR_LOGGER):
                if retryable is None:
                    self.assertEqual(connector._request("GET", "/s").status_code, status)
                    continue
                with self.assertRaises(IntegrationHTTPError) as caught:
                    connector._request("GET", "/s", log_errors=False)
                self.assertEqual(caught.exception.status_code, status)
                self.assertEqual(caught.exception.retryable, retryable)

    def test_connection_reset_is_retryable(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        stop = threading.Event()

        def reset_everything():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _addr = listener.accept()
                except OSError:
                    continue
                conn.recv(1024)
                # SO_LINGER 0: close with RST instead of FIN.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()

        thread = threading.Thread(target=reset_everything, daemon=True)
        thread.start()
        self.addCleanup(listener.close)
        self.addCleanup(stop.set)
        connector = self._create_connector(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}")
        with self.assertRaises(IntegrationConnectionError) as caught:
            connector._request("GET", "/", log_errors=False)
        self.assertTrue(caught.exception.retryable)

    def test_redirect_not_followed(self):
        self.server.respond_with(lambda request: Reply(302, "", {"Location": "http://10.0.0.1/admin"}))
        connector = self._create_connector()
        with self.assertRaisesRegex(IntegrationHTTPError, "redirected to http://10.0.0.1/admin"):
            connector._request("GET", "/moved", log_errors=False)
        self.assertEqual(len(self.server.received), 1, "the redirect was not followed anywhere")
        self.assertEqual(connector._request("GET", "/moved", raise_for_status=False).status_code, 302)


@tagged("post_install", "-at_install")
class TestJobRetries(IntegrationHubCase):
    def _enqueue(self, connector, path="/orders"):
        delayable = connector._enqueue_call("POST", path, json={"order": "SO042"}, operation="Push order")
        return delayable.uuid

    def test_503_rescheduled_then_failed_with_one_grouped_error_and_retry(self):
        self.server.respond_with(lambda request: Reply(503, "overloaded"))
        connector = self._create_connector(
            retry_max_attempts=3, retry_backoff_base=2.0, retry_backoff_cap=100.0, circuit_threshold=0
        )
        uuid = self._enqueue(connector)
        job_record = self.env["queue.job"].search([("uuid", "=", uuid)])
        self.assertEqual(job_record.channel, CHANNEL_OUTBOUND)
        delays = []
        with patch.object(backoff, "jitter_random") as rng, mute_logger(CONNECTOR_LOGGER):
            rng.uniform.side_effect = lambda low, high: high  # the ceiling of each jitter range
            for _attempt in range(2):
                outcome = run_job(self.env, uuid)
                self.assertIsInstance(outcome, RetryableJobError)
                delays.append(outcome.seconds)
                self.assertEqual(job_record.state, "pending")
            self.assertEqual(self.env["integration.error"].search_count([("connector_id", "=", connector.id)]), 0)
            outcome = run_job(self.env, uuid)
        self.assertEqual(delays, [2, 4], "full jitter ceilings: base * 2^attempt")
        self.assertIsInstance(outcome, IntegrationHTTPError)
        self.assertIn("gave up after 3 attempts", str(outcome))
        self.assertEqual(job_record.state, "failed")
        self.assertEqual(len(self.server.received), 3)
        error = self.env["integration.error"].search([("connector_id", "=", connector.id)])
        self.assertEqual(len(error), 1)
        self.assertEqual((error.status_code, error.operation, error.state), (503, "Push order", "new"))
        self.assertTrue(error.is_retryable)
        self.assertEqual(error.queue_job_id, job_record)
        self.assertIn("overloaded", error.response_excerpt)
        self.assertTrue(error.can_retry)

        # Retry, as an operator, once the partner is back.
        self.server.respond_with(lambda request: Reply(201, {"id": 7}))
        error.with_user(self.operator).action_retry()
        self.assertEqual(job_record.state, "pending")
        self.assertEqual(error.state, "resolved")
        self.assertIsNone(run_job(self.env, uuid))
        self.assertEqual(job_record.state, "done")
        self.assertEqual(self.server.received[-1].json(), {"order": "SO042"})

    def test_same_failure_is_grouped(self):
        self.server.respond_with(lambda request: Reply(422, {"error": "sku unknown"}))
        connector = self._create_connector()
        for _i in range(3):
            uuid = self._enqueue(connector)
            with mute_logger(CONNECTOR_LOGGER):
                outcome = run_job(self.env, uuid)
            self.assertIsInstance(outcome, IntegrationHTTPError, "a 4xx is not retried")
        errors = self.env["integration.error"].search([("connector_id", "=", connector.id)])
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors.count, 3)
        self.assertFalse(errors.is_retryable)
        self.assertEqual(len(self.server.received), 3)

    def test_retry_after_seconds_and_date(self):
        connector = self._create_connector(retry_max_attempts=5, circuit_threshold=0, rate_limit_max_wait=0)
        for header, expected in (("7", 7), ("DATE", 30)):
            value = header
            if header == "DATE":
                value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
            self.server.reset(lambda request, value=value: Reply(429, "slow down", {"Retry-After": value}))
            uuid = self._enqueue(connector)
            outcome = run_job(self.env, uuid)
            self.assertIsInstance(outcome, RetryableJobError)
            self.assertTrue(expected - 2 <= outcome.seconds <= expected, (header, outcome.seconds))
            connector.action_reset_circuit()  # lift the block the 429 set, for the next round

    def test_429_blocks_every_caller_until_retry_after(self):
        self.server.respond_with(lambda request: Reply(429, "", {"Retry-After": "30"}))
        connector = self._create_connector(circuit_threshold=0, rate_limit_max_wait=0.5)
        with self.assertRaises(IntegrationHTTPError):
            connector._request("GET", "/busy", log_errors=False)
        with self.assertRaises(IntegrationRateLimitedError) as caught:
            connector._request("GET", "/busy")
        self.assertGreater(caught.exception.retry_in, 25)
        self.assertEqual(len(self.server.received), 1, "held back: nothing sent")
        # Inside a job the block reschedules without spending an attempt.
        uuid = self._enqueue(connector, "/busy")
        outcome = run_job(self.env, uuid)
        self.assertIsInstance(outcome, RetryableJobError)
        self.assertTrue(outcome.ignore_retry)
        self.assertEqual(self.env["queue.job"].search([("uuid", "=", uuid)]).retry, 0)

    def test_no_secret_in_job_arguments_or_error(self):
        self.server.respond_with(lambda request: Reply(400, {"echo": request.headers.get("Authorization")}))
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-Job-Secret-77")
        uuid = self._enqueue(connector)
        self.env.flush_all()
        self.env.cr.execute("SELECT row_to_json(j)::text FROM queue_job j WHERE uuid = %s", [uuid])
        self.assertNotIn("bt-Job-Secret-77", self.env.cr.fetchone()[0])
        with mute_logger(CONNECTOR_LOGGER):
            run_job(self.env, uuid)
        self.assertEqual(self.server.received[0].headers["Authorization"], "Bearer bt-Job-Secret-77")
        self.env.flush_all()
        self.env.cr.execute("SELECT row_to_json(j)::text FROM queue_job j WHERE uuid = %s", [uuid])
        self.assertNotIn("bt-Job-Secret-77", self.env.cr.fetchone()[0])
        self.env.cr.execute(
            "SELECT string_agg(row_to_json(e)::text, ' ') FROM integration_error e WHERE connector_id = %s",
            [connector.id],
        )
        stored = self.env.cr.fetchone()[0]
        self.assertIn("HTTP 400", stored)
        self.assertNotIn("bt-Job-Secret-77", stored)

    def test_button_errors_are_logged_and_clear(self):
        self.server.respond_with(lambda request: Reply(404, {"message": "no such order"}))
        connector = self._create_connector()
        with mute_logger(CONNECTOR_LOGGER), self.assertRaisesRegex(IntegrationHTTPError, "HTTP 404.*no such order"):
            connector._request("GET", "/orders/9", related=self.manager)
        error = self.env["integration.error"].search([("connector_id", "=", connector.id)])
        self.assertEqual((error.res_model, error.res_id), ("res.users", self.manager.id))
        self.assertFalse(error.can_retry)
        with self.assertRaises(UserError):
            error.action_retry()


@tagged("post_install", "-at_install")
class TestCircuitBreaker(IntegrationHubCase):
    def test_open_fail_fast_half_open_close(self):
        self.server.respond_with(lambda request: Reply(503, "down"))
        connector = self._create_connector(circuit_threshold=3, circuit_reset_timeout=1.0)
        for _i in range(3):
            with self.assertRaises(IntegrationHTTPError):
                connector._request("GET", "/x", log_errors=False)
        self.assertEqual(connector.circuit_state, "open")
        self.assertIn("HTTP 503", connector.circuit_last_error)
        self.assertTrue(connector.circuit_opened_at)
        with self.assertRaises(IntegrationCircuitOpenError) as caught:
            connector._request("GET", "/x")
        self.assertTrue(0 < caught.exception.retry_in <= 1.0)
        self.assertEqual(len(self.server.received), 3, "fail fast: the server received nothing")
        time.sleep(1.1)
        with self.assertRaises(IntegrationHTTPError):  # the probe fails: open again
            connector._request("GET", "/x", log_errors=False)
        connector.invalidate_recordset(["circuit_state"])
        self.assertEqual(connector.circuit_state, "open")
        self.assertEqual(len(self.server.received), 4)
        time.sleep(1.1)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        self.assertEqual(connector._request("GET", "/x").status_code, 200)
        connector.invalidate_recordset(["circuit_state", "circuit_failures"])
        self.assertEqual((connector.circuit_state, connector.circuit_failures), ("closed", 0))

    def test_client_errors_do_not_open(self):
        self.server.respond_with(lambda request: Reply(404, "nope"))
        connector = self._create_connector(circuit_threshold=2)
        for _i in range(4):
            with self.assertRaises(IntegrationHTTPError):
                connector._request("GET", "/x", log_errors=False)
        self.assertEqual(connector.circuit_state, "closed")

    def test_reset_button(self):
        self.server.respond_with(lambda request: Reply(500, "boom"))
        connector = self._create_connector(circuit_threshold=1, circuit_reset_timeout=600)
        with self.assertRaises(IntegrationHTTPError):
            connector._request("GET", "/x", log_errors=False)
        self.assertEqual(connector.circuit_state, "open")
        connector.with_user(self.manager).action_reset_circuit()
        connector.invalidate_recordset(["circuit_state"])
        self.assertEqual(connector.circuit_state, "closed")
        self.server.respond_with(lambda request: Reply(200, {}))
        self.assertEqual(connector._request("GET", "/x").status_code, 200)


@tagged("post_install", "-at_install")
class TestSharedAcrossProcesses(IntegrationHubCase):
    """Two OS processes, each with its own Odoo registry, on one database."""

    def _committed(self, **values):
        vals = {
            "name": "Shared",
            "code": f"shared-{time.time_ns()}",
            "base_url": self.server.url + "/api",
            "allow_http": True,
            "allow_private_network": True,
        }
        vals.update(values)
        connector = CommittedConnector(self.env.cr.dbname, vals)
        self.addCleanup(connector.delete)
        return connector

    def test_rate_limit_held_across_two_processes(self):
        rate = 20
        connector = self._committed(rate_limit=rate, rate_limit_period="second", rate_limit_burst=1)
        results = run_workers(self.env.cr.dbname, connector.id, calls=40, count=2, path="/ping")
        outcomes = [outcome for result in results for _sent, outcome in result["calls"]]
        self.assertEqual(outcomes, [200] * 80)
        arrivals = sorted(r.received_at for r in self.server.received)
        self.assertEqual(len(arrivals), 80)
        observed = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        busiest_second = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
        self.assertLessEqual(busiest_second, rate, f"never above the rate (observed {observed:.2f}/s)")
        self.assertGreaterEqual(observed, 0.9 * rate, "at least 90% of the budget used")
        self.assertLessEqual(observed, rate)

    def test_circuit_seen_from_two_processes(self):
        self.server.respond_with(lambda request: Reply(503, "down"))
        # Long enough for a second process to start (load its registry) while it is open.
        reset_timeout = 30.0
        connector = self._committed(circuit_threshold=3, circuit_reset_timeout=reset_timeout)
        (first,) = run_workers(self.env.cr.dbname, connector.id, calls=3, path="/x", start_in=0)
        self.assertEqual([outcome for _sent, outcome in first["calls"]], [503, 503, 503])
        state, failures, opened_at = connector.read_state()
        self.assertEqual((state, failures), ("open", 3))
        # Another process: fails fast, sends nothing.
        (second,) = run_workers(self.env.cr.dbname, connector.id, calls=2, path="/x", start_in=0)
        self.assertLess(time.time(), opened_at + reset_timeout, "the second process ran while it was open")
        self.assertEqual([o for _s, o in second["calls"]], ["IntegrationCircuitOpenError"] * 2)
        self.assertEqual(len(self.server.received), 3)
        # After the reset timeout, one process probes, succeeds and closes it for all.
        time.sleep(max(0.0, opened_at + reset_timeout + 0.2 - time.time()))
        self.server.respond_with(lambda request: Reply(200, {}))
        (third,) = run_workers(self.env.cr.dbname, connector.id, calls=1, path="/x", start_in=0)
        self.assertEqual([o for _s, o in third["calls"]], [200])
        self.assertEqual(connector.read_state()[:2], ("closed", 0))


@tagged("post_install", "-at_install")
class TestUrlSafetyOnConnector(IntegrationHubCase):
    def test_ssrf_matrix(self):
        port = self.server.httpd.server_address[1]
        loopback_forms = [
            f"http://127.0.0.1:{port}",
            f"http://[::ffff:127.0.0.1]:{port}",
            f"http://2130706433:{port}",
            f"http://0x7f000001:{port}",
            f"http://localhost:{port}",
        ]
        for base_url in loopback_forms:
            with self.subTest(base_url=base_url):
                connector = self._create_connector(base_url=base_url, allow_private_network=False)
                with self.assertRaisesRegex(IntegrationConfigError, "refused: .*loopback"):
                    connector._request("GET", "/x", log_errors=False)
                connector.allow_private_network = True
                self.assertEqual(connector._request("GET", "/x").status_code, 200)
        self.assertEqual(len(self.server.received), len(loopback_forms), "only the allowed calls arrived")
        for base_url, problem in (
            ("http://10.0.0.7", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[fd00::7]", "unique-local"),
            ("http://100.64.0.7", "carrier-grade NAT"),
        ):
            connector = self._create_connector(base_url=base_url, allow_private_network=False)
            with self.subTest(base_url=base_url), self.assertRaisesRegex(IntegrationConfigError, problem):
                connector._request("GET", "/x", log_errors=False)

    def test_ipv6_loopback(self):
        server6 = LocalServer(family=socket.AF_INET6)
        self.addCleanup(server6.stop)
        connector = self._create_connector(base_url=server6.url, allow_private_network=False)
        with self.assertRaisesRegex(IntegrationConfigError, "loopback"):
            connector._request("GET", "/x", log_errors=False)
        connector.allow_private_network = True
        self.assertEqual(connector._request("GET", "/x").status_code, 200)

    def test_path_cannot_change_host(self):
        connector = self._create_connector(auth_type="bearer", bearer_token="bt-stay-home")
        for path in (
            " //evil.example/x",
            "\t//evil.example/x",
            "\x00//evil.example",
            " https://evil.example/x",
            "https://evil.example/x",
            "http://localhost:1/x",
        ):
            with self.subTest(path=path), self.assertRaises(IntegrationConfigError):
                connector._request("GET", path, log_errors=False)
        self.assertEqual(self.server.received, [])
        # Leading slashes are a path, never a host: it stays on the connector's server.
        self.assertEqual(connector._request("GET", "//evil.example/x").status_code, 200)
        self.assertEqual(connector._request("GET", "/fine/../still-here").status_code, 200)
        self.assertEqual([r.path for r in self.server.received], ["/api/evil.example/x", "/api/still-here"])

    def test_https_required_unless_allowed(self):
        connector = self._create_connector(allow_http=False)
        with self.assertRaisesRegex(IntegrationConfigError, "plain http is not allowed"):
            connector._request("GET", "/x", log_errors=False)
        self.assertEqual(self.server.received, [])

    def test_token_url_checked_too(self):
        connector = self._create_connector(
            auth_type="oauth2",
            oauth2_token_url="http://169.254.169.254/token",
            oauth2_client_id="c",
            oauth2_client_secret="s-secret",
            allow_private_network=False,
        )
        connector.base_url = "http://93.184.215.14"  # never reached: the token is fetched first
        with self.assertRaisesRegex(IntegrationConfigError, "link-local"):
            connector._request("GET", "/x", log_errors=False)


@tagged("post_install", "-at_install")
class TestMetricsAndDebug(IntegrationHubCase):
    def test_hourly_metrics(self):
        statuses = iter([200, 200, 200, 503, 404])
        self.server.respond_with(lambda request: Reply(next(statuses), {}))
        connector = self._create_connector(circuit_threshold=0)
        for _i in range(5):
            connector._request("GET", "/m", raise_for_status=False)
        flush_counts()  # successes are counted by a background writer
        with state_cursor(self.env.cr.dbname) as cr:  # committed apart from the test transaction
            cr.execute(
                "SELECT calls, ok, retryable_error, client_error, histogram FROM integration_connector_metric"
                " WHERE connector_id = %s",
                [connector.id],
            )
            rows = cr.fetchall()
        self.assertEqual(len(rows), 1, "one row per connector and hour")
        calls, ok, retryable, client, histogram = rows[0]
        self.assertEqual((calls, ok, retryable, client, sum(histogram)), (5, 3, 1, 1, 5))
        connector.invalidate_recordset()
        self.assertEqual(connector.calls_1h, 5)
        self.assertAlmostEqual(connector.success_rate_1h, 60.0)
        self.assertGreater(connector.latency_p95_1h, 0)
        self.assertEqual(connector.calls_24h, 5)

    def test_debug_switch_records_redacted_calls(self):
        connector = self._create_connector(
            auth_type="api_key", api_key_location="query", api_key_name="token", api_key="ak-Debug-Secret-1"
        )
        connector._request("GET", "/quiet")
        self.assertFalse(self.env["integration.call.log"].search([("connector_id", "=", connector.id)]))
        connector.with_user(self.manager).action_debug_start()
        connector._request("POST", "/loud", json={"sku": "A1"})
        logs = self.env["integration.call.log"].search([("connector_id", "=", connector.id)])
        self.assertEqual(len(logs), 1)
        self.assertEqual((logs.method, logs.status_code), ("POST", 200))
        self.assertIn("token=***", logs.url)
        self.assertIn('"sku": "A1"', logs.request_body)
        everything = json.dumps(logs.read()[0], default=str)
        self.assertNotIn("ak-Debug-Secret-1", everything)
        connector.action_debug_stop()
        connector._request("GET", "/quiet-again")
        self.assertEqual(self.env["integration.call.log"].search_count([("connector_id", "=", connector.id)]), 1)


class TricklingServer:
    """A raw HTTP server on 127.0.0.1 that answers each request a byte at a time, one byte
    every ``interval`` seconds: the status line and headers too (``headers_too``), or only
    the body. Every wait between bytes is far under a read timeout."""

    def __init__(self, interval=0.2, headers_too=False, body=b"x" * 40):
        self.interval = interval
        self.head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
        self.body = body
        self.headers_too = headers_too
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection):
        with connection:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                if not self.headers_too:
                    connection.sendall(self.head)
                for byte in (self.head if self.headers_too else b"") + self.body:
                    time.sleep(self.interval)
                    connection.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what the deadline is for

    def stop(self):
        self.listener.close()


@tagged("post_install", "-at_install")
class TestTotalDeadline(IntegrationHubCase):
    def _trickled(self, **server_options):
        server = TricklingServer(**server_options)
        self.addCleanup(server.stop)
        connector = self._create_connector(base_url=server.url, timeout_read=2, timeout_total=1, retry_max_attempts=1)
        started = time.monotonic()
        with self.assertRaises(IntegrationConnectionError) as caught, mute_logger(CONNECTOR_LOGGER):
            connector._request("GET", "/slow")
        return time.monotonic() - started, str(caught.exception)

    def test_a_body_trickled_a_byte_at_a_time_is_cut_at_the_total_timeout(self):
        elapsed, message = self._trickled()
        self.assertIn("timed out after 1 s (no complete answer within the total timeout)", message)
        # 40 bytes, one every 0.2 s: 8 s without the deadline, each wait under the 2 s read timeout.
        self.assertLess(elapsed, 6, "cut at the deadline, not after the whole trickle")

    def test_headers_trickled_a_byte_at_a_time_are_cut_too(self):
        elapsed, message = self._trickled(headers_too=True)
        self.assertIn("total timeout", message)
        self.assertLess(elapsed, 6)

    def test_the_default_total_is_connect_plus_read_and_a_fast_answer_is_untouched(self):
        connector = self._create_connector(timeout_connect=5, timeout_read=30)
        self.assertEqual(connector._total_timeout((5, 30)), 35)
        connector.timeout_total = 0.3
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        for _i in range(3):
            self.assertEqual(connector._request("GET", "/orders").json(), {"ok": True})
            # Past the deadline of the call that ended: its pooled connection is left alone.
            time.sleep(0.4)
        self.assertEqual(len(self.server.requests_to("/api/orders")), 3)


@tagged("post_install", "-at_install")
class TestJobTimeLimit(IntegrationHubCase):
    def test_a_queued_call_is_cut_at_the_jobs_time_limit_and_retried(self):
        server = TricklingServer(interval=0.3)
        self.addCleanup(server.stop)
        # Total timeout 30 s: only the job's own limit (1 s) can stop this 12 s trickle early.
        connector = self._create_connector(base_url=server.url, timeout_read=5, timeout_total=30, job_time_limit=1)
        job = connector._enqueue_call("GET", "/slow", operation="Read slowly")
        started = time.monotonic()
        with mute_logger(CONNECTOR_LOGGER):
            outcome = run_job(self.env, job.uuid)
        self.assertLess(time.monotonic() - started, 8, "cut at the job's limit, not after the trickle")
        self.assertIsInstance(outcome, RetryableJobError, "retried as after a timeout")
        self.assertIn("the job timed out after 1 s (its time limit) before the answer ended", str(outcome))

    def test_nothing_is_sent_once_the_time_limit_is_spent(self):
        connector = self._create_connector()
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        with transport.time_limit(0.05):
            connector._request("GET", "/orders")  # within the limit
            time.sleep(0.1)
            with self.assertRaisesRegex(IntegrationTimeLimitError, r"timed out after 0\.05 s .*no call sent"):
                connector._request("GET", "/orders")
        self.assertEqual(len(self.server.requests_to("/api/orders")), 1)

    def test_the_default_limits_come_from_the_timeouts(self):
        connector = self._create_connector(timeout_connect=5, timeout_read=30)
        self.assertEqual(connector._job_time_limit(), 140)
        connector.write({"timeout_connect": 1, "timeout_read": 2})
        self.assertEqual(connector._job_time_limit(), 60, "a minute at least")
        connector.job_time_limit = 15
        self.assertEqual(connector._job_time_limit(), 15)
