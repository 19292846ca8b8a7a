"""Browser tour of the operator screens, in headless Chromium."""

import json
import os
from unittest.mock import patch

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


@tagged("post_install", "-at_install")
class TestWebhookEventTour(IntegrationHubMixin, HttpCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._setup_env()

    def test_retry_a_failed_event(self):
        connector = self._create_connector(name="Tour Shop Webhooks", webhook_signature="none")
        Event = self.env["integration.webhook.event"]
        body = json.dumps({"order": "TOUR-1"}).encode()
        record_id, _created = Event._ingest(
            connector._webhook_receiver(connector.code), body, {}, "tour-evt-1", "tour.order.created"
        )
        Event._job_dispatch_received()
        event = Event.browse(record_id)
        event.write({"state": "failed", "attempts": 5, "last_error": "IntegrationHTTPError: partner API was down"})
        event.job_id.button_cancelled()

        def import_order(connector, event):
            return f"order {event._payload_json()['order']} imported"

        # The Retry button queues a job; queue_job's documented no-delay switch runs it inline,
        # in place of the job runner that tests do not start.
        with (
            patch.object(type(connector), "_webhook_handle_generic_rest_tour_order_created", import_order, create=True),
            patch.dict(os.environ, {"QUEUE_JOB__NO_DELAY": "1"}),
        ):
            self.start_tour("/odoo", "integration_hub_webhook_event_tour", login="admin")
        event.invalidate_recordset()
        self.assertEqual(event.state, "done")
        self.assertEqual(event.attempts, 6)
        self.assertEqual(event.result_note, "order TOUR-1 imported")
