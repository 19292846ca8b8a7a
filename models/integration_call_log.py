from datetime import timedelta

from odoo import api, fields, models

BODY_LIMIT = 4000


class IntegrationCallLog(models.Model):
    """One recorded call, while a connector's debug switch is on (redacted, truncated)."""

    _name = "integration.call.log"
    _description = "Integration Call Log (debug)"
    _order = "id desc"
    _rec_name = "url"

    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", index=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True)
    called_at = fields.Datetime(default=fields.Datetime.now, index=True)
    method = fields.Char()
    url = fields.Char(string="URL")
    status_code = fields.Integer(string="HTTP Status")
    latency_ms = fields.Integer(string="Latency (ms)")
    outcome = fields.Char()
    request_headers = fields.Text()
    request_body = fields.Text()
    response_headers = fields.Text()
    response_body = fields.Text()
    error = fields.Text()

    @api.model
    def _record(self, values):
        with self.env.registry.cursor() as cr:
            self.env(cr=cr, su=True)["integration.call.log"].create(values)

    @api.model
    def _cron_purge(self, days=7):
        """Drop call logs older than ``days`` and switch off expired debug windows."""
        limit = fields.Datetime.now() - timedelta(days=days)
        self.search([("called_at", "<", limit)]).unlink()
        expired = self.env["integration.connector"].search([("debug_until", "<", fields.Datetime.now())])
        expired.write({"debug_until": False})
