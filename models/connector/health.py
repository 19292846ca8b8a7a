from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...core.health import traffic_status

STATUSES = [("unknown", "Unknown"), ("ok", "OK"), ("warning", "Warning"), ("error", "Error")]


class IntegrationConnector(models.Model):
    """Health from traffic: a status and its reason in words, from the hourly metric buckets
    (``calls_1h``, ``success_rate_1h``... of ``monitoring``), with thresholds per connector.
    No counter is added to the call path."""

    _inherit = "integration.connector"

    health_ok_threshold = fields.Float(
        string="OK From (%)", default=95.0, help="Success rate at or above which the connector is OK."
    )
    health_warning_threshold = fields.Float(
        string="Warning From (%)",
        default=80.0,
        help="Success rate at or above which the connector is in warning; below it, in error.",
    )
    traffic_status = fields.Selection(STATUSES, string="Traffic Health", compute="_compute_traffic_status")
    traffic_reason = fields.Char(string="Traffic Health Reason", compute="_compute_traffic_status")

    @api.constrains("health_ok_threshold", "health_warning_threshold")
    def _check_health_thresholds(self):
        for connector in self:
            ok, warning = connector.health_ok_threshold, connector.health_warning_threshold
            if not (0 <= warning <= ok <= 100):
                raise ValidationError(
                    self.env._(
                        "Connector %(code)s: the health thresholds must satisfy 0 <= Warning From (%(warning)s) "
                        "<= OK From (%(ok)s) <= 100.",
                        code=connector.code,
                        warning=warning,
                        ok=ok,
                    )
                )

    def _compute_traffic_status(self):
        for connector in self:
            connector.traffic_status, connector.traffic_reason = traffic_status(
                connector.calls_1h,
                connector.success_rate_1h,
                connector.calls_24h,
                connector.success_rate_24h,
                connector.health_ok_threshold,
                connector.health_warning_threshold,
            )
