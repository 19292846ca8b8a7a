from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError


class IntegrationWebhookRetryWizard(models.TransientModel):
    """Retry every failed event of a connector received since a date."""

    _name = "integration.webhook.retry.wizard"
    _description = "Retry Failed Webhook Events"

    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade")
    since = fields.Datetime(required=True, default=lambda self: fields.Datetime.now() - timedelta(days=1))
    event_count = fields.Integer(string="Failed Events", compute="_compute_event_count")

    @api.depends("connector_id", "since")
    def _compute_event_count(self):
        for wizard in self:
            wizard.event_count = len(wizard._events()) if wizard.connector_id else 0

    def _events(self):
        return self.env["integration.webhook.event"].search(
            [("connector_id", "=", self.connector_id.id), ("state", "=", "failed"), ("received_at", ">=", self.since)]
        )

    def action_confirm(self):
        self.ensure_one()
        events = self._events()
        if not events:
            raise UserError(self.env._("No failed event of %s received since that date.", self.connector_id.name))
        return events.action_retry()
