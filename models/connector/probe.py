import logging
import time

from odoo import api, fields, models
from odoo.exceptions import UserError

from ...core.exceptions import IntegrationConfigError, IntegrationError, IntegrationRefusedError

_logger = logging.getLogger(__name__)

# A probe never waits long for an answer: it asks whether the API is there, and a slow
# answer is an answer too.
PROBE_READ_TIMEOUT = 10.0
# At most this many connectors are probed by one run of the cron; the others wait a minute.
PROBES_PER_RUN = 50


class IntegrationConnector(models.Model):
    """Active health probes: the probe cron GETs each connector's health path at the
    connector's own interval, through the call path, and keeps the answer in
    ``integration.connector.probe``.

    A probe takes one rate slot without waiting (when none is free it is skipped, so the
    partner never gets more than its limit), ignores the breaker and never moves it, and
    is not counted in the call metrics: probes neither consume the partner's budget beyond
    one call per interval nor open the circuit on their own.
    """

    _inherit = "integration.connector"

    probe_interval = fields.Integer(
        string="Probe Every (min)",
        default=5,
        help="Minutes between two active health probes of the health path; 0 turns probing off.",
    )
    probe_retention_days = fields.Integer(
        string="Keep Probes (days)", default=35, help="Probe history kept for the SLA figures (30 days)."
    )
    last_probe_at = fields.Datetime(string="Last Probe", readonly=True, copy=False)
    last_probe_ok = fields.Boolean(string="Last Probe OK", readonly=True, copy=False)
    probe_count = fields.Integer(compute="_compute_probe_count")

    _sql_constraints = [
        ("probe_interval_positive", "CHECK(probe_interval >= 0)", "The probe interval cannot be negative."),
    ]

    def _compute_probe_count(self):
        groups = self.env["integration.connector.probe"]._read_group(
            [("connector_id", "in", self.ids)], ["connector_id"], ["__count"]
        )
        counts = {connector.id: count for connector, count in groups}
        for connector in self:
            connector.probe_count = counts.get(connector.id, 0)

    def action_open_probes(self):
        """Smart button: this connector's probe history."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_connector_probe_action")
        action["domain"] = [("connector_id", "=", self.id)]
        return action

    @api.model
    def _cron_probe_due(self):
        """Cron: probe the connectors whose interval has elapsed, the longest waiting first."""
        now = fields.Datetime.now()
        due = self.search([("probe_interval", ">", 0)], order="last_probe_at asc nulls first, id").filtered(
            lambda c: not c.last_probe_at or (now - c.last_probe_at).total_seconds() >= c.probe_interval * 60 - 5
        )
        for connector in due[:PROBES_PER_RUN]:
            connector._probe()

    def _probe(self):
        """One probe: GET the health path; record status and latency. Returns the probe, or
        an empty recordset when it was skipped (no rate slot free)."""
        self.ensure_one()
        values = {"connector_id": self.id, "checked_at": fields.Datetime.now()}
        started = time.monotonic()
        try:
            response = self._request(
                "GET",
                self.health_path or "/",
                raise_for_status=False,
                timeout=(self.timeout_connect, min(self.timeout_read, PROBE_READ_TIMEOUT)),
                operation="Health probe",
                log_errors=False,
                health_probe=True,
            )
        except IntegrationRefusedError:
            return self.env["integration.connector.probe"]  # the partner's budget is spent: next time
        except (IntegrationError, UserError) as exc:
            # A configuration error (a credential not set, a URL refused) sent nothing.
            sent = not isinstance(exc, IntegrationConfigError | UserError)
            values.update(is_ok=False, is_up=False, is_sent=sent, status_code=getattr(exc, "status_code", 0) or 0)
            values["message"] = str(exc)[:500]
        else:
            status = response.status_code
            values.update(is_ok=200 <= status < 300, is_up=status < 500, status_code=status)
            values["message"] = f"HTTP {status} {response.reason or ''}".strip()
        values["latency_ms"] = int((time.monotonic() - started) * 1000)
        probe = self.env["integration.connector.probe"].sudo().create(values)
        self.sudo().write({"last_probe_at": values["checked_at"], "last_probe_ok": values["is_ok"]})
        return probe
