"""Job routing is data: a job function's channel, changed in the database, routes the next job."""

import json

from odoo.tests import tagged

from ..const import CHANNEL_OUTBOUND, CHANNEL_ROOT, CHANNEL_WEBHOOK
from .common import IntegrationHubCase


@tagged("post_install", "-at_install")
class TestJobRouting(IntegrationHubCase):
    def _channel(self, name, parent="integration_hub.queue_job_channel_integration"):
        return self.env["queue.job.channel"].create({"name": name, "parent_id": self.env.ref(parent).id})

    def _queued_call(self, connector):
        uuid = connector._enqueue_call("POST", "/orders", json={"order": "SO1"}, operation="Push order").uuid
        return self.env["queue.job"].search([("uuid", "=", uuid)])

    def _queued_event_job(self, connector, event_id):
        Event = self.env["integration.webhook.event"]
        record_id, _created = Event._ingest(
            connector._webhook_receiver(connector.code), json.dumps({"n": event_id}).encode(), {}, event_id, "t.x"
        )
        Event._job_dispatch_received()
        return Event.browse(record_id).job_id

    def test_outbound_calls_follow_the_job_function_channel(self):
        connector = self._create_connector()
        self.assertEqual(self._queued_call(connector).channel, CHANNEL_OUTBOUND)
        # What an integrator does in Job Queue > Job Functions.
        function = self.env.ref("integration_hub.queue_job_function_connector_job_call")
        self.assertTrue(function.channel_id)
        function.channel_id = self._channel("partner-erp")
        self.assertEqual(self._queued_call(connector).channel, f"{CHANNEL_ROOT}.partner-erp")

    def test_webhook_events_follow_the_job_function_channel(self):
        connector = self._create_connector(webhook_signature="none")
        self.assertEqual(self._queued_event_job(connector, "evt-a").channel, CHANNEL_WEBHOOK)
        function = self.env.ref("integration_hub.queue_job_function_webhook_event_job_process")
        function.channel_id = self._channel("shop-events")
        self.assertEqual(self._queued_event_job(connector, "evt-b").channel, f"{CHANNEL_ROOT}.shop-events")

    def test_a_connector_job_channel_wins_over_the_function_channel(self):
        dedicated = self._channel("slow-partner")
        connector = self._create_connector(webhook_signature="none", job_channel_id=dedicated.id)
        self.assertEqual(self._queued_call(connector).channel, f"{CHANNEL_ROOT}.slow-partner")
        self.assertEqual(self._queued_event_job(connector, "evt-c").channel, f"{CHANNEL_ROOT}.slow-partner")
        other = self._create_connector()
        self.assertEqual(self._queued_call(other).channel, CHANNEL_OUTBOUND, "other connectors unaffected")

    def test_job_functions_and_channels_are_not_overwritten_on_update(self):
        for xmlid in (
            "integration_hub.queue_job_function_connector_job_call",
            "integration_hub.queue_job_function_webhook_event_job_process",
            "integration_hub.queue_job_function_webhook_event_job_dispatch_received",
            "integration_hub.queue_job_channel_integration_outbound",
        ):
            module, name = xmlid.split(".")
            data = self.env["ir.model.data"].search([("module", "=", module), ("name", "=", name)])
            self.assertTrue(data.noupdate, f"{xmlid} keeps an integrator's change across -u")
