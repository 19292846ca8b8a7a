"""Browser tour of the operator screens, in headless Chromium."""

import json

from odoo.tests import HttpCase, tagged

from .common import IntegrationHubMixin


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
        self.assertEqual(connector.last_test_status_code, 200)
        health_calls = self.server.requests_to("/partner/ping")
        self.assertEqual(len(health_calls), 1, "Test Connection reached the local server once")
        self.assertEqual(health_calls[0].headers["Authorization"], "Bearer tour-token-123")
