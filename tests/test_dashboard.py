"""The operator's Overview: card figures, card buttons, and a tour from a red card to a Retry."""

import re
from datetime import timedelta
from unittest.mock import patch

from odoo import Command, fields
from odoo.tests import HttpCase, tagged

from ..const import USER_GROUP
from ..models.connector import health, monitoring
from ..models.integration_connector_state import state_cursor
from .common import (
    IntegrationHubCase,
    IntegrationHubMixin,
    Reply,
    failed_tour_event,
    screenshot,
    tour_orders_imported_inline,
)


class OverviewMixin:
    def _flow(self, connector):
        return self.env["integration.sync.flow"].create(
            {
                "name": "Orders",
                "code": f"orders{len(self.env['integration.sync.flow'].search([]))}",
                "connector_id": connector.id,
                "direction": "import",
                "model_id": self.env["ir.model"]._get("res.partner").id,
                "remote_path": "/pedidos",
                "id_json_path": "id",
            }
        )


@tagged("post_install", "-at_install")
class TestOverview(OverviewMixin, IntegrationHubCase):
    def test_the_overview_is_the_integrations_menus_default(self):
        root = self.env.ref("integration_hub.integration_hub_menu_root")
        overview = self.env.ref("integration_hub.integration_connector_action_overview")
        self.assertEqual(root.action, overview)
        first = root.child_id.sorted("sequence")[0]
        self.assertEqual((first.name, first.action), ("Overview", overview))

    def test_the_webhook_backlog_shows_how_fast_it_drains_and_when_it_will_be_empty(self):
        connector = self._create_connector(webhook_signature="none")
        Event = self.env["integration.webhook.event"]
        receiver = connector._webhook_receiver(connector.code)
        ids = [Event._ingest(receiver, b"{}", {}, f"evt-{i}", "order.created")[0] for i in range(50)]
        self.assertEqual((connector.webhook_queued_count, connector.webhook_empty_eta), (50, "not draining"))
        Event.browse(ids[:20]).write({"state": "done", "processed_at": fields.Datetime.now() - timedelta(minutes=3)})
        Event.browse(ids[20:25]).write({"state": "done", "processed_at": fields.Datetime.now() - timedelta(hours=1)})
        connector.invalidate_recordset()
        self.assertEqual(connector.webhook_drain_per_min, 2.0, "20 processed over the last 10 minutes")
        self.assertEqual(connector.webhook_queued_count, 25)
        self.assertEqual(connector.webhook_empty_eta, "in about 12 min", "25 waiting at 2 a minute")

    def test_a_running_sync_shows_its_progress_and_the_last_sync_its_result(self):
        connector = self._create_connector()
        flow = self._flow(connector)
        Run = self.env["integration.sync.run"]
        Run.create({"flow_id": flow.id, "kind": "window", "state": "failed", "finished_at": fields.Datetime.now()})
        Run.create({"flow_id": flow.id, "kind": "window", "state": "running", "remote_total": 200, "fetched_count": 50})
        self.assertEqual(connector.sync_last_state, "failed")
        self.assertEqual((connector.sync_running_count, connector.sync_running_progress), (1, 25.0))

    def test_open_failed_leads_to_the_kind_that_failed_and_retry_failed_queues_them_all(self):
        connector = self._create_connector(webhook_signature="none")
        with self.assertRaisesRegex(Exception, "nothing failed to retry"):
            connector.action_retry_failed()
        event = failed_tour_event(connector)
        run = self.env["integration.sync.run"].create(
            {"flow_id": self._flow(connector).id, "kind": "window", "state": "failed", "error": "HTTP 500"}
        )
        connector.invalidate_recordset()
        action = connector.action_open_failed()
        self.assertEqual(action["res_model"], "integration.webhook.event")
        self.assertIn(event, self.env[action["res_model"]].search(action["domain"]))
        Error = self.env["integration.error"]
        # The errors the event's and the run's failures left: retried with their records, not twice.
        errors = Error.browse(
            [
                Error._record(
                    connector,
                    {
                        "operation": operation,
                        "status_code": 503,
                        "error_class": "IntegrationHTTPError",
                        "message": "partner API was down",
                        "res_model": record._name,
                        "res_id": record.id,
                    },
                    same_transaction=True,
                )
                for operation, record in (("Import order", event), ("Import window", run))
            ]
        )
        self.assertEqual(len(errors), 2)
        result = connector.action_retry_failed()
        self.assertEqual(result["params"]["message"], "Queued again: 1 event(s), 1 sync run(s), 0 job(s).")
        self.assertEqual((event.state, run.state), ("queued", "queued"))
        errors.invalidate_recordset()
        self.assertEqual(errors.mapped("state"), ["resolved", "resolved"])

    def test_the_cards_figures_cost_the_same_queries_for_3_or_12_connectors(self):
        """The Overview reads every connector's card at once: no query per connector."""
        view = self.env.ref("integration_hub.integration_connector_view_kanban_overview")
        arch = self.env["integration.connector"].get_views([(view.id, "kanban")])["views"]["kanban"]["arch"]
        names = sorted(set(re.findall(r'<field name="(\w+)"', arch)))
        self.assertIn("health_reason", names)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))

        def cost(count):
            connectors = self.env["integration.connector"]
            for _i in range(count):
                connector = self._create_connector(webhook_signature="none")
                connector._request("GET", "/orders")
                connectors |= connector
            self.env.flush_all()
            self.env.invalidate_all()
            opened = []
            real = state_cursor

            def counting(dbname):
                opened.append(dbname)
                return real(dbname)

            queries = self.env.cr.sql_log_count
            with patch.object(monitoring, "state_cursor", counting), patch.object(health, "state_cursor", counting):
                connectors.read(names)
            return self.env.cr.sql_log_count - queries, len(opened)

        self.assertEqual(cost(3), cost(12), "(queries, shared-state connections) per read of the cards")

    def test_sync_now_runs_the_active_flows(self):
        connector = self._create_connector()
        with self.assertRaisesRegex(Exception, "no active sync flow"):
            connector.action_sync_now()
        flow = self._flow(connector)
        connector.action_sync_now()
        self.assertTrue(self.env["integration.sync.run"].search([("flow_id", "=", flow.id)]), "a run was queued")


@tagged("post_install", "-at_install")
class TestDashboardTour(OverviewMixin, IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def test_an_operator_sees_a_failing_card_in_red_and_retries_its_failed_event_in_two_clicks(self):
        connector = self._create_connector(
            name="Failing Shop", webhook_signature="none", retry_max_attempts=1, circuit_threshold=0
        )
        self.server.respond_with(lambda request: Reply(503, {"error": "maintenance"}))
        for _i in range(6):
            connector._request("GET", "/orders", raise_for_status=False)
        connector._refresh_health()
        self.assertEqual(connector.health_status, "error")
        event = failed_tour_event(connector)
        overview = self.env.ref("integration_hub.integration_connector_action_overview")
        shot = screenshot(
            self,
            f"/odoo/action-{overview.id}",
            ".o_integration_overview .o_kanban_record.o_kanban_color_1",
            "admin",
            "dashboard_error_card.png",
        )
        self.assertTrue(shot.startswith(b"\x89PNG"))

        operator = self.env["res.users"].create(
            {
                "name": "Overview Operator",
                "login": "ih_overview_operator",
                "password": "ih_overview_operator",
                "groups_id": [Command.set([self.env.ref(USER_GROUP).id])],
            }
        )
        with tour_orders_imported_inline(connector):
            self.start_tour("/odoo", "integration_hub_dashboard_tour", login=operator.login)
        event.invalidate_recordset()
        self.assertEqual((event.state, event.result_note), ("done", "order TOUR-1 imported"))

    def test_the_health_tab_shows_the_sla_against_its_targets(self):
        connector = self._create_connector(name="Measured API", sla_p95_read_ms=5000)
        self.server.respond_with(lambda request: Reply(200, {"ok": True}))
        for _i in range(5):
            connector._request("GET", "/orders")
        connector._probe()
        connector._refresh_health()
        shot = screenshot(
            self,
            f"/odoo/action-integration_hub.integration_connector_action/{connector.id}",
            ".o_form_view .o_integration_sla",
            "admin",
            "connector_health.png",
            click=".o_form_view .o_notebook a[name='health']",
            check="document.querySelector('.o_integration_sla').scrollIntoView({block: 'center'});"
            "if (!document.querySelector('.o_integration_sla .text-success')) { return 'no target met'; }",
        )
        self.assertTrue(shot.startswith(b"\x89PNG"))
