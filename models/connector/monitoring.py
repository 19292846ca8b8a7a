import json as json_module
import logging
import time
import traceback
from datetime import timedelta

from odoo import api, fields, models
from odoo.exceptions import UserError

from odoo.addons.base.models.ir_model import MODULE_UNINSTALL_FLAG

from ...core.actions import notification
from ...core.backoff import parse_retry_after
from ...core.exceptions import RETRYABLE_STATUSES, IntegrationConfigError, IntegrationError
from ...core.redact import redact_headers, redact_text, redact_url
from ..integration_call_log import BODY_LIMIT
from ..integration_connector_metric import (
    LATENCY_BUCKETS_MS,
    IntegrationConnectorMetric,
    count_call_later,
    flush_counts,
    method_class,
    percentile_from_histogram,
)
from ..integration_connector_state import state_cursor

_logger = logging.getLogger(__name__)


class IntegrationConnector(models.Model):
    """Monitoring: health and Test Connection, call metrics, the debug call recorder and
    the error log of failed calls (``_account_call`` is the bookkeeping of each exchange)."""

    _inherit = "integration.connector"

    # Status
    # Status
    health_state = fields.Selection(
        selection=[("unknown", "Unknown"), ("ok", "Healthy"), ("failing", "Failing")],
        string="Health",
        default="unknown",
        readonly=True,
        copy=False,
        tracking=True,
    )
    last_test_at = fields.Datetime(string="Last Tested", readonly=True, copy=False)
    last_test_status_code = fields.Integer(string="Last Status", readonly=True, copy=False)
    last_test_latency_ms = fields.Integer(string="Last Latency (ms)", readonly=True, copy=False)
    last_test_message = fields.Char(string="Last Result", readonly=True, copy=False)
    color = fields.Integer(compute="_compute_color")

    # Metrics
    # Metrics
    calls_1h = fields.Integer(string="Calls (1 h)", compute="_compute_metrics")
    success_rate_1h = fields.Float(string="Success Rate (1 h, %)", compute="_compute_metrics", digits=(5, 1))
    latency_p95_1h = fields.Integer(string="p95 Latency (1 h, ms)", compute="_compute_metrics")
    calls_24h = fields.Integer(string="Calls (24 h)", compute="_compute_metrics")
    success_rate_24h = fields.Float(string="Success Rate (24 h, %)", compute="_compute_metrics", digits=(5, 1))
    latency_p95_24h = fields.Integer(string="p95 Latency (24 h, ms)", compute="_compute_metrics")
    error_count = fields.Integer(compute="_compute_error_count")

    # Debug switch
    # Debug switch
    debug_until = fields.Datetime(
        string="Record Calls Until",
        copy=False,
        tracking=True,
        help="While set in the future, every call is recorded (redacted, truncated) in the call log.",
    )

    @api.depends("health_status")
    def _compute_color(self):
        # Kanban colours: green, orange, red (the status from traffic, probes and breaker).
        colors = {"ok": 10, "warning": 2, "error": 1}
        for connector in self:
            connector.color = colors.get(connector.health_status, 0)

    def _compute_metrics(self):
        figures = self._metrics_by_connector()
        for connector in self:
            mine = figures.get(connector.id, {})
            for suffix in ("1h", "24h"):
                calls, ok = mine.get(f"calls_{suffix}", 0), mine.get(f"ok_{suffix}", 0)
                connector[f"calls_{suffix}"] = calls
                connector[f"success_rate_{suffix}"] = (100.0 * ok / calls) if calls else 0.0
                connector[f"latency_p95_{suffix}"] = (
                    percentile_from_histogram(mine.get(f"histogram_{suffix}"), 0.95) or 0
                )

    def _metrics_by_connector(self):
        """The hourly buckets of the set since the start of the hour an hour (a day) ago, in
        two queries (the Overview shows every connector): per connector id, ``calls_1h``,
        ``ok_1h``, ``calls_24h``, ``ok_24h`` and the merged latency histograms
        ``histogram_1h``, ``histogram_24h``, ``histogram_read`` and ``histogram_write`` (24 h).
        Connectors without a bucket are absent. Health, the cards and the alerts read these."""
        ids = [connector_id for connector_id in self.ids if isinstance(connector_id, int)]
        if not ids:
            return {}
        now = fields.Datetime.now()
        bounds = {"ids": ids, "hour_ago": now - timedelta(hours=1), "day_ago": now - timedelta(hours=24)}
        flush_counts(timeout=0.5)  # this process's latest calls included
        cells = len(LATENCY_BUCKETS_MS) + 1
        figures = {}
        with state_cursor(self.env.cr.dbname) as cr:
            cr.execute(
                """SELECT connector_id,
                          COALESCE(SUM(calls) FILTER (WHERE hour >= date_trunc('hour', %(hour_ago)s::timestamp)), 0),
                          COALESCE(SUM(ok) FILTER (WHERE hour >= date_trunc('hour', %(hour_ago)s::timestamp)), 0),
                          SUM(calls), SUM(ok)
                     FROM integration_connector_metric
                    WHERE connector_id = ANY(%(ids)s) AND hour >= date_trunc('hour', %(day_ago)s::timestamp)
                 GROUP BY connector_id""",
                bounds,
            )
            for connector_id, calls_1h, ok_1h, calls_24h, ok_24h in cr.fetchall():
                figures[connector_id] = {
                    "calls_1h": calls_1h,
                    "ok_1h": ok_1h,
                    "calls_24h": calls_24h,
                    "ok_24h": ok_24h,
                    **{f"histogram_{key}": [0] * cells for key in ("1h", "24h", "read", "write")},
                }
            cr.execute(
                """SELECT connector_id, method_class, position,
                          COALESCE(SUM(value) FILTER (WHERE hour >= date_trunc('hour', %(hour_ago)s::timestamp)), 0),
                          SUM(value)
                     FROM integration_connector_metric m, unnest(m.histogram) WITH ORDINALITY AS h(value, position)
                    WHERE connector_id = ANY(%(ids)s) AND hour >= date_trunc('hour', %(day_ago)s::timestamp)
                 GROUP BY connector_id, method_class, position""",
                bounds,
            )
            for connector_id, klass, position, in_hour, in_day in cr.fetchall():
                mine = figures[connector_id]
                mine["histogram_1h"][position - 1] += int(in_hour)
                mine["histogram_24h"][position - 1] += int(in_day)
                mine[f"histogram_{klass}"][position - 1] += int(in_day)
        return figures

    def _compute_error_count(self):
        groups = self.env["integration.error"]._read_group(
            [("connector_id", "in", self.ids), ("state", "=", "new")], ["connector_id"], ["__count"]
        )
        counts = {connector.id: count for connector, count in groups}
        for connector in self:
            connector.error_count = counts.get(connector.id, 0)

    def unlink(self):
        """Counters and breaker state go with the connector (their tables have no foreign key,
        to keep the call path's writes light; left behind, they would show in API Calls).

        They are written on the shared-state connection, outside any transaction, so they are
        deleted there too, once the deletion of the connectors has committed.
        """
        ids = tuple(self.ids)
        dbname = self.env.cr.dbname
        result = super().unlink()
        if self.env.context.get(MODULE_UNINSTALL_FLAG):
            return result  # the addon is uninstalled: those tables are dropped with it

        @self.env.cr.postcommit.add
        def forget_runtime_state():
            flush_counts(timeout=1.0)  # none of this process's counts arrives afterwards
            with state_cursor(dbname) as cr:
                cr.execute("DELETE FROM integration_connector_metric WHERE connector_id IN %s", [ids])
                cr.execute("DELETE FROM integration_connector_state WHERE connector_id IN %s", [ids])

        return result

    def action_test_connection(self):
        """Button: GET the health path and report status, latency and error."""
        self.ensure_one()
        result = self._test_connection()
        if result["ok"]:
            return notification(self.env._("Connection OK"), result["message"])
        return notification(self.env._("Connection failed"), result["message"], kind="danger", sticky=True)

    def action_debug_start(self):
        """Button: record every call for the next hour."""
        self.check_access("write")
        self.write({"debug_until": fields.Datetime.now() + timedelta(hours=1)})
        return True

    def action_debug_stop(self):
        """Button: stop recording calls."""
        self.write({"debug_until": False})
        return True

    def action_open_errors(self):
        """Smart button: this connector's errors, new ones first."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_error_action")
        action["domain"] = [("connector_id", "=", self.id)]
        action["context"] = {"search_default_filter_new": 1}
        return action

    def action_open_call_logs(self):
        """Smart button: the calls recorded while debugging."""
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_call_log_action")
        action["domain"] = [("connector_id", "=", self.id)]
        return action

    def _test_connection(self):
        """GET the health path through the call path; store and return status, latency and message."""
        self.ensure_one()
        started = time.monotonic()
        status_code = 0
        try:
            response = self._request(
                "GET", self.health_path or "/", raise_for_status=False, operation="Test connection", log_errors=False
            )
            status_code = response.status_code
            ok = 200 <= status_code < 300
            if ok:
                message = self.env._("HTTP %(status)s %(reason)s", status=status_code, reason=response.reason or "")
            else:
                message = self.env._(
                    "HTTP %(status)s %(reason)s: %(body)s",
                    status=status_code,
                    reason=response.reason or "",
                    body=self._remote_message(response) or self.env._("(empty body)"),
                )
        except (IntegrationError, UserError) as exc:
            ok = False
            message = str(exc)
        latency_ms = int((time.monotonic() - started) * 1000)
        message = f"{message} ({latency_ms} ms)"
        # Operators (read-only on connectors) may test too: the result is status, not configuration.
        self.sudo().write(
            {
                "health_state": "ok" if ok else "failing",
                "last_test_at": fields.Datetime.now(),
                "last_test_status_code": status_code,
                "last_test_latency_ms": latency_ms,
                "last_test_message": message[:500],
            }
        )
        # The call is in the metrics now: the status shows it without waiting for the cron.
        self._refresh_health()
        return {"ok": ok, "status_code": status_code, "latency_ms": latency_ms, "message": message}

    def _account_call(
        self,
        method,
        url,
        response,
        error,
        latency_ms,
        call_kwargs,
        breaker_was_quiet=False,
        is_probe=False,
        health_probe=False,
        operation=None,
    ):
        """Metrics, breaker, Retry-After, the call's log line and debug log for one exchange.

        ``is_probe`` is the breaker's half-open trial call; ``health_probe`` an active health
        probe, which touches neither the metrics nor the breaker (its history has it).
        """
        retry_after = None
        if error is not None:
            outcome = "refused" if isinstance(error, IntegrationConfigError) else "connection_error"
            # A refusal by URL safety says nothing about the remote: neutral for the breaker.
            success = None if isinstance(error, IntegrationConfigError) else not error.retryable
            reason = str(error)
        else:
            status = response.status_code
            if status in RETRYABLE_STATUSES:
                outcome, success = "retryable_error", False
                if status == 429:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    if retry_after is None:
                        retry_after = float(self.retry_backoff_base)
            elif status >= 400:
                outcome, success = "client_error", True  # the remote is up and answering
            else:
                outcome, success = "ok", True
            reason = f"HTTP {status}"
        if health_probe:
            pass  # recorded in the probe history by the caller
        elif success and retry_after is None and breaker_was_quiet:
            # The common case changes nothing shared but the counters: counted in the background.
            count_call_later(self.env.cr.dbname, self.id, outcome, latency_ms, method_class(method))
        else:
            with state_cursor(self.env.cr.dbname) as cr:
                IntegrationConnectorMetric._add(cr, self.id, outcome, latency_ms, klass=method_class(method))
                if success is not None:  # None: refused by URL safety, says nothing of the remote
                    self.env["integration.connector.state"]._report(
                        cr, self, success, error=None if success else reason, retry_after=retry_after, is_probe=is_probe
                    )
        if _logger.isEnabledFor(logging.DEBUG):
            _logger.debug(
                "Connector %s: %s %s -> %s in %.0f ms",
                self.code,
                method,
                redact_url(url, self._sensitive_param_names()),
                response.status_code if response is not None else type(error).__name__,
                latency_ms,
            )
        self._log_call(method, url, response, error, latency_ms, outcome, operation, health_probe=health_probe)
        if self.debug_until and self.debug_until > fields.Datetime.now():
            self._record_debug_call(method, url, response, error, latency_ms, outcome, call_kwargs)

    def _record_debug_call(self, method, url, response, error, latency_ms, outcome, call_kwargs):
        """Keep one exchange in the call log, headers and bodies redacted and truncated."""
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        body = call_kwargs.get("json")
        body = json_module.dumps(body) if body is not None else _text(call_kwargs.get("data"))
        prepared_url = response.request.url if response is not None else url
        values = {
            "connector_id": self.id,
            "method": method,
            "url": redact_url(prepared_url, names),
            "status_code": response.status_code if response is not None else 0,
            "latency_ms": int(latency_ms),
            "outcome": outcome,
            "request_headers": redact_text(
                json_module.dumps(
                    redact_headers(response.request.headers if response is not None else call_kwargs["headers"], names),
                    indent=1,
                    default=str,
                ),
                secrets,
            ),
            "request_body": redact_text(body, secrets, limit=BODY_LIMIT) if body else False,
            "response_headers": json_module.dumps(redact_headers(dict(response.headers)), indent=1)
            if response is not None
            else False,
            "response_body": redact_text(response.text, secrets, limit=BODY_LIMIT) if response is not None else False,
            "error": str(error) if error is not None else False,
        }
        self.env["integration.call.log"]._record(values)

    def _log_error(self, error, method, url, operation, related, job_uuid, kwargs):
        """Record a failed call in ``integration.error``: redacted URL, request excerpt and message."""
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        request_excerpt = False
        if kwargs:
            body = kwargs.get("json")
            body = json_module.dumps(body) if body is not None else _text(kwargs.get("data"))
            request_excerpt = redact_text(
                f"{method} {redact_url(url, names)}\n"
                f"{json_module.dumps(redact_headers(kwargs.get('headers') or {}, names))}\n{body or ''}",
                secrets,
                limit=2000,
            )
        self.env["integration.error"]._record(
            self,
            {
                "operation": operation,
                "method": method,
                "url": redact_url(url, names) if url else False,
                "status_code": getattr(error, "status_code", 0) or 0,
                "error_class": type(error).__name__,
                "is_retryable": error.retryable,
                "message": redact_text(str(error), secrets),
                "request_excerpt": request_excerpt,
                "response_excerpt": getattr(error, "remote_message", None) or False,
                "traceback": redact_text("".join(traceback.format_stack(limit=12)), secrets),
                "res_model": related._name if related else False,
                "res_id": related.id if related else False,
                "job_uuid": job_uuid,
            },
        )


def _text(data):
    """A request body as text for the logs (a JSON body may have been sent as UTF-8 bytes)."""
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
