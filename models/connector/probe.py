import logging
import time

from odoo import api, fields, models
from odoo.exceptions import UserError

from ...core import transport
from ...core.exceptions import IntegrationConfigError, IntegrationError, IntegrationRefusedError

_logger = logging.getLogger(__name__)

# A probe never waits long for an answer: it asks whether the API is there, and a slow
# answer is an answer too.
PROBE_READ_TIMEOUT = 10.0


class IntegrationConnector(models.Model):
    """Active health probes: the probe cron queues a job per connector whose interval has
    elapsed; the job GETs the health path through the call path and keeps the answer in
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
    last_probe_at = fields.Datetime(string="Last Probe", compute="_compute_probe_count")
    last_probe_ok = fields.Boolean(string="Last Probe OK", compute="_compute_probe_count")
    probe_count = fields.Integer(compute="_compute_probe_count")

    _sql_constraints = [
        ("probe_interval_positive", "CHECK(probe_interval >= 0)", "The probe interval cannot be negative."),
    ]

    def _compute_probe_count(self):
        """Count and last probe from the history (the connector row is never written by a
        probe: no lock on it while partners answer)."""
        latest = {}
        if self.ids:
            Probe = self.env["integration.connector.probe"]
            Probe.flush_model()
            self.env.cr.execute(
                """SELECT connector_id, COUNT(*), MAX(checked_at),
                          (ARRAY_AGG(is_ok ORDER BY checked_at DESC, id DESC))[1]
                     FROM integration_connector_probe WHERE connector_id = ANY(%s) GROUP BY connector_id""",
                [self.ids],
            )
            latest = {row[0]: row[1:] for row in self.env.cr.fetchall()}
        for connector in self:
            count, last_at, last_ok = latest.get(connector.id, (0, False, False))
            connector.probe_count = count
            connector.last_probe_at = last_at
            connector.last_probe_ok = last_ok

    def action_open_probes(self):
        """Smart button: this connector's probe history."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_connector_probe_action")
        action["domain"] = [("connector_id", "=", self.id)]
        return action

    @api.model
    def _cron_probe_due(self):
        """Cron: queue a probe job for each connector whose interval has elapsed since its
        last probe (one waiting job per connector at most: its identity key)."""
        self.env["integration.connector.probe"].flush_model()
        self.flush_model(["active", "probe_interval"])
        self.env.cr.execute(
            """SELECT c.id
                 FROM integration_connector c
                 LEFT JOIN LATERAL (SELECT MAX(checked_at) AS last_at FROM integration_connector_probe p
                                     WHERE p.connector_id = c.id) p ON true
                WHERE c.active AND c.probe_interval > 0
                  AND (p.last_at IS NULL
                       OR p.last_at <= (now() AT TIME ZONE 'UTC') - make_interval(mins => c.probe_interval)
                                       + interval '5 seconds')
             ORDER BY p.last_at NULLS FIRST, c.id"""
        )
        due = self.browse([row[0] for row in self.env.cr.fetchall()])
        for connector in due:
            connector.with_delay(
                **connector._job_delay_params(),
                description=self.env._("%s: health probe", connector.name),
                identity_key=f"integration.connector:probe:{connector.id}",
                max_retries=1,
            )._job_probe()
        return len(due)

    def _job_probe(self):
        """Queue job entry point: one probe (its failures are its result, never a job failure)."""
        with transport.time_limit(self._job_time_limit()):
            probe = self._probe()
        return probe.message if probe else "skipped: no rate slot free"

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
        return self.env["integration.connector.probe"].sudo().create(values)
