"""Health from traffic: the guide's thresholds at their edges, unknown without requests."""

from datetime import timedelta

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tests.common import BaseCase

from ..core.health import availability, combine, traffic_status
from ..models.integration_connector_state import state_cursor
from .common import IntegrationHubCase, Reply, run_job


class TestTrafficStatus(BaseCase):
    def test_the_guides_thresholds_at_their_edges(self):
        self.assertEqual(traffic_status(100, 95.0, 100, 95.0)[0], "ok", "95% is OK")
        self.assertEqual(traffic_status(100, 94.9, 100, 94.9)[0], "warning", "just under 95% is a warning")
        self.assertEqual(traffic_status(100, 80.0, 100, 80.0)[0], "warning", "80% is still a warning")
        self.assertEqual(traffic_status(100, 79.9, 100, 79.9)[0], "error", "under 80% is an error")

    def test_no_request_in_24_hours_is_unknown(self):
        self.assertEqual(traffic_status(0, 0.0, 0, 0.0), ("unknown", "unknown: no request in the last 24 hours"))

    def test_the_last_hour_decides_when_it_had_requests_else_the_day(self):
        status, reason = traffic_status(50, 62.0, 1000, 97.0)
        self.assertEqual(status, "error")
        self.assertEqual(reason, "error: 62% success over the last hour (50 requests; below the 80% threshold)")
        status, reason = traffic_status(0, 0.0, 1000, 97.5)
        self.assertEqual(status, "ok")
        self.assertEqual(
            reason, "ok: 97.5% success over the last 24 hours (1000 requests; at or above the 95% threshold)"
        )

    def test_thresholds_are_the_connectors(self):
        self.assertEqual(traffic_status(10, 90.0, 10, 90.0, ok_threshold=99.0, warning_threshold=95.0)[0], "error")
        self.assertEqual(traffic_status(10, 90.0, 10, 90.0, ok_threshold=90.0, warning_threshold=50.0)[0], "ok")


class TestHealthRules(BaseCase):
    def test_the_worst_part_decides_and_unknown_only_when_nothing_is_known(self):
        self.assertEqual(combine([("ok", "a"), ("warning", "b"), ("error", "c"), ("error", "d")]), ("error", "c; d"))
        self.assertEqual(combine([("unknown", "no requests"), ("ok", "probes fine")]), ("ok", "probes fine"))
        self.assertEqual(combine([("ok", "traffic fine"), ("ok", "probes fine")]), ("ok", "traffic fine"))
        self.assertEqual(
            combine(
                [
                    ("unknown", "unknown: no request in the last 24 hours"),
                    ("unknown", "unknown: no health probe in the last 24 hours"),
                ]
            ),
            ("unknown", "unknown: no request and no health probe in the last 24 hours"),
        )

    def test_availability_counts_observed_hours_only(self):
        self.assertIsNone(availability([]))
        self.assertIsNone(availability([None, None]))
        self.assertEqual(availability([0.0, 0.0, 1.0, None]), 100.0 * 2 / 3, "one hour down out of three observed")
        self.assertEqual(availability([0.5, 0.0]), 75.0)


@tagged("post_install", "-at_install")
class TestConnectorHealth(IntegrationHubCase):
    def test_a_connector_without_traffic_is_unknown_then_its_calls_decide(self):
        connector = self._create_connector(retry_max_attempts=1)
        self.assertEqual(connector.traffic_status, "unknown")
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        for _i in range(9):
            connector._request("GET", "/orders")
        connector.invalidate_recordset()
        self.assertEqual(connector.traffic_status, "ok")
        self.assertIn("100% success over the last hour (9 requests", connector.traffic_reason)
        self.server.respond_with(lambda request: Reply(404, {"error": "missing"}))
        connector._request("GET", "/orders", raise_for_status=False)
        connector.invalidate_recordset()
        self.assertEqual((connector.calls_1h, connector.traffic_status), (10, "warning"), "90%: a warning")
        connector.health_warning_threshold = 95.0
        connector.invalidate_recordset()
        self.assertEqual(connector.traffic_status, "error", "under the connector's own threshold")

    def test_thresholds_must_be_ordered(self):
        connector = self._create_connector()
        with self.assertRaisesRegex(ValidationError, "Warning From"):
            connector.write({"health_ok_threshold": 70.0, "health_warning_threshold": 80.0})

    def test_the_health_check_stores_the_status_and_reports_each_change_once(self):
        connector = self._create_connector(retry_max_attempts=1)
        changes = []
        original = type(connector)._health_changed

        def spy(record, previous):
            changes.append((previous, record.health_status))
            return original(record, previous)

        self.patch(type(connector), "_health_changed", spy)
        self.server.respond_with(lambda request: Reply(500, {"error": "down"}))
        for _i in range(3):
            connector._request("GET", "/orders", raise_for_status=False)
        connector.invalidate_recordset()
        connector._refresh_health()
        self.assertEqual(connector.health_status, "error")
        self.assertIn("0% success over the last hour", connector.health_reason)
        self.assertTrue(connector.health_since)
        connector._refresh_health()
        self.assertEqual(changes, [("unknown", "error")], "an unchanged status is not a change")

    def test_failed_and_stuck_jobs_are_counted_per_connector_whatever_the_jobs_target(self):
        connector = self._create_connector()
        other = self._create_connector(code="other-api")
        Job = self.env["queue.job"]
        failed = Job.search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        failed.write({"state": "failed"})
        stuck = Job.search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        stuck.write({"state": "started", "date_started": "2020-01-01 00:00:00"})
        fresh = Job.search([("uuid", "=", other._enqueue_call("GET", "/orders").uuid)])
        fresh.write({"state": "started", "date_started": fields.Datetime.now()})
        figures = Job._integration_job_figures(stuck_minutes=30)
        self.assertEqual(figures[connector.id]["failed"], 1)
        self.assertEqual(figures[connector.id]["stuck"], 1)
        self.assertEqual(str(figures[connector.id]["oldest_stuck_at"]), "2020-01-01 00:00:00")
        self.assertEqual((figures[other.id]["failed"], figures[other.id]["stuck"]), (0, 0), "started a moment ago")


@tagged("post_install", "-at_install")
class TestHealthProbes(IntegrationHubCase):
    def test_a_connector_nobody_calls_gets_its_health_from_probes(self):
        connector = self._create_connector()
        self.server.respond_with(lambda request: Reply(200, {"status": "up"}))
        self.assertEqual(connector._health_now()[0], "unknown")
        probe = connector._probe()
        self.assertTrue(probe.is_ok and probe.is_up)
        self.assertEqual((probe.status_code, len(self.server.requests_to("/api/health"))), (200, 1))
        connector.invalidate_recordset()
        self.assertEqual(connector.calls_24h, 0, "probes stay out of the call metrics")
        status, reason = connector._health_now()
        self.assertEqual(status, "ok")
        self.assertIn("100% success of health probes over the last hour (1 health probe;", reason)
        self.assertTrue(connector.last_success_at, "a good probe is a success")

    def test_failing_probes_make_an_error_without_opening_the_breaker(self):
        connector = self._create_connector(circuit_threshold=2)
        self.server.respond_with(lambda request: Reply(503, {"error": "maintenance"}))
        for _i in range(4):
            probe = connector._probe()
            self.assertEqual((probe.is_ok, probe.is_up, probe.status_code), (False, False, 503))
        connector.invalidate_recordset()
        self.assertEqual(connector.circuit_state, "closed", "probes never open the circuit")
        self.assertEqual(len(self.server.requests_to("/api/health")), 4)
        connector._refresh_health()
        self.assertEqual(connector.health_status, "error")
        self.assertIn("0% success of health probes", connector.health_reason)

    def test_a_probe_that_cannot_leave_odoo_is_an_error_but_not_downtime(self):
        connector = self._create_connector(auth_type="api_key")  # its key never set
        probe = connector._probe()
        self.assertEqual((probe.is_ok, probe.is_sent), (False, False))
        self.assertIn("is not set", probe.message)
        self.assertEqual(self.server.requests_to("/api/health"), [], "nothing was sent")
        self.assertEqual(connector._health_now()[0], "error", "the operator sees it")
        self.assertIsNone(connector._sla_figures()["availability_24h"], "the API was not found down")

    def test_a_probe_takes_a_free_rate_slot_or_waits_for_the_next_interval(self):
        connector = self._create_connector(rate_limit=1, rate_limit_period="minute", rate_limit_burst=1)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        connector._request("GET", "/orders")  # the only slot of this minute
        self.assertFalse(connector._probe(), "no slot free: the probe is skipped, not sent")
        self.assertEqual(self.server.requests_to("/api/health"), [])
        self.assertFalse(connector.last_probe_at, "still due: the cron queues it again next minute")

    def test_the_probe_cron_queues_one_probe_job_per_due_connector_at_its_interval(self):
        Connector = self.env["integration.connector"]
        Job = self.env["queue.job"]
        Connector.search([]).write({"probe_interval": 0})
        every_5 = self._create_connector(probe_interval=5)
        never = self._create_connector(probe_interval=0)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))

        def probe_jobs():
            return Job.search([("method_name", "=", "_job_probe"), ("state", "=", "pending")])

        Connector._cron_probe_due()
        Connector._cron_probe_due()
        jobs = probe_jobs()
        self.assertEqual(len(jobs), 1, "one waiting probe job per connector (its identity key)")
        self.assertEqual(jobs.records, every_5)
        self.assertIsNone(run_job(self.env, jobs.uuid))
        self.assertEqual((every_5.probe_count, never.probe_count), (1, 0))
        self.assertTrue(every_5.last_probe_ok)
        Connector._cron_probe_due()
        self.assertFalse(probe_jobs(), "probed a moment ago: not due")
        self.env.cr.execute(
            "UPDATE integration_connector_probe SET checked_at = checked_at - interval '5 minutes' "
            "WHERE connector_id = %s",
            [every_5.id],
        )
        Connector._cron_probe_due()
        self.assertEqual(probe_jobs().records, every_5, "due again after its interval")

    def test_old_probes_are_purged_by_retention(self):
        connector = self._create_connector(probe_retention_days=7)
        Probe = self.env["integration.connector.probe"]
        now = fields.Datetime.now()
        old, recent = (
            Probe.create({"connector_id": connector.id, "checked_at": now - timedelta(days=days), "is_ok": True})
            for days in (8, 6)
        )
        Probe.flush_model()
        Probe._cron_purge()
        self.assertFalse(old.exists())
        self.assertTrue(recent.exists())


@tagged("post_install", "-at_install")
class TestHealthFigures(IntegrationHubCase):
    def _bucket(self, connector, hours_ago, klass="read", calls=0, ok=0, retryable_error=0, histogram=None):
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                """INSERT INTO integration_connector_metric
                       (connector_id, hour, method_class, calls, ok, retryable_error, histogram)
                   VALUES (%s, date_trunc('hour', now() AT TIME ZONE 'UTC') - make_interval(hours => %s), %s,
                           %s, %s, %s, %s)""",
                [connector.id, hours_ago, klass, calls, ok, retryable_error, histogram or [0] * 12],
            )

    def test_an_open_circuit_and_stuck_jobs_show_in_the_status(self):
        connector = self._create_connector(circuit_threshold=2, retry_max_attempts=1)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        for _i in range(20):
            connector._request("GET", "/orders")
        self.assertEqual(connector._health_now()[0], "ok")
        job = self.env["queue.job"].search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        job.write({"state": "enqueued", "date_enqueued": fields.Datetime.now() - timedelta(hours=2)})
        status, reason = connector._health_now()
        self.assertEqual(status, "warning")
        self.assertIn("1 job(s) started or enqueued for over 30 min", reason)
        self.server.respond_with(lambda request: Reply(502, {"error": "bad gateway"}))
        for _i in range(2):
            connector._request("GET", "/orders", raise_for_status=False)
        status, reason = connector._health_now()
        self.assertEqual(status, "error", reason)
        self.assertIn("circuit open since", reason)

    def test_reads_and_writes_have_their_own_latency_and_the_last_success_and_error_are_kept(self):
        connector = self._create_connector(retry_max_attempts=1)
        self.server.respond_with(lambda request: Reply(200 if request.method == "GET" else 422, {"ok": True}))
        connector._request("GET", "/orders")
        connector._request("POST", "/orders", json={"a": 1}, raise_for_status=False)
        connector.invalidate_recordset()
        self.assertTrue(connector.last_success_at)
        self.assertTrue(connector.last_failure_at, "a 4xx answer is the last error")
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                "SELECT method_class, calls FROM integration_connector_metric WHERE connector_id = %s ORDER BY 1",
                [connector.id],
            )
            self.assertEqual(cr.fetchall(), [("read", 1), ("write", 1)])
        self.assertLessEqual(connector.latency_p95_read_24h, 1000)
        self.assertGreater(connector.latency_p95_write_24h, 0)

    def test_the_sla_compares_each_window_with_the_targets(self):
        connector = self._create_connector(sla_availability_target=99.5, sla_p95_read_ms=100, sla_p95_write_ms=5000)
        # Yesterday's hours: 3 with calls, one of them with half its calls failed by the remote.
        self._bucket(connector, 30, calls=10, ok=10, histogram=[10] + [0] * 11)
        self._bucket(connector, 31, calls=10, ok=5, retryable_error=5, histogram=[10] + [0] * 11)
        self._bucket(connector, 32, calls=10, ok=10, histogram=[10] + [0] * 11)
        # This hour: reads slower than the target, one write.
        self._bucket(connector, 0, calls=20, ok=20, histogram=[0] * 6 + [20] + [0] * 5)
        self._bucket(connector, 0, klass="write", calls=1, ok=1, histogram=[0] * 7 + [1] + [0] * 4)
        # Probes two days ago: all down for that hour.
        Probe = self.env["integration.connector.probe"]
        two_days_ago = (fields.Datetime.now() - timedelta(days=2)).replace(minute=10)  # both in one hour
        for minutes in (0, 5):
            Probe.create(
                {"connector_id": connector.id, "checked_at": two_days_ago + timedelta(minutes=minutes), "is_up": False}
            )
        figures = connector._sla_figures()
        self.assertEqual(figures["availability_24h"], 100.0, "the last 24 h: one hour, all good")
        self.assertAlmostEqual(figures["availability_7d"], 100.0 * (1 - (0.5 + 1.0) / 5), places=6)
        self.assertEqual(figures["p95_read_24h"], 500, "the 250-500 ms bucket")
        self.assertEqual(figures["p95_read_7d"], 500)
        self.assertEqual(figures["p95_write_24h"], 1000)
        table = str(connector.sla_summary)
        self.assertIn("70%", table)
        self.assertIn("text-danger", table, "missed targets are red")
        self.assertIn("text-success", table, "the write latency target is met")

    def test_the_purge_folds_old_hours_into_an_archive_row_so_totals_never_go_down(self):
        connector = self._create_connector()
        Metric = self.env["integration.connector.metric"]

        def totals():
            with state_cursor(self.env.cr.dbname) as cr:
                cr.execute(
                    """SELECT COUNT(*), SUM(calls), SUM(ok), SUM(retryable_error), SUM(histogram[1]),
                              SUM(histogram[12]), MAX(last_ok_at)
                         FROM integration_connector_metric WHERE connector_id = %s""",
                    [connector.id],
                )
                return cr.fetchone()

        self._bucket(connector, 24 * 100, calls=10, ok=8, retryable_error=2, histogram=[10] + [0] * 11)
        self._bucket(connector, 24 * 95, calls=5, ok=5, histogram=[0] * 11 + [5])
        self._bucket(connector, 1, calls=7, ok=7, histogram=[7] + [0] * 11)
        before = totals()
        Metric._cron_purge()
        after = totals()
        self.assertEqual(after[0], 2, "the two old hours became one archive row; the recent one stays")
        self.assertEqual(after[1:], before[1:], "no count lost")
        self._bucket(connector, 24 * 120, calls=3, ok=3, histogram=[3] + [0] * 11)
        Metric._cron_purge()
        self.assertEqual(totals()[:3], (2, 25, 23), "a later purge adds to the archive row")
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                "SELECT hour, histogram FROM integration_connector_metric WHERE connector_id = %s ORDER BY hour",
                [connector.id],
            )
            archive = cr.fetchone()
        self.assertEqual(str(archive[0]), "1970-01-01 00:00:00")
        self.assertEqual(archive[1], [13] + [0] * 10 + [5])
        self.assertEqual(connector._sla_figures()["availability_30d"], 100.0, "the archive is not in the SLA")
