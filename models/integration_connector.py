import base64
import ipaddress
import json as json_module
import logging
import math
import random
import re
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import parse_qsl, quote_plus, urljoin, urlsplit

import psycopg2
import requests

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

from odoo.addons.queue_job.exception import RetryableJobError

from ..core.backoff import parse_retry_after, retry_delay
from ..core.exceptions import (
    RETRYABLE_STATUSES,
    IntegrationAuthError,
    IntegrationCircuitOpenError,
    IntegrationConfigError,
    IntegrationConnectionError,
    IntegrationError,
    IntegrationHTTPError,
    IntegrationRateLimitedError,
    IntegrationRefusedError,
    describe_transport_error,
)
from ..core.redact import (
    QueryStringRedactingFilter,
    is_sensitive_name,
    redact_headers,
    redact_text,
    redact_url,
    register_sensitive_name,
)
from ..core.transport import GuardedAdapter
from ..core.urlsafety import UnsafeURLError, address_problem, check_url
from .integration_call_log import BODY_LIMIT
from .integration_connector_metric import (
    IntegrationConnectorMetric,
    count_call_later,
    flush_counts,
    percentile_from_histogram,
)
from .integration_connector_state import SharedStateBusyError, state_cursor
from .integration_secret_mixin import MANAGER_GROUP, secret_fields

_logger = logging.getLogger(__name__)
# urllib3 logs request lines, query string included, at DEBUG level: mask secrets there.
logging.getLogger("urllib3.connectionpool").addFilter(QueryStringRedactingFilter())

CODE_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
# How much of a remote error body goes into a message shown to a user.
REMOTE_MESSAGE_LIMIT = 300

# Pooled sessions, one per (database, connector) in this process: connection reuse
# across calls. They hold no credentials (auth is applied per request).
_sessions = {}
_sessions_lock = threading.Lock()


def _get_session(dbname, connector_id, allow_private, verify_tls):
    # verify_tls is part of the key: requests (< 2.32) reuses a pooled connection opened
    # with verify=False for later verified calls, so the two must never share a pool.
    key = (dbname, connector_id, allow_private, verify_tls)
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = requests.Session()
                # A connector is a machine client: no cookies carried from one call to the next.
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
                session.trust_env = False
                # Connections go only to addresses the URL-safety check accepted.
                adapter = GuardedAdapter(allow_private=allow_private, pool_maxsize=8)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                _sessions[key] = session
    return session


# Whitespace and control characters have no place in a request path (see _join_url).
_UNSAFE_PATH_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")

# Fraction of the configured rate the limiter paces at (see _rate_per_second). A call that
# is sent late (its process woke late from the wait for its slot) does not move the slots of
# the calls after it, so it may arrive closer to the next one than the interval: pacing at
# 95 % absorbs lateness up to 5 % of any window (50 ms of a one-second window) before the
# partner could count one call too many in it. (At 99 %, 10 ms of lateness on this loaded
# 2-core machine showed 21 calls in one second at 20 per second.)
RATE_PACING = 0.95

# Jitter for retry delays; tests seed their own random.Random through this name.
_jitter_random = random.Random()


def _epoch_to_datetime(value):
    if not value:
        return False
    return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)


def _is_ip_literal(host):
    try:
        ipaddress.ip_address((host or "").split("%", 1)[0])
    except ValueError:
        return False
    return True


# Advisory lock namespace for OAuth2 token refreshes (the second key is the connector id).
OAUTH2_LOCK_NAMESPACE = 0x1A7E


def _replayable(data, files):
    """Can this body be sent a second time? (A file or generator is consumed by the first.)"""
    return files is None and (data is None or isinstance(data, bytes | str | dict | list | tuple))


def _is_redirect(response):
    # Redirects are never followed (a Location may point anywhere); 304 answers a
    # conditional request and is not one.
    return 300 <= response.status_code < 400 and response.status_code != 304


def _error_details(error):
    """Keyword arguments that rebuild ``error`` with another message."""
    if isinstance(error, IntegrationHTTPError):
        return {
            "status_code": error.status_code,
            "method": error.method,
            "url": error.url,
            "remote_message": error.remote_message,
            "retry_after": error.retry_after,
        }
    return {}


class IntegrationConnector(models.Model):
    """One external API: where it is, how to authenticate, how to call it.

    Concrete connectors (a shop, a partner ERP) extend this model the way payment
    providers extend ``payment.provider``: add a value to ``kind`` and override the
    methods that dispatch on it, calling ``super()`` for the other kinds.
    """

    _name = "integration.connector"
    _description = "Integration Connector"
    _inherit = ["mail.thread", "mail.activity.mixin", "integration.secret.mixin"]
    _order = "sequence, name, id"

    name = fields.Char(required=True, tracking=True, translate=False)
    code = fields.Char(
        required=True,
        tracking=True,
        help="Short identifier used in URLs (webhooks: /integration/webhook/<code>): "
        "lowercase letters, digits, '-' and '_'.",
    )
    active = fields.Boolean(default=True, tracking=True)
    sequence = fields.Integer(default=10)
    company_id = fields.Many2one(
        "res.company", required=True, index=True, default=lambda self: self.env.company, tracking=True
    )
    kind = fields.Selection(
        selection=[("generic_rest", "Generic REST API")],
        required=True,
        default="generic_rest",
        tracking=True,
        help="What is on the other side. Addons add their own kinds and handlers.",
    )
    base_url = fields.Char(
        string="Base URL", required=True, tracking=True, help="Root of the API, e.g. https://api.example.com/v2"
    )
    notes = fields.Html()

    # Authentication
    auth_type = fields.Selection(
        selection=[
            ("none", "None"),
            ("api_key", "API Key"),
            ("bearer", "Bearer Token"),
            ("basic", "HTTP Basic"),
            ("oauth2", "OAuth2"),
        ],
        string="Authentication",
        required=True,
        default="none",
        tracking=True,
    )
    api_key_location = fields.Selection(
        selection=[("header", "Header"), ("query", "Query Parameter")],
        default="header",
        string="API Key In",
    )
    api_key_name = fields.Char(
        string="API Key Header/Parameter", default="X-API-Key", help="Header or query parameter name carrying the key."
    )
    api_key, api_key_encrypted, api_key_is_set = secret_fields("API Key")
    bearer_token, bearer_token_encrypted, bearer_token_is_set = secret_fields("Bearer Token")
    basic_username = fields.Char(string="Username", groups=MANAGER_GROUP)
    basic_password, basic_password_encrypted, basic_password_is_set = secret_fields("Password")
    oauth2_grant_type = fields.Selection(
        selection=[("client_credentials", "Client Credentials")],
        string="OAuth2 Grant",
        default="client_credentials",
    )
    oauth2_token_url = fields.Char(string="Token URL")
    oauth2_client_id = fields.Char(string="Client ID", groups=MANAGER_GROUP)
    oauth2_client_secret, oauth2_client_secret_encrypted, oauth2_client_secret_is_set = secret_fields("Client Secret")
    oauth2_scope = fields.Char(string="Scope", help="Space-separated scopes, when the server wants them.")
    oauth2_audience = fields.Char(string="Audience", help="Sent as 'audience' when the server needs one.")
    oauth2_client_auth = fields.Selection(
        selection=[("basic", "HTTP Basic (client_secret_basic)"), ("body", "Request body (client_secret_post)")],
        string="Client Authentication",
        default="basic",
    )
    oauth2_token_ids = fields.One2many("integration.oauth.token", "connector_id", string="OAuth2 Tokens")

    # Request defaults
    timeout_connect = fields.Float(string="Connect Timeout (s)", default=5.0)
    timeout_read = fields.Float(string="Read Timeout (s)", default=30.0)
    default_headers = fields.Text(
        help='JSON object of headers sent with every call, e.g. {"Accept": "application/json"}.'
    )
    verify_tls = fields.Boolean(
        string="Verify TLS Certificates",
        default=True,
        tracking=True,
        help="Leave on. Turn off only for a partner server with a self-signed certificate; "
        "every call through this connector is then logged with a warning.",
    )
    health_path = fields.Char(default="/", help="Path (under the base URL) that 'Test Connection' calls with GET.")

    # Network safety
    allow_http = fields.Boolean(
        string="Allow Plain HTTP",
        tracking=True,
        help="Off: only https URLs are called. Turn on for a partner server without TLS on a trusted network.",
    )
    allow_private_network = fields.Boolean(
        tracking=True,
        help="Off: loopback, private, link-local (cloud metadata), CGNAT and unique-local addresses are "
        "refused, whatever the host name resolves to. Turn on for a partner ERP on your LAN.",
    )

    # Rate limit, shared by every worker and server on the database
    rate_limit = fields.Integer(
        default=0,
        help="Most calls per period sent to this API (0: no limit). Shared by all Odoo workers.",
    )
    rate_limit_period = fields.Selection(
        [("second", "per second"), ("minute", "per minute")], default="minute", required=True
    )
    rate_limit_burst = fields.Integer(
        string="Burst", default=1, help="Calls that may go back to back when the budget is full."
    )
    rate_limit_max_wait = fields.Float(
        string="Max Wait (s)",
        default=2.0,
        help="A call waits at most this long for its turn; beyond it a job is rescheduled and a "
        "button says when to try again.",
    )

    # Retry policy for jobs
    retry_max_attempts = fields.Integer(string="Max Attempts", default=5)
    retry_backoff_base = fields.Float(string="Backoff Base (s)", default=2.0)
    retry_backoff_cap = fields.Float(string="Backoff Cap (s)", default=300.0)

    # Circuit breaker
    circuit_threshold = fields.Integer(
        string="Open After Failures",
        default=5,
        help="Consecutive retryable failures that open the circuit (0: no circuit breaker).",
    )
    circuit_reset_timeout = fields.Float(
        string="Reset Timeout (s)", default=60.0, help="How long the circuit stays open before one probe call."
    )
    circuit_state = fields.Selection(
        [("closed", "Closed"), ("open", "Open"), ("half_open", "Half-open")],
        compute="_compute_runtime_state",
    )
    circuit_failures = fields.Integer(string="Consecutive Failures", compute="_compute_runtime_state")
    circuit_opened_at = fields.Datetime(string="Opened At", compute="_compute_runtime_state")
    circuit_last_failure_at = fields.Datetime(string="Last Failure", compute="_compute_runtime_state")
    circuit_last_error = fields.Char(string="Last Failure Reason", compute="_compute_runtime_state")

    # Metrics
    calls_1h = fields.Integer(string="Calls (1 h)", compute="_compute_metrics")
    success_rate_1h = fields.Float(string="Success Rate (1 h, %)", compute="_compute_metrics", digits=(5, 1))
    latency_p95_1h = fields.Integer(string="p95 Latency (1 h, ms)", compute="_compute_metrics")
    calls_24h = fields.Integer(string="Calls (24 h)", compute="_compute_metrics")
    success_rate_24h = fields.Float(string="Success Rate (24 h, %)", compute="_compute_metrics", digits=(5, 1))
    latency_p95_24h = fields.Integer(string="p95 Latency (24 h, ms)", compute="_compute_metrics")
    error_count = fields.Integer(compute="_compute_error_count")

    # Debug switch
    debug_until = fields.Datetime(
        string="Record Calls Until",
        copy=False,
        tracking=True,
        help="While set in the future, every call is recorded (redacted, truncated) in the call log.",
    )

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

    _sql_constraints = [
        ("code_uniq", "unique(code)", "Another connector already uses this code."),
        ("rate_limit_positive", "CHECK(rate_limit >= 0)", "The rate limit cannot be negative."),
        ("rate_limit_burst_positive", "CHECK(rate_limit_burst >= 1)", "The burst must be at least 1."),
        ("retry_max_attempts_positive", "CHECK(retry_max_attempts >= 1)", "At least one attempt is needed."),
        ("circuit_threshold_positive", "CHECK(circuit_threshold >= 0)", "The failure threshold cannot be negative."),
        ("timeout_connect_positive", "CHECK(timeout_connect > 0)", "The connect timeout must be positive."),
        ("timeout_read_positive", "CHECK(timeout_read > 0)", "The read timeout must be positive."),
    ]

    @api.depends("health_state")
    def _compute_color(self):
        colors = {"ok": 10, "failing": 1}
        for connector in self:
            connector.color = colors.get(connector.health_state, 0)

    def _compute_runtime_state(self):
        # Read live from the shared-state connection: the state is not transactional, and a
        # long transaction must not show a breaker as it was when that transaction began.
        states = {}
        if self.ids:
            with state_cursor(self.env.cr.dbname) as cr:
                cr.execute(
                    """SELECT connector_id, circuit_state, circuit_failures, circuit_opened_at,
                              circuit_last_failure_at, circuit_last_error
                         FROM integration_connector_state WHERE connector_id IN %s""",
                    [tuple(self.ids)],
                )
                states = {row[0]: row[1:] for row in cr.fetchall()}
        for connector in self:
            state, failures, opened_at, last_failure_at, last_error = states.get(
                connector.id, ("closed", 0, None, None, None)
            )
            connector.circuit_state = state
            connector.circuit_failures = failures
            connector.circuit_opened_at = _epoch_to_datetime(opened_at)
            connector.circuit_last_failure_at = _epoch_to_datetime(last_failure_at)
            connector.circuit_last_error = last_error or False

    def _compute_metrics(self):
        now = fields.Datetime.now()
        for connector in self:
            for suffix, hours in (("1h", 1), ("24h", 24)):
                calls, ok, histogram = connector._metrics_since(now - timedelta(hours=hours))
                connector[f"calls_{suffix}"] = calls
                connector[f"success_rate_{suffix}"] = (100.0 * ok / calls) if calls else 0.0
                connector[f"latency_p95_{suffix}"] = percentile_from_histogram(histogram, 0.95) or 0

    def _metrics_since(self, since):
        """(calls, successes, latency histogram) from the hourly buckets since ``since``."""
        if not self.id:
            return 0, 0, []
        flush_counts(timeout=0.5)  # this process's latest calls included
        with state_cursor(self.env.cr.dbname) as cr:
            return self._metrics_query(cr, since)

    def _metrics_query(self, cr, since):
        cr.execute(
            """SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(ok), 0),
                      (SELECT array_agg(total ORDER BY position) FROM (
                          SELECT position, SUM(value) AS total
                            FROM integration_connector_metric m2,
                                 unnest(m2.histogram) WITH ORDINALITY AS h(value, position)
                           WHERE m2.connector_id = %(id)s AND m2.hour >= date_trunc('hour', %(since)s::timestamp)
                        GROUP BY position) buckets)
                 FROM integration_connector_metric
                WHERE connector_id = %(id)s AND hour >= date_trunc('hour', %(since)s::timestamp)""",
            {"id": self.id, "since": since},
        )
        calls, ok, histogram = cr.fetchone()
        return calls, ok, [int(v) for v in (histogram or [])]

    def _compute_error_count(self):
        groups = self.env["integration.error"]._read_group(
            [("connector_id", "in", self.ids), ("state", "=", "new")], ["connector_id"], ["__count"]
        )
        counts = {connector.id: count for connector, count in groups}
        for connector in self:
            connector.error_count = counts.get(connector.id, 0)

    @api.constrains("code")
    def _check_code(self):
        for connector in self:
            if not CODE_PATTERN.match(connector.code or "") or len(connector.code) > 64:
                raise ValidationError(
                    self.env._(
                        "Code %(code)r is not valid: use 1 to 64 lowercase letters and digits, "
                        "separated by single '-' or '_' (for example 'shop-eu').",
                        code=connector.code,
                    )
                )

    @api.constrains("base_url", "oauth2_token_url")
    def _check_urls(self):
        for connector in self:
            connector._validate_http_url(connector.base_url, connector._fields["base_url"].string)
            if connector.oauth2_token_url:
                connector._validate_http_url(connector.oauth2_token_url, connector._fields["oauth2_token_url"].string)

    @api.model
    def _validate_http_url(self, url, label):
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                self.env._(
                    "%(field)s must be an absolute http:// or https:// URL, got %(url)r.",
                    field=label,
                    url=redact_url(url),
                )
            )
        if parts.username or parts.password or any(is_sensitive_name(k) for k, _v in parse_qsl(parts.query)):
            raise ValidationError(
                self.env._(
                    "%(field)s must not contain credentials (user info or a key in the query string): "
                    "use the Authentication settings, whose secrets are encrypted.",
                    field=label,
                )
            )

    @api.constrains("default_headers")
    def _check_default_headers(self):
        for connector in self:
            connector._parse_default_headers()

    @api.constrains("auth_type", "api_key_name", "oauth2_token_url")
    def _check_auth_settings(self):
        for connector in self:
            if connector.auth_type == "api_key" and not (connector.api_key_name or "").strip():
                raise ValidationError(self.env._("API Key Header/Parameter is required for API key authentication."))
            if connector.auth_type == "oauth2" and not connector.oauth2_token_url:
                raise ValidationError(self.env._("Token URL is required for OAuth2 authentication."))

    @api.constrains("verify_tls")
    def _check_verify_tls(self):
        for connector in self.filtered(lambda c: not c.verify_tls):
            _logger.warning(
                "TLS certificate verification disabled on connector %s (%s) by %s",
                connector.code,
                connector.id,
                self.env.user.login,
            )

    @api.model_create_multi
    def create(self, vals_list):
        connectors = super().create(vals_list)
        self.env["integration.oauth.token"].sudo().create([{"connector_id": c.id} for c in connectors])
        return connectors

    def copy_data(self, default=None):
        vals_list = super().copy_data(default=default)
        default = default or {}
        for connector, vals in zip(self, vals_list, strict=True):
            if "code" not in default:
                vals["code"] = connector._free_copy_code()
            if "name" not in default:
                vals["name"] = self.env._("%s (copy)", connector.name)
        return vals_list

    def _free_copy_code(self):
        Connector = self.with_context(active_test=False)
        code, number = f"{self.code}-copy", 1
        while Connector.search_count([("code", "=", code)]):
            number += 1
            code = f"{self.code}-copy-{number}"
        return code

    # ------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------

    def action_test_connection(self):
        """Button: GET the health path and report status, latency and error."""
        self.ensure_one()
        result = self._test_connection()
        if result["ok"]:
            notification_type = "success"
            title = self.env._("Connection OK")
        else:
            notification_type = "danger"
            title = self.env._("Connection failed")
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": title,
                "message": result["message"],
                "type": notification_type,
                "sticky": not result["ok"],
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_reset_circuit(self):
        """Button: close the circuit and lift any Retry-After block now."""
        self.check_access("write")
        with state_cursor(self.env.cr.dbname) as cr:
            for connector in self:
                self.env["integration.connector.state"]._reset(cr, connector.id)
                connector._message_log(body=self.env._("Circuit breaker reset by %s.", self.env.user.name))
        return True

    def action_debug_start(self):
        """Button: record every call for the next hour."""
        self.check_access("write")
        self.write({"debug_until": fields.Datetime.now() + timedelta(hours=1)})
        return True

    def action_debug_stop(self):
        self.write({"debug_until": False})
        return True

    def action_open_errors(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_error_action")
        action["domain"] = [("connector_id", "=", self.id)]
        action["context"] = {"search_default_filter_new": 1}
        return action

    def action_open_call_logs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("integration_hub.integration_call_log_action")
        action["domain"] = [("connector_id", "=", self.id)]
        return action

    def action_rotate_secrets(self):
        """Button (managers): re-encrypt every connector secret with the current key."""
        self.check_access("write")
        count = self._rotate_secrets()
        count += self.env["integration.oauth.token"].sudo().search([("connector_id", "in", self.ids)])._rotate_secrets()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Secrets re-encrypted"),
                "message": self.env._("%s secret(s) re-encrypted with the current key.", count),
                "type": "success",
            },
        }

    # ------------------------------------------------------------------------------
    # Business methods: the call path
    # ------------------------------------------------------------------------------

    def _test_connection(self):
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
        return {"ok": ok, "status_code": status_code, "latency_ms": latency_ms, "message": message}

    def _request(
        self,
        method,
        path,
        *,
        params=None,
        json=None,  # noqa: A002 - same name as requests' argument on purpose
        data=None,
        files=None,
        headers=None,
        timeout=None,
        raise_for_status=True,
        operation=None,
        related=None,
        log_errors=True,
    ):
        """Call the API; the one path every outbound call of this addon takes.

        Applies URL safety, the shared rate limit and circuit breaker, authentication,
        timeouts; counts the call in the hourly metrics; records failures in the error log.

        :param path: path under the base URL, or an absolute URL on the same host
        :param timeout: ``(connect, read)`` seconds overriding the connector's defaults
        :param operation: what is being done, for the error log (default "METHOD path")
        :param related: the Odoo record the call is about, linked from the error log
        :param log_errors: False for diagnostics (Test Connection) that report themselves
        :return: the ``requests.Response``
        :raises IntegrationError: typed, with secrets redacted from its message; inside a
            queue job, a retryable failure becomes ``RetryableJobError(seconds=...)``
            until the connector's attempts are spent
        """
        self.ensure_one()
        operation = operation or f"{method} {urlsplit(path or '/').path or '/'}"
        related = related or self._context_related()
        url = kwargs = None
        try:
            url = self._build_url(path)
            request_headers = self._parse_default_headers()
            request_headers.update(headers or {})
            kwargs = {
                "params": list(params.items() if isinstance(params, dict) else params or []),
                "json": json,
                "data": data,
                "files": files,
                "headers": request_headers,
                "timeout": timeout or (self.timeout_connect, self.timeout_read),
                "verify": self.verify_tls,
                "allow_redirects": False,
            }
            if not self.verify_tls:
                _logger.warning(
                    "Connector %s: calling %s without TLS certificate verification", self.code, redact_url(url)
                )
            response = self._send_authenticated(method, url, kwargs)
            if response.status_code == 401 and self.auth_type == "oauth2" and _replayable(data, files):
                # The token may have been revoked or expired early: one fresh token, one retry.
                _logger.info("Connector %s: 401 with a cached OAuth2 token, fetching a new one", self.code)
                sent = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
                self._oauth2_invalidate_token(sent)
                response = self._send_authenticated(method, url, kwargs)
            if raise_for_status and (response.status_code >= 400 or _is_redirect(response)):
                raise self._http_error(method, url, response)
            return response
        except IntegrationError as error:
            raise self._handle_failure(error, method, url, operation, related, log_errors, kwargs) from None

    def _context_related(self):
        """The record a job is working for (context keys set by e.g. webhook processing)."""
        model = self.env.context.get("integration_related_model")
        record_id = self.env.context.get("integration_related_id")
        if model in self.env and record_id:
            return self.env[model].browse(record_id)
        return None

    def _send_authenticated(self, method, url, kwargs):
        """One HTTP exchange: admission (breaker, rate), auth, send, bookkeeping."""
        dbname = self.env.cr.dbname
        State = self.env["integration.connector.state"]
        # Credentials first (an OAuth2 token may need fetching): a failure there must not
        # leave a half-open probe admitted that never reports.
        call_kwargs = dict(kwargs, headers=dict(kwargs["headers"]), params=list(kwargs["params"]))
        self._sensitive_param_names()
        self._auth_apply(call_kwargs)
        with state_cursor(dbname) as cr:
            try:
                admission, reservation, state = State._admit(cr, self, self.rate_limit_max_wait)
            except SharedStateBusyError as exc:
                raise IntegrationRateLimitedError(str(exc), retry_in=1.0) from None
            if not admission.allowed:
                IntegrationConnectorMetric._add(cr, self.id, "refused", 0)
                raise IntegrationCircuitOpenError(
                    self.env._(
                        "Connector %(code)s: circuit open after repeated failures; no call sent. "
                        "Next try in %(seconds).0f s.",
                        code=self.code,
                        seconds=admission.retry_in,
                    ),
                    retry_in=admission.retry_in,
                )
            if reservation is not None and not reservation.granted:
                IntegrationConnectorMetric._add(cr, self.id, "refused", 0)
                raise IntegrationRateLimitedError(
                    self.env._(
                        "Connector %(code)s: rate limit reached; no call sent. Next slot in %(seconds).1f s.",
                        code=self.code,
                        seconds=reservation.wait,
                    ),
                    retry_in=reservation.wait,
                )
        if reservation is not None and reservation.wait > 0:
            time.sleep(reservation.wait)  # our reserved slot: short by construction (max wait)
        session = _get_session(dbname, self.id, self.allow_private_network, self.verify_tls)
        started = time.monotonic()
        response = error = None
        try:
            response = session.request(method, url, **call_kwargs)
        except requests.exceptions.RequestException as exc:
            error = self._connection_error(method, url, exc)
        except UnsafeURLError as exc:
            error = IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: %(url)s refused: %(reason)s", code=self.code, url=redact_url(url), reason=exc
                )
            )
        latency_ms = (time.monotonic() - started) * 1000
        # A success changes nothing while the breaker was quietly closed when we were admitted.
        breaker_was_quiet = state["circuit_state"] == "closed" and not state["circuit_failures"]
        try:
            self._account_call(
                method, url, response, error, latency_ms, call_kwargs, breaker_was_quiet, admission.is_probe
            )
        except (psycopg2.Error, SharedStateBusyError) as exc:
            # The exchange happened: losing its bookkeeping must not lose its result (a
            # retried POST would run twice at the partner).
            _logger.warning("Connector %s: could not record a call's outcome: %s", self.code, exc)
        if error is not None:
            raise error
        return response

    def _account_call(
        self, method, url, response, error, latency_ms, call_kwargs, breaker_was_quiet=False, is_probe=False
    ):
        """Metrics, breaker, Retry-After and debug log for one exchange."""
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
        if success and retry_after is None and breaker_was_quiet:
            # The common case changes nothing shared but the counters: counted in the background.
            count_call_later(self.env.cr.dbname, self.id, outcome, latency_ms)
        else:
            with state_cursor(self.env.cr.dbname) as cr:
                IntegrationConnectorMetric._add(cr, self.id, outcome, latency_ms)
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
        if self.debug_until and self.debug_until > fields.Datetime.now():
            self._record_debug_call(method, url, response, error, latency_ms, outcome, call_kwargs)

    def _record_debug_call(self, method, url, response, error, latency_ms, outcome, call_kwargs):
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        body = call_kwargs.get("json")
        body = json_module.dumps(body) if body is not None else call_kwargs.get("data")
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

    def _handle_failure(self, error, method, url, operation, related, log_errors, kwargs=None):
        """What a failed call raises: a job retry, or the typed error (recorded in the log)."""
        job_uuid = self.env.context.get("job_uuid")
        if isinstance(error, IntegrationRefusedError):
            # Nothing was sent: wait for the breaker or the budget without spending an attempt.
            if job_uuid:
                return RetryableJobError(str(error), seconds=max(1, math.ceil(error.retry_in)), ignore_retry=True)
            return error
        exhausted = False
        if job_uuid and error.retryable:
            job = self.env["queue.job"].sudo().search([("uuid", "=", job_uuid)], limit=1)
            attempt = job.retry
            # The job's own limit too (jobs enqueued by other code keep queue_job's default).
            max_attempts = min(self.retry_max_attempts, job.max_retries or self.retry_max_attempts)
            if attempt + 1 < max_attempts:
                delay = retry_delay(
                    attempt,
                    self.retry_backoff_base,
                    self.retry_backoff_cap,
                    retry_after=getattr(error, "retry_after", None),
                    rng=_jitter_random,
                )
                return RetryableJobError(
                    self.env._(
                        "%(error)s (attempt %(attempt)s of %(max)s, next in %(delay).0f s)",
                        error=error,
                        attempt=attempt + 1,
                        max=max_attempts,
                        delay=delay,
                    ),
                    seconds=max(1, math.ceil(delay)),
                )
            exhausted = True
            error = type(error)(
                self.env._("%(error)s (gave up after %(max)s attempts)", error=error, max=max_attempts),
                **_error_details(error),
            )
        if log_errors and (exhausted or not error.retryable or not job_uuid):
            self._log_error(error, method, url, operation, related, job_uuid, kwargs)
        return error

    def _log_error(self, error, method, url, operation, related, job_uuid, kwargs):
        secrets = self._known_secret_values()
        names = self._sensitive_param_names()
        request_excerpt = False
        if kwargs:
            body = kwargs.get("json")
            body = json_module.dumps(body) if body is not None else kwargs.get("data")
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

    def _rate_per_second(self):
        """The pace of the shared limiter: a hair under the configured rate, so that network
        jitter (a call delayed, the next one on time) never shows the partner more calls in
        a window than it allows."""
        if not self.rate_limit:
            return 0.0
        return RATE_PACING * self.rate_limit / (60.0 if self.rate_limit_period == "minute" else 1.0)

    def _enqueue_call(self, method, path, *, params=None, json=None, operation=None, priority=None, eta=None):
        """Queue one outbound call as a job on ``root.integration.outbound``.

        The job retries transient failures per the connector's policy. Its arguments are
        the call's business data only: credentials are applied when it runs.
        """
        self.ensure_one()
        return self.with_delay(
            channel="root.integration.outbound",
            description=self.env._(
                "%(connector)s: %(operation)s", connector=self.name, operation=operation or f"{method} {path}"
            ),
            # A safety net above the connector's own limit, which decides (see _handle_failure).
            max_retries=self.retry_max_attempts + 1,
            priority=priority,
            eta=eta,
        )._job_call(method, path, params=params, json=json, operation=operation)

    def _job_call(self, method, path, params=None, json=None, operation=None):  # noqa: A002
        """Queue job entry point: one call through ``_request``."""
        response = self._request(method, path, params=params, json=json, operation=operation)
        return f"HTTP {response.status_code}"

    def _build_url(self, path):
        url = self._join_url(path)
        self._check_outbound_url(url)
        return url

    def _check_outbound_url(self, url):
        """Scheme and, for IP literals, address checks before anything is sent.

        Host names are checked when the connection is made (``core.transport``), on the
        addresses actually connected to; this early check gives the clear error sooner.
        """
        try:
            check_url(url, allow_http=self.allow_http)
            host = urlsplit(url).hostname
            if not self.allow_private_network and _is_ip_literal(host) and address_problem(host):
                raise UnsafeURLError(f"{host} is a {address_problem(host)} address")
        except UnsafeURLError as exc:
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: %(url)s refused: %(reason)s", code=self.code, url=redact_url(url), reason=exc
                )
            ) from None

    def _join_url(self, path):
        base = (self.base_url or "").rstrip("/") + "/"
        if not path:
            return base
        if _UNSAFE_PATH_CHARACTERS.search(path):
            # urlsplit strips or drops these, which can turn " //evil.example" into a host.
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: the path %(path)r contains spaces or control characters.",
                    code=self.code,
                    path=redact_url(path)[:200],
                )
            )
        url = path if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path) else urljoin(base, path.lstrip("/"))
        target, root = urlsplit(url), urlsplit(base)
        if (target.scheme, target.netloc) != (root.scheme, root.netloc):
            # Credentials go only to the connector's own host, whatever the path holds.
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s only calls %(root)s, not %(url)s.",
                    code=self.code,
                    root=f"{root.scheme}://{root.netloc}",
                    url=redact_url(url),
                )
            )
        return url

    def _parse_default_headers(self):
        if not self.default_headers or not self.default_headers.strip():
            return {}
        try:
            headers = json_module.loads(self.default_headers)
        except ValueError as exc:
            raise ValidationError(self.env._("Default Headers must be a JSON object: %(error)s", error=exc)) from None
        if isinstance(headers, dict):
            sensitive = sorted(name for name in headers if is_sensitive_name(name))
            if sensitive:
                raise ValidationError(
                    self.env._(
                        "Default Headers must not carry credentials (%(names)s): they are stored in clear and "
                        "shown to operators. Use the Authentication tab, whose secrets are encrypted.",
                        names=", ".join(sensitive),
                    )
                )
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValidationError(
                self.env._('Default Headers must be a JSON object of text values, e.g. {"Accept": "application/json"}.')
            )
        return headers

    # Authentication, dispatched on auth_type: _auth_apply_<type>(kwargs) edits the request.

    def _auth_apply(self, kwargs):
        method = getattr(self, f"_auth_apply_{self.auth_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("Authentication type %s is not supported.", self.auth_type))
        method(kwargs)

    def _auth_apply_none(self, kwargs):
        return

    def _auth_apply_api_key(self, kwargs):
        key = self._require_secret("api_key")
        name = self.api_key_name.strip()
        if self.api_key_location == "query":
            kwargs["params"].append((name, key))
        else:
            kwargs["headers"][name] = key

    def _auth_apply_bearer(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._require_secret('bearer_token')}"

    def _auth_apply_basic(self, kwargs):
        username = self.sudo().basic_username
        if not username:
            raise IntegrationConfigError(self.env._("Connector %s: the username for HTTP basic is not set.", self.code))
        # UTF-8, as RFC 7617 recommends (requests would encode text as Latin-1).
        password = self._require_secret("basic_password")
        kwargs["auth"] = requests.auth.HTTPBasicAuth(username.encode(), password.encode())

    def _auth_apply_oauth2(self, kwargs):
        kwargs["headers"]["Authorization"] = f"Bearer {self._oauth2_access_token()}"

    def _require_secret(self, name):
        value = self._get_secret(name)
        if not value:
            raise IntegrationConfigError(
                self.env._(
                    "Connector %(code)s: the %(secret)s is not set.", code=self.code, secret=self._fields[name].string
                )
            )
        return value

    # OAuth2: the token lives in integration.oauth.token (shared by every worker).

    def _oauth2_access_token(self):
        """The cached access token, fetched (by one worker at a time) when missing or due.

        Read and stored through a cursor of its own, committed at once: a token outlives
        the job that fetched it even when that job rolls back, and the caller's transaction
        never locks the token row. Refreshes are serialized with an advisory lock taken
        before the reading transaction starts, so a waiting worker sees the token the first
        one stored instead of fetching another.
        """
        with self._oauth2_token_env() as env:
            token = env["integration.oauth.token"]._for_connector(self)
            if token._is_usable():
                return token._get_secret("access_token")
        with state_cursor(self.env.cr.dbname) as lock_cr:
            # Wait for another worker's refresh at most as long as one refresh may take.
            deadline = time.monotonic() + self.timeout_connect + self.timeout_read + 5
            while True:
                lock_cr.execute("SELECT pg_try_advisory_lock(%s, %s)", [OAUTH2_LOCK_NAMESPACE, self.id])
                if lock_cr.fetchone()[0]:
                    break
                if time.monotonic() > deadline:
                    raise IntegrationRateLimitedError(
                        self.env._("Connector %s: another worker is fetching an OAuth2 token.", self.code),
                        retry_in=5.0,
                    )
                time.sleep(0.05)
            try:
                with self._oauth2_token_env() as env:
                    Token = env["integration.oauth.token"]
                    token = Token._for_connector(self)
                    if token._is_usable():
                        return token._get_secret("access_token")
                    payload = self.with_env(env)._oauth2_fetch_token(token)
                    return Token._store(self, payload)._get_secret("access_token")
            finally:
                lock_cr.execute("SELECT pg_advisory_unlock(%s, %s)", [OAUTH2_LOCK_NAMESPACE, self.id])

    @contextmanager
    def _oauth2_token_env(self):
        """A superuser environment on a fresh cursor, or on ours while this connector is
        not committed yet (created in this very transaction: invisible to other cursors)."""
        # What this transaction changed on the connector or its token, visible there too.
        self.flush_recordset()
        self.env["integration.oauth.token"].flush_model()
        with self.env.registry.cursor() as cr:
            env = self.env(cr=cr, su=True)
            if env["integration.connector"].browse(self.id).exists():
                yield env
                return
        yield self.env(su=True)

    def _oauth2_invalidate_token(self, rejected_token):
        """Forget the access token the API refused (not one another worker stored since)."""
        with self._oauth2_token_env() as env:
            token = env["integration.oauth.token"]._for_connector(self)
            if token.access_token_encrypted and token._get_secret("access_token") == rejected_token:
                token._clear_access()

    def _oauth2_fetch_token(self, current_token):
        """Ask the authorization server for a token; dispatched on the grant type.

        :param current_token: the stored ``integration.oauth.token`` (maybe empty), for
            grants that refresh with a refresh token
        :return: the token endpoint's JSON answer (``access_token``, ``expires_in``...)
        """
        method = getattr(self, f"_oauth2_token_request_{self.oauth2_grant_type}", None)
        if method is None:
            raise IntegrationConfigError(self.env._("OAuth2 grant %s is not supported.", self.oauth2_grant_type))
        data, auth = method(current_token)
        return self._oauth2_post_token_request(data, auth)

    def _oauth2_token_request_client_credentials(self, current_token):
        data = {"grant_type": "client_credentials"}
        if self.oauth2_scope:
            data["scope"] = self.oauth2_scope
        if self.oauth2_audience:
            data["audience"] = self.oauth2_audience
        return self._oauth2_client_authentication(data)

    def _oauth2_client_authentication(self, data):
        client_id = self.sudo().oauth2_client_id
        if not client_id:
            raise IntegrationConfigError(self.env._("Connector %s: the OAuth2 client ID is not set.", self.code))
        secret = self._require_secret("oauth2_client_secret")
        if self.oauth2_client_auth == "body":
            return dict(data, client_id=client_id, client_secret=secret), None
        # RFC 6749 2.3.1: form-urlencode both before the Basic encoding.
        return data, requests.auth.HTTPBasicAuth(
            quote_plus(client_id, safe="").encode(), quote_plus(secret, safe="").encode()
        )

    def _oauth2_post_token_request(self, data, auth):
        url = self.oauth2_token_url
        self._check_outbound_url(url)
        session = _get_session(self.env.cr.dbname, self.id, self.allow_private_network, self.verify_tls)
        try:
            response = session.post(
                url,
                data=data,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=(self.timeout_connect, self.timeout_read),
                verify=self.verify_tls,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise self._connection_error("POST", url, exc) from None
        except UnsafeURLError as exc:
            raise IntegrationConfigError(
                self.env._("Connector %(code)s: token URL refused: %(reason)s", code=self.code, reason=exc)
            ) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code in RETRYABLE_STATUSES:
            # The authorization server is down or throttling: try again later, like any call.
            raise self._http_error("POST", url, response)
        if response.status_code != 200 or not isinstance(payload, dict) or not payload.get("access_token"):
            remote = ""
            if isinstance(payload, dict) and payload.get("error"):
                remote = ": ".join(str(payload[k]) for k in ("error", "error_description") if payload.get(k))
            error = IntegrationAuthError(
                self.env._(
                    "Connector %(code)s: the OAuth2 token request to %(url)s failed with HTTP %(status)s%(remote)s",
                    code=self.code,
                    url=redact_url(url),
                    status=response.status_code,
                    remote=f" ({self._redact(remote)})" if remote else "",
                )
            )
            _logger.warning("%s", error)
            raise error
        return payload

    # Errors

    def _sensitive_param_names(self):
        if self.auth_type == "api_key" and self.api_key_name:
            name = self.api_key_name.strip()
            # Also masked in the debug lines urllib3 writes for this process.
            register_sensitive_name(name)
            return [name]
        return []

    def _known_secret_values(self):
        """Every decrypted secret of this connector, to scrub from messages."""
        values = []
        for name in self._secret_field_names():
            if self.sudo()[f"{name}_encrypted"]:
                values.append(self._get_secret(name))
        if self.sudo().basic_password_encrypted and self.sudo().basic_username:
            # The form it travels in, should a remote echo the Authorization header back.
            credentials = f"{self.sudo().basic_username}:{self._get_secret('basic_password')}"
            values.append(base64.b64encode(credentials.encode()).decode())
        if self.auth_type == "oauth2":
            # Through the token's own cursor: ours may predate the token now in use.
            with self._oauth2_token_env() as env:
                token = env["integration.oauth.token"].search([("connector_id", "=", self.id)], limit=1)
                for name in ("access_token", "refresh_token"):
                    if token[f"{name}_encrypted"]:
                        values.append(token._get_secret(name))
        return values

    def _redact(self, text, limit=None):
        return redact_text(text, self._known_secret_values(), limit=limit)

    def _remote_message(self, response):
        return self._redact(response.text or "", limit=REMOTE_MESSAGE_LIMIT)

    def _http_error(self, method, url, response):
        safe_url = redact_url(url, self._sensitive_param_names())
        remote = self._remote_message(response)
        if _is_redirect(response):
            remote = self.env._(
                "redirected to %(location)s (redirects are not followed: fix the base URL or path)",
                location=redact_url(response.headers.get("Location", "?"), self._sensitive_param_names()),
            )
        return IntegrationHTTPError(
            self.env._(
                "%(method)s %(url)s failed: HTTP %(status)s %(reason)s%(remote)s",
                method=method,
                url=safe_url,
                status=response.status_code,
                reason=response.reason or "",
                remote=f": {remote}" if remote else "",
            ),
            status_code=response.status_code,
            method=method,
            url=safe_url,
            remote_message=remote,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def _connection_error(self, method, url, exc):
        safe_url = redact_url(url, self._sensitive_param_names())
        if isinstance(exc, requests.exceptions.SSLError):
            reason = self.env._("TLS error (certificate not trusted or handshake failed)")
        elif isinstance(exc, requests.exceptions.ConnectTimeout):
            reason = self.env._("connection timed out after %s s", self.timeout_connect)
        elif isinstance(exc, requests.exceptions.ReadTimeout):
            reason = self.env._("no answer within %s s", self.timeout_read)
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = self.env._("connection failed")
        else:
            reason = self.env._("request failed")
        detail = self._redact(describe_transport_error(exc), limit=REMOTE_MESSAGE_LIMIT)
        # The URL inside requests' own message may carry a query-string key: scrub it too.
        detail = detail.replace(url, safe_url)
        return IntegrationConnectionError(
            self.env._(
                "%(method)s %(url)s: %(reason)s (%(detail)s)", method=method, url=safe_url, reason=reason, detail=detail
            )
        )
