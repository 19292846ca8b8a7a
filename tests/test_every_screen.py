"""Every menu and screen of the addon opened in headless Chromium, as an operator and as a manager.

Two passes per user, on the demo data plus a few records of the kinds the demo does not make:

- Odoo's own clickbot (``startClickEverywhere``, as in web's test_click_everywhere.py) restricted
  to the Integrations menu: every menu, every view switch, every filter;
- ``static/tests/integration_hub_every_screen.js``, for what the clickbot leaves out: every window
  action of the addon the user may read, in each of its view types, every filter and group-by of
  the search panel (each date option; for managers every field of "Add Custom Group"), the graph's
  chart modes, a list row opened, and each record's form (up to four per action, the records of
  ``screen_records`` first) with its notebook pages, stat buttons and the buttons of its header or
  notebook that open dialogs.

Both fail on an error dialog, a browser console error or a failed RPC; the server's own ERROR log
lines during the walk fail the test too. With ``INTEGRATION_HUB_SCREENSHOT_DIR`` set, the form of a
demo connector is saved there as ``connector_form.png`` (the README's screenshot).
"""

import json
import logging
from datetime import datetime, timedelta

from lxml import etree

from odoo import Command
from odoo.tests import HttpCase, tagged
from odoo.tools.safe_eval import safe_eval

from ..const import MANAGER_GROUP, USER_GROUP
from .common import IntegrationHubMixin, errors_logged, screenshot

WALKER_MODULE = "@integration_hub/../tests/integration_hub_every_screen"
WALKER_SIGNAL = "integration_hub: every screen opened"
CLICKBOT_SIGNAL = "clickbot test succeeded"
ROOT_MENU = "integration_hub.integration_hub_menu_root"
DEMO_CONNECTOR = "integration_hub.integration_connector_demo_partner_erp"
DEMO_ORDERS_FLOW = "integration_hub.integration_sync_flow_demo_wake_orders"
DEMO_PRODUCTS_FLOW = "integration_hub.integration_sync_flow_demo_retail_products"
# Form buttons that open a dialog (a window action returned by the server, or a confirmation),
# clicked when shown, in the notebook or the header; the dialog is closed without confirming.
DIALOG_BUTTONS = {
    "integration.connector": ["action_webhook_retry_failed"],
    "integration.sync.flow": ["action_reset_cursor", "action_full_reload"],
}


@tagged("post_install", "-at_install")
class TestEveryScreen(IntegrationHubMixin, HttpCase):
    screen_records = {}  # {model: records whose forms are opened first}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()
        cls.demo_connector = cls.env.ref(DEMO_CONNECTOR, raise_if_not_found=False)
        # Browser tests log in with the login as password.
        cls.operator = cls._screen_user("ih_screens_operator", "Screens Operator", USER_GROUP)
        cls.manager = cls._screen_user("ih_screens_manager", "Screens Manager", MANAGER_GROUP)
        if cls.demo_connector:
            cls._setup_screen_records()

    @classmethod
    def _screen_user(cls, login, name, group):
        values = {
            "name": name,
            "login": login,
            "password": login,
            "groups_id": [(6, 0, [cls.env.ref(group).id])],
        }
        user = cls.env["res.users"].with_context(no_reset_password=True).create(values)
        if "tour_enabled" in user._fields:
            user.tour_enabled = False  # no onboarding tour over the screens
        return user

    @classmethod
    def _setup_screen_records(cls):
        """Records of the kinds the demo data has none of, so that no screen is tested empty."""
        connector = cls.demo_connector
        cls.screen_records = {}
        failed_event = cls.env.ref("integration_hub.integration_webhook_event_demo_failed")
        Error = cls.env["integration.error"].sudo()
        Error.create(
            {
                "connector_id": connector.id,
                "operation": "Import orders",
                "method": "GET",
                "url": "http://127.0.0.1:8099/api/v1/orders?page=2",
                "status_code": 503,
                "error_class": "IntegrationHTTPError",
                "is_retryable": True,
                "message": "HTTP 503 Service Unavailable: partner API under maintenance",
                "request_excerpt": "GET /api/v1/orders?page=2\nAuthorization: [redacted]",
                "response_excerpt": '{"error": "maintenance"}',
                "traceback": "Traceback (most recent call last):\n  ...\nIntegrationHTTPError: HTTP 503",
                "fingerprint": "screens-test-503",
                "count": 3,
            }
        )
        Error.create(
            {
                "connector_id": failed_event.connector_id.id,
                "operation": "Webhook customer.created",
                "error_class": "OperationalError",
                "message": failed_event.last_error,
                "fingerprint": "screens-test-event",
                "res_model": failed_event._name,
                "res_id": failed_event.id,
            }
        )
        cls.env["integration.call.log"].sudo().create(
            {
                "connector_id": connector.id,
                "method": "GET",
                "url": "http://127.0.0.1:8099/api/v1/status",
                "status_code": 200,
                "latency_ms": 12,
                "outcome": "ok",
                "request_headers": '{"Accept": "application/json"}',
                "response_headers": '{"Content-Type": "application/json"}',
                "response_body": '{"status": "up"}',
            }
        )
        # A live binding and a tombstone (Open Record shows on the first only).
        Binding = cls.env["integration.binding"]
        Binding._bind(connector, cls.env.user.partner_id, "CUST-1001", payload={"name": "Screens"})
        gone = cls.env["res.partner"].create({"name": "Deleted partner (screens)"})
        Binding._bind(connector, gone, "CUST-1002")
        Binding._mark_deleted(connector, "res.partner", gone.ids)
        cls._setup_sync_records()
        now = datetime.now().replace(minute=0, second=0, microsecond=0)
        # A sync flow with a run that went through and one that failed.
        flow = cls.env["integration.sync.flow"].create(
            {
                "name": "Partners to the ERP (screens)",
                "code": "screens_partners",
                "connector_id": connector.id,
                "direction": "export",
                "model_id": cls.env["ir.model"]._get_id("res.partner"),
                "remote_path": "/erp-data/product/batch",
                "job_status_path": "/erp-data/product/batch/{job_id}",
                "field_ids": [
                    Command.create(
                        {"field_id": cls.env["ir.model.fields"]._get("res.partner", "name").id, "json_path": "name"}
                    )
                ],
            }
        )
        cls.env["integration.sync.run"].create(
            [
                {
                    "flow_id": flow.id,
                    "kind": "batch",
                    "state": "done",
                    "batch_ref": "1767225600",
                    "started_at": now - timedelta(minutes=5),
                    "finished_at": now - timedelta(minutes=4),
                    "sent_count": 500,
                },
                {
                    "flow_id": flow.id,
                    "kind": "batch",
                    "state": "failed",
                    "batch_ref": "1767225601",
                    "started_at": now - timedelta(minutes=3),
                    "finished_at": now - timedelta(minutes=3),
                    "error": "HTTP 503 Service Unavailable: partner API under maintenance",
                },
            ]
        )
        cls.env["integration.oauth.token"].sudo()._for_connector(connector).write(
            {
                "token_type": "Bearer",
                "scope": "orders:read stock:write",
                "obtained_at": now,
                "expires_at": now + timedelta(hours=1),
                "refresh_after": now + timedelta(minutes=59),
            }
        )
        # Hourly metrics over two days for two connectors (the table the call path counts into).
        local = cls.env.ref("integration_hub.integration_connector_demo_local_odoo")
        for hours_ago in (0, 1, 2, 5, 26, 27):
            for target, calls, ok in ((connector, 20 + hours_ago, 15), (local, 40, 40)):
                cls.env.cr.execute(
                    """INSERT INTO integration_connector_metric
                              (connector_id, hour, calls, ok, retryable_error, latency_sum_ms, latency_max_ms)
                       VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                    [target.id, now - timedelta(hours=hours_ago), calls, ok, calls - ok, calls * 20.0, 180.0],
                )
        # Counts of a deleted connector: no foreign key removes them with it.
        cls.env.cr.execute("SELECT COALESCE(MAX(id), 0) + 1000 FROM integration_connector")
        cls.env.cr.execute(
            "INSERT INTO integration_connector_metric (connector_id, hour, calls, ok) VALUES (%s, %s, 5, 5)",
            [cls.env.cr.fetchone()[0], now],
        )
        cls.env["integration.connector.metric"].invalidate_model()
        # Health probes of the demo connector, one of them down.
        cls.env["integration.connector.probe"].create(
            [
                {
                    "connector_id": connector.id,
                    "checked_at": now - timedelta(minutes=5 * index),
                    "is_ok": index != 2,
                    "is_up": index != 2,
                    "status_code": 503 if index == 2 else 200,
                    "latency_ms": 40 + index,
                    "message": "HTTP 503 Service Unavailable" if index == 2 else "HTTP 200 OK",
                }
                for index in range(4)
            ]
        )

    @classmethod
    def _setup_sync_records(cls):
        """Runs of every state on the demo flows, and bindings of the order flow: its form then
        shows live Runs and Bindings buttons, the runs' list, graph and pivot have rows, and a
        failed run's form shows its error and Retry."""
        orders = cls.env.ref(DEMO_ORDERS_FLOW)
        products = cls.env.ref(DEMO_PRODUCTS_FLOW)
        start = datetime(2026, 1, 1, 10, 0)
        window = timedelta(minutes=30)
        Run = cls.env["integration.sync.run"]
        counts = {"page_count": 2, "fetched_count": 62, "created_count": 60, "updated_count": 1, "unchanged_count": 1}
        runs = Run.create(
            [
                dict(
                    counts,
                    flow_id=orders.id,
                    kind="window",
                    state="done",
                    window_start=start + index * window,
                    window_end=start + (index + 1) * window,
                    page_next=3,
                    remote_total=62,
                    started_at=start + (index + 1) * window,
                    finished_at=start + (index + 1) * window + timedelta(seconds=4),
                )
                for index in range(3)
            ]
            + [
                {
                    "flow_id": orders.id,
                    "kind": "window",
                    "state": "failed",
                    "window_start": start + 3 * window,
                    "window_end": start + 4 * window,
                    "page_next": 2,
                    "page_count": 1,
                    "fetched_count": 50,
                    "created_count": 50,
                    "started_at": start + 4 * window,
                    "finished_at": start + 4 * window + timedelta(seconds=30),
                    "error": "Window 2026-01-01 11:30 -> 12:00, page 2: HTTP 503 Service Unavailable",
                },
                {
                    "flow_id": orders.id,
                    "kind": "window",
                    "state": "queued",
                    "window_start": start + 4 * window,
                    "window_end": start + 5 * window,
                },
                {
                    "flow_id": products.id,
                    "kind": "batch",
                    "state": "partial",
                    "batch_ref": "1767261600",
                    "window_end": start,
                    "remote_job_id": "hangfire-job-7",
                    "poll_count": 3,
                    "res_ids_json": json.dumps(cls.env["res.partner"].search([], limit=3).ids),
                    "sent_count": 3,
                    "failed_count": 1,
                    "started_at": start,
                    "finished_at": start + timedelta(minutes=2),
                    "error": "1 × erpId 7: description is required",
                },
            ]
        )
        orders.cursor_at = start + 3 * window
        orders_connector = orders.connector_id
        for number, partner in enumerate(cls.env["res.partner"].search([], limit=3), start=1):
            cls.env["integration.binding"]._bind(orders_connector, partner, str(number), payload={"pedidoId": number})
        # The live flow and a failed run are among the forms opened.
        cls.screen_records.update({orders._name: orders, Run._name: runs.filtered(lambda r: r.state == "failed")})

    def setUp(self):
        super().setUp()
        self.assertTrue(
            self.demo_connector,
            "the screens are tested on demo data: install the addon with demo data (no --without-demo)",
        )

    # The plan ----------------------------------------------------------------------------------

    def _addon_window_actions(self):
        """The addon's window actions, but Settings (administrators only, opened by
        ``test_settings_open_for_an_administrator``)."""
        data = self.env["ir.model.data"].search(
            [("module", "=", "integration_hub"), ("model", "=", "ir.actions.act_window")]
        )
        actions = self.env["ir.actions.act_window"].browse(data.mapped("res_id")).sorted("id")
        return actions.filtered(lambda action: action.res_model != "res.config.settings")

    def _search_items(self, model, action):
        """Filters and group-bys the search panel shows for this user, counted in the arch."""
        search_view = model.get_views([(action.search_view_id.id or False, "search")])["views"]["search"]
        arch = etree.fromstring(search_view["arch"])
        expected = {"filter": 0, "groupBy": 0}
        for node in arch.iter("filter"):
            if node.get("invisible") in ("1", "True"):
                continue
            context = safe_eval(node.get("context") or "{}")
            expected["groupBy" if "group_by" in context else "filter"] += 1
        return expected

    def _has_shown_stat_button(self, model, action):
        """Whether the form has a stat button this user always sees (no invisible condition)."""
        form_view = action.view_ids.filtered(lambda v: v.view_mode == "form").view_id
        arch = etree.fromstring(model.get_views([(form_view.id or False, "form")])["views"]["form"]["arch"])
        return any(
            "oe_stat_button" in (button.get("class") or "").split() and not button.get("invisible")
            for button in arch.iter("button")
        )

    def _plan(self, user, custom_groups):
        """The window actions this user may open, with their view types and records to open."""
        menus = self.env["ir.ui.menu"].with_user(user).load_menus(False)
        menu_actions = {menu["action"] for menu in menus.values() if isinstance(menu, dict) and menu.get("action")}
        actions = []
        for action in self._addon_window_actions():
            model = self.env[action.res_model].with_user(user)
            if action.groups_id and not action.groups_id & user.groups_id:
                continue
            if not model.has_access("read"):
                self.assertNotIn(
                    f"ir.actions.act_window,{action.id}", menu_actions, f"{user.login} has a menu it cannot read"
                )
                continue
            view_types = action.view_mode.split(",")
            domain = safe_eval(action.domain or "[]")
            first = self.screen_records.get(action.res_model, model.browse()).with_user(user)
            records = (first | model.search(domain, limit=4))[:4]
            self.assertTrue(records, f"no {action.res_model} record to show in {action.name}")
            actions.append(
                {
                    "id": action.id,
                    "xmlid": action.get_external_id()[action.id],
                    "viewTypes": view_types,
                    "resIds": records.ids if "form" in view_types else [],
                    "buttons": DIALOG_BUTTONS.get(action.res_model, []),
                    "expected": self._search_items(model, action),
                    "statButtons": "form" in view_types and self._has_shown_stat_button(model, action),
                }
            )
        in_menus = menu_actions & {f"ir.actions.act_window,{a.id}" for a in self._addon_window_actions()}
        self.assertTrue(in_menus, f"{user.login} sees the addon's menus")
        self.assertLessEqual(
            in_menus, {f"ir.actions.act_window,{a['id']}" for a in actions}, "every action of the menus is walked"
        )
        return {"actions": actions, "customGroups": custom_groups}

    # The runs ----------------------------------------------------------------------------------

    def _browse(self, user, code, success_signal, timeout):
        with errors_logged() as errors:
            self.browser_js(
                "/odoo",
                code,
                ready=f"odoo.isReady === true && odoo.loader.modules.has({json.dumps(WALKER_MODULE)})",
                login=user.login,
                timeout=timeout,
                success_signal=success_signal,
            )
        self.assertFalse(
            errors, "the server logged errors meanwhile:\n" + "\n".join(logging.Formatter().format(r) for r in errors)
        )

    def _clickbot(self, user):
        code = (
            "odoo.loader.modules.get('@web/webclient/clickbot/clickbot_loader')"
            f".startClickEverywhere({json.dumps(ROOT_MENU)});"
        )
        self._browse(user, code, CLICKBOT_SIGNAL, timeout=300)

    def _walk(self, user, is_manager):
        # Managers read every screen of the addon; their run also groups by every field.
        plan = self._plan(user, custom_groups=is_manager)
        if is_manager:
            self.assertEqual(len(plan["actions"]), len(self._addon_window_actions()))
        code = f"odoo.loader.modules.get({json.dumps(WALKER_MODULE)}).walkEveryScreen({json.dumps(plan)});"
        self._browse(user, code, WALKER_SIGNAL, timeout=600)

    def test_operator_clicks_every_menu_view_and_filter(self):
        self._clickbot(self.operator)

    def test_operator_opens_every_screen(self):
        self._walk(self.operator, is_manager=False)

    def test_manager_clicks_every_menu_view_and_filter(self):
        self._clickbot(self.manager)

    def test_manager_opens_every_screen(self):
        self._walk(self.manager, is_manager=True)

    def test_settings_open_for_an_administrator(self):
        """Integrations › Configuration › Settings: the metrics token block, as an administrator."""
        shot = screenshot(
            self,
            "/odoo/action-integration_hub.res_config_settings_action",
            "#integration_metrics_token_setting",
            "admin",
            "settings_metrics.png",
            check="if (!document.querySelector('button[name=action_integration_metrics_generate_token]')) "
            "{ return 'no Generate a Token button'; }",
        )
        self.assertTrue(shot.startswith(b"\x89PNG"))

    def test_connector_form_screenshot(self):
        """The demo connector's form as a manager sees it; saved for the README when asked."""
        action = self.env.ref("integration_hub.integration_connector_action")
        expected_name = json.dumps(self.demo_connector.name)
        # Wait for the form and its fonts, then signal: the browser is stopped (and shot) after it.
        check = (
            "const field = document.querySelector('.o_form_view .o_field_widget[name=name]');"
            "const name = (field.querySelector('input')?.value ?? field.innerText).trim();"
            f"if (name !== {expected_name}) {{ return `the form shows ${{name}}`; }}"
        )
        shot = screenshot(
            self,
            f"/odoo/action-{action.id}/{self.demo_connector.id}",
            ".o_form_view .o_field_widget[name=name]",
            self.manager.login,
            "connector_form.png",
            check=check,
        )
        self.assertTrue(shot.startswith(b"\x89PNG"), "a PNG image")
