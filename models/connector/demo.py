import logging

from odoo import api, models
from odoo.exceptions import UserError
from odoo.tools import config

from ...sandbox import demo

_logger = logging.getLogger(__name__)

# Demo connector (XML id under integration_hub) -> sandbox it calls, and its secrets. The values
# come from sandbox/demo.py, which the sandboxes and the demo sender read too.
DEMO_SANDBOXES = {
    "integration_connector_demo_wake_orders": "orders",
    "integration_connector_demo_retail_portal": "retail",
    "integration_connector_demo_data_sharing": "datasharing",
}
# The secrets that let a delivery in: set only for the living demo (see demo.LIVE_VARIABLE).
INBOUND_SECRETS = frozenset({"webhook_secret"})
DEMO_SECRETS = {
    "integration_connector_demo_wake_orders": {"webhook_secret": demo.ORDERS_WEBHOOK_SECRET},
    "integration_connector_demo_payments": {"webhook_secret": demo.PAYMENTS_WEBHOOK_SECRET},
    "integration_connector_demo_retail_portal": {"api_key": demo.RETAIL_API_KEY},
    "integration_connector_demo_data_sharing": {"oauth2_client_secret": demo.DATASHARING_CLIENT_SECRET},
}


class IntegrationConnector(models.Model):
    """Demo data only: points the demo connectors at what ``scripts/run`` starts (the
    sandboxes on their ports, this Odoo on its port) and sets their demo secrets. Called by a
    ``<function>`` of the demo data, on install and on each update (``scripts/run`` updates
    the addon at every start, so moved ports are followed)."""

    _inherit = "integration.connector"

    @api.model
    def _demo_setup(self):
        for xml_id, sandbox in DEMO_SANDBOXES.items():
            connector = self.env.ref(f"integration_hub.{xml_id}", raise_if_not_found=False)
            if not connector:
                continue
            base = demo.url(sandbox)
            values = {"base_url": base}
            if connector.oauth2_token_url:
                values["oauth2_token_url"] = f"{base}/connect/token"
            connector._demo_write(values)
        local = self.env.ref("integration_hub.integration_connector_demo_local_odoo", raise_if_not_found=False)
        if local:
            local._demo_write({"base_url": f"http://localhost:{config['http_port'] or 8069}"})
        for xml_id, secrets in DEMO_SECRETS.items():
            connector = self.env.ref(f"integration_hub.{xml_id}", raise_if_not_found=False)
            if not connector:
                continue
            try:
                for name, value in secrets.items():
                    if name in INBOUND_SECRETS and not demo.live():
                        continue  # published values: accepted only while scripts/run serves the demo
                    connector._set_secret(name, value)
            except UserError as exc:
                # No encryption key configured: the demo installs, its partners refuse until one is set.
                _logger.warning("Demo connector %s: secrets not set (%s)", connector.code, exc)
                return False
        return True

    def _demo_write(self, values):
        """Write what differs only (no chatter line for an unchanged URL at each update)."""
        changed = {name: value for name, value in values.items() if self[name] != value}
        if changed:
            self.write(changed)
