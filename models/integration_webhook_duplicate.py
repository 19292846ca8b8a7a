from odoo import fields, models


class IntegrationWebhookDuplicate(models.Model):
    """How many times a stored webhook event was delivered again.

    A table of its own, not columns of the event: a repeated delivery is counted while the
    event's job, the dispatcher or an operator may be writing the event row, and a counter
    there would make those transactions fail to serialize (and a job's handler run twice).
    Written only by ``integration.webhook.event._count_duplicate`` (one upsert).
    """

    _name = "integration.webhook.duplicate"
    _description = "Webhook Event Repeated Deliveries"
    _log_access = False
    _rec_name = "event_id"

    event_id = fields.Many2one("integration.webhook.event", required=True, readonly=True, ondelete="cascade")
    count = fields.Integer(readonly=True)
    last_at = fields.Datetime(string="Last Repeated Delivery", readonly=True)

    _sql_constraints = [("event_uniq", "unique(event_id)", "One counter per event.")]
