from odoo import api, fields, models


class IntegrationConnectorProbe(models.Model):
    """One active health probe of a connector: a GET of its health path by the probe cron.

    Probes give a connector nobody calls a health figure, and the SLA its availability
    (see ``core.health.availability``). They stay out of the call metrics and never move
    the breaker; they are purged after the connector's *Keep Probes* days.
    """

    _name = "integration.connector.probe"
    _description = "Integration Health Probe"
    _order = "checked_at desc, id desc"
    _rec_name = "checked_at"
    _log_access = False

    connector_id = fields.Many2one("integration.connector", required=True, ondelete="cascade", readonly=True)
    company_id = fields.Many2one(related="connector_id.company_id", store=True, index=True)
    checked_at = fields.Datetime(required=True, readonly=True)
    is_ok = fields.Boolean(string="OK", readonly=True, help="The health path answered 2xx.")
    is_up = fields.Boolean(
        string="Up",
        readonly=True,
        help="The API answered (any status under 500): counts as available in the SLA even when "
        "the answer itself was an error such as 401.",
    )
    is_sent = fields.Boolean(
        string="Sent",
        default=True,
        readonly=True,
        help="Off when the probe could not leave Odoo (a credential not set, a URL refused): the "
        "connector is in error, but the API's availability is not judged by it.",
    )
    status_code = fields.Integer(string="HTTP Status", readonly=True)
    latency_ms = fields.Integer(string="Latency (ms)", readonly=True, aggregator="avg")
    message = fields.Char(readonly=True)

    def init(self):
        self.env.cr.execute(
            """CREATE INDEX IF NOT EXISTS integration_connector_probe_connector_checked
                   ON integration_connector_probe (connector_id, checked_at)"""
        )

    @api.model
    def _cron_purge(self):
        """Cron: remove the probes older than their connector's *Keep Probes* days."""
        self.env.cr.execute(
            """DELETE FROM integration_connector_probe p
                USING integration_connector c
                WHERE c.id = p.connector_id
                  AND p.checked_at < (now() AT TIME ZONE 'UTC')
                                     - make_interval(days => GREATEST(c.probe_retention_days, 1))"""
        )
        return self.env.cr.rowcount
