"""Validation of connector configuration: clear errors naming the field."""

import os
from unittest.mock import patch

from psycopg2 import IntegrityError

from odoo.exceptions import ValidationError
from odoo.tests import tagged
from odoo.tools import mute_logger

from ..core.exceptions import IntegrationHTTPError
from ..models.integration_connector_metric import flush_counts
from ..models.integration_connector_state import state_cursor
from ..sandbox import demo
from .common import CONNECTOR_LOGGER, IntegrationHubCase, Reply


@tagged("post_install", "-at_install")
class TestConnectorConfig(IntegrationHubCase):
    def test_code_is_a_slug(self):
        for bad in ("Shop EU", "shop/eu", "shop--eu", "-shop", "shop_", "ÄBC", "x" * 65):
            with self.subTest(code=bad), self.assertRaisesRegex(ValidationError, "Code .* is not valid"):
                self._create_connector(code=bad)
        for good in ("shop", "shop-eu", "erp_2", "a1-b2_c3"):
            self.assertEqual(self._create_connector(code=good).code, good)

    @mute_logger("odoo.sql_db")
    def test_code_unique(self):
        self._create_connector(code="unique-one")
        with self.assertRaisesRegex(IntegrityError, "integration_connector_code_uniq"):
            self._create_connector(code="unique-one")
            self.env.flush_all()

    def test_base_url(self):
        for bad in ("ftp://files.example.com", "example.com/api", "https://", "https://user:pw@api.example.com"):
            with self.subTest(url=bad), self.assertRaisesRegex(ValidationError, "Base URL"):
                self._create_connector(base_url=bad)
        with self.assertRaises(ValidationError) as caught:
            self._create_connector(base_url="https://user:topsecret@api.example.com")
        self.assertNotIn("topsecret", str(caught.exception))
        with self.assertRaisesRegex(ValidationError, "must not contain credentials") as caught:
            self._create_connector(base_url="https://api.example.com/v1?api_key=k-in-url-9")
        self.assertNotIn("k-in-url-9", str(caught.exception))

    def test_default_headers(self):
        for credentials in ('{"Authorization": "Bearer x"}', '{"X-Api-Key": "k"}', '{"Cookie": "s=1"}'):
            with (
                self.subTest(headers=credentials),
                self.assertRaisesRegex(ValidationError, "must not carry credentials"),
            ):
                self._create_connector(default_headers=credentials)
        for bad in ("not json", "[1, 2]", '{"X-N": 3}'):
            with self.subTest(headers=bad), self.assertRaisesRegex(ValidationError, "Default Headers"):
                self._create_connector(default_headers=bad)

    def test_auth_requirements(self):
        with self.assertRaisesRegex(ValidationError, "Token URL is required"):
            self._create_connector(auth_type="oauth2")
        with self.assertRaisesRegex(ValidationError, "API Key Header/Parameter is required"):
            self._create_connector(auth_type="api_key", api_key_name=" ")

    def test_timeouts_positive(self):
        with mute_logger("odoo.sql_db"), self.assertRaisesRegex(IntegrityError, "timeout_read_positive"):
            self._create_connector(timeout_read=0)
            self.env.flush_all()

    def test_copy_has_new_code_and_no_secrets(self):
        connector = self._create_connector(code="to-copy", auth_type="bearer", bearer_token="bt-not-copied")
        copy = connector.copy()
        self.assertEqual(copy.code, "to-copy-copy")
        self.assertEqual(connector.copy().code, "to-copy-copy-2", "copying twice works too")
        self.assertFalse(copy.bearer_token_is_set)
        self.assertEqual(copy.health_state, "unknown")

    def test_demo_connectors(self):
        # scripts/test installs with demo data, as scripts/run does.
        local = self.env.ref("integration_hub.integration_connector_demo_local_odoo")
        self.assertEqual(local.health_path, "/web/health")
        partner = self.env.ref("integration_hub.integration_connector_demo_partner_erp")
        self.assertEqual(partner.auth_type, "oauth2")
        self.assertFalse(partner.oauth2_client_secret_is_set)
        self.assertEqual(partner.base_url, "http://127.0.0.1:9/api/v1", "off the sandboxes' ports")

    def test_demo_connectors_point_at_the_sandboxes_with_their_secrets(self):
        # The demo function: the sandbox connectors on their ports, with the values the
        # sandboxes and the demo sender use (sandbox/demo.py). Run again here: the install ran
        # it with the server's encryption key (or none), the tests have their own.
        ref = self.env.ref
        orders = ref("integration_hub.integration_connector_demo_wake_orders")
        with patch.dict(os.environ, {demo.LIVE_VARIABLE: ""}):
            orders.webhook_secret = False
            self.assertTrue(self.env["integration.connector"]._demo_setup())
        self.assertFalse(orders._get_secret("webhook_secret"), "published secrets only for scripts/run's demo")
        with patch.dict(os.environ, {demo.LIVE_VARIABLE: "1"}):
            self.assertTrue(self.env["integration.connector"]._demo_setup())
        orders = ref("integration_hub.integration_connector_demo_wake_orders")
        retail = ref("integration_hub.integration_connector_demo_retail_portal")
        sharing = ref("integration_hub.integration_connector_demo_data_sharing")
        payments = ref("integration_hub.integration_connector_demo_payments")
        self.assertEqual(orders.base_url, demo.url("orders"))
        self.assertEqual(retail.base_url, demo.url("retail"))
        self.assertEqual(
            (sharing.base_url, sharing.oauth2_token_url),
            (demo.url("datasharing"), demo.url("datasharing") + "/connect/token"),
        )
        self.assertEqual(orders._get_secret("webhook_secret"), demo.ORDERS_WEBHOOK_SECRET)
        self.assertEqual(payments._get_secret("webhook_secret"), demo.PAYMENTS_WEBHOOK_SECRET)
        self.assertEqual(retail._get_secret("api_key"), demo.RETAIL_API_KEY)
        self.assertEqual(sharing._get_secret("oauth2_client_secret"), demo.DATASHARING_CLIENT_SECRET)
        self.assertEqual((orders.webhook_signature, payments.webhook_signature), ("standard_webhooks", "stripe"))
        self.assertEqual({c.probe_interval for c in orders | retail | sharing}, {1})
        others = self.env["integration.connector"].search([("id", "not in", (orders | retail | sharing).ids)])
        ports = {f":{demo.port(name)}" for name in demo.PORTS}
        self.assertFalse(others.filtered(lambda c: any(port in (c.base_url or "") for port in ports)))

    def test_deleting_a_connector_deletes_its_counters_and_breaker_state(self):
        connector = self._create_connector(circuit_threshold=3)
        self.env.flush_all()
        self.server.respond_with(lambda request: Reply(503, "down"))
        with mute_logger(CONNECTOR_LOGGER), self.assertRaises(IntegrationHTTPError):
            connector._request("GET", "/orders")
        connector_id = connector.id

        def rows():
            # Written on the shared-state connection: read there, outside the test's snapshot.
            with state_cursor(self.env.cr.dbname) as cr:
                cr.execute(
                    "SELECT (SELECT count(*) FROM integration_connector_metric WHERE connector_id = %(id)s),"
                    " (SELECT count(*) FROM integration_connector_state WHERE connector_id = %(id)s)",
                    {"id": connector_id},
                )
                return cr.fetchone()

        flush_counts()
        self.assertEqual(rows(), (1, 1), "the failed call was counted and reported")
        connector.unlink()
        self.assertEqual(rows(), (1, 1), "kept until the deletion commits (it may still roll back)")
        self.env.cr.postcommit.run()  # what the commit of the deletion runs
        self.assertEqual(rows(), (0, 0))
