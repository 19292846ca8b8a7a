"""Processing of stored webhook events by their queue jobs, and the operator actions."""

import json
from contextlib import contextmanager
from datetime import timedelta
from unittest.mock import patch

from odoo import fields
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from ..const import DISPATCH_IDENTITY_KEY
from .common import CONNECTOR_LOGGER, EVENT_LOGGER, IntegrationHubCase, Reply, run_job

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HANDLER = "_webhook_handle_generic_rest_order_created"


@tagged("post_install", "-at_install")
class TestWebhookProcessing(IntegrationHubCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connector = cls._create_connector(webhook_signature="standard_webhooks")
        cls.connector.webhook_secret = WEBHOOK_SECRET
        cls.Event = cls.env["integration.webhook.event"]

    def _receive(self, event_id="evt_1", event_type="order.created", payload=None, connector=None):
        connector = connector or self.connector
        body = json.dumps(payload if payload is not None else {"id": event_id, "order": {"number": "SO-1"}}).encode()
        record_id, created = self.Event._ingest(
            connector._webhook_receiver(connector.code), body, {"webhook-id": event_id}, event_id, event_type
        )
        self.assertTrue(created)
        event = self.Event.browse(record_id)
        self.assertEqual(event.state, "received")
        self.Event._job_dispatch_received()
        event.invalidate_recordset()
        return event

    @contextmanager
    def _handler(self, function):
        """Give the generic connector kind a handler for "order.created" (as an addon would)."""
        with patch.object(type(self.connector), HANDLER, function, create=True):
            yield

    def _run(self, event):
        outcome = run_job(self.env, event.job_id.uuid)
        event.invalidate_recordset()
        return outcome

    def test_handler_success(self):
        partner = self.env["res.partner"].create({"name": "Linked"})
        seen = []

        def handle(connector, event):
            seen.append(event._payload_json()["order"]["number"])
            return partner

        event = self._receive()
        self.assertEqual(event.state, "queued")
        with self._handler(handle):
            self.assertIsNone(self._run(event))
        self.assertEqual(seen, ["SO-1"])
        self.assertEqual(event.state, "done")
        self.assertEqual(event.attempts, 1)
        self.assertTrue(event.processed_at)
        self.assertEqual((event.res_model, event.res_id), ("res.partner", partner.id))
        self.assertEqual(event.result_note, "Linked")
        self.assertEqual(event.job_id.state, "done")

    def test_transient_failure_then_success_through_the_call_path(self):
        # The handler calls the partner API through the connector: a 503, then a 200.
        replies = iter([Reply(503, {"error": "busy"}), Reply(200, {"ok": True})])
        self.server.reset(lambda request: next(replies))

        def handle(connector, event):
            response = connector._request("POST", "/acknowledge", json={"event": event.event_id})
            return f"acknowledged: HTTP {response.status_code}"

        event = self._receive()
        with self._handler(handle), mute_logger(CONNECTOR_LOGGER):
            outcome = self._run(event)
            self.assertIsInstance(outcome, RetryableJobError)
            self.assertEqual(event.state, "queued", "waiting for its next attempt")
            self.assertEqual(event.attempts, 1)
            self.assertIn("503", event.last_error)
            self.assertEqual(event.job_id.state, "pending")
            self.assertIsNone(self._run(event))
        self.assertEqual(event.state, "done")
        self.assertEqual(event.attempts, 2)
        self.assertFalse(event.last_error)
        self.assertEqual(event.result_note, "acknowledged: HTTP 200")
        self.assertEqual([r.json() for r in self.server.requests_to("/api/acknowledge")], [{"event": "evt_1"}] * 2)

    def test_permanent_failure_then_retry_button(self):
        def broken(connector, event):
            raise ValueError(f"order {event._payload_json()['order']['number']} has no lines; secret {WEBHOOK_SECRET}")

        event = self._receive()
        with self._handler(broken), mute_logger(EVENT_LOGGER):
            outcome = self._run(event)
        self.assertIsInstance(outcome, ValueError)
        self.assertEqual(event.state, "failed")
        self.assertIn("SO-1 has no lines", event.last_error)
        self.assertNotIn(WEBHOOK_SECRET, event.last_error, "the connector's secrets are masked")
        self.assertEqual(event.job_id.state, "failed")
        notes = " ".join(event.message_ids.mapped("body"))
        self.assertIn("Processing failed", notes)
        self.assertNotIn(WEBHOOK_SECRET, notes)
        error = self.env["integration.error"].search([("res_model", "=", event._name), ("res_id", "=", event.id)])
        self.assertEqual(len(error), 1)
        self.assertEqual(error.state, "new")
        self.assertEqual(error.queue_job_id, event.job_id)
        self.assertNotIn(WEBHOOK_SECRET, error.message + (error.request_excerpt or "") + (error.traceback or ""))
        # The operator fixes the cause and presses Retry on the error.
        error.with_user(self.operator).action_retry()
        event.invalidate_recordset()
        self.assertEqual(event.state, "queued")
        self.assertEqual(event.job_id.state, "pending", "the failed job is queued again")
        self.assertEqual(error.state, "resolved")
        with self._handler(lambda connector, event: "fixed"):
            self.assertIsNone(self._run(event))
        self.assertEqual(event.state, "done")
        self.assertEqual(event.result_note, "fixed")

    def test_retries_exhausted_leave_the_event_failed(self):
        self.connector.retry_max_attempts = 2

        def flaky(connector, event):
            raise RetryableJobError("partner busy")

        event = self._receive()
        with self._handler(flaky), mute_logger(EVENT_LOGGER):
            self.assertIsInstance(self._run(event), RetryableJobError)
            self.assertEqual(event.state, "queued")
            outcome = self._run(event)
        self.assertNotIsInstance(outcome, RetryableJobError)
        self.assertIn("gave up after 2 attempts", str(outcome))
        self.assertEqual(event.state, "failed")
        self.assertEqual(event.attempts, 2)
        self.assertIn("gave up after 2 attempts", event.last_error)
        self.assertEqual(event.job_id.state, "failed")
        error = self.env["integration.error"].search([("res_model", "=", event._name), ("res_id", "=", event.id)])
        self.assertTrue(error.is_retryable)

    def test_event_retry_button_from_the_event(self):
        event = self._receive()
        with (
            self._handler(lambda connector, event: 1 / 0),
            mute_logger(EVENT_LOGGER),
        ):
            self._run(event)
        self.assertEqual(event.state, "failed")
        with self.assertRaises(AccessError):
            event.with_user(self.operator).write({"payload": "{}"})
        event.with_user(self.operator).action_retry()
        self.assertEqual(event.state, "queued")
        with self._handler(lambda connector, event: None):
            self._run(event)
        self.assertEqual(event.state, "done")
        with self.assertRaises(UserError):
            event.action_retry()

    def test_reprocess_runs_the_handler_again(self):
        calls = []
        event = self._receive()
        with self._handler(lambda connector, event: calls.append(event.id)):
            self._run(event)
            first_job = event.job_id
            event.action_reprocess()
            self.assertEqual(event.state, "queued")
            self.assertNotEqual(event.job_id, first_job, "a new job, the done one stays as history")
            self._run(event)
        self.assertEqual(calls, [event.id, event.id])
        self.assertEqual(event.state, "done")

    def test_unknown_type_ignored_or_failed_per_connector(self):
        event = self._receive(event_type="customer.deleted")
        self._run(event)
        self.assertEqual(event.state, "ignored")
        self.assertIn("No handler for event type 'customer.deleted'", event.result_note)
        self.connector.webhook_unhandled = "fail"
        event = self._receive("evt_2", event_type="customer.deleted")
        with mute_logger(EVENT_LOGGER):
            self._run(event)
        self.assertEqual(event.state, "failed")
        self.assertIn("No handler", event.last_error)

    def test_mark_ignored_cancels_the_waiting_job(self):
        event = self._receive()
        event.with_user(self.operator).action_ignore()
        event.invalidate_recordset()
        self.assertEqual(event.state, "ignored")
        self.assertEqual(event.job_id.state, "cancelled")

    def _receive_sequential(self, event_id):
        body = json.dumps({"id": event_id}).encode()
        record_id, _created = self.Event._ingest(
            self.connector._webhook_receiver(self.connector.code), body, {}, event_id, "order.created"
        )
        self.Event._job_dispatch_received()
        return self.Event.browse(record_id)

    def _assert_next_in_line(self, event):
        """The event behind the settled one got its job in the same transaction."""
        event.invalidate_recordset()
        self.assertEqual(event.state, "queued")
        self.assertEqual(event.job_id.state, "pending")

    def test_sequential_processing_one_event_at_a_time_in_order(self):
        self.connector.webhook_sequential = True
        older = self._receive_sequential("evt_old")
        newer = self._receive_sequential("evt_new")
        self.assertEqual(older.state, "queued")
        self.assertEqual((newer.state, newer.job_id.id), ("received", False), "no job until its turn")
        order = []
        with self._handler(lambda connector, event: order.append(event.event_id)):
            self.assertIsNone(self._run(older))
            self._assert_next_in_line(newer)
            self.assertIsNone(self._run(newer))
        self.assertEqual(order, ["evt_old", "evt_new"])
        self.assertEqual(newer.state, "done")

    def test_sequential_failed_event_holds_the_line_until_ignored(self):
        self.connector.webhook_sequential = True
        older = self._receive_sequential("evt_old")
        newer = self._receive_sequential("evt_new")
        with (
            self._handler(lambda connector, event: 1 / 0),
            mute_logger(EVENT_LOGGER),
        ):
            self._run(older)
        self.assertEqual(older.state, "failed")
        self.Event._job_dispatch_received()
        newer.invalidate_recordset()
        self.assertEqual(newer.state, "received", "held behind the failed event")
        older.with_user(self.operator).action_ignore()
        self._assert_next_in_line(newer)
        with self._handler(lambda connector, event: "ok"):
            self._run(newer)
        self.assertEqual(newer.state, "done")

    def test_sequential_reprocess_out_of_turn_goes_back_in_line(self):
        self.connector.webhook_sequential = True
        first = self._receive_sequential("evt_1")
        with self._handler(lambda connector, event: "ok"):
            self._run(first)
        second = self._receive_sequential("evt_2")
        with (
            self._handler(lambda connector, event: 1 / 0),
            mute_logger(EVENT_LOGGER),
        ):
            self._run(second)
        self.assertEqual(second.state, "failed")
        # Reprocessing the first event is out of turn only if an older one is open: it is
        # not, so it runs. A later event reprocessed while the failed one waits goes back.
        third = self._receive_sequential("evt_3")
        self.assertEqual(third.state, "received")
        calls = []
        with self._handler(lambda connector, event: calls.append(event.event_id)):
            first.action_reprocess()
            self._run(first)
            self.assertEqual(first.state, "done")
            second.action_retry()
            second.invalidate_recordset()
            self._run(second)
            self.assertEqual(second.state, "done")
            self._assert_next_in_line(third)
            self._run(third)
        self.assertEqual(calls, ["evt_1", "evt_2", "evt_3"])
        self.assertEqual(third.state, "done")

    def test_sequential_event_queued_behind_an_open_one_waits_without_polling(self):
        self.connector.webhook_sequential = True
        older = self._receive_sequential("evt_old")
        newer = self._receive_sequential("evt_new")
        # Say an administrator queued the newer event by hand while the older one waits.
        newer.sudo()._enqueue()
        newer.invalidate_recordset()
        with self._handler(lambda connector, event: self.fail("must not run out of order")):
            self.assertIsNone(self._run(newer), "finished, not retried every few seconds")
        self.assertEqual(newer.state, "received")
        self.assertIn("Back in line behind", newer.result_note)
        self.assertEqual(older.state, "queued")

    def test_settle_events_whose_job_will_never_run_them(self):
        cancelled = self._receive("evt_cancelled")
        failed = self._receive("evt_failed")
        lost = self._receive("evt_lost")
        cancelled.job_id.button_cancelled()  # from the Job Queue menu
        failed.job_id.write({"state": "failed", "exc_message": "worker killed"})
        lost.job_id.unlink()  # e.g. removed by hand
        lost.invalidate_recordset()
        self.assertEqual(self.Event._settle_stranded(), 3)
        for event in cancelled | failed | lost:
            event.invalidate_recordset()
        self.assertEqual(cancelled.state, "ignored")
        self.assertEqual(failed.state, "failed")
        self.assertIn("worker killed", failed.last_error)
        self.assertTrue(failed.can_retry)
        self.assertEqual(lost.state, "queued")
        self.assertEqual(lost.job_id.state, "pending", "a new job")
        self.assertEqual(self.Event._settle_stranded(), 0, "nothing left to settle")

    def test_inline_run_records_the_failure_in_the_callers_transaction(self):
        # queue_job's no-delay switch runs the job inside the button's transaction, which
        # holds the event's row: the failure is written there, not through another cursor.
        event = self._receive()
        with (
            self._handler(lambda connector, event: 1 / 0),
            mute_logger(EVENT_LOGGER),
        ):
            self._run(event)
            self.assertEqual(event.state, "failed")
            event.with_user(self.operator).with_context(queue_job__no_delay=True).action_retry()
        event.invalidate_recordset()
        self.assertEqual(event.state, "failed")
        self.assertEqual(event.attempts, 2)
        self.assertIn("ZeroDivisionError", event.last_error)
        error = self.env["integration.error"].search([("res_model", "=", event._name), ("res_id", "=", event.id)])
        self.assertEqual((len(error), error.state, error.count), (1, "new", 2), "reopened by the inline failure")
        with self._handler(lambda connector, event: "fixed"):
            event.with_context(queue_job__no_delay=True).action_retry()
        event.invalidate_recordset()
        self.assertEqual((event.state, event.result_note), ("done", "fixed"))

    def test_mark_ignored_refused_while_the_job_runs(self):
        event = self._receive()
        event.job_id.state = "started"
        with self.assertRaisesRegex(UserError, "being processed right now"):
            event.with_user(self.operator).action_ignore()
        self.assertEqual(event.state, "queued")

    def test_a_failure_does_not_overwrite_an_operators_decision(self):
        # The operator marked the event ignored while its handler ran; the handler then
        # fails: the failure is not written over the decision.
        event = self._receive()
        event.write({"state": "ignored"})
        event.flush_recordset()  # committed by the operator's transaction
        with mute_logger(EVENT_LOGGER):
            event._fail(ValueError("too late"), 1, permanent=True)
        event.invalidate_recordset()
        self.assertEqual(event.state, "ignored")
        self.assertFalse(event.last_error)

    def test_repeated_deliveries_counted_and_searchable(self):
        event = self._receive()
        once = self._receive("evt_once")
        receiver = self.connector._webhook_receiver(self.connector.code)
        for _i in range(2):
            self.assertEqual(self.Event._ingest(receiver, b"{}", {}, "evt_1", "order.created"), (event.id, False))
        event.invalidate_recordset()
        self.assertEqual(event.duplicate_count, 2)
        self.assertTrue(event.last_duplicate_at)
        mine = [("connector_id", "=", self.connector.id)]
        self.assertEqual(self.Event.search([*mine, ("duplicate_count", ">", 0)]), event)
        self.assertEqual(self.Event.search([*mine, ("duplicate_count", "=", 0)]), once)
        self.assertEqual(self.Event.search([*mine, ("duplicate_count", ">=", 2)]), event)
        self.assertEqual(self.Event.search([*mine, ("duplicate_count", "<", 3)]), event | once)

    def test_generic_rule_upserts_by_external_id(self):
        partner_model = self.env["ir.model"]._get("res.partner")
        field = self.env["ir.model.fields"]._get
        self.env["integration.webhook.rule"].create(
            {
                "connector_id": self.connector.id,
                "event_type": "customer.*",
                "action_type": "upsert",
                "model_id": partner_model.id,
                "match_field_id": field("res.partner", "ref").id,
                "match_path": "data.id",
                "field_ids": [
                    (0, 0, {"field_id": field("res.partner", "name").id, "json_path": "data.name"}),
                    (0, 0, {"field_id": field("res.partner", "email").id, "json_path": "data.contact.email"}),
                ],
            }
        )
        created = self._receive(
            "evt_c1", "customer.created", {"data": {"id": "C-77", "name": "Ada", "contact": {"email": "a@x.test"}}}
        )
        self._run(created)
        partner = self.env["res.partner"].search([("ref", "=", "C-77")])
        self.assertEqual((partner.name, partner.email), ("Ada", "a@x.test"))
        self.assertEqual((created.state, created.res_id), ("done", partner.id))
        updated = self._receive(
            "evt_c2", "customer.updated", {"data": {"id": "C-77", "name": "Ada L.", "contact": {"email": "a@y.test"}}}
        )
        self._run(updated)
        self.assertEqual(self.env["res.partner"].search_count([("ref", "=", "C-77")]), 1, "updated, not duplicated")
        self.assertEqual((partner.name, partner.email), ("Ada L.", "a@y.test"))
        missing = self._receive("evt_c3", "customer.updated", {"data": {"name": "no id"}})
        with mute_logger(EVENT_LOGGER):
            self._run(missing)
        self.assertEqual(missing.state, "failed")
        self.assertIn("no external ID at 'data.id'", missing.last_error)

    def test_rules_cannot_write_system_models(self):
        for model, field in (("ir.config_parameter", "key"), ("res.users", "login")):
            with self.subTest(model=model), self.assertRaises(ValidationError):
                self.env["integration.webhook.rule"].create(
                    {
                        "connector_id": self.connector.id,
                        "event_type": "x",
                        "action_type": "upsert",
                        "model_id": self.env["ir.model"]._get(model).id,
                        "match_field_id": self.env["ir.model.fields"]._get(model, field).id,
                        "match_path": "id",
                    }
                )

    def test_generic_rule_acts_with_its_run_as_users_rights(self):
        # Industries: internal users may read them, only administrators may create them.
        field = self.env["ir.model.fields"]._get
        rule = self.env["integration.webhook.rule"].create(
            {
                "connector_id": self.connector.id,
                "event_type": "industry.created",
                "action_type": "upsert",
                "user_id": self.operator.id,
                "model_id": self.env["ir.model"]._get("res.partner.industry").id,
                "match_field_id": field("res.partner.industry", "full_name").id,
                "match_path": "code",
                "field_ids": [(0, 0, {"field_id": field("res.partner.industry", "name").id, "json_path": "name"})],
            }
        )
        payload = {"code": "IND-9", "name": "Robotics"}
        refused = self._receive("evt_i1", "industry.created", payload)
        with mute_logger(EVENT_LOGGER):
            self._run(refused)
        self.assertEqual(refused.state, "failed")
        self.assertIn("AccessError", refused.last_error)
        self.assertFalse(self.env["res.partner.industry"].search([("full_name", "=", "IND-9")]))
        admin = self.env.ref("base.user_admin")
        rule.user_id = admin
        refused.action_retry()
        self._run(refused)
        self.assertEqual(refused.state, "done")
        industry = self.env["res.partner.industry"].search([("full_name", "=", "IND-9")])
        self.assertEqual((industry.name, industry.create_uid), ("Robotics", admin))
        with self.assertRaises(ValidationError):
            rule.user_id = self.env.ref("base.public_user")

    def test_generic_rule_runs_a_server_action(self):
        action = self.env["ir.actions.server"].create(
            {
                "name": "Tag the event",
                "model_id": self.env["ir.model"]._get("integration.webhook.event").id,
                "state": "code",
                "code": "record.message_post(body='order ' + record._payload_json()['order']['number'])",
            }
        )
        self.env["integration.webhook.rule"].create(
            {
                "connector_id": self.connector.id,
                "event_type": "order.created",
                "action_type": "server_action",
                "server_action_id": action.id,
            }
        )
        event = self._receive()
        self._run(event)
        self.assertEqual(event.state, "done")
        self.assertIn("order SO-1", " ".join(event.message_ids.mapped("body")))

    def test_retry_all_failed_since(self):
        with (
            self._handler(lambda connector, event: 1 / 0),
            mute_logger(EVENT_LOGGER),
        ):
            old, recent = self._receive("evt_a"), self._receive("evt_b")
            self._run(old)
            self._run(recent)
        old.received_at = fields.Datetime.now() - timedelta(days=3)
        wizard = (
            self.env["integration.webhook.retry.wizard"]
            .with_user(self.operator)
            .create({"connector_id": self.connector.id, "since": fields.Datetime.now() - timedelta(days=1)})
        )
        self.assertEqual(wizard.event_count, 1)
        wizard.action_confirm()
        self.assertEqual((old.state, recent.state), ("failed", "queued"))

    def test_purge_keeps_failed_and_recent(self):
        self.connector.webhook_retention_days = 7
        done_old, done_new, failed_old = self._receive("a"), self._receive("b"), self._receive("c")
        (done_old | done_new).write({"state": "done"})
        failed_old.write({"state": "failed"})
        (done_old | failed_old).write({"received_at": fields.Datetime.now() - timedelta(days=8)})
        self.Event._cron_purge()
        self.assertEqual(self.Event.search([("connector_id", "=", self.connector.id)]), done_new | failed_old)

    def test_connector_shows_queue_health(self):
        first = self._receive("a")
        self._receive("b")
        first.received_at = fields.Datetime.now() - timedelta(minutes=12)
        self.connector.invalidate_recordset()
        self.assertEqual(self.connector.webhook_queued_count, 2)
        self.assertEqual(self.connector.webhook_oldest_waiting_age, "12 min")
        self.assertEqual(self.connector.webhook_failed_count, 0)

    def test_cron_queues_a_dispatcher_for_events_left_waiting(self):
        body = b'{"id": "evt_stranded"}'
        record_id, _created = self.Event._ingest(
            self.connector._webhook_receiver(self.connector.code), body, {}, "evt_stranded", "order.created"
        )
        dispatchers = self.env["queue.job"].search([("identity_key", "=", DISPATCH_IDENTITY_KEY)])
        self.assertEqual(len(dispatchers), 1)
        dispatchers.button_cancelled()  # say the dispatcher was lost: the event is stranded
        self.Event._cron_dispatch_received()
        self.assertFalse(
            self.env["queue.job"].search([("identity_key", "=", DISPATCH_IDENTITY_KEY), ("state", "=", "pending")]),
            "an event received less than a minute ago is left to the dispatcher it queued",
        )
        self.Event.browse(record_id).received_at = fields.Datetime.now() - timedelta(minutes=2)
        self.Event._cron_dispatch_received()
        waiting = self.env["queue.job"].search(
            [("identity_key", "=", DISPATCH_IDENTITY_KEY), ("state", "=", "pending")]
        )
        self.assertEqual(len(waiting), 1)
        run_job(self.env, waiting.uuid)
        event = self.Event.browse(record_id)
        event.invalidate_recordset()
        self.assertEqual(event.state, "queued")
        self.assertEqual(event.job_id.state, "pending")

    def test_public_and_other_users_cannot_read_events(self):
        self._receive()
        public = self.env.ref("base.public_user")
        with self.assertRaises(AccessError):
            self.env["integration.webhook.event"].with_user(public).search([])
        portal = self.env["res.users"].create(
            {
                "name": "Portal",
                "login": "ih_portal",
                "groups_id": [(6, 0, [self.env.ref("base.group_portal").id])],
            }
        )
        with self.assertRaises(AccessError):
            self.env["integration.webhook.event"].with_user(portal).search([])
        mine = [("connector_id", "=", self.connector.id)]
        self.assertEqual(len(self.env["integration.webhook.event"].with_user(self.operator).search(mine)), 1)
