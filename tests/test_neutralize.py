"""Odoo's neutralize (copies of production databases) disarms the addon."""

from odoo.modules.neutralize import get_neutralization_queries
from odoo.tests import tagged

from .common import IntegrationHubCase


@tagged("post_install", "-at_install")
class TestNeutralize(IntegrationHubCase):
    def _neutralize(self):
        """What ``odoo-bin neutralize`` runs (base's script, then ours), in this transaction."""
        self.env.flush_all()
        for query in get_neutralization_queries(["base", "integration_hub"]):
            self.env.cr.execute(query)
        self.env.invalidate_all()
        self.env.registry.clear_cache()  # as a server started on the copy would find it

    def test_neutralize_disarms_connectors(self):
        connector = self._create_connector(
            auth_type="oauth2",
            oauth2_token_url=self.server.url + "/token",
            oauth2_client_id="client-1",
            oauth2_client_secret="cs-production",
            api_key="ak-production",
            bearer_token="bt-production",
            basic_username="erp",
            basic_password="pw-production",
            webhook_secret="whsec_cHJvZHVjdGlvbi1zZWNyZXQ=",
            webhook_secret_previous="whsec_b2xkLXByb2R1Y3Rpb24=",
        )
        token = self.env["integration.oauth.token"].search([("connector_id", "=", connector.id)])
        token._store(connector, {"access_token": "at-production", "refresh_token": "rt-production", "expires_in": 3600})
        token._set_connection("connected", "Connected by the production administrator.")
        connector.action_debug_start()
        job = self.env["queue.job"].search([("uuid", "=", connector._enqueue_call("GET", "/orders").uuid)])
        self.assertEqual(job.state, "pending")
        unrelated = self.env["res.partner"].with_delay().read(["name"])
        flow = self.env["integration.sync.flow"].create(
            {
                "name": "Orders",
                "code": "orders",
                "connector_id": connector.id,
                "model_id": self.env["ir.model"]._get("res.partner").id,
                "remote_path": "/orders",
                "interval_minutes": 5,
            }
        )
        window = flow._plan_import()
        self.assertTrue(window.job_uuid)
        self.assertTrue(connector.debug_until)
        self.assertFalse(connector.webhook_paused)

        self._neutralize()

        # 1. every secret and cached token forgotten
        for name in connector._secret_field_names():
            self.assertFalse(connector[f"{name}_encrypted"], f"{name} cleared")
        for name in ("access_token", "refresh_token"):
            self.assertFalse(token[f"{name}_encrypted"], f"cached {name} cleared")
        self.assertFalse(token._is_usable())
        self.assertEqual(token.connection_state, "disconnected", "an authorization-code connector shows it")
        self.env.cr.execute("SELECT row_to_json(c)::text FROM integration_connector c WHERE id = %s", [connector.id])
        self.assertNotIn("gAAAAA", self.env.cr.fetchone()[0], "no Fernet token left in the row")
        # 2. webhooks paused: senders are told to come back later
        self.assertTrue(connector.webhook_paused)
        self.assertTrue(connector._webhook_receiver(connector.code).webhook_paused)
        # 3. no call recording
        self.assertFalse(connector.debug_until)
        # 4. nothing the addon queued runs (syncs and probes are jobs and crons; base
        #    deactivates every cron); other addons' jobs are theirs to neutralize
        self.assertEqual(job.state, "cancelled")
        window_job = self.env["queue.job"].search([("uuid", "=", window.job_uuid)])
        self.assertEqual(window_job.state, "cancelled", "a queued sync window does not run on the copy")
        # 5. every sync flow paused: Sync Now is refused until a manager resumes it
        self.assertTrue(flow.is_paused)
        self.assertFalse(self.env["integration.sync.flow"]._cron_sync_due(), "no flow is due on the copy")
        unrelated_job = self.env["queue.job"].search([("uuid", "=", unrelated.uuid)])
        self.assertEqual(unrelated_job.state, "pending")
        crons = self.env["ir.cron"].with_context(active_test=False).search([("cron_name", "ilike", "integration")])
        self.assertTrue(crons)
        self.assertFalse(any(crons.mapped("active")), "the addon's crons are off after neutralize")
