"""Alerts: opened once for a burst, told by activity, chatter and email (captured by Odoo's
test mail gateway), throttled, re-notified, resolved on recovery; the escalation triggers."""

from datetime import timedelta
from unittest.mock import patch

from freezegun import freeze_time

from odoo import Command, fields
from odoo.exceptions import AccessError
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.mail.tests.common import MockEmail

from ..core import backoff
from ..models.integration_connector_metric import flush_counts
from ..models.integration_connector_state import state_cursor
from .common import CONNECTOR_LOGGER, HEALTH_LOGGER, IntegrationHubCase, Reply, run_job

SECRET = "sk_live_alerts_DO_NOT_LEAK_4242"
ACTIVITY_TYPE = "integration_hub.mail_activity_type_integration_alert"


@tagged("post_install", "-at_install")
class TestAlerts(IntegrationHubCase, MockEmail):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.ops = cls.env["res.partner"].create({"name": "Ops Team", "email": "ops@example.com"})

    def _connector(self, **values):
        vals = {
            "name": "Orders API",
            "retry_max_attempts": 1,
            "circuit_threshold": 0,
            "alert_user_id": self.operator.id,
            "alert_partner_ids": [Command.set(self.ops.ids)],
        }
        vals.update(values)
        return self._create_connector(**vals)

    def _set_traffic(self, connector, calls, ok):
        """The last hour of ``connector`` as ``calls`` requests of which ``ok`` succeeded
        (the metric buckets, written as the call path writes them: shared-state connection)."""
        flush_counts()  # no count of an earlier call lands between the DELETE and the INSERT
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute("DELETE FROM integration_connector_metric WHERE connector_id = %s", [connector.id])
            cr.execute(
                """INSERT INTO integration_connector_metric (connector_id, hour, calls, ok, retryable_error)
                   VALUES (%s, date_trunc('hour', now() AT TIME ZONE 'UTC'), %s, %s, %s)""",
                [connector.id, calls, ok, calls - ok],
            )
        connector.invalidate_recordset()

    def _alerts(self, connector, kind=None):
        domain = [("connector_id", "=", connector.id)] + ([("kind", "=", kind)] if kind else [])
        return self.env["integration.alert"].search(domain)

    def _mails(self, connector, what):
        return self.env["mail.mail"].search([("subject", "=", f"Integration {connector.name}: {what}")])

    def _refresh(self, connector, times=1):
        for _i in range(times):
            connector._refresh_health()
            connector.invalidate_recordset()

    def test_an_alert_opens_once_for_a_burst_of_failures_and_tells_each_channel_once(self):
        connector = self._connector()
        self.server.respond_with(lambda request: Reply(500, {"error": "internal"}))
        for _i in range(20):
            connector._request("GET", "/orders", raise_for_status=False)
        self._refresh(connector, times=4)

        alert = self._alerts(connector)
        self.assertEqual(len(alert), 1, "one alert for the burst, whatever the number of checks")
        self.assertEqual((alert.kind, alert.severity, alert.state), ("status", "error", "open"))
        self.assertEqual(alert.reason, connector.health_reason)
        self.assertEqual(alert.name, f"Orders API: {connector.health_reason}")
        self.assertIn("0% success over the last hour (20 requests", alert.reason)
        self.assertEqual((alert.notify_count, alert.last_notice), (1, "failure"))
        self.assertEqual(len(self._mails(connector, "FAILURE")), 1, "one email")
        activities = alert.activity_ids
        self.assertEqual(len(activities), 1, "one activity")
        self.assertEqual(activities.user_id, self.operator)
        self.assertEqual(activities.activity_type_id, self.env.ref(ACTIVITY_TYPE))
        self.assertEqual(connector.alert_open_count, 1)
        self.assertTrue(
            any("alert opened" in (message.body or "") for message in connector.message_ids),
            "a note on the connector's chatter",
        )

    def test_the_email_carries_the_connector_type_time_reason_and_action_through_the_mail_queue(self):
        connector = self._connector()
        self._set_traffic(connector, 50, 31)
        self._refresh(connector)
        alert = self._alerts(connector)
        queued = self._mails(connector, "FAILURE")
        self.assertEqual(queued.state, "outgoing", "queued in mail.mail, not sent inline")
        self.assertEqual((queued.model, queued.res_id), ("integration.alert", alert.id))
        with self.mock_mail_gateway():
            queued.send()
        self.assertEqual(len(self._mails), 1)
        email = self._mails[0]
        self.assertEqual(email["subject"], "Integration Orders API: FAILURE")
        self.assertEqual(email["email_to"], ['"Ops Team" <ops@example.com>'])
        body = email["body"]
        opened = fields.Datetime.to_string(alert.opened_at)
        for expected in (
            "Orders API",
            "Status",  # the type
            "Error",  # the severity
            f"{opened} UTC",  # the time
            "62% success over the last hour (50 requests; below the 80% threshold)",
            "press Test Connection",  # the recommended action
        ):
            self.assertIn(expected, body)

    def test_an_open_alert_is_emailed_again_after_its_interval_until_acknowledged(self):
        connector = self._connector(alert_renotify_interval=4)
        self._set_traffic(connector, 10, 0)
        self._refresh(connector)
        alert = self._alerts(connector)
        Alert = self.env["integration.alert"]
        with freeze_time(fields.Datetime.now() + timedelta(hours=3, minutes=55)):
            Alert._cron_renotify()
        self.assertEqual(len(self._mails(connector, "FAILURE")), 1, "not before the interval")
        with freeze_time(fields.Datetime.now() + timedelta(hours=4, minutes=1)):
            Alert._cron_renotify()
            self.assertEqual(len(self._mails(connector, "FAILURE")), 2, "once more after it")
            self.assertEqual(alert.notify_count, 2)
            Alert._cron_renotify()
            self.assertEqual(len(self._mails(connector, "FAILURE")), 2, "once per interval")
        self.assertEqual(len(alert.activity_ids), 1, "the activity is not doubled")

        alert.with_user(self.operator).action_acknowledge()
        self.assertEqual((alert.state, alert.acknowledged_by_id), ("acknowledged", self.operator))
        self.assertFalse(alert.next_notify_at)
        with freeze_time(fields.Datetime.now() + timedelta(hours=24)):
            Alert._cron_renotify()
        self.assertEqual(len(self._mails(connector, "FAILURE")), 2, "acknowledged: silent")
        self._refresh(connector)
        self.assertEqual(alert.state, "acknowledged", "still failing keeps it acknowledged")

    def test_recovery_resolves_the_alert_with_a_recovery_email_and_the_activity_done(self):
        connector = self._connector()
        self.server.respond_with(lambda request: Reply(500, {"error": "internal"}))
        for _i in range(10):
            connector._request("GET", "/orders", raise_for_status=False)
        self._refresh(connector)
        alert = self._alerts(connector)
        self.assertEqual(alert.state, "open")

        # The partner is back: its calls succeed and the last hour's success rate recovers.
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        for _i in range(10):
            connector._request("GET", "/orders")
        self._set_traffic(connector, 400, 390)  # the rest of the hour, without waiting for it
        self._refresh(connector)
        self.assertEqual(connector.health_status, "ok")
        self.assertEqual((alert.state, alert.resolution), ("resolved", "auto"))
        self.assertTrue(alert.resolved_at)
        self.assertFalse(alert.resolved_by_id, "nobody: the hub saw the recovery")
        self.assertFalse(alert.activity_ids, "the activity is done")
        done = self.env["mail.message"].search(
            [("model", "=", alert._name), ("res_id", "=", alert.id), ("mail_activity_type_id", "!=", False)]
        )
        self.assertEqual(len(done), 1, "its completion is in the alert's chatter")
        recovered = self._mails(connector, "RECOVERED")
        self.assertEqual(len(recovered), 1)
        with self.mock_mail_gateway():
            recovered.send()
        self.assertEqual(self._mails[0]["subject"], "Integration Orders API: RECOVERED")
        self.assertIn("the hub saw the recovery", self._mails[0]["body"])
        self.assertEqual(connector.alert_open_count, 0)

    def test_a_flapping_api_makes_one_alert_and_two_emails(self):
        connector = self._connector(alert_min_interval=15)
        for _flap in range(3):
            self._set_traffic(connector, 10, 0)
            self._refresh(connector)
            self._set_traffic(connector, 100, 100)
            self._refresh(connector)
        self._set_traffic(connector, 10, 0)
        self._refresh(connector)
        alert = self._alerts(connector)
        self.assertEqual(len(alert), 1, "the same alert, reopened")
        self.assertEqual(alert.state, "open")
        self.assertEqual(len(self._mails(connector, "FAILURE")), 1)
        self.assertEqual(len(self._mails(connector, "RECOVERED")), 1, "no recovery email after a silent reopening")
        self.assertEqual(len(alert.activity_ids), 0, "no activity either, until it is told again")

        # Still failing after the minimum interval: it is told again, activity included.
        with freeze_time(fields.Datetime.now() + timedelta(minutes=16)):
            self.env["integration.alert"]._cron_renotify()
        self.assertEqual(len(self._mails(connector, "FAILURE")), 2)
        self.assertEqual(alert.activity_ids.user_id, self.operator)

        # Past the minimum interval after a resolution, a failure is a new alert.
        self._set_traffic(connector, 100, 100)
        self._refresh(connector)
        with freeze_time(fields.Datetime.now() + timedelta(minutes=20)):
            self._set_traffic(connector, 10, 0)
            self._refresh(connector)
        self.assertEqual(len(self._alerts(connector)), 2)

    def test_a_warning_that_becomes_an_error_updates_the_same_alert(self):
        connector = self._connector()
        self._set_traffic(connector, 100, 90)
        self._refresh(connector)
        alert = self._alerts(connector)
        self.assertEqual(alert.severity, "warning")
        self._set_traffic(connector, 100, 50)
        self._refresh(connector)
        self.assertEqual(self._alerts(connector), alert)
        self.assertEqual(alert.severity, "error")
        self.assertIn("50% success", alert.reason)
        self.assertEqual(len(self._mails(connector, "FAILURE")), 1)

    def test_error_rate_above_the_threshold_for_n_minutes_raises_once_and_resolves(self):
        # Health thresholds low enough that the status stays OK: only the error rate speaks.
        connector = self._connector(health_ok_threshold=50.0, health_warning_threshold=0.0)
        self._set_traffic(connector, 100, 70)
        self._refresh(connector)
        self.assertEqual(connector.health_status, "ok")
        self.assertTrue(connector.alert_error_rate_since, "high since now")
        self.assertFalse(self._alerts(connector), "not for 15 minutes yet")
        connector.alert_error_rate_since = fields.Datetime.now() - timedelta(minutes=16)
        self._refresh(connector, times=3)
        alert = self._alerts(connector)
        self.assertEqual(len(alert), 1)
        self.assertEqual(alert.kind, "error_rate")
        self.assertEqual(alert.name, "Orders API: error rate above 10% for 15 min")
        self.assertIn("30% of 100 requests failed over the last hour", alert.details)
        self.assertIn("More than 10% of the calls have failed for 15 minutes", alert.recommended_action)
        self._set_traffic(connector, 100, 95)
        self._refresh(connector)
        self.assertEqual((alert.state, alert.resolution), ("resolved", "auto"))
        self.assertFalse(connector.alert_error_rate_since)

    def test_a_job_that_spends_its_attempts_on_a_500_raises_once_and_resolves_when_retried(self):
        connector = self._connector(retry_max_attempts=5)
        self.server.respond_with(lambda request: Reply(500, {"error": "internal"}))
        uuid = connector._enqueue_call("POST", "/orders", json={"order": "SO042"}, operation="Push order").uuid
        with patch.object(backoff, "jitter_random") as rng, mute_logger(CONNECTOR_LOGGER):
            rng.uniform.side_effect = lambda low, high: low
            for _attempt in range(5):
                outcome = run_job(self.env, uuid)
        self.assertIn("gave up after 5 attempts", str(outcome))
        self._refresh(connector, times=2)
        alert = self._alerts(connector, "job_exhausted")
        self.assertEqual(len(alert), 1)
        self.assertEqual(alert.name, "Orders API: jobs gave up on a server error (HTTP 5xx)")
        error = self.env["integration.error"].search([("connector_id", "=", connector.id)])
        self.assertEqual((alert.res_model, alert.res_id), (error._name, error.id))
        self.assertEqual(alert.action_open_related()["res_id"], error.id)
        self.assertIn("Push order, HTTP 500", alert.details)
        self.assertIn("gave up after 5 attempts", alert.details)

        self.server.respond_with(lambda request: Reply(201, {"id": 7}))
        error.with_user(self.operator).action_retry()
        self._refresh(connector)
        self.assertEqual(alert.state, "resolved")

    def test_a_stuck_job_raises_a_warning_and_resolves_when_it_is_gone(self):
        connector = self._connector(stuck_job_minutes=30)
        job = self.env["queue.job"].search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        job.write({"state": "started", "date_started": fields.Datetime.now() - timedelta(minutes=20)})
        self._refresh(connector)
        self.assertFalse(self._alerts(connector, "job_stuck"), "20 minutes is not stuck yet")
        job.write({"date_started": fields.Datetime.now() - timedelta(minutes=45)})
        self._refresh(connector, times=2)
        alert = self._alerts(connector, "job_stuck")
        self.assertEqual(len(alert), 1)
        self.assertEqual((alert.severity, alert.reason), ("warning", "jobs stuck for more than 30 min"))
        self.assertIn("1 job(s) waiting or running", alert.details)
        job.write({"state": "done"})
        self._refresh(connector)
        self.assertEqual(alert.state, "resolved")

    def test_a_failed_sync_run_raises_per_flow_and_a_later_done_run_resolves_it(self):
        connector = self._connector()
        flow = self.env["integration.sync.flow"].create(
            {
                "name": "Partners out",
                "code": "partners_out",
                "connector_id": connector.id,
                "direction": "export",
                "model_id": self.env["ir.model"]._get_id("res.partner"),
                "remote_path": "/partners/batch",
                "field_ids": [
                    Command.create(
                        {"field_id": self.env["ir.model.fields"]._get("res.partner", "name").id, "json_path": "name"}
                    )
                ],
            }
        )
        Run = self.env["integration.sync.run"]
        now = fields.Datetime.now()
        failed = Run.create(
            {
                "flow_id": flow.id,
                "kind": "batch",
                "state": "failed",
                "batch_ref": "B1",
                "finished_at": now,
                "error": "HTTP 503 Service Unavailable",
            }
        )
        self._refresh(connector, times=3)
        alert = self._alerts(connector, "sync_run")
        self.assertEqual(len(alert), 1)
        self.assertEqual((alert.key, alert.severity, alert.state), ("partners_out", "error", "open"))
        self.assertEqual(alert.name, "Orders API: sync run of Partners out failed")
        self.assertEqual((alert.res_model, alert.res_id), (failed._name, failed.id))
        self.assertIn("HTTP 503 Service Unavailable", alert.details)
        self.assertEqual(len(self._mails(connector, "FAILURE")), 1)

        Run.create(
            {
                "flow_id": flow.id,
                "kind": "batch",
                "state": "done",
                "batch_ref": "B2",
                "finished_at": now + timedelta(seconds=30),
            }
        )
        self._refresh(connector)
        self.assertEqual((alert.state, alert.resolution), ("resolved", "auto"))

        # A partial run (lost messages) is a warning; resolved by hand, it is not raised again.
        with freeze_time(now + timedelta(minutes=30)):
            Run.create(
                {
                    "flow_id": flow.id,
                    "kind": "batch",
                    "state": "partial",
                    "batch_ref": "B3",
                    "finished_at": fields.Datetime.now(),
                    "error": "summary counts 48 messages, 50 sent",
                }
            )
            self._refresh(connector)
            partial = self._alerts(connector, "sync_run").filtered(lambda a: a.state == "open")
            self.assertEqual(partial.severity, "warning")
            self.assertIn("lost messages", partial.reason)
            partial.with_user(self.operator).action_resolve()
            self._refresh(connector)
            self.assertEqual(partial.state, "resolved", "the run that raised it does not raise it again")

    def test_a_status_alert_resolved_by_hand_while_still_failing_comes_back(self):
        connector = self._connector()
        self._set_traffic(connector, 10, 0)
        self._refresh(connector)
        alert = self._alerts(connector, "status")
        alert.action_resolve()
        self.assertEqual(alert.state, "resolved")
        self._refresh(connector)
        self.assertEqual(connector.health_status, "error", "nothing changed at the partner")
        live = self._alerts(connector, "status").filtered(lambda a: a.state != "resolved")
        self.assertEqual(len(live), 1, "the failing connector has its alert again")

    def test_one_connectors_failing_notice_does_not_stop_the_health_check_of_the_others(self):
        broken, fine = self._connector(), self._connector(name="Other API")
        for connector in broken | fine:
            self._set_traffic(connector, 10, 0)
        original = type(broken)._health_changed

        def fail_for_broken(record, previous):
            if record == broken:
                raise ValueError("template error")
            return original(record, previous)

        with patch.object(type(broken), "_health_changed", fail_for_broken), mute_logger(HEALTH_LOGGER):
            (broken | fine)._refresh_health()
        self.assertEqual(broken.health_status, "unknown", "its change was undone, to be tried next minute")
        self.assertEqual(fine.health_status, "error")
        self.assertTrue(self._alerts(fine, "status"), "the other connector was told")

    def test_operators_acknowledge_and_resolve_by_hand_but_do_not_edit_alerts(self):
        connector = self._connector()
        self._set_traffic(connector, 10, 0)
        self._refresh(connector)
        alert = self._alerts(connector).with_user(self.operator)
        with self.assertRaises(AccessError):
            alert.write({"reason": "nothing to see"})
        alert.action_acknowledge()
        alert.action_resolve()
        self.assertEqual((alert.state, alert.resolution, alert.resolved_by_id), ("resolved", "manual", self.operator))
        recovered = self._mails(connector, "RECOVERED")
        self.assertEqual(len(recovered), 1, "resolving by hand sends the recovery email too")
        with self.mock_mail_gateway():
            recovered.send()
        self.assertIn(f"by {self.operator.name}", self._mails[0]["body"])

    def test_no_secret_reaches_alerts_messages_or_emails(self):
        connector = self._connector(
            auth_type="api_key", api_key_location="header", api_key_name="X-API-Key", retry_max_attempts=2
        )
        connector.api_key = SECRET
        # A partner that echoes the key it received in its error page.
        self.server.respond_with(
            lambda request: Reply(500, {"error": f"bad gateway for key {request.headers.get('X-API-Key')}"})
        )
        uuid = connector._enqueue_call("GET", "/orders", operation="Import orders").uuid
        with patch.object(backoff, "jitter_random") as rng, mute_logger(CONNECTOR_LOGGER):
            rng.uniform.side_effect = lambda low, high: low
            for _attempt in range(2):
                run_job(self.env, uuid)
        self.assertEqual(self.server.received[-1].headers.get("X-API-Key"), SECRET, "the key was really sent")
        self._refresh(connector)
        alerts = self._alerts(connector)
        self.assertEqual(set(alerts.mapped("kind")), {"status", "job_exhausted"})
        mails = self.env["mail.mail"].search([("model", "=", "integration.alert"), ("res_id", "in", alerts.ids)])
        self.assertEqual(mails.mapped("subject").count("Integration Orders API: FAILURE"), 2, "one per alert")
        with self.mock_mail_gateway():
            mails.send()
        haystack = [str(email.get(key)) for email in self._mails for key in ("subject", "body", "body_alternative")]
        haystack += mails.mapped("body_html") + mails.mapped("subject")
        messages = self.env["mail.message"].search(
            [
                "|",
                "&",
                ("model", "=", "integration.alert"),
                ("res_id", "in", alerts.ids),
                "&",
                ("model", "=", "integration.connector"),
                ("res_id", "=", connector.id),
            ]
        )
        haystack += [str(body) for body in messages.mapped("body")]
        for alert in alerts:
            haystack += [str(alert[name]) for name in ("name", "reason", "details", "recommended_action")]
        self.assertTrue(any("bad gateway for key" in text for text in haystack), "the error text is there")
        self.assertFalse([text for text in haystack if SECRET in text], "the key is nowhere")
