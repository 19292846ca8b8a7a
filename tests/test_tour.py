"""Browser tour of the operator screens, in headless Chromium."""

import json
from datetime import timedelta

from odoo import fields
from odoo.tests import HttpCase, tagged

from ..const import MANAGER_GROUP
from ..sandbox.orders import OrdersSandbox
from .common import IntegrationHubMixin, JobRunner, errors_logged, failed_tour_event, tour_orders_imported_inline


@tagged("post_install", "-at_install")
class TestConnectorTour(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def test_create_connector_and_test_connection(self):
        # The tour types this server's address into the new connector's Base URL.
        code = (
            f"sessionStorage.setItem('integration_hub_tour_base_url', {json.dumps(self.server.url + '/partner')});"
            "odoo.startTour('integration_hub_connector_tour', {stepDelay: 0, startUrl: '/odoo'});"
        )
        self.start_tour("/odoo", "integration_hub_connector_tour", login="admin", code=code)
        connector = self.env["integration.connector"].search([("code", "=", "tour-shop")])
        self.assertEqual(connector.name, "Tour Shop")
        self.assertEqual(connector.health_state, "ok")
        self.assertEqual(connector.health_status, "ok", "the tested call counts in the status at once")
        self.assertEqual(connector.last_test_status_code, 200)
        health_calls = self.server.requests_to("/partner/ping")
        self.assertEqual(len(health_calls), 1, "Test Connection reached the local server once")
        self.assertEqual(health_calls[0].headers["Authorization"], "Bearer tour-token-123")


@tagged("post_install", "-at_install")
class TestWebhookEventTour(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def test_retry_a_failed_event(self):
        connector = self._create_connector(name="Tour Shop Webhooks", webhook_signature="none")
        event = failed_tour_event(connector)
        with tour_orders_imported_inline(connector):
            self.start_tour("/odoo", "integration_hub_webhook_event_tour", login="admin")
        event.invalidate_recordset()
        self.assertEqual(event.state, "done")
        self.assertEqual(event.attempts, 6)
        self.assertEqual(event.result_note, "order TOUR-1 imported")


@tagged("post_install", "-at_install")
class TestSyncFlowTour(IntegrationHubMixin, HttpCase):
    """A manager creates an import flow from the screens, syncs it and follows it to a record.

    The order sandbox holds 60 orders changed 20 to 10 minutes ago: inside the one window a
    flow without cursor or start reads (the last 30 minutes), on two pages of 50. While the
    tour runs, ``JobRunner`` plays queue_job's runner in a thread, so the run the tour watches
    is queued by Sync Now and worked by a stored job, loaded and performed as the runner does,
    not by the request that queued it (``queue_job__no_delay`` would have it done before the
    page showed it). The tour reloads the runs until they are Done and fails on Failed or
    Partial, or after 50 s.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        now = fields.Datetime.now().replace(microsecond=0)
        cls.sandbox = OrdersSandbox(orders=60, start=now - timedelta(minutes=20), span=timedelta(minutes=10)).start()
        cls.addClassCleanup(cls.sandbox.stop)
        cls.connector = cls._create_connector(name="Tour Orders API", code="tour-orders", base_url=cls.sandbox.url)
        # Browser tests log in with the login as password; this manager may also create contacts.
        cls.tour_manager = (
            cls.env["res.users"]
            .with_context(no_reset_password=True)
            .create(
                {
                    "name": "Tour Sync Manager",
                    "login": "ih_tour_sync_manager",
                    "password": "ih_tour_sync_manager",
                    "groups_id": [(6, 0, (cls.env.ref(MANAGER_GROUP) | cls.env.ref("base.group_partner_manager")).ids)],
                }
            )
        )
        if "tour_enabled" in cls.tour_manager._fields:
            cls.tour_manager.tour_enabled = False

    def test_create_a_flow_sync_it_and_open_a_binding(self):
        # A job waits 3 s before the runner takes it: the tour sees the run queued, then done.
        with errors_logged() as errors, JobRunner(self.registry, "integration.sync.run", min_age=3) as runner:
            self.start_tour("/odoo", "integration_hub_sync_flow_tour", login=self.tour_manager.login, timeout=240)
        self.assertFalse(runner.errors, f"the jobs ran without error: {runner.errors}")
        self.assertFalse(errors, "the server logged no error")
        self.env.invalidate_all()  # written by the browser's requests and the runner's cursors
        flow = self.env["integration.sync.flow"].search([("code", "=", "tour_orders")])
        self.assertEqual(flow.connector_id, self.connector, "created from the connector, on it")
        self.assertEqual(flow.model_id.model, "res.partner")
        self.assertEqual((flow.direction, flow.remote_path, flow.id_json_path), ("import", "/pedidos", "pedidoId"))
        self.assertEqual(flow.user_id, self.tour_manager, "runs as the manager who made it")
        self.assertEqual(
            [(line.json_path, line.field_id.name) for line in flow.field_ids],
            [("codigo", "ref"), ("cliente.nome", "name")],
        )
        run = flow.run_ids
        self.assertEqual(len(run), 1, "one window: the last 30 minutes")
        self.assertEqual(len(runner.ran), 1, "its job was run by the runner, once")
        self.assertEqual(run.job_uuid, runner.ran[0])
        self.assertEqual(
            (run.state, run.page_count, run.fetched_count, run.created_count, run.failed_count), ("done", 2, 60, 60, 0)
        )
        self.assertEqual(flow.cursor_at, run.window_end, "the cursor moved over the done window")
        self.assertEqual(self.sandbox.stats["pages_served"], 2)
        self.assertEqual(self.sandbox.stats["pages_skipped"], 0)
        first = self.env["integration.binding"]._to_internal(self.connector, "res.partner", "1")
        self.assertEqual((first.ref, first.name), ("P0000001", "Cliente 1"), "order 1's contact, mapped")
        self.assertEqual(flow.binding_count, 60)
