from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...core.health import traffic_status

STATUSES = [("unknown", "Unknown"), ("ok", "OK"), ("warning", "Warning"), ("error", "Error")]


class IntegrationConnector(models.Model):
    """Health: a status and its reason in words, from what the hub already records (the
    hourly metric buckets, backlogs, jobs, runs, probes), with thresholds per connector.
    No counter is added to the call path.

    ``traffic_status`` is live (computed on read); ``health_status`` is the last figure the
    health check cron stored, so lists, the dashboard and the metrics route can filter and
    group on it. ``_refresh_health`` stores it; ``_health_changed`` is the hook that alerts
    build on.
    """

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
    health_status = fields.Selection(
        STATUSES,
        string="Status",
        default="unknown",
        readonly=True,
        copy=False,
        index=True,
        help="Stored by the health check (every minute) from traffic, probes and backlogs.",
    )
    health_reason = fields.Char(string="Status Reason", readonly=True, copy=False)
    health_checked_at = fields.Datetime(string="Status Checked At", readonly=True, copy=False)

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

    def _health_now(self):
        """``(status, reason)`` of one connector from its figures now."""
        self.ensure_one()
        return self.traffic_status, self.traffic_reason

    def _refresh_health(self):
        """Compute and store each connector's status; call ``_health_changed`` where it moved."""
        now = fields.Datetime.now()
        for connector in self:
            previous = connector.health_status
            status, reason = connector._health_now()
            connector.sudo().write({"health_status": status, "health_reason": reason, "health_checked_at": now})
            if status != previous:
                connector._health_changed(previous)

    def _health_changed(self, previous):
        """Hook: the stored status of this connector moved from ``previous`` to ``health_status``."""

    @api.model
    def _cron_check_health(self):
        """Cron: refresh the status of every active connector."""
        self.search([])._refresh_health()
