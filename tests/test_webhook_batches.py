"""Webhook events processed in batches: one job takes up to *Events per Job* events of a
connector, and each event keeps its own outcome, attempts, error and Retry."""

import json
import logging
from contextlib import contextmanager
from unittest.mock import patch

from psycopg2 import IntegrityError

from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from .common import EVENT_LOGGER, IntegrationHubCase, run_job

HANDLER = "_webhook_handle_generic_rest_order_created"


class WorkerKilled(BaseException):
    """Stands for a worker process that dies mid-job: no handler of the addon sees it."""


@tagged("post_install", "-at_install")
class TestWebhookBatches(IntegrationHubCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.connector = cls._create_connector(webhook_signature="none", retry_max_attempts=3)
        cls.Event = cls.env["integration.webhook.event"]

    def _store(self, count, connector=None, prefix="evt"):
        connector = connector or self.connector
        receiver = connector._webhook_receiver(connector.code)
        ids = []
        for number in range(1, count + 1):
            event_id = f"{prefix}_{number}"
            body = json.dumps({"id": event_id, "n": number}).encode()
            record_id, created = self.Event._ingest(receiver, body, {}, event_id, "order.created")
            self.assertTrue(created)
            ids.append(record_id)
        return self.Event.browse(ids)

    @contextmanager
    def _handler(self, function):
        with patch.object(type(self.connector), HANDLER, function, create=True):
            yield

    def _jobs(self, events):
        return events.mapped("job_id")

    def test_dispatcher_gives_one_job_per_batch_of_a_connector(self):
        self.connector.webhook_batch_size = 40
        alone = self._create_connector(code="alone", webhook_signature="none", webhook_batch_size=1)
        batched = self._store(100)
        single = self._store(3, connector=alone, prefix="one")
        self.Event._job_dispatch_received()
        (batched | single).invalidate_recordset()
        self.assertEqual(set(batched.mapped("state")), {"queued"})
        jobs = self._jobs(batched)
        self.assertEqual(sorted(len(job.records) for job in jobs), [20, 40, 40])
        self.assertEqual(jobs[0].records.connector_id, self.connector, "a batch holds one connector's events")
        self.assertEqual(len(self._jobs(single)), 3, "one job per event where the connector asks for it")
        self.assertEqual(set(self._jobs(single).mapped("records")), set(single), "each job its own event")

    def test_a_failing_event_neither_fails_nor_repeats_its_neighbours(self):
        events = self._store(5)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        job = self._jobs(events)
        self.assertEqual(len(job), 1)
        calls = []

        def handle(connector, event):
            number = event._payload_json()["n"]
            calls.append(number)
            if number == 2:
                raise ValueError("order 2 has no lines")
            if number == 4 and calls.count(4) == 1:
                raise RetryableJobError("partner busy", seconds=7)
            return f"handled {number}"

        with self._handler(handle), mute_logger(EVENT_LOGGER):
            outcome = run_job(self.env, job.uuid)
            self.assertIsInstance(outcome, RetryableJobError, "the job comes back for the event that may succeed")
            self.assertEqual(outcome.seconds, 7)
            self.assertEqual(events.mapped("state"), ["done", "failed", "done", "queued", "done"])
            self.assertEqual(job.state, "pending")
            failed = events[1]
            self.assertIn("order 2 has no lines", failed.last_error)
            self.assertTrue(failed.can_retry)
            self.assertIn("partner busy", events[3].last_error)
            self.assertEqual(events[3].attempts, 1)
            self.assertIsNone(run_job(self.env, job.uuid))
        self.assertEqual(calls, [1, 2, 3, 4, 5, 4], "the second run took only the event left waiting")
        self.assertEqual(events.mapped("state"), ["done", "failed", "done", "done", "done"])
        self.assertEqual(events[3].attempts, 2)
        self.assertEqual(job.state, "done")
        self.assertIn("done", job.result)
        error = self.env["integration.error"].search(
            [("res_model", "=", self.Event._name), ("res_id", "in", events.ids)]
        )
        self.assertEqual(error.res_id, events[1].id, "one error, for the failed event")

        # The operator's Retry takes the failed event alone, in a job of its own.
        with self._handler(lambda connector, event: "fixed"):
            events[1].with_user(self.operator).action_retry()
            events.invalidate_recordset()
            retried = events[1].job_id
            self.assertNotEqual(retried, job)
            self.assertEqual(retried.records, events[1])
            self.assertIsNone(run_job(self.env, retried.uuid))
        self.assertEqual((events[1].state, events[1].result_note, events[1].attempts), ("done", "fixed", 2))

    def test_a_batch_whose_every_event_failed_fails_its_job(self):
        events = self._store(3)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        job = self._jobs(events)
        with self._handler(lambda connector, event: 1 / 0), mute_logger(EVENT_LOGGER):
            outcome = run_job(self.env, job.uuid)
        self.assertIsInstance(outcome, ZeroDivisionError)
        self.assertEqual(set(events.mapped("state")), {"failed"})
        self.assertEqual(job.state, "failed", "visible in the job queue as failed")

    def test_a_killed_batch_keeps_what_it_finished_and_its_rerun_does_the_rest(self):
        events = self._store(5)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        job = self._jobs(events)
        calls = []

        def handle(connector, event, die_on=None):
            number = event._payload_json()["n"]
            calls.append(number)
            if number == die_on:
                raise WorkerKilled
            self.env["res.partner"].create({"name": f"Customer of event {number}"})
            if number <= 2:  # these tell the partner: committed right after, never sent twice
                connector._request("POST", "/acknowledge", json={"event": number})
            return "ok"

        # Not assertRaises: Odoo's rolls back what happened inside it.
        killed = False
        with self._handler(lambda connector, event: handle(connector, event, die_on=4)):
            try:
                run_job(self.env, job.uuid)
            except WorkerKilled:
                killed = True
        self.assertTrue(killed)
        self.assertEqual(events.mapped("state"), ["done", "done", "queued", "queued", "queued"])
        self.assertEqual(job.state, "started", "as a dead worker leaves it")
        self.assertEqual(
            self.env["res.partner"].search_count([("name", "=", "Customer of event 3")]),
            0,
            "event 3 reached no remote: its work went with the worker, to be done again",
        )
        # queue_job's dead-job requeuer sets it pending again; the rerun skips what is done.
        job.write({"state": "pending"})
        with self._handler(handle):
            self.assertIsNone(run_job(self.env, job.uuid))
        self.assertEqual(calls, [1, 2, 3, 4, 3, 4, 5], "events 1 and 2 were not run twice")
        self.assertEqual(set(events.mapped("state")), {"done"})
        for number in (1, 2, 3, 4, 5):
            partners = self.env["res.partner"].search_count([("name", "=", f"Customer of event {number}")])
            self.assertEqual(partners, 1, f"event {number}: one customer")
        acknowledged = [request.json()["event"] for request in self.server.requests_to("/api/acknowledge")]
        self.assertEqual(acknowledged, [1, 2], "the partner heard of each event once")

    def test_in_order_batches_stop_at_a_failure_and_the_rest_waits_behind_it(self):
        self.connector.webhook_sequential = True
        self.connector.webhook_batch_size = 3
        events = self._store(5)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        self.assertEqual(events.mapped("state"), ["queued"] * 3 + ["received"] * 2, "the oldest three, one job")
        first_job = self._jobs(events)
        self.assertEqual(len(first_job), 1)
        order = []

        def handle(connector, event):
            number = event._payload_json()["n"]
            order.append(number)
            if number == 2 and order.count(2) == 1:
                raise ValueError("customer missing")
            return "ok"

        with self._handler(handle), mute_logger(EVENT_LOGGER):
            self.assertIsNone(run_job(self.env, first_job.uuid), "one event done: the job is not failed")
            self.assertEqual(events.mapped("state"), ["done", "failed", "received", "received", "received"])
            self.assertFalse(events[2].job_id, "back in line, without a job")
            self.Event._job_dispatch_received()
            events.invalidate_recordset()
            self.assertEqual(events[2:].mapped("state"), ["received"] * 3, "held behind the failed event")
            # The operator fixes the customer and retries: the line moves on after it.
            events[1].with_user(self.operator).action_retry()
            events.invalidate_recordset()
            self.assertIsNone(run_job(self.env, events[1].job_id.uuid))
            events.invalidate_recordset()
            self.assertEqual(events.mapped("state"), ["done", "done", "queued", "queued", "queued"])
            next_job = self._jobs(events[2:])
            self.assertEqual(len(next_job), 1, "the next three in one job, queued when the line moved")
            self.assertIsNone(run_job(self.env, next_job.uuid))
        self.assertEqual(order, [1, 2, 2, 3, 4, 5])
        self.assertEqual(set(events.mapped("state")), {"done"})

    def _upsert_rule(self, event_type="customer.*"):
        field = self.env["ir.model.fields"]._get
        return self.env["integration.webhook.rule"].create(
            {
                "connector_id": self.connector.id,
                "event_type": event_type,
                "action_type": "upsert",
                "model_id": self.env["ir.model"]._get("res.partner").id,
                "match_field_id": field("res.partner", "ref").id,
                "match_path": "data.id",
                "field_ids": [(0, 0, {"field_id": field("res.partner", "name").id, "json_path": "data.name"})],
            }
        )

    def _store_customers(self, customers, event_types=None):
        receiver = self.connector._webhook_receiver(self.connector.code)
        ids = []
        for number, data in enumerate(customers, 1):
            event_type = event_types[number - 1] if event_types else "customer.updated"
            body = json.dumps({"type": event_type, "data": data}).encode()
            record_id, _created = self.Event._ingest(receiver, body, {}, f"cust_{number}", event_type)
            ids.append(record_id)
        self.Event._job_dispatch_received()
        return self.Event.browse(ids)

    def test_an_upsert_rule_writes_a_batch_in_bulk_and_each_event_keeps_its_outcome(self):
        self._upsert_rule()
        Partner = self.env["res.partner"]
        existing = Partner.create({"name": "Old name", "ref": "BULK-1"})
        events = self._store_customers(
            [
                {"id": "BULK-1", "name": "New name"},
                {"id": "BULK-2", "name": "Two"},
                {"id": "BULK-3", "name": "Three"},
                {"name": "no id"},
                {"id": "BULK-4", "name": "Four, first"},
                {"id": "BULK-4", "name": "Four, then renamed"},
            ]
        )
        job = self._jobs(events)
        self.assertEqual(len(job), 1)
        original_create = type(Partner).create
        batches = []

        def counting_create(model, vals_list):
            batches.append(len(vals_list) if isinstance(vals_list, list) else 1)
            return original_create(model, vals_list)

        with patch.object(type(Partner), "create", counting_create), mute_logger(EVENT_LOGGER):
            self.assertIsNone(run_job(self.env, job.uuid))
        self.assertEqual(events.mapped("state"), ["done", "done", "done", "failed", "done", "done"])
        self.assertEqual(batches, [2, 1], "BULK-2 and BULK-3 in one create; BULK-4 (twice in the batch) one by one")
        self.assertEqual(existing.name, "New name")
        self.assertEqual(events[0].res_id, existing.id)
        for ref, name in (("BULK-2", "Two"), ("BULK-3", "Three"), ("BULK-4", "Four, then renamed")):
            partner = Partner.search([("ref", "=", ref)])
            self.assertEqual(partner.mapped("name"), [name], ref)
        self.assertEqual(events[1].res_id, Partner.search([("ref", "=", "BULK-2")]).id)
        self.assertIn("no external ID at 'data.id'", events[3].last_error)

    def test_a_failing_bulk_write_sends_every_event_one_by_one(self):
        rule = self._upsert_rule()
        events = self._store_customers([{"id": f"D-{number}", "name": f"Dee {number}"} for number in range(3)])
        with (
            patch.object(type(rule), "_upsert_many", side_effect=ValueError("bulk refused")),
            self.assertLogs(f"{EVENT_LOGGER}.processing", logging.INFO) as logs,
        ):
            self.assertIsNone(run_job(self.env, self._jobs(events).uuid))
        self.assertEqual(set(events.mapped("state")), {"done"})
        self.assertEqual(self.env["res.partner"].search_count([("ref", "like", "D-")]), 3)
        self.assertIn("processed one by one after bulk processing failed: ValueError: bulk refused", logs.output[0])

    def test_ignoring_one_event_of_a_batch_leaves_its_neighbours_queued(self):
        events = self._store(3)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        job = self._jobs(events)
        events[1].with_user(self.operator).action_ignore()
        self.assertEqual(job.state, "pending", "the batch's job stays for the other events")
        self.assertEqual(self.Event._settle_stranded(), 0)
        handled = []
        with self._handler(lambda connector, event: handled.append(event.event_id)):
            self.assertIsNone(run_job(self.env, job.uuid))
        self.assertEqual(handled, ["evt_1", "evt_3"])
        self.assertEqual(events.mapped("state"), ["done", "ignored", "done"])
        events.with_user(self.operator).action_reprocess()
        events.invalidate_recordset()
        self.assertEqual(len(self._jobs(events)), 1, "reprocessed together, in one job")

    def test_two_rules_writing_the_same_records_keep_the_received_order(self):
        self._upsert_rule("customer.updated")
        self._upsert_rule("customer.created")
        events = self._store_customers(
            [{"id": "ORD-1", "name": "Created"}, {"id": "ORD-1", "name": "Renamed"}, {"id": "ORD-2", "name": "Two"}],
            event_types=["customer.created", "customer.updated", "customer.created"],
        )
        self.assertIsNone(run_job(self.env, self._jobs(events).uuid))
        self.assertEqual(set(events.mapped("state")), {"done"})
        partner = self.env["res.partner"].search([("ref", "=", "ORD-1")])
        self.assertEqual(partner.mapped("name"), ["Renamed"], "the later event wins, as received")

    def test_a_serialization_conflict_is_retried_not_failed(self):
        events = self._store(2)
        self.Event._job_dispatch_received()
        events.invalidate_recordset()
        job = self._jobs(events)
        conflicts = []

        def meets_a_conflict_once(connector, event):
            if event._payload_json()["n"] == 1 and not conflicts:
                conflicts.append(event.event_id)
                # What PostgreSQL raises when a concurrent transaction changed the same rows.
                self.env.cr.execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END $$"
                )
            return "ok"

        with self._handler(meets_a_conflict_once), mute_logger(EVENT_LOGGER, "odoo.sql_db"):
            outcome = run_job(self.env, job.uuid)
            self.assertIsInstance(outcome, RetryableJobError)
            self.assertEqual(events.mapped("state"), ["queued", "done"], "the conflicting event waits for the retry")
            self.assertIn("SerializationFailure", events[0].last_error)
            self.assertIsNone(run_job(self.env, job.uuid))
        self.assertEqual(set(events.mapped("state")), {"done"})

    def test_events_per_job_is_bounded(self):
        with self.assertRaises(IntegrityError), mute_logger("odoo.sql_db"), self.env.cr.savepoint():
            self.connector.webhook_batch_size = 0
            self.connector.flush_recordset()
