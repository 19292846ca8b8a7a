"""Health from traffic: the guide's thresholds at their edges, unknown without requests."""

from odoo import fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tests.common import BaseCase

from ..core.health import traffic_status
from .common import IntegrationHubCase, Reply


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
        self.assertTrue(connector.health_checked_at)
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
