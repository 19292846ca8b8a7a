"""Export flows against the partner sandboxes: batches to the retail portal (``202`` + a job
polled to its outcome) and numbered messages to the data-sharing feed (tombstones, retried
messages, summaries, forceReload), with the runs, bindings and cursor an operator sees."""

import json
import time
from datetime import timedelta
from unittest.mock import patch

from odoo import Command, fields
from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from ..core.jsonutil import payload_digest
from ..sandbox.datasharing import ENTITIES_PATH, DataSharingSandbox
from ..sandbox.retail import RetailSandbox
from ..sandbox.server import Reply
from .common import CONNECTOR_LOGGER, SYNC_FLOW_LOGGER, SYNC_RUN_LOGGER, IntegrationHubCase, run_job

RETAIL_KEY = "retail-key-for-tests"


class ExportCase(IntegrationHubCase):
    """A connector on a sandbox, partners to export, and the runner's part played by the test."""

    def _export_flow(self, connector, lines, **values):
        model = self.env["ir.model"]._get("res.partner")
        vals = {
            "name": "Partners out",
            "code": "partners",
            "connector_id": connector.id,
            "direction": "export",
            "model_id": model.id,
            "export_domain": "[('ref', '=like', 'EXP-%')]",
            # write_date is the time the test class's transaction started: the overlap
            # keeps these records among the candidates, as a long transaction would be.
            "overlap_seconds": 3600,
            "field_ids": [
                Command.create(
                    {"field_id": self.env["ir.model.fields"]._get("res.partner", name).id, "json_path": path}
                )
                for name, path in lines
            ],
        }
        vals.update(values)
        return self.env["integration.sync.flow"].create(vals)

    def _partners(self, count, **values):
        return self.env["res.partner"].create(
            [
                dict({"name": f"Partner {n:02d}", "ref": f"EXP-{n:02d}", "function": f"Item {n}"}, **values)
                for n in range(1, count + 1)
            ]
        )

    def _run_job(self, uuid):
        """One job, the way the runner runs it; what it raised, or None. In production each
        job reads committed data afresh: the test's cache is emptied around it."""
        self.env.flush_all()
        self.env.invalidate_all()
        outcome = run_job(self.env, uuid)
        self.env.invalidate_all()
        return outcome

    def _drain(self, flow, rounds=30):
        """Run the flow's pending jobs (sends, polls, the batches queued next) until none is left."""
        outcomes = []
        for _round in range(rounds):
            self.env.invalidate_all()
            uuids = flow.run_ids.filtered(lambda r: r.state in ("queued", "running")).mapped("job_uuid")
            pending = self.env["queue.job"].search([("uuid", "in", uuids), ("state", "=", "pending")])
            if not pending:
                return outcomes
            outcomes += [self._run_job(uuid) for uuid in pending.mapped("uuid")]
        self.fail("the flow's jobs never settled")

    def _bindings(self, connector, **domain):
        return (
            self.env["integration.binding"]
            .with_context(active_test=False)
            .search(
                [("connector_id", "=", connector.id), ("res_model", "=", "res.partner")]
                + [(key, "=", value) for key, value in domain.items()]
            )
        )


@tagged("post_install", "-at_install")
class TestExportBatches(ExportCase):
    """The retail portal: lists of at most 1,000 items with an integer erpId, 202 + job to poll."""

    def setUp(self):
        super().setUp()
        # Fast jobs: a poll finds them finished (the documents say 3 to 5 items a second).
        self.retail = RetailSandbox(api_key=RETAIL_KEY, items_per_second=10000).start()
        self.addCleanup(self.retail.stop)
        self.connector = self._create_connector(
            base_url=self.retail.url + "/erp-data", auth_type="api_key", api_key=RETAIL_KEY
        )

    def _flow(self, **values):
        return self._export_flow(
            self.connector,
            [("name", "name"), ("email", "email"), ("function", "description")],
            remote_path="/product/batch",
            job_status_path="/product/batch/{job_id}",
            poll_interval=1,
            **values,
        )

    def _sent_erp_ids(self):
        """The erpIds of each batch the portal received, in order."""
        return [[item["erpId"] for item in job["items"]] for job in self.retail.jobs.values()]

    def test_batches_are_cut_by_count_and_never_above_the_remote_maximum(self):
        partners = self._partners(7)
        flow = self._flow(batch_size=3)
        runs = flow._sync()
        self.assertEqual([len(run._res_ids()) for run in runs.sorted("id")], [3, 3, 1])
        self.assertEqual(len(set(runs.mapped("plan_ref"))), 1, "one Sync, one plan")
        self._drain(flow)
        self.assertEqual(sorted(sum(self._sent_erp_ids(), [])), partners.ids, "every record once")
        self.assertEqual(self.retail.stats["largest_batch"], 3)
        self.assertEqual(set(runs.mapped("state")), {"done"})
        with self.assertRaisesRegex(ValidationError, "above the remote's maximum of 1000"):
            flow.batch_size = 1001

    def test_the_start_is_read_from_the_portals_latest_integration(self):
        partners = self._partners(4)
        flow = self._flow(
            cursor_source="remote",
            cursor_remote_path="/product/get-latest-integration",
            cursor_remote_json_path="lastDateTime",
            overlap_seconds=0,
        )

        def latest(moment):
            # The portal's last successful job ended at ``moment``.
            self.retail.jobs["earlier"] = {
                "jobId": "earlier", "items": [{"erpId": 1}], "received": moment, "due": moment,
                "finished": moment, "errors": [], "success": 1,
            }  # fmt: skip

        latest(time.time() + 86400)  # tomorrow: nothing changed since
        self.assertFalse(flow._sync(), "nothing changed after the portal's last integration")
        self.assertEqual(self.retail.stats["statuses"].get("200"), 1, "the portal was asked where to start")
        latest(time.time() - 86400)  # yesterday: today's records go
        runs = flow._sync()
        self.assertEqual(runs.window_start.date(), (fields.Datetime.now() - timedelta(days=1)).date())
        self.assertEqual(sorted(runs._res_ids()), partners.ids)
        self._drain(flow)
        self.assertEqual(set(runs.mapped("state")), {"done"})
        # Without any integration yet (404), the flow starts from its own cursor.
        self.retail.jobs.clear()
        flow.cursor_at = fields.Datetime.now() + timedelta(days=1)
        self.assertFalse(flow._sync(), "the portal had no date: the flow's own cursor decided")

    def test_batches_are_cut_by_bytes_as_they_travel(self):
        # Non-ASCII names: their bytes, not their characters, count.
        partners = self._partners(12, function="Größe Ærø — façade extérieure, 2ème étage")
        flow = self._flow(max_payload_bytes=600)
        runs = flow._sync()
        self.assertGreater(len(runs), 1, "500 a batch by count, but not in 600 bytes")
        self._drain(flow)
        self.assertEqual(sorted(sum(self._sent_erp_ids(), [])), partners.ids)
        self.assertLessEqual(self.retail.stats["largest_batch_bytes"], 600)
        self.assertGreater(self.retail.stats["largest_batch_bytes"], 300, "batches are filled, not one item each")
        self.assertEqual(set(runs.mapped("state")), {"done"})

    def test_no_more_batches_in_flight_than_the_flow_allows(self):
        self._partners(5)
        flow = self._flow(batch_size=1, parallel_batches=2)
        runs = flow._sync()

        def in_flight():
            self.env.invalidate_all()
            return runs.filtered(lambda r: r.state in ("queued", "running") and r.job_uuid)

        self.assertEqual(len(in_flight()), 2)
        most = 0
        for _step in range(20):
            pending = self.env["queue.job"].search(
                [("uuid", "in", in_flight().mapped("job_uuid")), ("state", "=", "pending")]
            )
            if not pending:
                break
            self._run_job(pending[0].uuid)  # one worker, one job at a time
            most = max(most, len(in_flight()))
        self.assertEqual(set(runs.mapped("state")), {"done"})
        self.assertEqual(most, 2, "a batch waiting for its poll, or for a worker, counts")

    def test_a_paused_flow_holds_its_batches_until_resumed(self):
        self._partners(2)
        flow = self._flow()
        run = flow._sync()
        flow.action_pause()
        self._run_job(run.job_uuid)
        self.assertEqual((run.state, run.job_uuid), ("queued", False))
        self.assertEqual(self.retail.stats["requests"], 0)
        flow.action_resume()
        self.assertTrue(run.job_uuid, "queued again")
        self._drain(flow)
        self.assertEqual(run.state, "done")

    def test_duplicate_remote_ids_in_a_batch_are_refused_before_sending(self):
        self._partners(3)
        flow = self._flow()

        def render(connector, flow, record, document):
            return dict(document, erpId=1)  # a hook mapping every record to one product

        hook = f"_sync_render_{self.connector.kind}_{flow.code}"
        with patch.object(type(self.connector), hook, render, create=True):
            run = flow._sync()
            with mute_logger(SYNC_RUN_LOGGER):
                self._drain(flow)
        self.assertEqual(run.state, "failed")
        self.assertEqual(run.error, "The batch holds the same erpId more than once (1): not sent.")
        self.assertEqual(self.retail.stats["requests"], 0, "nothing was posted")
        self.assertFalse(self._bindings(self.connector))
        self.assertFalse(flow.cursor_at, "a failed batch does not move the cursor")
        error = self.env["integration.error"].search([("res_model", "=", run._name), ("res_id", "=", run.id)])
        self.assertEqual(len(error), 1, "the operator finds it in the error log, with a Retry")

    def test_an_accepted_batch_is_polled_until_its_final_state(self):
        partners = self._partners(2)
        flow = self._flow()
        self.retail.items_per_second = 0.5  # the first poll finds the job still processing
        run = flow._sync()
        send_job = run.job_uuid
        self.assertIsNone(self._run_job(send_job))
        self.assertEqual((run.state, run.remote_job_id, run.sent_count), ("running", "hangfire-job-1", 2))
        first_poll = run.job_uuid
        self.assertNotEqual(first_poll, send_job, "a delayed job polls")
        self._run_job(first_poll)
        self.assertEqual((run.state, run.poll_count), ("running", 1))
        second_poll = self.env["queue.job"].search([("uuid", "=", run.job_uuid)])
        self.assertNotEqual(second_poll.uuid, first_poll)
        self.assertGreater(second_poll.eta, fields.Datetime.now() + timedelta(seconds=1), "later each time")
        self.retail.jobs["hangfire-job-1"]["due"] = time.time()  # the portal has processed it
        self._run_job(second_poll.uuid)
        self.assertEqual((run.state, run.failed_count, run.error), ("done", 0, False))
        self.assertEqual(set(self.retail.products), set(partners.ids))
        for partner in partners:
            binding = self._bindings(self.connector, res_id=partner.id)
            sent = {"erpId": partner.id, "name": partner.name, "email": None, "description": partner.function}
            self.assertEqual(self.retail.products[partner.id], sent)
            self.assertEqual((binding.external_id, binding.payload_hash), (str(partner.id), payload_digest(sent)))
        self.assertTrue(flow.cursor_at, "the whole Sync went through: the cursor moved")
        # The job of a settled run, run again (a requeued job), changes nothing.
        polls = self.retail.stats["requests"]
        self._run_job(second_poll.uuid)
        self.assertEqual(self.retail.stats["requests"], polls)

    def test_refused_items_leave_the_run_partial_with_errors_on_their_bindings(self):
        accepted, rejected, incomplete = self._partners(3)
        incomplete.function = False  # the portal requires a description
        self.retail.reject_erp_ids = {rejected.id}
        flow = self._flow()
        run = flow._sync()
        self._drain(flow)
        self.assertEqual((run.state, run.sent_count, run.failed_count), ("partial", 3, 2))
        self.assertFalse(self._bindings(self.connector, res_id=accepted.id).last_error)
        self.assertTrue(self._bindings(self.connector, res_id=accepted.id).payload_hash)
        for partner, reason in ((rejected, "refused by the portal"), (incomplete, "description is required")):
            binding = self._bindings(self.connector, res_id=partner.id)
            self.assertEqual(binding.last_error, reason)
            self.assertFalse(binding.payload_hash, "sent again once it changes")
        errors = self.env["integration.error"].search([("connector_id", "=", self.connector.id)])
        self.assertEqual(len(errors), 1, "one grouped entry, never one per item")
        self.assertEqual((errors.res_model, errors.res_id), (run._name, run.id))
        self.assertIn("2 of 3 record(s) refused by the remote", errors.message)
        self.assertIn("description is required", errors.message)
        self.assertTrue(flow.cursor_at, "a partial batch went through: the cursor moves")

    def test_unchanged_records_are_skipped_and_a_changed_one_is_sent_again(self):
        partners = self._partners(3)
        flow = self._flow()
        flow._sync()
        self._drain(flow)
        first_cursor = flow.cursor_at
        self.assertEqual(self.retail.stats["items_received"], 3)
        self.assertFalse(flow._sync(), "nothing changed: no batch")
        self.assertEqual(self.retail.stats["batches"], 1, "nothing sent the second time")
        self.assertGreaterEqual(flow.cursor_at, first_cursor)
        partners[1].email = "changed@example.com"
        run = flow._sync()
        self.assertEqual(run._res_ids(), partners[1].ids, "only the changed record")
        self._drain(flow)
        self.assertEqual(run.state, "done")
        self.assertEqual(self.retail.stats["items_received"], 4)
        self.assertEqual(self.retail.products[partners[1].id]["email"], "changed@example.com")

    def test_a_retry_of_a_failed_batch_sends_exactly_that_batch_again(self):
        self._partners(4)
        self.connector.retry_max_attempts = 1  # the first 5xx fails the batch
        flow = self._flow(batch_size=2)
        first, second = flow._sync().sorted("id")
        self.retail.faults["fail_rate"] = 1.0
        with mute_logger(CONNECTOR_LOGGER, SYNC_RUN_LOGGER):
            self._drain(flow)
        self.assertEqual((first.state, second.state), ("failed", "failed"))
        self.assertIn("503", second.error)
        self.assertFalse(self.retail.jobs)
        self.retail.faults["fail_rate"] = 0.0
        second.started_at -= timedelta(hours=3)  # retried long after it failed
        second.action_retry()
        self.assertEqual(second.state, "queued")
        self.retail.items_per_second = 1  # the first poll finds it processing
        self._run_job(second.job_uuid)
        self._run_job(second.job_uuid)
        self.assertEqual((second.state, second.poll_count), ("running", 1), "still polled, not given up")
        self.retail.jobs["hangfire-job-1"]["due"] = time.time()
        self._drain(flow)
        self.assertEqual(second.state, "done")
        self.assertEqual(self._sent_erp_ids(), [second._res_ids()], "that batch, nothing else")
        self.assertEqual(first.state, "failed", "the other batch waits for its own Retry")
        self.assertFalse(flow.cursor_at, "half of the Sync went through: no cursor yet")

    def test_the_cursor_moves_only_when_every_batch_of_a_sync_went_through(self):
        partners = self._partners(4)
        self.connector.retry_max_attempts = 1
        flow = self._flow(batch_size=2)
        post = self.retail._batch

        def batch_of_the_last_partner_fails(body):
            if partners[-1].id in [item["erpId"] for item in json.loads(body)]:
                return Reply(503, {"error": "unavailable"})
            return post(body)

        first, second = flow._sync().sorted("id")
        with (
            patch.object(self.retail, "_batch", batch_of_the_last_partner_fails),
            mute_logger(CONNECTOR_LOGGER, SYNC_RUN_LOGGER),
        ):
            self._drain(flow)
        self.assertEqual((first.state, second.state), ("done", "failed"))
        self.assertFalse(flow.cursor_at, "not after a failed batch")
        # The next Sync sends what did not go through (the rest is unchanged), and moves it.
        again = flow._sync()
        self.assertEqual(again._res_ids(), second._res_ids())
        self._drain(flow)
        self.assertEqual(again.state, "done")
        self.assertEqual(flow.cursor_at, again.plan_until)
        self.assertEqual(sorted(self.retail.products), partners.ids)


@tagged("post_install", "-at_install")
class TestExportMessages(ExportCase):
    """The data-sharing feed: one batch a run, numbered messages of string values, a summary."""

    def setUp(self):
        super().setUp()
        self.feed = DataSharingSandbox(client_id="odoo-client", client_secret="odoo-secret").start()
        self.addCleanup(self.feed.stop)
        self.connector = self._create_connector(
            base_url=self.feed.url,
            auth_type="oauth2",
            oauth2_grant_type="client_credentials",
            oauth2_token_url=self.feed.url + "/connect/token",
            oauth2_client_id="odoo-client",
            oauth2_client_secret="odoo-secret",
            entities_path=ENTITIES_PATH,
        )
        self.messages = []
        write = self.feed._write

        def keep(table, raw):
            reply = write(table, raw)
            self.messages.append((table, reply))
            return reply

        patcher = patch.object(self.feed, "_write", keep)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.feed.tables[0]["forceReload"] = False  # asked for by the forceReload test only

    def _flow(self, **values):
        return self._export_flow(
            self.connector,
            [("name", "NAME"), ("email", "EMAIL")],
            remote_path="/tablestream/write",
            export_protocol="messages",
            values_as_strings=True,
            table_name="TMOV",
            erp_name="RM",
            remote_id_json_path="ID",
            message_size=2,
            **values,
        )

    def _rows(self):
        """The rows the feed accepted, each as {column: value}."""
        return [
            {column["name"]: column["value"] for column in row["columns"]}
            for table, reply in self.messages
            if reply.body["success"]
            for row in table["rows"]
        ]

    def test_deleted_records_are_sent_as_tombstones(self):
        partners = self._partners(3)
        flow = self._flow()
        first = flow._sync()
        self._drain(flow)
        self.assertEqual((first.state, first.message_count, first.sent_count), ("done", 2, 3))
        self.assertEqual(self.feed.stats["summaries_ok"], 1)
        gone = partners[2]
        gone_id = str(gone.id)
        gone.unlink()
        tombstone = self._bindings(self.connector, external_id=gone_id)
        self.assertTrue(tombstone.is_deleted)
        run = flow._sync()
        self.assertEqual((run._res_ids(), run._deleted_ids()), ([], [gone_id]))
        self._drain(flow)
        self.assertEqual(run.state, "done")
        self.assertEqual(self._rows()[-1], {"ID": gone_id, "DELETED": "true"})
        self.assertEqual((self.feed.stats["deleted_rows"], self.feed.stats["summaries_ok"]), (1, 2))
        self.assertFalse(tombstone.exists(), "the partner knows: nothing left to send")
        self.assertFalse(flow._sync(), "a delete is sent once")

    def test_message_numbers_stay_gapless_across_a_retried_message(self):
        self._partners(5)
        flow = self._flow()
        write = self.feed._write
        answers_lost = []

        def lose_the_answer_to_message_2(table, raw):
            reply = write(table, raw)
            if table["messageNumber"] == 2 and not answers_lost:
                answers_lost.append(table["messageNumber"])
                return Reply(503, {"error": "unavailable"})  # received, but the answer never arrives
            return reply

        run = flow._sync()
        with patch.object(self.feed, "_write", lose_the_answer_to_message_2), mute_logger(CONNECTOR_LOGGER):
            failure = self._run_job(run.job_uuid)
        self.assertIn("503", str(failure), "the job is retried later")
        self.assertEqual((run.state, run.message_count, run.records_sent), ("running", 1, 2))
        self._run_job(run.job_uuid)
        self.assertEqual((run.state, run.message_count, run.sent_count), ("done", 3, 5))
        stats = self.feed.stats
        self.assertEqual(
            {key: stats[key] for key in ("messages", "records", "retries", "gaps", "repeats", "summaries_ok")},
            {"messages": 3, "records": 5, "retries": 1, "gaps": 0, "repeats": 0, "summaries_ok": 1},
        )
        self.assertEqual(
            [table["messageNumber"] for table, _reply in self.messages], [1, 2, 2, 3], "message 2 kept its number"
        )
        self.assertTrue(all(isinstance(value, str) for row in self._rows() for value in row.values()))

    def test_a_refused_summary_fails_the_batch_and_keeps_the_cursor(self):
        self._partners(3)
        flow = self._flow()
        run = flow._sync()
        lost = Reply(200, {"success": False, "errors": ["messageCount 2 but 1 messages received"]})
        with patch.object(self.feed, "_summary", lambda summary: lost), mute_logger(SYNC_RUN_LOGGER):
            self._drain(flow)
        self.assertEqual(run.state, "failed")
        self.assertIn("Summary of batch", run.error)
        self.assertIn("messageCount 2 but 1 messages received", run.error)
        self.assertFalse(flow.cursor_at)
        self.assertFalse(self._bindings(self.connector), "nothing taken, nothing bound")
        self.assertEqual(len(flow._sync()._res_ids()), 3, "the next Sync sends them again")

    def test_records_changed_or_deleted_while_a_batch_waits_for_its_retry_go_next_time(self):
        partners = self._partners(5)
        flow = self._flow()
        write = self.feed._write
        answers_lost = []

        def lose_the_answer_to_message_2(table, raw):
            reply = write(table, raw)
            if table["messageNumber"] == 2 and not answers_lost:
                answers_lost.append(table["messageNumber"])
                return Reply(503, {"error": "unavailable"})
            return reply

        run = flow._sync()
        with patch.object(self.feed, "_write", lose_the_answer_to_message_2), mute_logger(CONNECTOR_LOGGER):
            self._run_job(run.job_uuid)
        # Both were in message 1, which the feed has.
        deleted_id, changed = partners[0].id, partners[1]
        partners[0].unlink()
        changed.email = "new@example.com"
        self._run_job(run.job_uuid)
        self.assertEqual((run.state, run.message_count, run.sent_count), ("done", 3, 5))
        stats = self.feed.stats
        self.assertEqual((stats["retries"], stats["repeats"], stats["gaps"], stats["summaries_ok"]), (1, 0, 0, 1))
        # The next Sync sends the delete and the change the feed has not seen.
        again = flow._sync()
        self._drain(flow)
        self.assertEqual(again.state, "done")
        rows = self._rows()[-2:]
        self.assertIn({"ID": str(deleted_id), "DELETED": "true"}, rows)
        self.assertIn({"ID": str(changed.id), "NAME": changed.name, "EMAIL": "new@example.com"}, rows)
        self.assertFalse(self._bindings(self.connector, is_deleted=True), "the delete went through")

    def test_duplicate_keys_in_a_batch_are_refused_before_sending(self):
        first, second = self._partners(2)
        # An id the partner gave to the first record is the second's Odoo id.
        self.env["integration.binding"]._bind(self.connector, first, str(second.id))
        flow = self._flow(remote_id_source="binding")
        run = flow._sync()
        with mute_logger(SYNC_RUN_LOGGER):
            self._drain(flow)
        self.assertEqual(run.state, "failed")
        self.assertIn(f"the same ID more than once ({second.id})", run.error)
        self.assertFalse(self.messages, "nothing was sent")

    def test_force_reload_from_the_entities_endpoint_sends_a_base_load_once(self):
        self._partners(3)
        flow = self._flow()
        first = flow._sync()
        self._drain(flow)
        self.assertFalse(first.is_base_load)
        self.assertEqual(len(self._rows()), 3)
        # The partner asks for TMOV again; the next Sync reads the entities before planning.
        self.feed.tables[0]["forceReload"] = True
        reload = flow._sync()
        self.assertTrue(reload.is_base_load)
        self.assertEqual(len(reload._res_ids()), 3, "every record, unchanged ones too")
        self.assertFalse(self.connector._sync_read_entities(), "a reload under way is not started twice")
        self._drain(flow)
        self.assertEqual(reload.state, "done")
        self.assertEqual(len(self._rows()), 6)
        self.assertTrue(all(table["isBaseLoad"] for table, _reply in self.messages[-2:]))
        self.assertFalse(self.feed.tables[0]["forceReload"], "acknowledged by the summary")
        self.assertFalse(self.connector._sync_read_entities())
        self.assertFalse(flow.is_reload_pending)
        self.assertFalse(flow._sync(), "and no second reload")

    def test_force_reload_read_by_hand_flags_the_flow(self):
        self._partners(1)
        flow = self._flow()
        self.feed.tables[0]["forceReload"] = True
        self.assertEqual(self.connector._sync_read_entities(), flow)
        self.assertTrue(flow.is_reload_pending)
        self.assertFalse(flow.cursor_at)
        run = flow._sync()
        self.assertTrue(run.is_base_load)
        self.assertFalse(flow.is_reload_pending, "the reload is planned: no longer pending")

    def test_an_unreachable_entities_list_does_not_hold_the_export_back(self):
        self._partners(2)
        flow = self._flow()
        self.connector.entities_path = "/api/carol-definitions/v1/entities/GONE"
        with mute_logger(CONNECTOR_LOGGER, SYNC_FLOW_LOGGER):
            run = flow._sync()
        self.assertEqual(len(run._res_ids()), 2)
        self._drain(flow)
        self.assertEqual(run.state, "done")


@tagged("post_install", "-at_install")
class TestSyncRunRetention(ExportCase):
    def test_cleanup_removes_old_runs_but_keeps_the_last_successful_one(self):
        connector = self._create_connector()
        flow = self._export_flow(connector, [("name", "name")], remote_path="/items", keep_days=30, cleanup_limit=2)
        Run = self.env["integration.sync.run"]
        states = ["done", "failed", "done", "partial", "failed", "done"]
        runs = Run.create([{"flow_id": flow.id, "kind": "batch", "state": state} for state in states])
        oldest, old_failed, last_success, old_partial, recent_failed, recent_done = runs
        old = runs - recent_failed - recent_done
        self.env.flush_all()
        self.env.cr.execute(
            "UPDATE integration_sync_run SET create_date = create_date - interval '40 days' WHERE id IN %s",
            [tuple(old.ids)],
        )
        recent_done.state = "queued"  # the latest run is still under way: the last success is older
        self.env.invalidate_all()
        self.assertEqual(flow._cleanup_runs(), 2, "at most Remove At Most, oldest first")
        self.assertFalse((oldest | old_failed).exists())
        self.assertEqual(flow._cleanup_runs(), 1)
        self.assertEqual(runs.exists(), last_success | recent_failed | recent_done)
        self.assertEqual(flow._cleanup_runs(), 0, "the last successful run stays, however old")
