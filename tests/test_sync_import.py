"""Import flows against the order sandbox: windows, pages, checkpoints, splitting, 429s."""

import json
from datetime import datetime, timedelta
from unittest.mock import patch

import requests

from odoo.tests import tagged
from odoo.tools import mute_logger

from odoo.addons.queue_job.exception import RetryableJobError

from ..models.integration_sync_flow.importing import IntegrationSyncFlow
from ..sandbox.orders import OrdersSandbox
from ..sandbox.server import RateLimit, Reply
from .common import ADDON_LOGGER, CONNECTOR_LOGGER, IntegrationHubCase, run_job

DAY = datetime(2026, 1, 1)


@tagged("post_install", "-at_install")
class TestSyncImport(IntegrationHubCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Partner = cls.env["res.partner"]
        cls.partner_model = cls.env["ir.model"]._get("res.partner")

    def setUp(self):
        super().setUp()
        # 1,000 orders over one day: 250 every 6 hours, about 21 every 30 minutes.
        self.sandbox = OrdersSandbox(orders=1000, start=DAY, span=timedelta(days=1)).start()
        self.addCleanup(self.sandbox.stop)
        self.connector = self._create_connector(
            base_url=self.sandbox.url, auth_type="bearer", bearer_token="shop-token", retry_max_attempts=3
        )
        self.flow = self._flow()

    def _flow(self, **values):
        field = self.env["ir.model.fields"]._get
        vals = {
            "name": "Orders",
            "code": f"orders{len(self.env['integration.sync.flow'].search([]))}",
            "connector_id": self.connector.id,
            "direction": "import",
            "model_id": self.partner_model.id,
            "remote_path": "/pedidos",
            "extra_params": "direcaoOrdenacao=ASC",
            "id_json_path": "pedidoId",
            "start_at": DAY,
            "window_minutes": 360,
            "overlap_seconds": 0,
            "field_ids": [
                (0, 0, {"json_path": "codigo", "field_id": field("res.partner", "ref").id}),
                (0, 0, {"json_path": "cliente.nome", "field_id": field("res.partner", "name").id}),
                (0, 0, {"json_path": "cliente.email", "field_id": field("res.partner", "email").id}),
            ],
        }
        vals.update(values)
        return self.env["integration.sync.flow"].create(vals)

    def _run_all(self, flow=None, rounds=50):
        """Run the flow's queued jobs as the runner would, until none is left; the last errors."""
        flow = flow or self.flow
        errors = []
        for _ in range(rounds):
            runs = flow.run_ids.filtered(lambda r: r.state in ("queued", "running") and r.job_uuid)
            pending = [
                r for r in runs if self.env["queue.job"].search([("uuid", "=", r.job_uuid), ("state", "!=", "done")])
            ]
            if not pending:
                break
            for run in pending:
                error = run_job(self.env, run.job_uuid)
                if error is not None:
                    errors.append(error)
            flow.invalidate_recordset()
            flow.run_ids.invalidate_recordset()
        return errors

    def _imported(self, flow=None):
        flow = flow or self.flow
        bindings = self.env["integration.binding"].search(
            [("connector_id", "=", flow.connector_id.id), ("res_model", "=", "res.partner")]
        )
        return self.Partner.browse(bindings.mapped("res_id"))

    def _pages_asked(self):
        return {key[1:]: sorted(pages) for key, pages in self.sandbox._served.items()}

    def test_a_window_is_read_page_by_page_until_the_total(self):
        runs = self.flow._plan_import(until=DAY + timedelta(hours=6))
        self.assertEqual(len(runs), 1)
        self.assertFalse(self._run_all())
        run = runs
        self.assertEqual(run.state, "done")
        self.assertEqual(run.remote_total, 250)
        self.assertEqual(run.page_count, 5, "250 orders: five full pages, no sixth asked (the total is reached)")
        self.assertEqual((run.fetched_count, run.created_count, run.failed_count), (250, 250, 0))
        partners = self._imported()
        self.assertEqual(len(partners), 250)
        self.assertEqual(sorted(partners.mapped("ref"))[:2], ["P0000001", "P0000002"])
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=6), "the cursor moved to the window's end")
        other = self._flow(code="other")
        flows = self.flow | other
        flows.invalidate_recordset()
        self.assertEqual(flows.mapped("last_state"), ["done", False], "the flow list shows each flow's last run")
        self.assertEqual(flows.mapped("run_count"), [1, 0])
        self.assertEqual(flows.mapped("binding_count"), [250, 250], "bindings are per connector and model")

    def test_a_short_page_is_the_last(self):
        self.flow.write({"window_minutes": 30, "total_header": False})
        runs = self.flow._plan_import(until=DAY + timedelta(hours=1))
        self.assertEqual(len(runs), 2)
        self._run_all()
        self.assertEqual(runs.mapped("page_count"), [1, 1], "about 21 orders: one short page each")
        self.assertEqual(sum(runs.mapped("created_count")), 42)
        self.assertEqual(set(runs.mapped("state")), {"done"})

    def test_a_window_over_the_page_cap_is_split_before_paging(self):
        # The remote refuses page 3 and beyond: a window may hold at most 2 pages of 50.
        self.flow.write({"page_cap": 3})
        runs = self.flow._plan_import(until=DAY + timedelta(hours=6))
        self._run_all()
        windows = self.flow.run_ids.sorted("window_start")
        self.assertGreater(len(windows), 1, "250 orders in one window: split")
        self.assertTrue(all(w.state == "done" for w in windows), windows.mapped("error"))
        self.assertTrue(all(w.remote_total <= 100 for w in windows), windows.mapped("remote_total"))
        asked = [page for pages in self._pages_asked().values() for page in pages]
        self.assertLess(max(asked), 3, "no page at or beyond the cap was ever asked")
        self.assertEqual(windows[0].window_start, DAY)
        self.assertEqual(windows[-1].window_end, DAY + timedelta(hours=6))
        for before, after in zip(windows, windows[1:], strict=False):
            self.assertEqual(before.window_end, after.window_start, "the halves cover the window without gap")
        self.assertEqual(len(self._imported()), 250)
        self.assertEqual(len(set(self._imported().mapped("ref"))), 250)
        self.assertIn(runs, windows)

    def test_a_429_asks_the_same_page_again(self):
        self.flow._plan_import(until=DAY + timedelta(hours=6))
        run = self.flow.run_ids
        self.sandbox.rate = RateLimit(3, 60.0)  # pages 1 to 3, then 429 + retry-after
        with mute_logger(CONNECTOR_LOGGER):
            error = run_job(self.env, run.job_uuid)
        self.assertIsInstance(error, RetryableJobError, "a 429 reschedules the window's job")
        self.assertEqual(run.page_next, 4, "the checkpoint holds the page refused")
        self.assertEqual(run.state, "running")
        self.sandbox.rate = RateLimit(1000, 60.0)
        self.connector.action_reset_circuit()  # the Retry-After block is honoured until lifted
        self.assertIsNone(run_job(self.env, run.job_uuid))
        self.assertEqual(run.state, "done")
        self.assertEqual(self.sandbox.stats["answered_429"], 1)
        self.assertEqual(self.sandbox.stats["pages_skipped"], 0, "page 4 was asked again, never skipped")
        self.assertEqual(self._pages_asked()[("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z")], [1, 2, 3, 4, 5])
        self.assertEqual(len(self._imported()), 250)

    def test_a_catch_up_walks_windows_up_to_now_several_at_once(self):
        self.flow.write({"window_minutes": 60, "parallel_windows": 2})
        runs = self.flow._plan_import(until=DAY + timedelta(hours=5)).sorted("window_start")
        self.assertEqual(len(runs), 5, "one window per hour from the start to the end")
        self.assertEqual([bool(r.job_uuid) for r in runs], [True, True, False, False, False], "two at a time")
        run_job(self.env, runs[0].job_uuid)
        self.assertEqual([bool(r.job_uuid) for r in runs], [True, True, True, False, False], "one ended, one more")
        self._run_all()
        self.assertEqual(set(runs.mapped("state")), {"done"})
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=5))
        # A Sync while nothing is due plans nothing before the cursor.
        self.assertFalse(self.flow._plan_import(until=DAY + timedelta(hours=5)))

    def test_a_due_flow_is_queued_by_the_cron_and_a_paused_one_is_not(self):
        self.flow.write({"interval_minutes": 10, "window_minutes": 60 * 24 * 400})
        # The demo's flows are scheduled too: out of the way, so that the count is this test's.
        (self.env["integration.sync.flow"].search([]) - self.flow).write({"is_paused": True})
        paused = self._flow(interval_minutes=10, is_paused=True)
        self.assertEqual(self.env["integration.sync.flow"]._cron_sync_due(), 1)
        self.assertTrue(self.flow.run_ids, "the due flow has its windows queued")
        self.assertFalse(paused.run_ids)
        self.assertGreater(self.flow.next_run_at, self.flow.last_run_at, "next time is an interval later")
        self.assertEqual(self.env["integration.sync.flow"]._cron_sync_due(), 0, "not due again at once")

    def test_reading_a_window_again_creates_nothing(self):
        self.flow._plan_import(until=DAY + timedelta(hours=6))
        self._run_all()
        count = self.Partner.search_count([])
        self.flow.cursor_at = DAY
        again = self.flow._plan_import(until=DAY + timedelta(hours=6))
        self._run_all()
        self.assertEqual(self.Partner.search_count([]), count, "nothing new created")
        self.assertEqual((again.created_count, again.updated_count, again.unchanged_count), (0, 0, 250))
        # A changed order is updated, the others stay untouched.
        self.sandbox.set_order(7, cliente={"nome": "Renamed", "email": "renamed@example.com"})
        self.flow.cursor_at = DAY
        third = self.flow._plan_import(until=DAY + timedelta(hours=6))
        self._run_all()
        self.assertEqual((third.created_count, third.updated_count, third.unchanged_count), (0, 1, 249))
        self.assertEqual(self.Partner.search([("ref", "=", "P0000007")]).name, "Renamed")

    def test_a_worker_killed_mid_window_resumes_at_the_next_page(self):
        self.flow._plan_import(until=DAY + timedelta(hours=6))
        run = self.flow.run_ids
        original = IntegrationSyncFlow._fetch_page
        killed = []

        def fetch_page(flow, position):
            if position["page"] == 3 and not killed:
                killed.append(True)
                raise RuntimeError("worker killed")  # after page 2 was stored, before page 3
            return original(flow, position)

        with patch.object(IntegrationSyncFlow, "_fetch_page", fetch_page), mute_logger(ADDON_LOGGER):
            error = run_job(self.env, run.job_uuid)
        self.assertIsInstance(error, RuntimeError)
        self.assertEqual((run.state, run.page_next, run.created_count), ("running", 3, 100))
        self.assertEqual(run.progress, 40.0, "100 of the 250 orders the remote announced")
        self.assertEqual(len(self._imported()), 100, "pages 1 and 2 are kept")
        # The runner requeues the dead job: it goes on from page 3.
        self.assertIsNone(run_job(self.env, run.job_uuid))
        self.assertEqual((run.state, run.created_count, run.page_count), ("done", 250, 5))
        self.assertEqual(self._pages_asked()[("2026-01-01T00:00:00Z", "2026-01-01T06:00:00Z")], [1, 2, 3, 4, 5])
        self.assertEqual(self.sandbox.stats["pages_served"], 5, "no page asked twice")
        self.assertEqual(len(self._imported()), 250)
        self.assertEqual(self.Partner.search_count([("ref", "=like", "P00%")]), 250, "no order created twice")

    def test_a_run_whose_job_failed_outside_it_is_settled_by_the_scheduler(self):
        self.flow.write({"window_minutes": 180})
        runs = self.flow._plan_import(until=DAY + timedelta(hours=6)).sorted("window_start")

        def broken(flow, position):
            raise RuntimeError("a bug in a hook")

        with patch.object(IntegrationSyncFlow, "_fetch_page", broken), mute_logger(ADDON_LOGGER):
            self.assertIsInstance(run_job(self.env, runs[0].job_uuid), RuntimeError)
        self.assertEqual(runs[0].state, "running", "the job failed; the run cannot tell")
        self.env["integration.sync.flow"]._cron_sync_due()
        self.assertEqual(runs[0].state, "failed")
        self.assertIn("a bug in a hook", runs[0].error)
        self.assertTrue(runs[1].job_uuid, "the next window got its job")
        self._run_all()
        runs[0].action_retry()
        self._run_all()
        self.assertEqual(runs.mapped("state"), ["done", "done"])
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=6))

    def test_a_window_failed_midway_is_read_whole_on_retry(self):
        route = self.sandbox.route

        def failing_route(method, path, query, headers, body):
            if query.get("pagina") == "4":
                return Reply(400, {"error": "bad_request", "message": "page 4 refused"})
            return route(method, path, query, headers, body)

        self.sandbox.route = failing_route
        run = self.flow._plan_import(until=DAY + timedelta(hours=6))
        with mute_logger(CONNECTOR_LOGGER, ADDON_LOGGER):
            self._run_all()
        self.assertEqual((run.state, run.fetched_count), ("failed", 150))
        self.sandbox.route = route
        run.action_retry()
        self.assertFalse(self._run_all())
        self.assertEqual((run.state, run.fetched_count, run.page_count), ("done", 250, 5), "every page read again")
        self.assertEqual((run.created_count, run.unchanged_count), (100, 150))
        self.assertEqual(len(self._imported()), 250)
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=6))

    def test_a_worker_killed_after_the_last_page_finishes_without_asking_more(self):
        run = self.flow._plan_import(until=DAY + timedelta(hours=6))
        flow_class = type(self.env["integration.sync.flow"])

        def killed(flow, window_run):
            raise RuntimeError("worker killed")  # after the last page's transaction

        with patch.object(flow_class, "_finish_window", killed), mute_logger(ADDON_LOGGER):
            self.assertIsInstance(run_job(self.env, run.job_uuid), RuntimeError)
        self.assertEqual(run.state, "done", "the final state went with the last page")
        self.assertFalse(self.flow.cursor_at, "the cursor had not moved yet")
        served = self.sandbox.stats["pages_served"]
        self.assertIsNone(run_job(self.env, run.job_uuid), "the job requeued after the kill")
        self.assertEqual(self.sandbox.stats["pages_served"], served, "no page asked again")
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=6), "the cursor moved now")

    def test_a_split_without_a_total_counts_each_record_once(self):
        self.flow.write({"page_cap": 3, "total_header": False})
        self.flow._plan_import(until=DAY + timedelta(hours=6))
        self.assertFalse(self._run_all())
        windows = self.flow.run_ids
        self.assertTrue(all(w.state == "done" for w in windows), windows.mapped("error"))
        self.assertEqual(len(self._imported()), 250)
        self.assertEqual(sum(windows.mapped("fetched_count")), 250, "the halves' counts add up to the window")
        # Pages stored before the split are read again after it: their records count as unchanged.
        self.assertEqual(sum(windows.mapped("created_count")) + sum(windows.mapped("unchanged_count")), 250)

    def test_a_window_whose_total_changes_while_paged_is_read_again(self):
        run = self.flow._plan_import(until=DAY + timedelta(hours=6))
        list_orders = self.sandbox._list
        calls = []

        def moving(token, query):
            calls.append(query.get("pagina"))
            if len(calls) == 3:  # while page 3 is asked, order 10 changes and leaves the window
                self.sandbox.set_order(10, dataAtualizacao="2026-01-02T12:00:00Z")
            return list_orders(token, query)

        self.sandbox._list = moving
        self.assertFalse(self._run_all())
        self.assertEqual(run.state, "done")
        self.assertEqual(run.restart_count, 1, "read again from page 1 once the total changed")
        self.assertEqual(run.fetched_count, 249)
        self.assertEqual(len(self._imported()), 250, "no order fell between two pages")

    def test_a_manager_resuming_a_flow_lets_its_window_split(self):
        self.flow.write({"page_cap": 3, "is_paused": True})
        run = self.flow._plan_import(until=DAY + timedelta(hours=6))
        run_job(self.env, run.job_uuid)
        self.assertEqual((run.state, run.job_uuid), ("queued", False), "paused: the run waits without a job")
        self.flow.with_user(self.manager).action_resume()
        job = self.env["queue.job"].search([("uuid", "=", run.job_uuid)])
        self.assertTrue(job)
        self.assertFalse(self._run_all())
        self.assertGreater(len(self.flow.run_ids), 1, "split, although managers cannot create runs themselves")
        self.assertEqual(len(self._imported()), 250)

    def test_a_failed_window_holds_the_cursor(self):
        self.flow.write({"window_minutes": 120})
        route = self.sandbox.route

        def failing_route(method, path, query, headers, body):
            if query.get("dataInicial") == "2026-01-01T02:00:00Z":
                return Reply(400, {"error": "bad_request", "message": "this window is refused"})
            return route(method, path, query, headers, body)

        self.sandbox.route = failing_route
        runs = self.flow._plan_import(until=DAY + timedelta(hours=6)).sorted("window_start")
        with mute_logger(CONNECTOR_LOGGER, ADDON_LOGGER):
            self._run_all()
        self.assertEqual(runs.mapped("state"), ["done", "failed", "done"])
        self.assertIn("400", runs[1].error)
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=2), "the cursor stops before the failed window")
        self.connector.invalidate_recordset()
        self.assertEqual(self.connector.sync_failed_run_count, 1, "the connector shows it")
        action = self.connector.action_view_failed_sync_runs()
        self.assertEqual(
            self.env["integration.sync.run"].search(action["domain"] + [("state", "=", "failed")]), runs[1]
        )
        error = self.env["integration.error"].search([("res_model", "=", runs[1]._name), ("res_id", "=", runs[1].id)])
        self.assertTrue(error, "the failure is in the error log, linked to the run")
        # Retry re-reads exactly that window; the cursor then moves over the three.
        self.sandbox.route = route
        runs[1].action_retry()
        self._run_all()
        self.assertEqual(runs[1].state, "done")
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=6))
        self.assertEqual(len(self._imported()), 250)

    def test_a_page_not_in_utf8_fails_the_window_readably(self):
        # Before: read with U+FFFD for each invalid byte, the page's names were imported
        # as "Cliente S\ufffdo" and the cursor moved over them.
        self.flow.window_minutes = 30
        self.http_post_fault(malformed="invalid_utf8")
        runs = self.flow._plan_import(until=DAY + timedelta(minutes=30))
        with mute_logger(ADDON_LOGGER):
            self._run_all()
        self.assertEqual(runs.state, "failed")
        self.assertRegex(runs.error, r"page 1: the answer is not UTF-8 text \(byte 0xe3 at position \d+\)")
        self.assertFalse(self.flow.cursor_at, "the cursor holds")
        self.assertFalse(self._imported(), "nothing created from the page")
        # A page that names its charset is read in it.
        route = self.sandbox.route

        def latin1_route(method, path, query, headers, body):
            reply = route(method, path, query, headers, body)
            text = json.dumps(reply.body, ensure_ascii=False).replace("Cliente", "Cliente S\u00e3o")
            return Reply(
                200,
                None,
                reply.headers,
                raw=text.encode("latin-1"),
                content_type="application/json; charset=ISO-8859-1",
            )

        self.sandbox.route = latin1_route
        runs.action_retry()
        self._run_all()
        self.assertEqual(runs.state, "done")
        self.assertIn("Cliente S\u00e3o 1", self._imported().mapped("name"))
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(minutes=30))

    def http_post_fault(self, **faults):
        requests.post(self.sandbox.url + "/_sandbox/faults", json=faults, timeout=10).raise_for_status()

    def test_the_overlap_margin_asks_from_before_the_cursor(self):
        self.flow.write({"overlap_seconds": 600, "cursor_at": DAY + timedelta(hours=1), "window_minutes": 30})
        runs = self.flow._plan_import(until=DAY + timedelta(hours=1, minutes=30))
        self._run_all()
        self.assertEqual(runs.window_start, DAY + timedelta(hours=1), "the window starts at the cursor")
        self.assertIn(("2026-01-01T00:50:00Z", "2026-01-01T01:30:00Z"), self._pages_asked(), "asked from 10 min before")
        self.assertEqual(runs.fetched_count, 28, "40 minutes of orders")
        self.assertEqual(self.flow.cursor_at, DAY + timedelta(hours=1, minutes=30))

    def test_an_existing_record_is_adopted_by_its_key_field(self):
        existing = self.Partner.create({"name": "Known before the sync", "ref": "P0000005"})
        self.flow.write(
            {
                "id_json_path": "codigo",
                "match_field_id": self.env["ir.model.fields"]._get("res.partner", "ref").id,
                "window_minutes": 30,
            }
        )
        runs = self.flow._plan_import(until=DAY + timedelta(minutes=30))
        self._run_all()
        self.assertEqual((runs.created_count, runs.updated_count), (20, 1))
        self.assertEqual(self.Partner.search_count([("ref", "=", "P0000005")]), 1, "adopted, not duplicated")
        self.assertEqual(existing.name, "Cliente 5", "and updated from the remote")
        binding = self.env["integration.binding"]._find(self.connector, "res.partner", external_id="P0000005")
        self.assertEqual(binding.res_id, existing.id)

    def test_a_record_odoo_refuses_fails_alone_and_is_named(self):
        self.flow.window_minutes = 30
        self.sandbox.set_order(4, cliente={"nome": None, "email": "nameless@example.com"})
        runs = self.flow._plan_import(until=DAY + timedelta(minutes=30))
        with mute_logger("odoo.sql_db", ADDON_LOGGER):
            self._run_all()
        self.assertEqual((runs.state, runs.created_count, runs.failed_count), ("partial", 20, 1))
        self.assertTrue(runs.error.startswith("4: "), runs.error)
        self.assertIn("name", runs.error, "the database's reason, on the failed order's line")
        self.assertEqual(len(self._imported()), 20)

    def test_a_mapping_failure_fails_that_record_only(self):
        self.flow.field_ids.filtered(lambda line: line.field_id.name == "email").unlink()
        self.flow.write(
            {
                "field_ids": [
                    (
                        0,
                        0,
                        {
                            "json_path": "valorTotal",
                            "field_id": self.env["ir.model.fields"]._get("res.partner", "color").id,
                        },
                    )
                ],
                "window_minutes": 30,
            }
        )
        self.sandbox.set_order(3, valorTotal="not a number")
        runs = self.flow._plan_import(until=DAY + timedelta(minutes=30))
        self._run_all()
        self.assertEqual((runs.state, runs.failed_count, runs.created_count), ("partial", 1, 20))
        self.assertIn("3: Field Color", runs.error, "the failed order is named by its id")
        self.assertIn("not a valid integer", runs.error)
        self.assertFalse(self.flow.cursor_at, "a partial window does not move the cursor")

    def test_a_webhook_imports_one_order_through_the_flow(self):
        self.flow.record_path = "/pedidos/{id}"
        rule = self.env["integration.webhook.rule"].create(
            {
                "connector_id": self.connector.id,
                "event_type": "pedido.*",
                "action_type": "sync_import",
                "sync_flow_id": self.flow.id,
                "match_path": "pedidoId",
            }
        )
        event = self.env["integration.webhook.event"].create(
            {
                "connector_id": self.connector.id,
                "event_id": "wake-42-1",
                "event_type": "pedido.novo.indexado",
                "payload": '{"pedidoId": 42}',
            }
        )
        self.flow.is_paused = True
        with self.assertRaises(RetryableJobError, msg="a paused flow imports nothing; the event waits"):
            rule._apply(event)
        self.assertFalse(self.Partner.search_count([("ref", "=", "P0000042")]))
        self.flow.is_paused = False
        partner = rule._apply(event)
        self.assertEqual(partner.ref, "P0000042")
        # Webhooks repeat: the same announcement again changes nothing.
        self.assertEqual(rule._apply(event), partner)
        self.assertEqual(self.Partner.search_count([("ref", "=", "P0000042")]), 1)
        binding = self.env["integration.binding"].search([("external_id", "=", "42")])
        self.assertEqual(binding.res_id, partner.id)
        # A window read later recognises it.
        self.flow._plan_import(until=DAY + timedelta(hours=6))
        self._run_all()
        self.assertEqual(self.Partner.search_count([("ref", "=", "P0000042")]), 1)
