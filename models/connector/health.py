import logging
from contextlib import contextmanager
from datetime import timedelta

from markupsafe import Markup, escape

from odoo import api, fields, models
from odoo.exceptions import ValidationError

from ...core import health as health_rules
from ..integration_connector_metric import LATENCY_BUCKETS_MS, flush_counts, percentile_from_histogram
from ..integration_connector_state import state_cursor

_logger = logging.getLogger(__name__)

STATUSES = [("unknown", "Unknown"), ("ok", "OK"), ("warning", "Warning"), ("error", "Error")]
SLA_WINDOWS = (("24h", 1), ("7d", 7), ("30d", 30))


class IntegrationConnector(models.Model):
    """Health: a status and its reason in words, from what the hub already records (the
    hourly metric buckets, the probe history, the breaker, the job queue), with thresholds
    per connector, and SLA figures against the connector's targets. No counter is added to
    the call path.

    ``health_status`` is stored by the health check cron (every minute) when it moves, so
    lists, the dashboard and the metrics route can filter and group on it; the reason and
    the figures are live. ``_health_inputs`` reads every figure of a set of connectors in a
    handful of queries; ``_health_now`` rates one connector from them; ``_health_changed``
    is the hook alerts build on.
    """

    _inherit = "integration.connector"

    _sql_constraints = [
        ("stuck_job_minutes_positive", "CHECK(stuck_job_minutes >= 1)", "A job is stuck after a minute at least."),
    ]

    health_ok_threshold = fields.Float(
        string="OK From (%)", default=95.0, help="Success rate at or above which the connector is OK."
    )
    health_warning_threshold = fields.Float(
        string="Warning From (%)",
        default=80.0,
        help="Success rate at or above which the connector is in warning; below it, in error.",
    )
    stuck_job_minutes = fields.Integer(
        string="Job Stuck After (min)",
        default=30,
        help="A job of this connector started or enqueued for longer than this is stuck: a warning, and an alert.",
    )
    health_status = fields.Selection(
        STATUSES,
        string="Status",
        default="unknown",
        readonly=True,
        copy=False,
        index=True,
        help="Stored by the health check (every minute) from traffic, probes, the breaker and the job queue.",
    )
    health_since = fields.Datetime(string="Status Since", readonly=True, copy=False)
    health_reason = fields.Char(string="Status Reason", compute="_compute_health_figures")
    traffic_status = fields.Selection(STATUSES, string="Traffic Health", compute="_compute_health_figures")
    traffic_reason = fields.Char(string="Traffic Health Reason", compute="_compute_health_figures")
    last_success_at = fields.Datetime(string="Last Success", compute="_compute_health_figures")
    last_failure_at = fields.Datetime(
        string="Last Error", compute="_compute_health_figures", help="Last failed call, 4xx answers included."
    )
    latency_p95_read_24h = fields.Integer(string="p95 Read (24 h, ms)", compute="_compute_health_figures")
    latency_p95_write_24h = fields.Integer(string="p95 Write (24 h, ms)", compute="_compute_health_figures")
    probe_success_rate_24h = fields.Float(
        string="Probe Success (24 h, %)", compute="_compute_health_figures", digits=(5, 1)
    )
    job_failed_count = fields.Integer(string="Failed Jobs", compute="_compute_health_figures")
    job_stuck_count = fields.Integer(string="Stuck Jobs", compute="_compute_health_figures")

    # SLA
    sla_availability_target = fields.Float(
        string="Availability Target (%)",
        default=99.5,
        digits=(5, 2),
        help="The retail portal's guide: 99.5%, at most 3.6 h down a month.",
    )
    sla_p95_read_ms = fields.Integer(string="p95 Read Target (ms)", default=5000, help="GET under 5 s.")
    sla_p95_write_ms = fields.Integer(string="p95 Write Target (ms)", default=30000, help="POST/PUT under 30 s.")
    sla_summary = fields.Html(string="SLA", compute="_compute_sla", sanitize=False)
    sla_availability_30d = fields.Float(string="Availability (30 d, %)", compute="_compute_sla", digits=(5, 2))

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

    def _compute_health_figures(self):
        inputs = self._health_inputs()
        for connector in self:
            figures = inputs[connector.id]
            connector.traffic_status, connector.traffic_reason = connector._traffic_part(figures)
            connector.health_reason = connector._health_now(figures)[1]
            connector.last_success_at = figures["last_success_at"]
            connector.last_failure_at = figures["last_failure_at"]
            connector.latency_p95_read_24h = percentile_from_histogram(figures["histogram_read"], 0.95) or 0
            connector.latency_p95_write_24h = percentile_from_histogram(figures["histogram_write"], 0.95) or 0
            connector.probe_success_rate_24h = _rate(figures["probes_ok_24h"], figures["probes_24h"])
            connector.job_failed_count = figures["failed_jobs"]
            connector.job_stuck_count = figures["stuck_jobs"]

    def _health_inputs(self):
        """Every figure health needs, per connector id, for the whole set at once: the call
        buckets (``_metrics_by_connector``), the last success and failure, the breaker, the
        probes and the job queue, a query or two each."""
        now = fields.Datetime.now()
        hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(hours=24)
        empty_histogram = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        inputs = {
            connector.id: {
                "calls_1h": 0,
                "ok_1h": 0,
                "calls_24h": 0,
                "ok_24h": 0,
                "histogram_read": list(empty_histogram),
                "histogram_write": list(empty_histogram),
                "last_success_at": None,
                "last_failure_at": None,
                "probes_1h": 0,
                "probes_ok_1h": 0,
                "probes_24h": 0,
                "probes_ok_24h": 0,
                "circuit_state": "closed",
                "circuit_opened_at": None,
                "circuit_last_error": None,
                "failed_jobs": 0,
                "stuck_jobs": 0,
            }
            for connector in self
        }
        ids = [connector_id for connector_id in inputs if isinstance(connector_id, int)]
        if not ids:
            return inputs
        for connector_id, buckets in self._metrics_by_connector().items():
            inputs[connector_id].update(
                {key: buckets[key] for key in ("calls_1h", "ok_1h", "calls_24h", "ok_24h")},
                histogram_read=buckets["histogram_read"],
                histogram_write=buckets["histogram_write"],
            )
        with state_cursor(self.env.cr.dbname) as cr:
            # The last success and failure ever recorded: one index scan back per connector.
            cr.execute(
                """SELECT c.id,
                          (SELECT last_ok_at FROM integration_connector_metric
                            WHERE connector_id = c.id AND last_ok_at IS NOT NULL ORDER BY hour DESC LIMIT 1),
                          (SELECT last_failure_at FROM integration_connector_metric
                            WHERE connector_id = c.id AND last_failure_at IS NOT NULL ORDER BY hour DESC LIMIT 1)
                     FROM unnest(%s::integer[]) AS c(id)""",
                [ids],
            )
            for connector_id, last_ok_at, last_failure_at in cr.fetchall():
                inputs[connector_id]["last_success_at"] = last_ok_at
                inputs[connector_id]["last_failure_at"] = last_failure_at
        # The breaker's view as it is now (not as cached earlier in this transaction), for the set.
        self.invalidate_recordset(["circuit_state", "circuit_opened_at", "circuit_last_error"])
        for connector in self.filtered("id"):
            inputs[connector.id].update(
                circuit_state=connector.circuit_state,
                circuit_opened_at=connector.circuit_opened_at,
                circuit_last_error=connector.circuit_last_error,
            )
        self.env["integration.connector.probe"].flush_model()
        self.env.cr.execute(
            """SELECT connector_id,
                      COUNT(*) FILTER (WHERE checked_at >= %(hour_ago)s),
                      COUNT(*) FILTER (WHERE checked_at >= %(hour_ago)s AND is_ok),
                      COUNT(*), COUNT(*) FILTER (WHERE is_ok), MAX(checked_at) FILTER (WHERE is_ok)
                 FROM integration_connector_probe
                WHERE connector_id = ANY(%(ids)s) AND checked_at >= %(day_ago)s
             GROUP BY connector_id""",
            {"ids": ids, "hour_ago": hour_ago, "day_ago": day_ago},
        )
        for connector_id, probes_1h, ok_1h, probes_24h, ok_24h, last_ok_probe in self.env.cr.fetchall():
            figures = inputs[connector_id]
            figures.update(probes_1h=probes_1h, probes_ok_1h=ok_1h, probes_24h=probes_24h, probes_ok_24h=ok_24h)
            if last_ok_probe and (not figures["last_success_at"] or last_ok_probe > figures["last_success_at"]):
                figures["last_success_at"] = last_ok_probe
        for connector_id, jobs in self._job_figures().items():
            inputs[connector_id]["failed_jobs"] = jobs["failed"]
            inputs[connector_id]["stuck_jobs"] = jobs["stuck"]
        return inputs

    def _job_figures(self):
        """``{connector id: {"failed", "stuck", "oldest_stuck_at"}}`` of these connectors' jobs,
        each stuck after its own *Job Stuck After* (one query per distinct threshold)."""
        thresholds = {}
        for connector in self:
            thresholds.setdefault(max(connector.stuck_job_minutes, 1), []).append(connector.id)
        figures = {}
        for minutes, connector_ids in thresholds.items():
            jobs = self.env["queue.job"].sudo()._integration_job_figures(stuck_minutes=minutes)
            figures.update({connector_id: jobs[connector_id] for connector_id in connector_ids if connector_id in jobs})
        return figures

    def _traffic_part(self, figures):
        return health_rules.traffic_status(
            figures["calls_1h"],
            _rate(figures["ok_1h"], figures["calls_1h"]),
            figures["calls_24h"],
            _rate(figures["ok_24h"], figures["calls_24h"]),
            self.health_ok_threshold,
            self.health_warning_threshold,
        )

    def _health_now(self, figures=None):
        """``(status, reason)`` of one connector now: the worst of its traffic, its probes,
        its breaker and its job queue (see ``core.health``)."""
        self.ensure_one()
        figures = figures or self._health_inputs()[self.id]
        parts = [
            self._traffic_part(figures),
            health_rules.probe_status(
                figures["probes_1h"],
                _rate(figures["probes_ok_1h"], figures["probes_1h"]),
                figures["probes_24h"],
                _rate(figures["probes_ok_24h"], figures["probes_24h"]),
                self.health_ok_threshold,
                self.health_warning_threshold,
            ),
        ]
        if figures["circuit_state"] == "open":
            since = figures["circuit_opened_at"]
            parts.append(
                (
                    "error",
                    self.env._(
                        "error: circuit open since %(since)s UTC after repeated failures (%(error)s)",
                        since=since.strftime("%Y-%m-%d %H:%M") if since else "?",
                        error=(figures["circuit_last_error"] or "")[:160],
                    ),
                )
            )
        if figures["stuck_jobs"]:
            parts.append(
                (
                    "warning",
                    self.env._(
                        "warning: %(count)s job(s) started or enqueued for over %(minutes)s min",
                        count=figures["stuck_jobs"],
                        minutes=self.stuck_job_minutes,
                    ),
                )
            )
        return health_rules.combine(parts)

    def _refresh_health(self):
        """Rate each connector now and store its status where it moved (then ``_health_changed``)."""
        inputs = self._health_inputs()
        now = fields.Datetime.now()
        for connector in self:
            previous = connector.health_status
            status, _reason = connector._health_now(inputs[connector.id])
            if status != previous:
                # Written only on a change: the cron does not touch every connector row each minute.
                with connector._health_guard():
                    connector.sudo().write({"health_status": status, "health_since": now})
                    connector._health_changed(previous)

    @contextmanager
    def _health_guard(self):
        """One connector's health bookkeeping in a savepoint: its failure (a mail template
        edited into an error...) is logged and undone, and the other connectors go on."""
        try:
            with self.env.cr.savepoint():
                yield
        except Exception:  # noqa: BLE001 - logged with its traceback; the check goes on
            self.env.invalidate_all()
            _logger.exception("integration_hub: the health check of connector %s failed", self.code)

    def _health_changed(self, previous):
        """Hook: the stored status of this connector moved from ``previous`` to ``health_status``."""

    def action_check_health(self):
        """Button: rate the connector now (the cron does it every minute)."""
        self._refresh_health()
        return True

    @api.model
    def _cron_check_health(self):
        """Cron: refresh the status of every active connector."""
        self.search([])._refresh_health()

    # SLA ----------------------------------------------------------------------------

    def _compute_sla(self):
        for connector in self:
            figures = connector._sla_figures() if connector.id else {}
            connector.sla_availability_30d = figures.get("availability_30d") or 0.0
            connector.sla_summary = connector._sla_table(figures) if figures else False

    def _sla_figures(self):
        """Availability and p95 read / write latency over 24 h, 7 and 30 days.

        Availability counts observed hours only (see ``core.health.availability``): an hour
        with probes is rated by them, an hour with calls only by the calls the remote failed.
        """
        self.ensure_one()
        now = fields.Datetime.now()
        starts = {window: now - timedelta(days=days) for window, days in SLA_WINDOWS}
        flush_counts(timeout=0.5)
        self.env["integration.connector.probe"].flush_model()
        self.env.cr.execute(
            """SELECT date_trunc('hour', checked_at), COUNT(*), COUNT(*) FILTER (WHERE NOT is_up)
                 FROM integration_connector_probe
                WHERE connector_id = %s AND checked_at >= %s AND is_sent
             GROUP BY 1""",
            [self.id, starts["30d"]],
        )
        probe_hours = {hour: failed / count for hour, count, failed in self.env.cr.fetchall()}
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                """SELECT hour, SUM(calls - refused), SUM(retryable_error + connection_error)
                     FROM integration_connector_metric
                    WHERE connector_id = %s AND hour >= date_trunc('hour', %s::timestamp)
                 GROUP BY hour""",
                [self.id, starts["30d"]],
            )
            call_hours = {hour: (failed / calls if calls else None) for hour, calls, failed in cr.fetchall()}
            cr.execute(
                """SELECT method_class, position,
                          SUM(value) FILTER (WHERE hour >= date_trunc('hour', %(d1)s::timestamp)),
                          SUM(value) FILTER (WHERE hour >= date_trunc('hour', %(d7)s::timestamp)),
                          SUM(value)
                     FROM integration_connector_metric m,
                          unnest(m.histogram) WITH ORDINALITY AS h(value, position)
                    WHERE connector_id = %(id)s AND hour >= date_trunc('hour', %(d30)s::timestamp)
                 GROUP BY method_class, position ORDER BY method_class, position""",
                {"id": self.id, "d1": starts["24h"], "d7": starts["7d"], "d30": starts["30d"]},
            )
            histograms = {}
            for klass, _position, day, week, month in cr.fetchall():
                for window, value in (("24h", day), ("7d", week), ("30d", month)):
                    histograms.setdefault((klass, window), []).append(int(value or 0))
        figures = {}
        for window, start in starts.items():
            hours = {
                hour: fraction for hour, fraction in call_hours.items() if hour >= start.replace(minute=0, second=0)
            }
            hours.update(
                {hour: fraction for hour, fraction in probe_hours.items() if hour >= start.replace(minute=0, second=0)}
            )
            figures[f"availability_{window}"] = health_rules.availability(hours.values())
            for klass in ("read", "write"):
                figures[f"p95_{klass}_{window}"] = percentile_from_histogram(histograms.get((klass, window)), 0.95)
        return figures

    def _sla_table(self, figures):
        """The SLA as a small table: target, then the actuals of each window, red where missed."""
        rows = [
            (
                self.env._("Availability"),
                f"{self.sla_availability_target:g}%",
                "availability",
                self.sla_availability_target,
            ),
            (self.env._("p95 read"), f"{self.sla_p95_read_ms} ms", "p95_read", self.sla_p95_read_ms),
            (self.env._("p95 write"), f"{self.sla_p95_write_ms} ms", "p95_write", self.sla_p95_write_ms),
        ]
        head = Markup("").join(Markup("<th class='text-end'>%s</th>") % label for label in ("24 h", "7 d", "30 d"))
        body = Markup()
        for label, target_text, key, target in rows:
            cells = Markup()
            for window, _days in SLA_WINDOWS:
                value = figures.get(f"{key}_{window}")
                if value is None:
                    cells += Markup("<td class='text-end text-muted'>—</td>")
                    continue
                met = value >= target if key == "availability" else value <= target
                text = health_rules.percent(value) if key == "availability" else f"≤ {value:g} ms"
                cells += Markup("<td class='text-end %s'>%s</td>") % (
                    "text-success" if met else "text-danger fw-bold",
                    text,
                )
            body += Markup("<tr><td>%s</td><td class='text-end'>%s</td>%s</tr>") % (label, target_text, cells)
        return Markup(
            "<table class='table table-sm o_integration_sla'><thead><tr><th/><th class='text-end'>%s</th>%s</tr>"
            "</thead><tbody>%s</tbody></table>"
        ) % (escape(self.env._("Target")), head, body)


def _rate(part, whole):
    return 100.0 * part / whole if whole else 0.0
